# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: remote secrets, what `istioctl create-remote-secret` makes, in Python.

In the watched cluster: the reader ServiceAccount, its ClusterRole and binding (created only when
missing: Istio's own install manages them) and a long-lived token. For the watcher: the Secret
istio-remote-secret-<cluster>, labelled istio/multiCluster=true, with one data key, the cluster
name, holding a kubeconfig for that token.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from urllib.parse import urlparse

from ansible.module_utils.common.yaml import yaml_dump

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s

READER_SA = "istio-reader-service-account"
TOKEN_SUFFIX = "istio-remote-secret-token"
READ = ["get", "list", "watch"]
# What a primary's istiod reads in a cluster it watches (the rules of Istio's reader role).
READER_RULES = [
    {"apiGroups": ["config.istio.io", "security.istio.io", "networking.istio.io", "authentication.istio.io",
                   "rbac.istio.io", "telemetry.istio.io", "extensions.istio.io"], "resources": ["*"], "verbs": READ},
    {"apiGroups": [""], "resources": ["endpoints", "pods", "services", "nodes", "replicationcontrollers", "namespaces", "secrets"],
     "verbs": READ},
    {"apiGroups": ["networking.istio.io"], "resources": ["workloadentries"], "verbs": READ},
    {"apiGroups": ["networking.x-k8s.io", "gateway.networking.k8s.io"], "resources": ["gateways"], "verbs": READ},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": READ},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
    {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": [*READ, "create", "delete"]},
    {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"], "verbs": READ},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": READ},
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
]


class RemoteSecretError(Exception):
    pass


def is_loopback(server: str) -> bool:
    """Whether a server URL names this host: loopback, unspecified or IPv4-mapped loopback addresses, localhost names."""
    try:
        host = urlparse(server).hostname or ""
    except ValueError:  # a malformed URL, e.g. an unclosed IPv6 bracket
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or address.is_unspecified or bool(mapped and (mapped.is_loopback or mapped.is_unspecified))


def is_remote_secret(secret: dict) -> bool:
    """Whether a Secret is a remote secret: istiod watches the clusters of those labelled istio/multiCluster=true."""
    return ((secret.get("metadata") or {}).get("labels") or {}).get(_istio.MULTICLUSTER_LABEL) == "true"


def token_secret_name(service_account: str) -> str:
    return f"{service_account}-{TOKEN_SUFFIX}"


def kubeconfig(cluster_name: str, server: str, ca_data: str, token: str) -> str:
    """The kubeconfig istiod uses for a watched cluster; deterministic for the same inputs."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
        "users": [{"name": cluster_name, "user": {"token": token}}],
    }
    return yaml_dump(config, sort_keys=True, default_flow_style=False)


def remote_secret(cluster_name: str, namespace: str, config: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": f"istio-remote-secret-{cluster_name}",
            "namespace": namespace,
            "labels": {_istio.MULTICLUSTER_LABEL: "true"},
            "annotations": {_istio.CLUSTER_ANNOTATION: cluster_name},
        },
        "data": {cluster_name: base64.b64encode(config.encode()).decode()},
    }


def ensure_reader(cluster: _k8s.Cluster, namespace: str, service_account: str, check_mode: bool) -> list[str]:
    """Create what is missing of the reader identity; returns what was (or would be) created."""
    if cluster.get(f"reading namespace {namespace}", _k8s.cluster_scoped("namespaces", namespace), missing_ok=True) is None:
        raise RemoteSecretError(f"namespace {namespace} does not exist on {cluster.name}: run the namespace role first")
    role = f"istio-reader-clusterrole-{namespace}"
    rbac = {"group": "rbac.authorization.k8s.io"}
    token_secret = token_secret_name(service_account)
    binding = {
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    # (what, the object's path, its collection's path, the object to create)
    wanted = [
        (f"serviceaccount {namespace}/{service_account}", _k8s.namespaced(namespace, "serviceaccounts", service_account),
         _k8s.namespaced(namespace, "serviceaccounts"), {"metadata": {"name": service_account}}),
        (f"clusterrole {role}", _k8s.cluster_scoped("clusterroles", role, **rbac), _k8s.cluster_scoped("clusterroles", **rbac),
         {"metadata": {"name": role}, "rules": READER_RULES}),
        (f"clusterrolebinding {role}", _k8s.cluster_scoped("clusterrolebindings", role, **rbac),
         _k8s.cluster_scoped("clusterrolebindings", **rbac), binding),
        (f"secret {namespace}/{token_secret}", _k8s.namespaced(namespace, "secrets", token_secret), _k8s.namespaced(namespace, "secrets"), {
            "metadata": {"name": token_secret, "annotations": {"kubernetes.io/service-account.name": service_account}},
            "type": "kubernetes.io/service-account-token",
        }),
    ]
    created = []
    for what, path, collection, body in wanted:
        if cluster.get(f"reading {what}", path, missing_ok=True) is None:
            created.append(what)
            if not check_mode:
                cluster.request(f"creating {what}", "POST", collection, body=body)
    return created


def read_token(cluster: _k8s.Cluster, namespace: str, service_account: str, wait_seconds: int) -> tuple[str, str]:
    """The token and CA of the reader's token secret, once the token controller filled them (bounded wait)."""
    name = token_secret_name(service_account)
    deadline = time.monotonic() + wait_seconds
    while True:
        data = cluster.secret_data(namespace, name) or {}
        if data.get("token") and data.get("ca.crt"):
            return data["token"].decode(), base64.b64encode(data["ca.crt"]).decode()
        if time.monotonic() >= deadline:
            raise RemoteSecretError(
                f"the token controller did not fill secret {namespace}/{name} on {cluster.name} within {wait_seconds} s; "
                "is kube-controller-manager running?"
            )
        time.sleep(1)
