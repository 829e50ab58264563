# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the mesh topology of an inventory, as pure functions.

One cluster is one inventory host. This turns the hosts' variables into the topology the roles
follow (primaries, remotes, which primary watches which cluster) and lists every reason the
inventory cannot be used, before anything is written anywhere. Inventory values are untrusted:
each is checked for its type and shape before it is compared with anything.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE

from ansible_collections.meshfed.istio.plugins.module_utils import _istio
from ansible_collections.meshfed.istio.plugins.module_utils._istio import DEFAULT_CLUSTER_NAME
from ansible_collections.meshfed.istio.plugins.module_utils._names import is_dns1123_label

ROLES = ("primary", "remote")

PREFIX = "meshfed_"
LABEL_RULE = "lowercase letters, digits and '-', at most 63 characters, starting and ending alphanumeric"
# A Kubernetes label value: the mesh ID ends up in labels and proxy metadata.
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# What `istioctl version --short` prints: 1.30.1, 1.30.0-beta.1, 1.31-dev.
ISTIO_VERSION = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?(-[0-9A-Za-z.-]+)?")
# istiod-<revision> is a Service name: at most 63 characters.
MAX_REVISION = 63 - len("istiod-")

# Mesh-wide settings: every host must agree on them. Defaults apply when a host leaves one unset.
MESH_SETTINGS = {
    "istioctl": "istioctl",
    "istio_version": "",
    "revision": "",
    "namespace": _istio.DEFAULT_NAMESPACE,
    "pki_dir": "",
    "allow_migration": False,
    # the upgrade playbook's target: a revision name and the istioctl of the target release
    "istio_target_revision": "",
    "istio_target_istioctl": "",
}


@dataclass(frozen=True)
class InventoryCluster:
    """One cluster of the mesh as the inventory describes it (a host of istio_primary or istio_remote)."""

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
    refused: tuple = ()  # variables (without the prefix) read_host refused: left out of the checks across hosts


class Refused(ValueError):
    """One inventory value that cannot be used; the text says what is wrong and what to set."""


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    return f"a {type(value).__name__}"


def _string(value: object) -> str:
    if isinstance(value, str):
        return str(value)
    hint = "quote it in the inventory" if isinstance(value, (bool, int, float)) else "give one string"
    raise Refused(f"must be a string, not {_kind(value)}; {hint}")


def _label(value: object) -> str:
    text = _string(value)
    if not is_dns1123_label(text):
        raise Refused(f"{text!r} is not a DNS-1123 label ({LABEL_RULE})")
    return text


def _cluster_name(value: object) -> str:
    text = _string(value)
    if text == DEFAULT_CLUSTER_NAME:
        raise Refused("is 'Kubernetes', Istio's default, which cannot tell clusters apart; set a name of your own")
    return _label(text)


def _mesh_id(value: object) -> str:
    text = _string(value)
    if not LABEL_VALUE.fullmatch(text):
        raise Refused(f"{text!r} is not a Kubernetes label value (letters, digits, '-', '_' and '.', at most 63 characters, starting and ending alphanumeric)")
    return text


def _hostname(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and all(is_dns1123_label(label) for label in host.split("."))


def _api_server(value: object) -> str:
    text = _string(value)
    example = "give it as https://<host>[:<port>]"
    if any(char.isspace() or not char.isprintable() for char in text):
        raise Refused(f"{text!r} contains whitespace or control characters; {example}")
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise Refused(f"{text!r} has an invalid port; {example}") from None
    if parts.scheme != "https":
        raise Refused(f"{text!r} is not an https URL; {example}")
    if parts.username is not None or parts.password is not None:
        raise Refused(f"{text!r} carries credentials; they belong in the kubeconfig, {example}")
    if not parts.hostname or not _hostname(parts.hostname):
        raise Refused(f"{text!r} has no valid host; {example}")
    if port == 0:
        raise Refused(f"{text!r} has port 0; {example}")
    if "?" in text or "#" in text:
        raise Refused(f"{text!r} has a query or fragment, which a kubeconfig server cannot carry; {example}")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)*/?", parts.path) or "/../" in f"{parts.path}/" or "/./" in f"{parts.path}/":
        raise Refused(f"{text!r} has an unusual path; {example}, with a plain path only behind an API proxy")
    return text


def _link_local_multicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.version == 4:
        return address in ipaddress.ip_network("224.0.0.0/24")
    return address.is_multicast and address.packed[1] & 0x0F == 0x02


def _address_problem(entry: object) -> str | None:
    if not isinstance(entry, str):
        return f"entry {entry!r} is {_kind(entry)}, not an address string"
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        return f"entry {entry!r} is not an IPv4 or IPv6 address"
    if getattr(address, "scope_id", None):
        return f"entry {entry!r} has a zone, which Kubernetes refuses"
    special = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local or _link_local_multicast(address)),
    )
    for what, found in special:
        if found:
            return f"entry {entry!r} is a {what} address, which Kubernetes refuses as an external IP"
    return None


def _addresses(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise Refused(f"is the string {value!r}, not a list; write it as a list: [{value}]")
    if not isinstance(value, (list, tuple)):
        raise Refused(f"must be a list of IP addresses, not {_kind(value)}")
    found = [problem for problem in map(_address_problem, value) if problem]
    found.extend(f"entry {entry!r} appears more than once" for index, entry in enumerate(value) if entry in value[:index])
    if found:
        raise Refused("; ".join(found) + "; give IPv4 or IPv6 addresses the gateway's nodes answer on")
    return tuple(str(entry) for entry in value)


def _istio_version(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise Refused(f'must be a string, not {_kind(value)} (YAML reads 1.30 as 1.3); quote it: "1.30.1"')
    text = _string(value)
    if not ISTIO_VERSION.fullmatch(text):
        raise Refused(f"{text!r} is not a version as `istioctl version --short` prints it (1.30.1, 1.31-dev); leave it unset to skip the version check")
    return text


def _revision(value: object) -> str:
    text = _label(value)
    if len(text) > MAX_REVISION:
        raise Refused(f"{text!r} is longer than {MAX_REVISION} characters, so istiod-{text} is no Service name")
    return text


def _pki_dir(value: object) -> str:
    text = _string(value)
    if not posixpath.isabs(text) or "\n" in text:
        raise Refused(
            f"{text!r} is not an absolute path: a relative one depends on the directory ansible-playbook runs in, "
            "and a run elsewhere would create a second root CA; give an absolute path such as "
            "'{{ inventory_dir }}/meshfed-pki'"
        )
    return text


def _boolean(value: object) -> bool:
    """Real booleans and what Ansible's bool type reads as one ("false", "no", "off", "0", ...)."""
    if isinstance(value, bool):
        return value
    key = value.lower().strip() if isinstance(value, str) else value
    if isinstance(key, (str, int)) and key in BOOLEANS_TRUE:
        return True
    if isinstance(key, (str, int)) and key in BOOLEANS_FALSE:
        return False
    raise Refused(f"{value!r} is not a boolean; set true or false")


REQUIRED = object()


@dataclass(frozen=True)
class Unreadable:
    """A value the caller could not read (a template that fails), and why."""

    reason: str


# Per variable (without the meshfed_ prefix): its check and its default when unset (None or "").
CLUSTER_VARIABLES: dict[str, tuple[Callable[[object], object], object]] = {
    "cluster_name": (_cluster_name, ""),
    "network": (_label, REQUIRED),
    "mesh_id": (_mesh_id, ""),
    "primary": (_string, None),
    "kubeconfig": (_string, ""),
    "context": (_string, ""),
    "api_server": (_api_server, ""),
    "eastwest_external_ips": (_addresses, ()),
}
SETTING_CHECKS: dict[str, Callable[[object], object]] = {
    "istioctl": _string,
    "istio_version": _istio_version,
    "revision": _revision,
    "namespace": _label,
    "pki_dir": _pki_dir,
    "allow_migration": _boolean,
    "istio_target_revision": _revision,
    "istio_target_istioctl": _string,
}
VARIABLES = tuple(PREFIX + key for key in (*CLUSTER_VARIABLES, *SETTING_CHECKS))


def _unset(value: object) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def _distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, char_b in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (char_a != char_b))
    return row[-1]


def _misspelt(name: str) -> str | None:
    if not name.startswith(PREFIX) or name in VARIABLES:
        return None
    close = [known for known in VARIABLES if _distance(name, known) <= 2]
    return close[0] if close else None


def read_host(host: str, variables: Mapping, role: str = "primary") -> tuple[InventoryCluster, dict, list[str]]:
    """One host's cluster, its mesh-wide settings and a problem per variable that cannot be used.

    `variables` holds the host's meshfed_* variables by their full names; None or "" means unset, and an
    Unreadable one the caller could not read.
    A refused variable is named in the cluster's `refused` (its field keeps the default), or is None
    in the settings, and is left out of the checks across hosts.
    """
    found, values, refused = [], {}, []
    for name in sorted(variables):
        close = _misspelt(name)
        if close:
            found.append(f"{host}: {name} is not a variable of meshfed.istio; did you mean {close}?")
    for key, (check, default) in CLUSTER_VARIABLES.items():
        raw = variables.get(PREFIX + key)
        values[key] = "" if default is REQUIRED else default
        if isinstance(raw, Unreadable):
            refused.append(key)
            found.append(f"{host}: {PREFIX}{key} cannot be read: {raw.reason}")
            continue
        if _unset(raw):
            values[key] = default
            continue
        try:
            values[key] = check(raw)
        except Refused as refusal:
            refused.append(key)
            found.append(f"{host}: {PREFIX}{key} {refusal}")
    if values["network"] is REQUIRED:
        values["network"] = ""
        refused.append("network")
        found.append(f"{host}: meshfed_network is not set; every cluster names its network")
    if _unset(variables.get(PREFIX + "cluster_name")):
        values["cluster_name"] = host
        if host == DEFAULT_CLUSTER_NAME or not is_dns1123_label(host):
            refused.append("cluster_name")
            found.append(
                f"{host}: the inventory hostname is the cluster name when meshfed_cluster_name is unset, and {host!r} "
                f"is not a DNS-1123 label ({LABEL_RULE}); set meshfed_cluster_name"
            )
    settings = {}
    for key, check in SETTING_CHECKS.items():
        raw = variables.get(PREFIX + key)
        if isinstance(raw, Unreadable):
            settings[key] = None
            found.append(f"{host}: {PREFIX}{key} cannot be read: {raw.reason}")
            continue
        try:
            settings[key] = MESH_SETTINGS[key] if _unset(raw) else check(raw)
        except Refused as refusal:
            settings[key] = None
            found.append(f"{host}: {PREFIX}{key} {refusal}")
    name = values.pop("cluster_name")
    cluster = InventoryCluster(host=host, name=name, role=role, refused=tuple(refused), **values)
    return cluster, settings, found


def _show(value: object) -> str:
    return "<unset>" if value == "" else str(value)


def mesh_settings(per_host: dict[str, dict]) -> tuple[dict, list[str]]:
    """The mesh-wide settings, and a problem for each one the hosts disagree on.

    A value of None is one read_host refused (and reported): it is left out of the comparison.
    """
    settings, found = {}, []
    for key, default in MESH_SETTINGS.items():
        values = {}
        for host, variables in per_host.items():
            value = variables.get(key, default)
            if value is not None:
                values[host] = default if _unset(value) else value
        distinct = sorted(set(values.values()), key=lambda value: (str(type(value)), value))
        if len(distinct) > 1:
            by_value = ", ".join(f"{_show(value)}: {', '.join(h for h, v in values.items() if v == value)}" for value in distinct)
            found.append(f"the clusters disagree on meshfed_{key} ({by_value}); set it once for the whole inventory")
        settings[key] = distinct[0] if distinct else default
    return settings, found


def _hosts(clusters: Iterable[InventoryCluster]) -> str:
    return ", ".join(cluster.host for cluster in clusters)


def _valid(clusters: list[InventoryCluster], key: str) -> list[InventoryCluster]:
    return [cluster for cluster in clusters if key not in cluster.refused]


def _primary_problem(remote: InventoryCluster, clusters: list[InventoryCluster], primaries: str) -> str | None:
    wanted = remote.primary
    if not wanted:
        return f"{remote.host}: a remote must name its primary; set meshfed_primary to a host of istio_primary ({primaries})"
    by_host = [cluster for cluster in clusters if cluster.host == wanted]
    by_name = [cluster for cluster in _valid(clusters, "cluster_name") if cluster.name == wanted and cluster.host != wanted]
    matches = by_host + by_name
    if not matches:
        return f"{remote.host}: meshfed_primary {wanted!r} is not a primary of this inventory (no host or cluster has that name); primaries: {primaries}"
    if len(matches) > 1:
        named = [f"the inventory name of {c.host}" for c in by_host] + [f"the cluster name of {c.host}" for c in by_name]
        return (
            f"{remote.host}: meshfed_primary {wanted!r} is ambiguous: it is {' and '.join(named)}; "
            "give each cluster a name no other host uses as inventory name or cluster name"
        )
    if matches[0] is remote:
        return f"{remote.host}: meshfed_primary names this remote itself; set it to a host of istio_primary ({primaries})"
    if matches[0].role != "primary":
        return f"{remote.host}: meshfed_primary {wanted!r} is not a primary: {matches[0].host} is a remote; set it to a host of istio_primary ({primaries})"
    return None


def problems(clusters: list[InventoryCluster]) -> list[str]:
    """Every reason this set of clusters is not one consistent mesh, naming the host and the fix.

    Checks across hosts; read_host checked each value, and a value it refused is left out here.
    """
    if not clusters:
        return ["the inventory has no cluster: put hosts in the groups istio_primary and istio_remote"]
    found = []
    named = _valid(clusters, "cluster_name")
    for name in sorted({c.name for c in named if [d.name for d in named].count(c.name) > 1}):
        found.append(
            f"cluster name {name!r} appears more than once ({_hosts(c for c in named if c.name == name)}); "
            "every cluster name must be unique: set meshfed_cluster_name"
        )
    with_id = _valid(clusters, "mesh_id")
    mesh_ids = sorted({cluster.mesh_id for cluster in with_id})
    if mesh_ids == [""]:
        found.append("meshfed_mesh_id is not set: set it once for the whole inventory (group_vars/all)")
    elif len(mesh_ids) > 1:
        by_id = ", ".join(f"{mesh_id or '<unset>'}: {_hosts(c for c in with_id if c.mesh_id == mesh_id)}" for mesh_id in mesh_ids)
        found.append(f"the clusters disagree on meshfed_mesh_id ({by_id}); one mesh has one mesh ID")
    found.extend(f"{c.host}: role {c.role!r} is neither primary nor remote" for c in clusters if c.role not in ROLES)
    reach: dict[tuple[str, str], list[InventoryCluster]] = {}
    for cluster in clusters:
        if not {"kubeconfig", "context"} & set(cluster.refused):
            reach.setdefault((cluster.kubeconfig, cluster.context), []).append(cluster)
    for (kubeconfig, context), same in reach.items():
        if len(same) > 1:
            found.append(
                f"{_hosts(same)}: these hosts reach the same Kubernetes cluster (meshfed_kubeconfig "
                f"{kubeconfig or '<default>'}, meshfed_context {context or '<current>'}); "
                "give each host its own meshfed_context or meshfed_kubeconfig"
            )
    primaries = _hosts(cluster for cluster in clusters if cluster.role == "primary") or "none"
    if primaries == "none":
        found.append("the inventory has no primary cluster: put at least one host in the group istio_primary")
    for cluster in _valid(clusters, "primary"):
        if cluster.role == "remote":
            problem = _primary_problem(cluster, clusters, primaries)
            if problem:
                found.append(problem)
        elif cluster.primary:
            found.append(f"{cluster.host}: meshfed_primary is set on a primary; only remotes name a primary")
    return found


def plan(
    variables: Mapping[str, Mapping],
    remotes: Iterable[str] = (),
    primaries: Iterable[str] = (),
    groups: tuple[str, str] = ("istio_primary", "istio_remote"),
) -> tuple[dict, list[str]]:
    """The topology of the inventory, or every problem that keeps it from being one mesh (and {}).

    `variables` maps each cluster host to its meshfed_* variables (full names, values as the inventory
    gives them); hosts in `remotes` are remotes, all others primaries. A host listed in both `primaries`
    and `remotes` is refused.
    """
    remotes, primaries = set(remotes), set(primaries)
    clusters, settings_per_host, found = [], {}, []
    for host, host_variables in variables.items():
        cluster, settings, host_problems = read_host(host, host_variables, "remote" if host in remotes else "primary")
        if host in remotes and host in primaries:
            host_problems.insert(0, f"{host}: the host is in both {groups[0]} and {groups[1]}; remove it from one of them")
        clusters.append(cluster)
        settings_per_host[host] = settings
        found.extend(host_problems)
    settings, disagreements = mesh_settings(settings_per_host)
    found = _merge(found + problems(clusters) + disagreements)
    return ({}, found) if found else (topology(clusters, settings), [])


def _merge(found: list[str]) -> list[str]:
    """One problem per message: the same refusal on several hosts (a group variable) names them together."""
    hosts: dict[str, list[str]] = {}
    for problem in found:
        host, separator, text = problem.partition(": ")
        if separator and text.startswith(PREFIX) and " " not in host:
            hosts.setdefault(text, []).append(host)
        else:
            hosts.setdefault(problem, [])
    return [f"{', '.join(names)}: {text}" if names else text for text, names in hosts.items()]


def primary_of(cluster: InventoryCluster, clusters: list[InventoryCluster]) -> InventoryCluster | None:
    for candidate in clusters:
        if candidate.role == "primary" and cluster.primary in (candidate.name, candidate.host):
            return candidate
    return None


def watch_edges(clusters: list[InventoryCluster]) -> list[tuple[str, str]]:
    """(watcher host, watched host): every primary watches every other cluster of the mesh, remotes of other primaries
    included. An istiod serves endpoints only of the clusters it watches, so a proxy connected to primary P2 sees the
    endpoints of P1's remote R only when P2 holds R's remote secret; R's namespace annotation
    (topology.istio.io/controlPlaneClusters) keeps P2 from managing R. A remote watches nothing."""
    return [(watcher.host, watched.host) for watcher in clusters if watcher.role == "primary" for watched in clusters if watched is not watcher]


def _cluster_facts(cluster: InventoryCluster, clusters: list[InventoryCluster]) -> dict:
    primary = primary_of(cluster, clusters) if cluster.role == "remote" else None
    facts = asdict(cluster)
    del facts["refused"]
    return {
        **facts,
        "eastwest_external_ips": list(cluster.eastwest_external_ips),
        "primary_host": primary.host if primary else None,
        "primary_name": primary.name if primary else None,
        "remotes": [other.host for other in clusters if other.role == "remote" and primary_of(other, clusters) is cluster],
        # the shared auth options for module_defaults (group/meshfed.istio.k8s, group/kubernetes.core.k8s)
        "auth": {key: value for key, value in (("kubeconfig", cluster.kubeconfig), ("context", cluster.context)) if value},
    }


def topology(clusters: list[InventoryCluster], settings: dict | None = None) -> dict:
    """The plan the roles follow; call problems() first."""
    edges = watch_edges(clusters)
    return {
        "settings": settings or dict(MESH_SETTINGS),
        "names": _istio.role_names(),
        "clusters": {cluster.host: _cluster_facts(cluster, clusters) for cluster in clusters},
        "primaries": [cluster.host for cluster in clusters if cluster.role == "primary"],
        "remotes": [cluster.host for cluster in clusters if cluster.role == "remote"],
        "networks": sorted({cluster.network for cluster in clusters}),
        "mesh_id": clusters[0].mesh_id if clusters else "",
        "watches": [{"watcher": watcher, "watched": watched} for watcher, watched in edges],
        "watched_by": {cluster.host: [watched for watcher, watched in edges if watcher == cluster.host] for cluster in clusters},
    }
