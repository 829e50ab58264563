# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: everything the mesh doctor looks at in one cluster, read in batches.

One list call per kind (secrets, ConfigMaps, Services, Deployments... of the Istio namespace,
istio-ca-root-cert ConfigMaps and injected pods across namespaces), not one call per object.
The result holds facts only: fingerprints, names, addresses, never a key or a token. Each
remote secret's credential is tried against the cluster it names, from here, so the token
never leaves this process.
"""

from __future__ import annotations

import base64
import json
import re

from ansible.module_utils.common.yaml import yaml_load

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s, _kubeconfig, _observed, _remote_secret, _trust
from ansible_collections.meshfed.istio.plugins.module_utils._istioctl import STATE_PREFIX
from ansible_collections.meshfed.istio.plugins.module_utils._remote_secret import is_loopback, is_remote_secret

INJECTED_POD_SELECTOR = "security.istio.io/tlsMode=istio"
KUBE_ROOT_CA = "kube-root-ca.crt"
ISTIO_GATEWAY_VERSIONS = ("v1", "v1beta1")


def _decode(data: dict | None) -> dict:
    return {key: base64.b64decode(value) for key, value in (data or {}).items()}


def _env(container: dict) -> dict:
    return {item["name"]: item.get("value", "") for item in container.get("env") or [] if "name" in item}


def istiod_facts(deployment: dict) -> dict:
    spec = deployment.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    discovery = next((c for c in containers if c.get("name") == "discovery"), containers[0] if containers else {})
    env = _env(discovery)
    status = deployment.get("status") or {}
    return {
        "name": deployment["metadata"]["name"],
        "revision": (deployment["metadata"].get("labels") or {}).get(_istio.REVISION_LABEL, ""),
        "version": _istio.image_version(discovery.get("image", "")),
        "cluster_id": env.get("CLUSTER_ID", ""),
        "network": env.get("NETWORK", ""),
        "multiroot": _flag(env.get(_istio.MULTIROOT_ENV)),
        "ready_replicas": status.get("readyReplicas") or 0,
    }


def injector_values(configmaps: dict) -> dict:
    """meshID, clusterName, network and remotePilotAddress as installed: the sidecar injector's values, else the
    values istioctl recorded (a remote has no injector ConfigMap)."""
    injector = next((item for name, item in sorted(configmaps.items()) if name.startswith("istio-sidecar-injector")), None)
    sources = [((injector or {}).get("data") or {}).get("values"), ((configmaps.get("values") or {}).get("data") or {}).get("merged-values")]
    values: dict = {}
    for text in sources:
        try:
            values = json.loads(text or "{}")
        except ValueError:
            values = {}
        if not isinstance(values, dict):  # JSON, but not Helm values: a fact, not a crash
            values = {}
        if values:
            break
    global_values = values.get("global") or {}
    return {
        "present": bool(values),
        "mesh_id": global_values.get("meshID", ""),
        "cluster_name": (global_values.get("multiCluster") or {}).get("clusterName", ""),
        "network": global_values.get("network", ""),
        "remote_pilot_address": global_values.get("remotePilotAddress", ""),
    }


def webhook_targets(configuration: dict) -> list[dict]:
    """Where each webhook of an injector configuration sends its requests: a URL, or a Service and path."""
    targets = []
    for hook in configuration.get("webhooks") or []:
        client = hook.get("clientConfig") or {}
        service = client.get("service") or {}
        targets.append(
            {
                "url": client.get("url") or "",
                "service": f"{service.get('namespace', '')}/{service.get('name', '')}" if service else "",
                "path": service.get("path") or "",
            }
        )
    return targets


def mesh_config(configmap: dict | None) -> dict:
    try:
        mesh = yaml_load(((configmap or {}).get("data") or {}).get("mesh") or "") or {}
    except Exception:  # a broken mesh config is a fact, not a crash
        mesh = {}
    if not isinstance(mesh, dict):
        mesh = {}
    default_config = mesh.get("defaultConfig") if isinstance(mesh.get("defaultConfig"), dict) else {}
    metadata = default_config.get("proxyMetadata") if isinstance(default_config.get("proxyMetadata"), dict) else {}
    return {
        "present": configmap is not None,
        "mesh_id": (default_config.get("meshId") or mesh.get("meshId") or ""),
        "trust_domain": mesh.get("trustDomain", ""),
        # what injection puts into every new proxy's environment; only the rotation flag is kept
        "xds_agent": _flag(metadata.get(_istio.XDS_AGENT_METADATA)),
    }


_FLAG_TEXT = re.compile(r"[A-Za-z0-9._+-]{1,32}")


def _flag(value: object) -> str:
    """An env-style flag as text ('' when unset; YAML may have made it a boolean). It comes from the cluster and reaches
    messages: a short plain word is kept (every value Istio reads as true is one), anything else is described, never
    copied - nor expanded (a YAML alias bomb's str() would not end)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, (str, int, float)):
        return "<not a string>"
    text = str(value)
    return text if _FLAG_TEXT.fullmatch(text) else f"<a value of {len(text)} characters, not shown>"


def proxy_env(pod: dict) -> dict:
    """The environment of a pod's istio-proxy container: a sidecar, or a native sidecar (an init container)."""
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("name") == "istio-proxy":
            return _env(container)
    return {}


def cross_network_gateways(gateways: list[dict]) -> list[dict]:
    """Gateways that expose *.local on 15443 with AUTO_PASSTHROUGH, as the multi-network guide does."""
    found = []
    for gateway in gateways:
        for server in (gateway.get("spec") or {}).get("servers") or []:
            port = (server.get("port") or {}).get("number")
            mode = (server.get("tls") or {}).get("mode", "")
            if port == 15443 and mode == "AUTO_PASSTHROUGH":
                found.append(
                    {
                        "name": gateway["metadata"]["name"],
                        "hosts": server.get("hosts") or [],
                        "selector": (gateway.get("spec") or {}).get("selector") or {},
                    }
                )
    return found


def try_credential(conn: dict, timeout: int, secret_name: str) -> dict:
    """List Services and EndpointSlices with a remote secret's parsed credential, as istiod would."""
    cluster = None
    try:
        cluster = _k8s.Cluster.of_connection(conn, timeout, f"the server of remote secret {secret_name}")
        cluster.get("listing services", "/api/v1/services", limit=1)
        cluster.get("listing endpointslices", "/apis/discovery.k8s.io/v1/endpointslices", limit=1)
    except _k8s.K8sError as exc:
        return {"ok": False, "error": str(exc), "error_type": type(exc).__name__, "calls": cluster.calls if cluster else 0}
    except Exception as exc:  # pylint: disable=broad-exception-caught  # an untrusted server: a fact, never a crash
        return {
            "ok": False,
            "error": f"the server of remote secret {secret_name} gave an answer that cannot be read ({type(exc).__name__})",
            "error_type": type(exc).__name__,
            "calls": cluster.calls if cluster else 0,
        }
    return {"ok": True, "error": "", "error_type": "", "calls": cluster.calls}


def _entry_facts(entry: dict, config: dict) -> dict | None:
    """Fill one remote-secret entry from its kubeconfig; the connection when it is safe to try."""
    server = _kubeconfig.kubeconfig_context(config)[1].get("server", "")
    entry["server"] = _kubeconfig.display_server(server)
    entry["parsed"] = bool(entry["server"])
    entry["loopback"] = isinstance(server, str) and is_loopback(server)
    conn, entry["unsafe"], entry["invalid"] = _kubeconfig.untrusted_connection(config)
    if conn is not None and conn["ca_data"]:
        entry["ca_fingerprints"] = _trust.fingerprints(base64.b64decode(conn["ca_data"]))
    return conn


def remote_secret_facts(secret: dict) -> tuple[dict, dict[str, dict]]:
    """What a remote secret holds, as facts - per data key the server, whether it is loopback and the fields that make it
    unsafe (untrusted input: nothing in it is executed or opened) - and, apart, the connections of its safe keys."""
    meta = secret["metadata"]
    data = _decode(secret.get("data"))
    entries, connections = [], {}
    for key, value in sorted(data.items()):
        entry = {"key": key, "server": "", "parsed": False, "loopback": False, "ca_fingerprints": [], "unsafe": [], "invalid": [], "credential": None}
        try:
            config = yaml_load(value.decode("utf-8")) or {}
        except Exception:  # not a kubeconfig: a fact for the doctor
            config = None
        if isinstance(config, dict):
            try:
                conn = _entry_facts(entry, config)
            except Exception as exc:  # pylint: disable=broad-exception-caught  # free data from a cluster: a fact, never a crash
                conn, entry["unsafe"] = None, [f"the kubeconfig cannot be read ({type(exc).__name__})"]
            if conn is not None:
                connections[key] = conn
        entries.append(entry)
    facts = {
        "name": meta["name"],
        "cluster_annotation": (meta.get("annotations") or {}).get(_istio.CLUSTER_ANNOTATION, ""),
        "managed": (meta.get("labels") or {}).get(_istio.MANAGED_BY_LABEL) == _istio.MANAGED_BY,
        "data_keys": sorted(data),
        "entries": entries,
        "unsafe": [f"secret {meta['name']} key {entry['key']}: {problem}" for entry in entries for problem in entry["unsafe"]],
    }
    return facts, connections


def _istio_networking(cluster: _k8s.Cluster, namespace: str, resource: str) -> tuple[bool, list[dict]]:
    """Istio networking objects (gateways, virtualservices) in namespace (first served version), and whether the CRD exists."""
    for version in ISTIO_GATEWAY_VERSIONS:
        result = cluster.get(f"listing Istio {resource}", _k8s.namespaced(namespace, resource, group="networking.istio.io", version=version), missing_ok=True)
        if result is not None:
            return True, result.get("items") or []
    return False, []


def _with_kind(items: list[dict], api_version: str, kind: str) -> list[dict]:
    """List items carry no apiVersion and kind of their own."""
    return [{"apiVersion": api_version, "kind": kind, **item} for item in items]


def fetch(cluster: _k8s.Cluster, namespace: str, *, pod_sample: int = 200, configmap_sample: int = 200, objects: bool = False) -> dict:
    """The API reads behind one cluster's state: one list call per kind (about ten), one or two more with objects."""
    raw = {
        "namespace": cluster.get(f"reading namespace {namespace}", _k8s.cluster_scoped("namespaces", namespace), missing_ok=True),
        **{
            resource: cluster.items(f"listing {resource} in {namespace}", _k8s.namespaced(namespace, resource))
            for resource in ("secrets", "configmaps", "services")
        },
        "root_configmaps": cluster.items(
            "listing istio-ca-root-cert configmaps", "/api/v1/configmaps", fieldSelector=f"metadata.name={_istio.ROOT_CERT_CONFIGMAP}", limit=configmap_sample
        ),
        "deployments": cluster.items(f"listing deployments in {namespace}", _k8s.namespaced(namespace, "deployments", group="apps")),
        "slices": cluster.items(
            f"listing endpointslices in {namespace}",
            _k8s.namespaced(namespace, "endpointslices", group="discovery.k8s.io"),
            labelSelector="kubernetes.io/service-name=istiod",
        ),
        "webhooks": cluster.items(
            "listing mutating webhooks", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", labelSelector="app=sidecar-injector"
        ),
    }
    raw["gateway_crd"], raw["gateways"] = _istio_networking(cluster, namespace, "gateways")
    raw["pods"] = cluster.items("listing injected pods", "/api/v1/pods", labelSelector=INJECTED_POD_SELECTOR, limit=pod_sample)
    if objects:
        raw["virtualservices"] = _istio_networking(cluster, namespace, "virtualservices")[1]
    return raw


def read(
    cluster: _k8s.Cluster,
    namespace: str,
    *,
    check_credentials: bool = True,
    pod_sample: int = 200,
    configmap_sample: int = 200,
    objects: bool = False,
    allow_loopback: bool = False,
) -> dict:
    """One cluster's mesh state in batched reads (about ten API calls plus two per remote secret credential).

    With objects, also the objects the roles write (namespace, its cacerts and remote Secrets, Services, Gateways and
    VirtualServices) as _observed projects them (one or two more list calls), for the roles to skip writes that would
    change nothing. A remote secret naming this host (loopback) is tried only with allow_loopback (single-host test beds):
    a planted secret must not make the control node call its own services.
    """
    raw = fetch(cluster, namespace, pod_sample=pod_sample, configmap_sample=configmap_sample, objects=objects)
    state, connections = assemble(raw)
    if check_credentials:
        for secret in state["remote_secrets"]:
            for entry in secret["entries"]:
                if (secret["name"], entry["key"]) in connections and (allow_loopback or not entry["loopback"]):
                    entry["credential"] = try_credential(connections[secret["name"], entry["key"]], cluster.timeout, secret["name"])
    return state


def assemble(raw: dict) -> tuple[dict, dict[tuple[str, str], dict]]:
    """The state from the reads of fetch(), pure; and apart, the connections of the remote secrets' safe credentials by
    (secret name, key), which never go into the state."""
    ns_object = raw["namespace"]
    ns_meta = (ns_object or {}).get("metadata") or {}
    secrets = raw["secrets"]
    configmaps = {item["metadata"]["name"]: item for item in raw["configmaps"]}
    services = {item["metadata"]["name"]: item for item in raw["services"]}
    by_name = {item["metadata"]["name"]: item for item in secrets}
    cacerts = by_name.get(_istio.CACERTS_SECRET)
    self_signed = by_name.get(_istio.ISTIO_CA_SECRET)
    remote_secrets, connections = [], {}
    for item in secrets:
        if is_remote_secret(item):
            facts, safe = remote_secret_facts(item)
            remote_secrets.append(facts)
            connections.update({(facts["name"], key): conn for key, conn in safe.items()})
    gateway_service = next(
        (item for item in services.values() if (item["metadata"].get("labels") or {}).get("istio") == _istio.EASTWEST_SELECTOR["istio"]),
        services.get(_istio.EASTWEST_GATEWAY),
    )
    addresses, problem = _istio.gateway_address_problem(gateway_service)
    mesh = configmaps.get("istio") or next((item for item in configmaps.values() if "mesh" in (item.get("data") or {})), None)
    state = {
        # the cluster's own API CA, as kube-controller-manager publishes it in every namespace: what a remote secret for
        # this cluster must pin
        "api_ca_fingerprints": _trust.fingerprints(((configmaps.get(KUBE_ROOT_CA) or {}).get("data") or {}).get("ca.crt")),
        "namespace": {
            "present": ns_object is not None,
            "labels": ns_meta.get("labels") or {},
            "annotations": ns_meta.get("annotations") or {},
        },
        "cacerts": _trust.bundle_facts(None if cacerts is None else _decode(cacerts.get("data"))),
        "istio_ca_secret": _trust.self_signed_facts(None if self_signed is None else _decode(self_signed.get("data"))),
        "root_cert_configmaps": {item["metadata"]["namespace"]: _trust.root_cert_configmap_facts(item.get("data") or {}) for item in raw["root_configmaps"]},
        "istiods": [
            istiod_facts(item)
            for item in raw["deployments"]
            if (item["metadata"].get("labels") or {}).get("app") == "istiod" or item["metadata"]["name"].startswith("istiod")
        ],
        "istiod_service": {
            "present": "istiod" in services,
            "selector": ((services.get("istiod") or {}).get("spec") or {}).get("selector") or {},
            "endpoint_addresses": sorted(
                {address for item in raw["slices"] for endpoint in item.get("endpoints") or [] for address in endpoint.get("addresses") or []}
            ),
        },
        "injector": injector_values(configmaps),
        # what meshfed.istio.istioctl_install recorded here: operator name -> digest of the operator and the istioctl
        "installs": {
            name[len(STATE_PREFIX) :]: str((item.get("data") or {}).get("digest", ""))
            for name, item in configmaps.items()
            if name.startswith(STATE_PREFIX) and _remote_secret.is_managed(item)
        },
        "mesh_config": mesh_config(mesh),
        "injection_webhooks": [{"name": item["metadata"]["name"], "targets": webhook_targets(item)} for item in raw["webhooks"]],
        "gateway": {
            "present": gateway_service is not None,
            "name": (gateway_service or {}).get("metadata", {}).get("name", ""),
            "addresses": addresses,
            "problem": problem,
            "type": ((gateway_service or {}).get("spec") or {}).get("type", ""),
            "labels": ((gateway_service or {}).get("metadata") or {}).get("labels") or {},
        },
        "gateway_crd": raw["gateway_crd"],
        "cross_network_gateways": cross_network_gateways(raw["gateways"]),
        "remote_secrets": remote_secrets,
        "injected_pods": [
            {
                "namespace": item["metadata"]["namespace"],
                "name": item["metadata"]["name"],
                "network": env.get("ISTIO_META_NETWORK", ""),
                "xds_agent": _flag(env.get(_istio.XDS_AGENT_METADATA)),
            }
            for item, env in ((pod, proxy_env(pod)) for pod in raw["pods"])
        ],
    }
    if "virtualservices" in raw:
        state["objects"] = _observed.index(
            ([{"apiVersion": "v1", "kind": "Namespace", **ns_object}] if ns_object is not None else [])
            + _with_kind(secrets, "v1", "Secret")
            + _with_kind(list(services.values()), "v1", "Service")
            + _with_kind(raw["gateways"], _istio.NETWORKING_API, "Gateway")
            + _with_kind(raw["virtualservices"], _istio.NETWORKING_API, "VirtualService")
        )
    return state, connections
