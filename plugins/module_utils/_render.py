# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: what the roles write, from one cluster of the mesh plan and the mesh settings.

The input is what meshfed.istio.mesh_plan returns (`clusters[host]` and `settings`); the output is
the IstioOperator or the Kubernetes objects, rendered by module_utils/_istio. The filters of the same
names are thin wrappers around these functions.
"""

from __future__ import annotations

from ansible_collections.meshfed.istio.plugins.module_utils import _istio

CLUSTER_KEYS = ("name", "mesh_id", "network", "role", "remotes", "primary_name")
SETTINGS_KEYS = ("namespace", "revision")


class RenderError(ValueError):
    pass


def _check(cluster: object, settings: object) -> None:
    if not isinstance(cluster, dict) or any(key not in cluster for key in CLUSTER_KEYS):
        raise RenderError(f"takes a cluster of meshfed.istio.mesh_plan (clusters[inventory_hostname]) with keys {', '.join(CLUSTER_KEYS)}")
    if not isinstance(settings, dict) or any(key not in settings for key in SETTINGS_KEYS):
        raise RenderError(f"takes the settings of meshfed.istio.mesh_plan (keys {', '.join(SETTINGS_KEYS)}) as its first argument")


def control_plane(cluster: dict, settings: dict, remote_pilot_address: str = "", overlay: dict | None = None, multiroot: bool = True) -> dict:
    """The cluster's control plane IstioOperator: a primary (exposing istiod when it has remotes) or a remote of its primary.

    multiroot: the primary's rotation flags (a remote takes its primary's; see _istio.control_plane)."""
    _check(cluster, settings)
    if not isinstance(multiroot, bool):
        raise RenderError(f"multiroot must be a boolean, got {type(multiroot).__name__}")
    if cluster["role"] == "remote" and not remote_pilot_address:
        raise RenderError(f"cluster {cluster['name']} is a remote: remote_pilot_address (its primary's gateway address) is required")
    return _istio.control_plane(
        mesh_id=cluster["mesh_id"],
        cluster_name=cluster["name"],
        network=cluster["network"],
        namespace=settings["namespace"],
        revision=settings["revision"],
        role=cluster["role"],
        external_istiod=bool(cluster["remotes"]),
        remote_pilot_address=remote_pilot_address if cluster["role"] == "remote" else "",
        multiroot=multiroot,
        overlay=overlay,
    )


def eastwest_operator(cluster: dict, settings: dict, overlay: dict | None = None) -> dict:
    _check(cluster, settings)
    return _istio.eastwest_gateway(network=cluster["network"], namespace=settings["namespace"], revision=settings["revision"], overlay=overlay)


def eastwest_objects(cluster: dict, settings: dict) -> list[dict]:
    _check(cluster, settings)
    return _istio.eastwest_objects(settings["namespace"], expose_istiod=bool(cluster["remotes"]), revision=settings["revision"])


def istio_namespace(cluster: dict, settings: dict) -> dict:
    _check(cluster, settings)
    return _istio.namespace_object(settings["namespace"], cluster["network"], cluster["primary_name"] if cluster["role"] == "remote" else None)
