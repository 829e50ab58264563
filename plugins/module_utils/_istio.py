# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: Istio knowledge as pure functions.

IstioOperator documents for the control plane and the east-west gateway (input to
`istioctl install -f`; the in-cluster operator is gone since Istio 1.24), and the digest that
tells whether what is installed already matches what would be installed.
"""

from __future__ import annotations

import copy
import hashlib
import json

OPERATOR_API = "install.istio.io/v1alpha1"
EASTWEST_GATEWAY = "istio-eastwestgateway"
EASTWEST_PORTS = (("status-port", 15021), ("tls", 15443), ("tls-istiod", 15012), ("tls-webhook", 15017))


def deep_merge(base: dict, overlay: dict) -> dict:
    """overlay merged into a copy of base: dicts merge, everything else (lists too) replaces."""
    merged = copy.deepcopy(base)
    for key, value in (overlay or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _operator(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": OPERATOR_API, "kind": "IstioOperator", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def control_plane(
    *,
    mesh_id: str,
    cluster_name: str,
    network: str,
    namespace: str = "istio-system",
    revision: str = "",
    role: str = "primary",
    external_istiod: bool = False,
    remote_pilot_address: str = "",
    overlay: dict | None = None,
) -> dict:
    """The IstioOperator of a primary (optionally serving remotes) or of a remote."""
    global_values: dict = {"meshID": mesh_id, "multiCluster": {"clusterName": cluster_name}, "network": network}
    spec: dict = {"values": {"global": global_values}}
    if role == "remote":
        spec["profile"] = "remote"
        global_values["remotePilotAddress"] = remote_pilot_address
        spec["values"]["istiodRemote"] = {"injectionPath": f"/inject/cluster/{cluster_name}/net/{network}"}
    elif external_istiod:
        global_values["externalIstiod"] = True
    if revision:
        spec["revision"] = revision
    name = f"control-plane-{revision}" if revision else "control-plane"
    return deep_merge(_operator(name, namespace, spec), {"spec": overlay or {}})


def eastwest_gateway(*, network: str, namespace: str = "istio-system", revision: str = "", overlay: dict | None = None) -> dict:
    """The east-west gateway as Istio's multicluster samples define it, for one network."""
    gateway = {
        "name": EASTWEST_GATEWAY,
        "namespace": namespace,
        "enabled": True,
        "label": {"istio": "eastwestgateway", "app": EASTWEST_GATEWAY, "topology.istio.io/network": network},
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
    return deep_merge(_operator("eastwest", namespace, spec), {"spec": overlay or {}})


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
