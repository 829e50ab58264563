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


@dataclass(frozen=True)
class Cluster:
    host: str
    name: str
    role: str
    network: str
    mesh_id: str
    primary: str | None = None


def cluster_from_host(host: str, variables: dict) -> Cluster:
    return Cluster(
        host=host,
        name=variables.get("cluster_name") or host,
        role=variables.get("role") or "primary",
        network=variables.get("network") or "",
        mesh_id=variables.get("mesh_id") or "",
        primary=variables.get("primary") or None,
    )


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
    primaries = [cluster for cluster in clusters if cluster.role == "primary"]
    for watcher in primaries:
        for watched in clusters:
            if watched is watcher:
                continue
            if watched.role == "primary" or primary_of(watched, clusters) is watcher:
                edges.append((watcher.host, watched.host))
    return edges


def topology(clusters: list[Cluster]) -> dict:
    """The plan the roles follow; call problems() first."""
    edges = watch_edges(clusters)
    return {
        "clusters": {cluster.host: asdict(cluster) for cluster in clusters},
        "primaries": [cluster.host for cluster in clusters if cluster.role == "primary"],
        "remotes": [cluster.host for cluster in clusters if cluster.role == "remote"],
        "networks": sorted({cluster.network for cluster in clusters}),
        "mesh_id": clusters[0].mesh_id if clusters else "",
        "watches": [{"watcher": watcher, "watched": watched} for watcher, watched in edges],
        "watched_by": {
            cluster.host: [watched for watcher, watched in edges if watcher == cluster.host] for cluster in clusters
        },
    }
