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
import datetime
import ipaddress
import time
from urllib.parse import urlparse

from ansible.module_utils.common.yaml import yaml_dump, yaml_load

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s, _kubeconfig

TOKEN_SUFFIX = "istio-remote-secret-token"
TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
MANAGED = {_istio.MANAGED_BY_LABEL: _istio.MANAGED_BY}
READ = ["get", "list", "watch"]
# What a primary's istiod reads in a cluster it watches (the rules of Istio's reader role).
READER_RULES = [
    {
        "apiGroups": [
            "config.istio.io",
            "security.istio.io",
            "networking.istio.io",
            "authentication.istio.io",
            "rbac.istio.io",
            "telemetry.istio.io",
            "extensions.istio.io",
        ],
        "resources": ["*"],
        "verbs": READ,
    },
    {"apiGroups": [""], "resources": ["endpoints", "pods", "services", "nodes", "replicationcontrollers", "namespaces", "secrets"], "verbs": READ},
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


def reader_role_name(namespace: str, revision: str = "") -> str:
    """The reader ClusterRole (and binding) as Istio's install names it for a revision."""
    infix = "" if revision in ("", _istio.DEFAULT_REVISION) else f"{revision}-"
    return f"istio-reader-clusterrole-{infix}{namespace}"


def remote_secret_name(cluster_name: str) -> str:
    return f"istio-remote-secret-{cluster_name}"


def is_managed(item: dict) -> bool:
    """Whether this collection created the object (its managed-by label)."""
    return ((item.get("metadata") or {}).get("labels") or {}).get(_istio.MANAGED_BY_LABEL) == _istio.MANAGED_BY


def is_token_secret(item: dict, service_account: str) -> bool:
    """A reader token Secret of this collection: the first one's name, or a rotated one (that name, a dash, a stamp,
    and the managed-by label), of type service-account-token for the reader ServiceAccount."""
    meta = item.get("metadata") or {}
    name, base = meta.get("name", ""), token_secret_name(service_account)
    ours = name == base or (name.startswith(f"{base}-") and is_managed(item))
    return ours and item.get("type") == TOKEN_TYPE and (meta.get("annotations") or {}).get(SA_NAME_ANNOTATION) == service_account


def _created(item: dict) -> str:
    return (item.get("metadata") or {}).get("creationTimestamp") or ""


def newest_first(tokens: list[dict]) -> list[dict]:
    """Token Secrets by creation, newest first (a rotated name's stamp breaks ties within a second)."""
    return sorted(tokens, key=lambda item: (_created(item), item["metadata"]["name"]), reverse=True)


def rotation_due(tokens: list[dict], older_than_days: int | None, now: datetime.datetime) -> bool:
    """Whether a new token is due: rotation asked for (days set) and the newest token is at least that old."""
    if older_than_days is None or older_than_days < 0 or not tokens:
        return False
    created = datetime.datetime.fromisoformat(_created(newest_first(tokens)[0]).replace("Z", "+00:00"))
    return now - created >= datetime.timedelta(days=older_than_days)


def rotated_name(service_account: str, now: datetime.datetime) -> str:
    return f"{token_secret_name(service_account)}-{now.strftime('%Y%m%d%H%M%S')}"


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
            "name": remote_secret_name(cluster_name),
            "namespace": namespace,
            "labels": {_istio.MULTICLUSTER_LABEL: "true", **MANAGED},
            "annotations": {_istio.CLUSTER_ANNOTATION: cluster_name},
        },
        "data": {cluster_name: base64.b64encode(config.encode()).decode()},
    }


def ensure_reader(cluster: _k8s.Cluster, namespace: str, service_account: str, check_mode: bool, revision: str = "") -> list[str]:
    """Create what is missing of the reader identity; returns what was (or would be) created."""
    if cluster.get(f"reading namespace {namespace}", _k8s.cluster_scoped("namespaces", namespace), missing_ok=True) is None:
        raise RemoteSecretError(f"namespace {namespace} does not exist on {cluster.name}: run the namespace role first")
    role = reader_role_name(namespace, revision)
    rbac = {"group": "rbac.authorization.k8s.io"}
    token_secret = token_secret_name(service_account)
    binding = {
        "metadata": {"name": role, "labels": MANAGED},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    # (what, the object's path, its collection's path, the object to create)
    wanted = [
        (
            f"serviceaccount {namespace}/{service_account}",
            _k8s.namespaced(namespace, "serviceaccounts", service_account),
            _k8s.namespaced(namespace, "serviceaccounts"),
            {"metadata": {"name": service_account, "labels": MANAGED}},
        ),
        (
            f"clusterrole {role}",
            _k8s.cluster_scoped("clusterroles", role, **rbac),
            _k8s.cluster_scoped("clusterroles", **rbac),
            {"metadata": {"name": role, "labels": MANAGED}, "rules": READER_RULES},
        ),
        (f"clusterrolebinding {role}", _k8s.cluster_scoped("clusterrolebindings", role, **rbac), _k8s.cluster_scoped("clusterrolebindings", **rbac), binding),
    ]
    created = []
    for what, path, collection, body in wanted:
        if cluster.get(f"reading {what}", path, missing_ok=True) is None:
            created.append(what)
            if not check_mode:
                cluster.request(f"creating {what}", "POST", collection, body=body)
    if not token_secrets(cluster, namespace, service_account):
        created.append(create_token(cluster, namespace, service_account, token_secret, check_mode))
    return created


def token_secrets(cluster: _k8s.Cluster, namespace: str, service_account: str) -> list[dict]:
    """The reader's token Secrets of this collection, newest first."""
    items = cluster.items(f"listing secrets in {namespace}", _k8s.namespaced(namespace, "secrets"), fieldSelector=f"type={TOKEN_TYPE}")
    return newest_first([item for item in items if is_token_secret(item, service_account)])


def create_token(cluster: _k8s.Cluster, namespace: str, service_account: str, name: str, check_mode: bool) -> str:
    """A long-lived token Secret for the reader (the token controller fills it); returns what was (or would be) created."""
    what = f"secret {namespace}/{name}"
    if not check_mode:
        cluster.request(
            f"creating {what}",
            "POST",
            _k8s.namespaced(namespace, "secrets"),
            body={
                "metadata": {"name": name, "labels": MANAGED, "annotations": {SA_NAME_ANNOTATION: service_account}},
                "type": TOKEN_TYPE,
            },
        )
    return what


def check_token(cluster: _k8s.Cluster, namespace: str, token: str, ca_data: str) -> None:
    """The token authenticates at the API server this module reached, and may read what istiod reads (raises if not)."""
    config = yaml_load(kubeconfig("check", cluster.host, ca_data, token))
    conn, unsafe, invalid = _kubeconfig.untrusted_connection(config)
    if conn is None:
        raise RemoteSecretError(f"the new reader token of {cluster.name} cannot be used: {'; '.join(unsafe + invalid)}")
    checker = _k8s.Cluster.of_connection(conn, cluster.timeout, f"{cluster.name} (new reader token)")
    try:
        checker.get("listing services with the new reader token", "/api/v1/services", limit=1)
        checker.get("reading the Istio namespace with the new reader token", _k8s.cluster_scoped("namespaces", namespace))
    except _k8s.K8sError as exc:
        raise RemoteSecretError(f"{exc}; the old token is kept") from exc


def retire(cluster: _k8s.Cluster, namespace: str, service_account: str, check_mode: bool) -> list[str]:
    """Delete every reader token Secret of this collection but the newest; returns what was (or would be) deleted."""
    retired = []
    for item in token_secrets(cluster, namespace, service_account)[1:]:
        name = item["metadata"]["name"]
        retired.append(f"secret {namespace}/{name}")
        if not check_mode:
            cluster.request(
                f"deleting secret {namespace}/{name}",
                "DELETE",
                _k8s.namespaced(namespace, "secrets", name),
                body={"preconditions": {"uid": item["metadata"]["uid"]}},
                missing_ok=True,
            )
    return retired


def read_token(cluster: _k8s.Cluster, namespace: str, name: str, wait_seconds: int) -> tuple[str, str]:
    """The token and CA of a reader token secret, once the token controller filled them (bounded wait)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        data = cluster.secret_data(namespace, name) or {}
        if data.get("token") and data.get("ca.crt"):
            return data["token"].decode(), base64.b64encode(data["ca.crt"]).decode()
        if time.monotonic() >= deadline:
            raise RemoteSecretError(
                f"the token controller did not fill secret {namespace}/{name} on {cluster.name} within {wait_seconds} s; is kube-controller-manager running?"
            )
        time.sleep(1)
