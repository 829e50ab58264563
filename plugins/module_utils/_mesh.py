# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the mesh topology of an inventory, as pure functions.

One cluster is one inventory host. This turns the hosts' variables into the topology the roles
follow (primaries, remotes, which primary watches which cluster) and lists every reason the
inventory cannot be used, before anything is written anywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ansible_collections.meshfed.istio.plugins.module_utils._names import is_dns1123_label, name_problems

ROLES = ("primary", "remote")
DEFAULT_CLUSTER_NAME = "Kubernetes"


# Mesh-wide settings: every host must agree on them. Defaults apply when a host leaves one unset.
MESH_SETTINGS = {
    "istioctl": "istioctl",
    "istio_version": "",
    "revision": "",
    "namespace": "istio-system",
    "pki_dir": "",
    "allow_migration": False,
}


@dataclass(frozen=True)
class Cluster:
    host: str
    name: str
    role: str
    network: str
    mesh_id: str
    primary: str | None = None
    kubeconfig: str = ""
    context: str = ""
    api_server: str = ""
    eastwest_external_ips: tuple = ()


def cluster_from_host(host: str, variables: dict) -> Cluster:
    return Cluster(
        host=host,
        name=variables.get("cluster_name") or host,
        role=variables.get("role") or "primary",
        network=variables.get("network") or "",
        mesh_id=variables.get("mesh_id") or "",
        primary=variables.get("primary") or None,
        kubeconfig=variables.get("kubeconfig") or "",
        context=variables.get("context") or "",
        api_server=variables.get("api_server") or "",
        eastwest_external_ips=tuple(variables.get("eastwest_external_ips") or ()),
    )


def mesh_settings(per_host: dict[str, dict]) -> tuple[dict, list[str]]:
    """The mesh-wide settings, and a problem for each one the hosts disagree on."""
    settings, found = {}, []
    for key, default in MESH_SETTINGS.items():
        values = {host: (variables.get(key) or default) for host, variables in per_host.items()}
        distinct = sorted(set(values.values()))
        if len(distinct) > 1:
            by_value = ", ".join(f"{value or '<unset>'}: {', '.join(h for h, v in values.items() if v == value)}" for value in distinct)
            found.append(f"the clusters disagree on meshfed_{key} ({by_value}); set it once for the whole inventory")
        settings[key] = distinct[0] if distinct else default
    return settings, found


def problems(clusters: list[Cluster]) -> list[str]:
    """Every reason this set of clusters is not one consistent mesh, naming the host and the fix."""
    found = name_problems([cluster.name for cluster in clusters])
    if not clusters:
        return ["the inventory has no cluster: put hosts in the groups istio_primary and istio_remote"]
    found.extend(
        f"{cluster.host}: cluster name 'Kubernetes' is Istio's default and cannot tell clusters apart; set meshfed_cluster_name"
        for cluster in clusters
        if cluster.name == DEFAULT_CLUSTER_NAME
    )
    mesh_ids = sorted({cluster.mesh_id for cluster in clusters})
    if mesh_ids == [""]:
        found.append("meshfed_mesh_id is not set: set it once for the whole inventory (group_vars/all)")
    elif len(mesh_ids) > 1:
        by_id = ", ".join(f"{mesh_id or '<unset>'}: {', '.join(c.host for c in clusters if c.mesh_id == mesh_id)}" for mesh_id in mesh_ids)
        found.append(f"the clusters disagree on meshfed_mesh_id ({by_id}); one mesh has one mesh ID")
    for cluster in clusters:
        if not cluster.network:
            found.append(f"{cluster.host}: meshfed_network is not set; every cluster names its network")
        elif not is_dns1123_label(cluster.network):
            found.append(f"{cluster.host}: network {cluster.network!r} is not a DNS-1123 label; set meshfed_network to one")
        if cluster.role not in ROLES:
            found.append(f"{cluster.host}: role {cluster.role!r} is neither primary nor remote")
    primaries = {cluster.name: cluster for cluster in clusters if cluster.role == "primary"}
    hosts = {cluster.host: cluster for cluster in clusters}
    if not primaries:
        found.append("the inventory has no primary cluster: put at least one host in the group istio_primary")
    for cluster in clusters:
        if cluster.role != "remote":
            if cluster.primary:
                found.append(f"{cluster.host}: meshfed_primary is set on a primary; only remotes name a primary")
            continue
        if not cluster.primary:
            found.append(f"{cluster.host}: a remote must name its primary; set meshfed_primary to a host of istio_primary")
        elif cluster.primary not in primaries and (cluster.primary not in hosts or hosts[cluster.primary].role != "primary"):
            found.append(
                f"{cluster.host}: meshfed_primary {cluster.primary!r} is not a primary of this inventory; "
                f"primaries: {', '.join(sorted(primaries)) or 'none'}"
            )
    return found


def primary_of(cluster: Cluster, clusters: list[Cluster]) -> Cluster | None:
    for candidate in clusters:
        if candidate.role == "primary" and cluster.primary in (candidate.name, candidate.host):
            return candidate
    return None


def watch_edges(clusters: list[Cluster]) -> list[tuple[str, str]]:
    """(watcher host, watched host): every primary watches every other primary and its own remotes."""
    edges = []
    for watcher in [cluster for cluster in clusters if cluster.role == "primary"]:
        for watched in clusters:
            if watched is watcher:
                continue
            if watched.role == "primary" or primary_of(watched, clusters) is watcher:
                edges.append((watcher.host, watched.host))
    return edges


def _cluster_facts(cluster: Cluster, clusters: list[Cluster]) -> dict:
    primary = primary_of(cluster, clusters) if cluster.role == "remote" else None
    return {
        **asdict(cluster),
        "eastwest_external_ips": list(cluster.eastwest_external_ips),
        "primary_host": primary.host if primary else None,
        "primary_name": primary.name if primary else None,
        "remotes": [other.host for other in clusters if other.role == "remote" and primary_of(other, clusters) is cluster],
        # the shared auth options for module_defaults (group/meshfed.istio.k8s, group/kubernetes.core.k8s)
        "auth": {key: value for key, value in (("kubeconfig", cluster.kubeconfig), ("context", cluster.context)) if value},
    }


def topology(clusters: list[Cluster], settings: dict | None = None) -> dict:
    """The plan the roles follow; call problems() first."""
    edges = watch_edges(clusters)
    return {
        "settings": settings or dict(MESH_SETTINGS),
        "clusters": {cluster.host: _cluster_facts(cluster, clusters) for cluster in clusters},
        "primaries": [cluster.host for cluster in clusters if cluster.role == "primary"],
        "remotes": [cluster.host for cluster in clusters if cluster.role == "remote"],
        "networks": sorted({cluster.network for cluster in clusters}),
        "mesh_id": clusters[0].mesh_id if clusters else "",
        "watches": [{"watcher": watcher, "watched": watched} for watcher, watched in edges],
        "watched_by": {
            cluster.host: [watched for watcher, watched in edges if watcher == cluster.host] for cluster in clusters
        },
    }
