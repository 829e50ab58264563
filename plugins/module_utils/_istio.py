# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: Istio knowledge as pure functions, and Istio's vocabulary in one place.

The names Istio gives its labels, annotations, secrets and gateways; IstioOperator documents for
the control plane and the east-west gateway (input to `istioctl install -f`; the in-cluster
operator is gone since Istio 1.24); the Kubernetes objects beside them (the Istio namespace, the
cross-network and istiod Gateways); the digest that tells whether what is installed already
matches what would be installed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

# Istio's namespace when none is set (istioctl's default, the modules' `namespace` default)
DEFAULT_NAMESPACE = "istio-system"
# Labels and annotations
NETWORK_LABEL = "topology.istio.io/network"
CONTROL_PLANE_CLUSTERS_ANNOTATION = "topology.istio.io/controlPlaneClusters"
CLUSTER_ANNOTATION = "networking.istio.io/cluster"
MULTICLUSTER_LABEL = "istio/multiCluster"
REVISION_LABEL = "istio.io/rev"
# A revision tag (istioctl tag set): its injector webhook and Service carry the tag beside the revision it points at.
TAG_LABEL = "istio.io/tag"
# Every revision's istiod Deployment carries it (Istio's charts: app=istiod, istio.io/rev=<revision>).
ISTIOD_SELECTOR = "app=istiod"
# The revision of an install without one; its istiod, Service and injector carry no suffix.
DEFAULT_REVISION = "default"
# A namespace's sidecar injection: "enabled" injects from the default revision (tag "default") and wins over
# istio.io/rev; "disabled" turns it off.
INJECTION_LABEL = "istio-injection"
# namespaces whose pods Istio's injector never injects, whatever their labels (pkg/kube/inject: IgnoredNamespaces)
INJECTION_IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public"})
# The injection templates a pod asks for (comma-separated); "gateway" makes the injected proxy a gateway (Istio's
# gateway injection: a Deployment whose pod template carries it and sidecar.istio.io/inject=true).
INJECT_TEMPLATES_ANNOTATION = "inject.istio.io/templates"
GATEWAY_TEMPLATE = "gateway"
# What istioctl puts on every object of an install: the IstioOperator it came from (istioctl uninstall -f selects on it).
OWNER_LABEL = "install.operator.istio.io/owning-resource"
# This collection's own mark on what it creates (remote secrets, reader objects, install records): what the leave
# playbook may delete is exactly what carries it.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "meshfed.istio"
# The plugged-in CA: secret cacerts and its keys; istiod's own self-signed CA; what workloads trust
CACERTS_SECRET = "cacerts"
CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"
BUNDLE_KEYS = (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)
SELF_SIGNED_MARKER = "istio-generated"
ISTIO_CA_SECRET = "istio-ca-secret"
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
# What a primary's istiod reads a watched cluster with: Istio's base chart creates this ServiceAccount (and its
# ClusterRole istio-reader-clusterrole-*); istioctl create-remote-secret takes it by default, and so do we.
READER_SERVICE_ACCOUNT = "istio-reader-service-account"
# istiod's cluster ID when none is set
DEFAULT_CLUSTER_NAME = "Kubernetes"
# Root rotation without restarts: istiod takes a changed root-cert.pem only with the first (an env of istiod,
# values.pilot.env); a proxy takes a pushed trust bundle and re-issues its certificate only with the second
# (an env of the proxy agent, set from meshConfig.defaultConfig.proxyMetadata when the pod is injected).
MULTIROOT_ENV = "ISTIO_MULTIROOT_MESH"
XDS_AGENT_METADATA = "PROXY_CONFIG_XDS_AGENT"
MULTIROOT_PATH = ("values", "pilot", "env", MULTIROOT_ENV)
XDS_AGENT_PATH = ("meshConfig", "defaultConfig", "proxyMetadata", XDS_AGENT_METADATA)
ROTATION_FLAGS = {MULTIROOT_PATH: "control_plane_multiroot", XDS_AGENT_PATH: "control_plane_multiroot"}
# The east-west gateway and what it exposes
OPERATOR_API = "install.istio.io/v1alpha1"
NETWORKING_API = "networking.istio.io/v1"
EASTWEST_GATEWAY = "istio-eastwestgateway"
EASTWEST_SELECTOR = {"istio": "eastwestgateway"}
EASTWEST_PORTS = (("status-port", 15021), ("tls", 15443), ("tls-istiod", 15012), ("tls-webhook", 15017))
CROSS_NETWORK_GATEWAY = "cross-network-gateway"
ISTIOD_GATEWAY = "istiod-gateway"
ISTIOD_VIRTUAL_SERVICE = "istiod-vs"
CROSS_NETWORK_PORT = 15443


def role_names() -> dict:
    """Istio's names the roles write or select, handed to them by mesh_plan (its `names`), so YAML spells none of them."""
    return {
        "cacerts_secret": CACERTS_SECRET,
        "istio_ca_secret": ISTIO_CA_SECRET,
        "istiod_selector": ISTIOD_SELECTOR,
        "eastwest_gateway": EASTWEST_GATEWAY,
        "managed_by_labels": {MANAGED_BY_LABEL: MANAGED_BY},
    }


_IMAGE_TAG = re.compile(r":([^:/]+)\Z")


def image_version(image: str) -> str:
    """The tag of an image reference (docker.io/istio/pilot:1.31.0 -> 1.31.0), '' without one (a digest is no tag)."""
    match = _IMAGE_TAG.search((image or "").split("@", 1)[0])
    return match.group(1) if match else ""


_ISTIOCTL_VERSION = re.compile(r"\A\s*(?:client version:\s*)?(\S+)\s*\Z", re.IGNORECASE)


def istioctl_version(output: str) -> str:
    """The version in what `istioctl version --remote=false --short` prints (newer releases prefix it with
    "client version:"); '' when the output is not one version."""
    match = _ISTIOCTL_VERSION.match(output or "")
    return match.group(1) if match else ""


_GO_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))


def flag_on(value: object) -> bool:
    """Whether Istio reads an env flag as true (Go's strconv.ParseBool; anything it cannot parse is the default, false)."""
    return isinstance(value, str) and value in _GO_TRUE


def deep_merge(base: dict, overlay: dict) -> dict:
    """overlay merged into a copy of base: dicts merge, everything else (lists too) replaces."""
    merged = copy.deepcopy(base)
    for key, value in (overlay or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class OverlayError(ValueError):
    """A user overlay that would change what the inventory decides."""


# Settings the inventory owns: an overlay may repeat them, never change them.
PROTECTED_VALUES = {
    ("values", "global", "meshID"): "meshfed_mesh_id",
    ("values", "global", "multiCluster", "clusterName"): "meshfed_cluster_name",
    ("values", "global", "network"): "meshfed_network",
    ("revision",): "meshfed_revision",
}


def _comparable(value: object) -> object:
    """Helm writes env and proxyMetadata values as strings: true and "true" are the same setting."""
    return str(value).lower() if isinstance(value, bool) else value


def overlay_conflicts(spec: dict, overlay: dict | None, protected: dict | None = None) -> list[str]:
    """Where an overlay (of an IstioOperator spec) would change a setting the inventory (or a role option) owns."""
    conflicts = []
    for path, variable in (PROTECTED_VALUES if protected is None else protected).items():
        here: object = overlay or {}
        for key in path:
            here = here.get(key, _ABSENT) if isinstance(here, dict) else _ABSENT
        wanted: object = spec
        for key in path:
            wanted = wanted.get(key, _ABSENT) if isinstance(wanted, dict) else _ABSENT
        if here is not _ABSENT and _comparable(here) != _comparable(wanted):
            conflicts.append(f"spec.{'.'.join(path)} (set it with {variable})")
    return conflicts


_ABSENT = object()


def _with_overlay(operator: dict, overlay: dict | None, what: str, protected: dict | None = None) -> dict:
    if overlay is not None and not isinstance(overlay, dict):
        raise OverlayError(f"the {what} overlay must be a mapping of IstioOperator spec fields, got {type(overlay).__name__}")
    conflicts = overlay_conflicts(operator["spec"], overlay, protected)
    if conflicts:
        raise OverlayError(f"the {what} overlay changes what the inventory sets: {', '.join(conflicts)}; remove it from the overlay")
    return deep_merge(operator, {"spec": overlay or {}})


def _operator(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": OPERATOR_API, "kind": "IstioOperator", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def control_plane(
    *,
    mesh_id: str,
    cluster_name: str,
    network: str,
    namespace: str = DEFAULT_NAMESPACE,
    revision: str = "",
    role: str = "primary",
    external_istiod: bool = False,
    remote_pilot_address: str = "",
    multiroot: bool = True,
    overlay: dict | None = None,
) -> dict:
    """The IstioOperator of a primary (optionally serving remotes) or of a remote.

    multiroot: a primary gets both rotation flags (MULTIROOT_PATH, XDS_AGENT_PATH), which then belong to this option
    (an overlay may repeat them, not change them). A remote gets neither, whatever the option: profile remote installs no
    istiod and no mesh config (Helm value configMap: false); its injector webhook calls the primary's istiod, which injects
    the proxies with the primary's meshConfig (proxyMetadata included), and those proxies then take their xDS, trust
    bundle pushes included, from that istiod. The primary's flags are the remote's.
    """
    global_values: dict = {"meshID": mesh_id, "multiCluster": {"clusterName": cluster_name}, "network": network}
    spec: dict = {"values": {"global": global_values}}
    protected = PROTECTED_VALUES
    if role == "remote":
        spec["profile"] = "remote"
        global_values["remotePilotAddress"] = remote_pilot_address
        spec["values"]["istiodRemote"] = {"injectionPath": f"/inject/cluster/{cluster_name}/net/{network}"}
    else:
        if external_istiod:
            global_values["externalIstiod"] = True
        if multiroot:
            spec = deep_merge(spec, rotation_flags())
        protected = {**PROTECTED_VALUES, **ROTATION_FLAGS}
    if revision:
        spec["revision"] = revision
    return _with_overlay(_operator(control_plane_name(revision), namespace, spec), overlay, "control_plane", protected)


def control_plane_name(revision: str = "") -> str:
    """The name of a control plane's IstioOperator (and of its install record), per revision."""
    return f"control-plane-{revision}" if revision and revision != DEFAULT_REVISION else "control-plane"


def suffixed(name: str, revision: str = "") -> str:
    """istiod, istio-sidecar-injector...: Istio's name of a revision's object (no suffix for the default revision)."""
    return f"{name}-{revision}" if revision and revision != DEFAULT_REVISION else name


def rotation_flags() -> dict:
    """The IstioOperator spec fields that let a mesh change its root without restarts (both as strings, as Helm renders them)."""
    flags: dict = {}
    for path in (MULTIROOT_PATH, XDS_AGENT_PATH):
        here = flags
        for key in path[:-1]:
            here = here.setdefault(key, {})
        here[path[-1]] = "true"
    return flags


def eastwest_gateway(*, network: str, namespace: str = DEFAULT_NAMESPACE, revision: str = "", overlay: dict | None = None) -> dict:
    """The east-west gateway as Istio's multicluster samples define it, for one network."""
    gateway = {
        "name": EASTWEST_GATEWAY,
        "namespace": namespace,
        "enabled": True,
        "label": {**EASTWEST_SELECTOR, "app": EASTWEST_GATEWAY, NETWORK_LABEL: network},
        "k8s": {
            "env": [{"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": network}],
            "service": {"ports": [{"name": name, "port": port, "targetPort": port} for name, port in EASTWEST_PORTS]},
        },
    }
    spec: dict = {
        "profile": "empty",
        "components": {"ingressGateways": [gateway]},
        "values": {"gateways": {"istio-ingressgateway": {"injectionTemplate": "gateway"}}, "global": {"network": network}},
    }
    if revision:
        spec["revision"] = revision
    return _with_overlay(_operator("eastwest", namespace, spec), overlay, "eastwest_gateway")


def namespace_object(namespace: str, network: str, primary_name: str | None = None) -> dict:
    """The Istio namespace with its network label; a remote's also names the primary that manages it."""
    metadata: dict = {"name": namespace, "labels": {NETWORK_LABEL: network}}
    if primary_name:
        metadata["annotations"] = {CONTROL_PLANE_CLUSTERS_ANNOTATION: primary_name}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def _passthrough(port: int, name: str, mode: str, hosts: list[str]) -> dict:
    return {"port": {"number": port, "name": name, "protocol": "TLS"}, "tls": {"mode": mode}, "hosts": hosts}


def eastwest_objects(namespace: str, expose_istiod: bool, revision: str = "") -> list[dict]:
    """What the east-west gateway serves, as Istio's multicluster guide writes it: every *.local service on 15443
    (AUTO_PASSTHROUGH, mTLS end to end); on a primary with remotes also istiod (15012) and its webhook (15017) - the
    istiod of the revision, and with a revision also its own route by SNI (istiod_revision_route)."""
    meta = {"namespace": namespace}
    objects = [
        {
            "apiVersion": NETWORKING_API,
            "kind": "Gateway",
            "metadata": {"name": CROSS_NETWORK_GATEWAY, **meta},
            "spec": {"selector": dict(EASTWEST_SELECTOR), "servers": [_passthrough(CROSS_NETWORK_PORT, "tls", "AUTO_PASSTHROUGH", ["*.local"])]},
        }
    ]
    if expose_istiod:
        istiod = f"{suffixed('istiod', revision)}.{namespace}.svc.cluster.local"
        objects += [
            {
                "apiVersion": NETWORKING_API,
                "kind": "Gateway",
                "metadata": {"name": ISTIOD_GATEWAY, **meta},
                "spec": {
                    "selector": dict(EASTWEST_SELECTOR),
                    "servers": [_passthrough(15012, "tls-istiod", "PASSTHROUGH", ["*"]), _passthrough(15017, "tls-istiodwebhook", "PASSTHROUGH", ["*"])],
                },
            },
            {
                "apiVersion": NETWORKING_API,
                "kind": "VirtualService",
                "metadata": {"name": ISTIOD_VIRTUAL_SERVICE, **meta},
                "spec": {
                    "hosts": ["*"],
                    "gateways": [ISTIOD_GATEWAY],
                    "tls": [
                        {"match": [{"port": 15012, "sniHosts": ["*"]}], "route": [{"destination": {"host": istiod, "port": {"number": 15012}}}]},
                        {"match": [{"port": 15017, "sniHosts": ["*"]}], "route": [{"destination": {"host": istiod, "port": {"number": 443}}}]},
                    ],
                },
            },
        ]
        if revision and revision != DEFAULT_REVISION:
            objects.append(istiod_revision_route(namespace, revision))
    return objects


def istiod_revision_route(namespace: str, revision: str) -> dict:
    """The VirtualService that sends a remote's calls to one revision's istiod through the east-west gateway, chosen by
    SNI (istiod-<rev>.<namespace>.svc: the name a remote's istiod-<rev> Service gives its clients), as Istio's
    samples/multicluster/expose-istiod-rev.yaml.tmpl does; it rides on the istiod Gateway of eastwest_objects."""
    service = f"istiod-{revision}.{namespace}.svc"
    sni = [service, f"{service}.cluster.local"]
    return {
        "apiVersion": NETWORKING_API,
        "kind": "VirtualService",
        "metadata": {"name": f"{ISTIOD_VIRTUAL_SERVICE}-{revision}", "namespace": namespace},
        "spec": {
            "hosts": ["*"],
            "gateways": [ISTIOD_GATEWAY],
            "tls": [
                {"match": [{"port": port, "sniHosts": list(sni)}], "route": [{"destination": {"host": f"{service}.cluster.local", "port": {"number": target}}}]}
                for port, target in ((15012, 15012), (15017, 443))
            ],
        },
    }


def digest(operator: dict, istioctl_version: str) -> str:
    """Identifies one install: the operator document and the istioctl that installs it."""
    canonical = json.dumps({"operator": operator, "istioctl": istioctl_version}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def gateway_address_problem(service: dict | None) -> tuple[list[str], str | None]:
    """The addresses of the east-west gateway Service, and what is wrong when it has none a remote can use."""
    if service is None:
        return [], f"the Service {EASTWEST_GATEWAY} does not exist: install the east-west gateway"
    spec = service.get("spec") or {}
    external_ips = list(spec.get("externalIPs") or [])
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips = [entry["ip"] for entry in ingress if entry.get("ip")]
    hostnames = [entry["hostname"] for entry in ingress if entry.get("hostname") and not entry.get("ip")]
    addresses = external_ips + [ip for ip in ips if ip not in external_ips]
    if addresses:
        return addresses, None
    if spec.get("type") != "LoadBalancer":
        return [], (
            f"the Service {EASTWEST_GATEWAY} is of type {spec.get('type', 'ClusterIP')}: istiod gets no address for it; "
            "make it a LoadBalancer or set meshfed_eastwest_external_ips"
        )
    if hostnames:
        return [], (
            f"the LoadBalancer of {EASTWEST_GATEWAY} has only a hostname ({', '.join(hostnames)}): istiod needs an IP; "
            "set meshfed_eastwest_external_ips to the addresses it resolves to"
        )
    return [], (
        f"the LoadBalancer of {EASTWEST_GATEWAY} is pending (no address assigned): this cluster has no load balancer "
        "implementation; set meshfed_eastwest_external_ips to addresses that reach its nodes"
    )
