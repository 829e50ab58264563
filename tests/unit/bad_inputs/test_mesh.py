# -*- coding: utf-8 -*-
"""Bad inventory values for meshfed.istio.mesh_plan: each is refused by the pure plan, naming host and variable.

A case's value changes a good inventory of three clusters (east and west primaries, edge a remote of
west): per host, the meshfed_* variables to set (added hosts are primaries with a network and a
context of their own), and optionally `remotes` / `primaries`, the groups' members.
"""

from __future__ import annotations

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _mesh

from cases import Case

BASE = {
    "east": {"meshfed_network": "network1"},
    "west": {"meshfed_network": "network2"},
    "edge": {"meshfed_network": "network2", "meshfed_primary": "west"},
}
GROUPS = {"primaries": ["east", "west"], "remotes": ["edge"]}


def feed(value: dict) -> tuple[dict, list[str], list[str]]:
    """The variables per host and the members of istio_remote and istio_primary that a case describes."""
    variables = {host: {"meshfed_mesh_id": "mesh1", "meshfed_context": f"{host}-ctx", **given} for host, given in BASE.items()}
    for host, given in value.items():
        if host in GROUPS:
            continue
        variables.setdefault(host, {"meshfed_mesh_id": "mesh1", "meshfed_network": "network3", "meshfed_context": f"{host}-ctx"})
        variables[host].update(given)
    return variables, value.get("remotes", GROUPS["remotes"]), value.get("primaries", GROUPS["primaries"])


def on(host: str, variable: str, value: object) -> dict:
    return {host: {variable: value}}


CN, NET, ID, PRI = "meshfed_cluster_name", "meshfed_network", "meshfed_mesh_id", "meshfed_primary"
IPS, API, NS = "meshfed_eastwest_external_ips", "meshfed_api_server", "meshfed_namespace"
MIG, REV, VER = "meshfed_allow_migration", "meshfed_revision", "meshfed_istio_version"
EVERY = ("east", "west", "edge")


def everywhere(variable: str, value: object) -> dict:
    return {host: {variable: value} for host in EVERY}


CASES: list[Case] = [
    # Cluster names
    Case("mesh-cluster-name-list", CN, on("east", CN, ["east"]), "east: meshfed_cluster_name must be a string, not a list", "crash"),
    Case("mesh-cluster-name-mapping", CN, on("east", CN, {"name": "east"}), "east: meshfed_cluster_name must be a string, not a mapping", "crash"),
    Case("mesh-cluster-name-number", CN, on("east", CN, 1), "east: meshfed_cluster_name must be a string, not the number 1; quote it", "unclear"),
    Case("mesh-cluster-name-newline", CN, on("east", CN, "east\n"), "east: meshfed_cluster_name 'east\\n' is not a DNS-1123 label", "accepted"),
    Case("mesh-cluster-name-kubernetes", CN, on("east", CN, "Kubernetes"), "east: meshfed_cluster_name is 'Kubernetes', Istio's default"),
    Case("mesh-cluster-name-duplicate", CN, on("west", CN, "east"), "cluster name 'east' appears more than once (east, west)"),
    Case(
        "mesh-hostname-not-dns1123",
        CN,
        {"East.example": {}},
        "East.example: the inventory hostname is the cluster name when meshfed_cluster_name is unset",
        "unclear",
    ),
    # Networks
    Case("mesh-network-number", NET, on("east", NET, 1), "east: meshfed_network must be a string, not the number 1; quote it", "unclear"),
    Case("mesh-network-list", NET, on("east", NET, ["network1"]), "east: meshfed_network must be a string, not a list", "unclear"),
    Case("mesh-network-newline", NET, on("east", NET, "network1\n"), "east: meshfed_network 'network1\\n' is not a DNS-1123 label", "accepted"),
    # Mesh ID
    Case("mesh-mesh-id-number", ID, everywhere(ID, 1), "east, west, edge: meshfed_mesh_id must be a string, not the number 1", "accepted"),
    Case("mesh-mesh-id-mixed-types", ID, on("east", ID, 1), "east: meshfed_mesh_id must be a string, not the number 1", "crash"),
    Case("mesh-mesh-id-mapping", ID, on("east", ID, {"id": "mesh1"}), "east: meshfed_mesh_id must be a string, not a mapping", "crash"),
    Case("mesh-mesh-id-spaces", ID, everywhere(ID, "my mesh"), "meshfed_mesh_id 'my mesh' is not a Kubernetes label value", "accepted"),
    Case("mesh-mesh-id-empty", ID, everywhere(ID, ""), "meshfed_mesh_id is not set: set it once for the whole inventory"),
    # Primaries and groups
    Case("mesh-primary-list", PRI, on("edge", PRI, ["west"]), "edge: meshfed_primary must be a string, not a list", "crash"),
    Case(
        "mesh-primary-ambiguous",
        PRI,
        {"east": {CN: "west"}, "west": {CN: "west-2"}},
        "edge: meshfed_primary 'west' is ambiguous: it is the inventory name of west and the cluster name of east",
        "accepted",
    ),
    Case(
        "mesh-primary-is-remote",
        PRI,
        {"edge2": {PRI: "edge"}, "remotes": ["edge", "edge2"]},
        "edge2: meshfed_primary 'edge' is not a primary: edge is a remote",
    ),
    Case(
        "mesh-primary-is-remote-by-cluster-name",
        PRI,
        {"east": {CN: "e1"}, "edge": {CN: "hub"}, "edge2": {PRI: "hub"}, "remotes": ["edge", "edge2"]},
        "edge2: meshfed_primary 'hub' is not a primary: edge is a remote",
        "unclear",
    ),
    Case("mesh-primary-self", PRI, on("edge", PRI, "edge"), "edge: meshfed_primary names this remote itself", "unclear"),
    Case("mesh-primary-unknown", PRI, on("edge", PRI, "north"), "edge: meshfed_primary 'north' is not a primary of this inventory"),
    Case(
        "mesh-host-in-both-groups",
        "istio_remote",
        {"primaries": ["east", "west", "edge"]},
        "edge: the host is in both istio_primary and istio_remote; remove it from one of them",
        "accepted",
    ),
    # East-west gateway addresses
    Case("mesh-eastwest-ips-string", IPS, on("edge", IPS, "10.0.0.1"), "edge: meshfed_eastwest_external_ips is the string '10.0.0.1', not a list", "accepted"),
    Case("mesh-eastwest-ips-number", IPS, on("edge", IPS, 5), "edge: meshfed_eastwest_external_ips must be a list of IP addresses, not the number 5", "crash"),
    Case(
        "mesh-eastwest-ips-mapping",
        IPS,
        on("edge", IPS, {"ip": "10.0.0.1"}),
        "edge: meshfed_eastwest_external_ips must be a list of IP addresses, not a mapping",
        "accepted",
    ),
    Case(
        "mesh-eastwest-ips-invalid",
        IPS,
        on("edge", IPS, ["10.0.0.300"]),
        "edge: meshfed_eastwest_external_ips entry '10.0.0.300' is not an IPv4 or IPv6 address",
        "accepted",
    ),
    Case("mesh-eastwest-ips-hostname", IPS, on("edge", IPS, ["gw.example.com"]), "entry 'gw.example.com' is not an IPv4 or IPv6 address", "accepted"),
    Case("mesh-eastwest-ips-loopback", IPS, on("edge", IPS, ["127.0.0.1"]), "entry '127.0.0.1' is a loopback address, which Kubernetes refuses", "accepted"),
    Case("mesh-eastwest-ips-unspecified", IPS, on("edge", IPS, ["::"]), "entry '::' is a unspecified address", "accepted"),
    Case("mesh-eastwest-ips-duplicate", IPS, on("edge", IPS, ["192.0.2.1", "192.0.2.1"]), "entry '192.0.2.1' appears more than once", "accepted"),
    # API server
    Case(
        "mesh-api-server-http",
        API,
        on("east", API, "http://192.0.2.1:6443"),
        "east: meshfed_api_server 'http://192.0.2.1:6443' is not an https URL",
        "accepted",
    ),
    Case("mesh-api-server-no-scheme", API, on("east", API, "api.example:6443"), "east: meshfed_api_server 'api.example:6443' is not an https URL", "accepted"),
    Case("mesh-api-server-no-host", API, on("east", API, "https:///api"), "east: meshfed_api_server 'https:///api' has no valid host", "accepted"),
    Case("mesh-api-server-bad-port", API, on("east", API, "https://api.example:99999"), "has an invalid port", "accepted"),
    Case("mesh-api-server-query", API, on("east", API, "https://api.example:6443/?x=1"), "has a query or fragment", "accepted"),
    Case(
        "mesh-api-server-credentials",
        API,
        on("east", API, "https://admin:secret@api.example"),
        "carries credentials; they belong in the kubeconfig",
        "accepted",
    ),
    Case("mesh-api-server-dot-path", API, on("east", API, "https://api.example/k8s/../admin"), "has an unusual path", "accepted"),
    Case("mesh-api-server-newline", API, on("east", API, "https://api.example\n"), "contains whitespace or control characters", "accepted"),
    Case("mesh-api-server-number", API, on("east", API, 6443), "east: meshfed_api_server must be a string, not the number 6443", "accepted"),
    # How to reach a cluster
    Case(
        "mesh-kubeconfig-list",
        "meshfed_kubeconfig",
        on("east", "meshfed_kubeconfig", ["/k/east"]),
        "east: meshfed_kubeconfig must be a string, not a list",
        "accepted",
    ),
    Case("mesh-context-number", "meshfed_context", on("east", "meshfed_context", 1), "east: meshfed_context must be a string, not the number 1", "accepted"),
    Case(
        "mesh-same-cluster-twice",
        "meshfed_context",
        {"west": {"meshfed_context": "east-ctx"}},
        "east, west: these hosts reach the same Kubernetes cluster",
        "accepted",
    ),
    # Mesh-wide settings
    Case("mesh-namespace-invalid", NS, everywhere(NS, "Istio_System"), "meshfed_namespace 'Istio_System' is not a DNS-1123 label", "accepted"),
    Case("mesh-namespace-list", NS, everywhere(NS, ["istio-system"]), "east, west, edge: meshfed_namespace must be a string, not a list", "crash"),
    Case(
        "mesh-allow-migration-typo",
        MIG,
        everywhere(MIG, "flase"),
        "east, west, edge: meshfed_allow_migration 'flase' is not a boolean; set true or false",
        "accepted",
    ),
    Case("mesh-allow-migration-number", MIG, everywhere(MIG, 2), "meshfed_allow_migration 2 is not a boolean", "accepted"),
    Case("mesh-allow-migration-list", MIG, everywhere(MIG, [True]), "meshfed_allow_migration [True] is not a boolean", "crash"),
    Case("mesh-revision-dots", REV, everywhere(REV, "1.30"), "meshfed_revision '1.30' is not a DNS-1123 label", "accepted"),
    Case("mesh-revision-too-long", REV, everywhere(REV, "r" * 60), "is longer than 56 characters, so istiod-", "accepted"),
    Case("mesh-revision-number", REV, everywhere(REV, 130), "meshfed_revision must be a string, not the number 130", "accepted"),
    Case(
        "mesh-istio-version-float", VER, everywhere(VER, 1.3), "meshfed_istio_version must be a string, not the number 1.3 (YAML reads 1.30 as 1.3)", "accepted"
    ),
    Case(
        "mesh-istio-version-word",
        VER,
        everywhere(VER, "latest"),
        "meshfed_istio_version 'latest' is not a version as `istioctl version --short` prints it",
        "accepted",
    ),
    Case("mesh-istio-version-newline", VER, everywhere(VER, "1.30.1\n"), "meshfed_istio_version '1.30.1\\n' is not a version", "accepted"),
    Case("mesh-istioctl-list", "meshfed_istioctl", everywhere("meshfed_istioctl", ["istioctl"]), "meshfed_istioctl must be a string, not a list", "crash"),
    Case("mesh-pki-dir-relative", "meshfed_pki_dir", everywhere("meshfed_pki_dir", "pki"), "meshfed_pki_dir 'pki' is not an absolute path", "accepted"),
    Case("mesh-pki-dir-list", "meshfed_pki_dir", everywhere("meshfed_pki_dir", ["/pki"]), "meshfed_pki_dir must be a string, not a list", "crash"),
    Case(
        "mesh-misspelt-variable",
        "meshfed_allow_migration",
        on("east", "meshfed_allow_migrations", True),
        "east: meshfed_allow_migrations is not a variable of meshfed.istio; did you mean meshfed_allow_migration?",
        "accepted",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_mesh_plan_refuses(case):
    variables, remotes, primaries = feed(case.value)
    plan, problems = _mesh.plan(variables, remotes, primaries)
    assert plan == {}
    assert any(case.refusal in problem for problem in problems), problems


def test_the_good_inventory_passes():
    plan, problems = _mesh.plan(*feed({}))
    assert problems == [] and plan["remotes"] == ["edge"]


@pytest.mark.parametrize(("value", "meaning"), [(True, True), ("true", True), ("yes", True), ("false", False), ("False", False), ("no", False), (False, False)])
def test_allow_migration_reads_booleans_the_ansible_way(value, meaning):
    plan, problems = _mesh.plan(*feed(everywhere(MIG, value)))
    assert problems == [] and plan["settings"]["allow_migration"] is meaning
