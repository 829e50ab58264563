# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: clusters leaving the mesh, and role changes, as decisions apart from the API calls.

What a leave may delete is exactly what this collection created: objects carrying its managed-by label, of the
kinds and names it uses (remote secrets, the reader's ServiceAccount, RBAC and token Secrets, install records).
"""

from __future__ import annotations

from collections.abc import Iterable

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s, _remote_secret
from ansible_collections.meshfed.istio.plugins.module_utils._istioctl import STATE_PREFIX


def leave_plan(plan: dict, leaving: Iterable[str]) -> dict:
    """Which hosts leave and which primaries forget them, or the problems that refuse the leave.

    `leaving` names hosts or cluster names of the inventory (the leaving clusters stay in the inventory for the
    leave: they are reached with their own kubeconfig and context).
    """
    clusters = plan.get("clusters") or {}
    by_name = {facts["name"]: host for host, facts in clusters.items()}
    problems, hosts = [], []
    wanted = leaving.split(",") if isinstance(leaving, str) else list(leaving or [])
    wanted = [entry.strip() for entry in wanted if isinstance(entry, str) and entry.strip()]
    if not wanted:
        problems.append("no cluster to leave: set leave_clusters to the inventory hosts (or cluster names) that leave the mesh")
    for entry in wanted:
        host = entry if entry in clusters else by_name.get(entry)
        if entry in clusters and by_name.get(entry, entry) != entry:
            problems.append(f"{entry!r} is ambiguous: the inventory name of {entry} and the cluster name of {by_name[entry]}; name the host instead")
        elif host is None:
            problems.append(
                f"{entry!r} is not a cluster of this inventory ({', '.join(sorted(clusters)) or 'none'}); "
                "keep a leaving cluster in the inventory until the leave is done: it is reached with its own credentials"
            )
        elif host not in hosts:
            hosts.append(host)
    for host in hosts:
        staying = [remote for remote in clusters[host].get("remotes") or [] if remote not in hosts]
        if staying:
            problems.append(
                f"{host} is the primary of {', '.join(staying)}, which stay: leave those remotes too, or give them "
                "another primary first (a remote without its primary has no control plane)"
            )
    names = [clusters[host]["name"] for host in hosts]
    return {
        "problems": problems,
        "leaving": hosts,
        "names": names,
        "watchers": [host for host in plan.get("primaries") or [] if host not in hosts] if not problems else [],
    }


def installed_role_problem(role: str, state: dict, cluster: str) -> str | None:
    """Why the cluster's installed Istio cannot take the inventory's role in place (a promotion or a demotion), or None.

    A remote install runs no istiod and its injector calls a primary's (remotePilotAddress); a primary runs istiod.
    """
    istiods = [item.get("name", "") for item in state.get("istiods") or []]
    remote_pilot = (state.get("injector") or {}).get("remote_pilot_address") or ""
    if role == "primary" and not istiods and remote_pilot:
        return (
            f"cluster {cluster} is installed as a remote (no istiod; its injector calls {remote_pilot}) but the inventory "
            "makes it a primary. Promoting a remote in place is not supported: the remote's istiod Service, injector and "
            "namespace annotation would keep pointing at its old primary. Run meshfed.istio.leave for it with "
            "leave_uninstall_istio=true, then site with it in istio_primary"
        )
    if role == "remote" and istiods:
        return (
            f"cluster {cluster} runs istiod ({', '.join(istiods)}) but the inventory makes it a remote. Demoting a primary "
            "in place is not supported: its istiod, the remote secrets it holds and its proxies would stay. Run "
            "meshfed.istio.leave for it with leave_uninstall_istio=true (its remotes leave with it or move first), "
            "then site with it in istio_remote"
        )
    return None


def _meta(item: dict) -> dict:
    return item.get("metadata") or {}


def remote_secrets_to_delete(secrets: list[dict], names: Iterable[str] | None) -> list[dict]:
    """The collection's remote secrets (managed-by label, istio/multiCluster=true) holding any of `names` (by data key or
    cluster annotation); all of them when names is None."""
    names = None if names is None else set(names)
    chosen = []
    for item in secrets:
        if not (_remote_secret.is_remote_secret(item) and _remote_secret.is_managed(item)):
            continue
        held = set(item.get("data") or {}) | {(_meta(item).get("annotations") or {}).get(_istio.CLUSTER_ANNOTATION, "")}
        if names is None or held & names:
            chosen.append(item)
    return chosen


def reader_objects_to_delete(items: dict[str, dict | None], token_secrets: list[dict], service_account: str) -> list[tuple[str, dict]]:
    """(kind, object) of the reader identity this collection created: the named ServiceAccount, ClusterRole and binding
    when they carry its label (Istio's own install makes the same names without it), every token Secret of its own."""
    chosen = [("secret", item) for item in token_secrets if _remote_secret.is_token_secret(item, service_account) and _remote_secret.is_managed(item)]
    for kind in ("clusterrolebinding", "clusterrole", "serviceaccount"):
        item = items.get(kind)
        if item is not None and _remote_secret.is_managed(item):
            chosen.append((kind, item))
    return chosen


def install_records_to_delete(configmaps: list[dict]) -> list[dict]:
    return [item for item in configmaps if _meta(item).get("name", "").startswith(STATE_PREFIX) and _remote_secret.is_managed(item)]


def _delete(cluster: _k8s.Cluster, what: str, path: str, item: dict, check_mode: bool) -> str:
    if not check_mode:
        # the uid precondition: never delete an object of the same name created since it was read
        cluster.request(f"deleting {what}", "DELETE", path, body={"preconditions": {"uid": _meta(item)["uid"]}}, missing_ok=True)
    return what


def cleanup(
    cluster: _k8s.Cluster,
    namespace: str,
    *,
    remote_secrets_of: list[str] | None,
    all_remote_secrets: bool,
    reader: bool,
    install_records: bool,
    service_account: str,
    check_mode: bool,
) -> list[str]:
    """Delete what this collection created, as asked; returns what was (or would be) deleted."""
    deleted = []
    if all_remote_secrets or remote_secrets_of:
        secrets = cluster.items(
            f"listing remote secrets in {namespace}",
            _k8s.namespaced(namespace, "secrets"),
            labelSelector=f"{_istio.MULTICLUSTER_LABEL}=true,{_istio.MANAGED_BY_LABEL}={_istio.MANAGED_BY}",
        )
        for item in remote_secrets_to_delete(secrets, None if all_remote_secrets else remote_secrets_of):
            name = _meta(item)["name"]
            deleted.append(_delete(cluster, f"secret {namespace}/{name}", _k8s.namespaced(namespace, "secrets", name), item, check_mode))
    if reader:
        role = _remote_secret.reader_role_name(namespace)
        rbac = {"group": "rbac.authorization.k8s.io"}
        paths = {
            "serviceaccount": _k8s.namespaced(namespace, "serviceaccounts", service_account),
            "clusterrole": _k8s.cluster_scoped("clusterroles", role, **rbac),
            "clusterrolebinding": _k8s.cluster_scoped("clusterrolebindings", role, **rbac),
        }
        items = {kind: cluster.get(f"reading {kind}", path, missing_ok=True) for kind, path in paths.items()}
        tokens = _remote_secret.token_secrets(cluster, namespace, service_account)
        for kind, item in reader_objects_to_delete(items, tokens, service_account):
            name = _meta(item)["name"]
            if kind == "secret":
                deleted.append(_delete(cluster, f"secret {namespace}/{name}", _k8s.namespaced(namespace, "secrets", name), item, check_mode))
            else:
                label = f"{kind} {namespace}/{name}" if kind == "serviceaccount" else f"{kind} {name}"
                deleted.append(_delete(cluster, label, paths[kind], item, check_mode))
    if install_records:
        configmaps = cluster.items(
            f"listing configmaps in {namespace}", _k8s.namespaced(namespace, "configmaps"), labelSelector=f"{_istio.MANAGED_BY_LABEL}={_istio.MANAGED_BY}"
        )
        for item in install_records_to_delete(configmaps):
            name = _meta(item)["name"]
            deleted.append(_delete(cluster, f"configmap {namespace}/{name}", _k8s.namespaced(namespace, "configmaps", name), item, check_mode))
        # the cluster's intermediate CA key: with istiod gone nothing here may keep signing for the mesh
        cacerts = cluster.get(
            f"reading secret {namespace}/{_istio.CACERTS_SECRET}", _k8s.namespaced(namespace, "secrets", _istio.CACERTS_SECRET), missing_ok=True
        )
        if cacerts is not None and _remote_secret.is_managed(cacerts):
            deleted.append(
                _delete(
                    cluster, f"secret {namespace}/{_istio.CACERTS_SECRET}", _k8s.namespaced(namespace, "secrets", _istio.CACERTS_SECRET), cacerts, check_mode
                )
            )
    return deleted
