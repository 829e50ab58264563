from __future__ import annotations

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _mesh


def cluster(host, role="primary", network="net1", mesh_id="mesh1", primary=None, name=None):
    return _mesh.InventoryCluster(host=host, name=name or host, role=role, network=network, mesh_id=mesh_id, primary=primary, context=host)


def inventory(**hosts):
    """meshfed_* variables per host: a mesh ID, a network and a context of its own unless given."""
    return {
        host: {"meshfed_mesh_id": "mesh1", "meshfed_network": "net1", "meshfed_context": host, **{f"meshfed_{k}": v for k, v in given.items()}}
        for host, given in hosts.items()
    }


TWO_PRIMARIES = [cluster("east"), cluster("west", network="net2")]
PRIMARY_REMOTE = [cluster("east"), cluster("west", role="remote", network="net2", primary="east")]
THREE = [cluster("a"), cluster("b", network="net2"), cluster("c", role="remote", primary="a")]


@pytest.mark.parametrize(
    ("variables", "remotes"),
    [
        (inventory(east={}, west={"network": "net2"}), []),
        (inventory(east={}, west={"network": "net2", "primary": "east"}), ["west"]),
        (inventory(a={}, b={"network": "net1"}, c={"primary": "a"}), ["c"]),  # one network shared by all: allowed
        (inventory(a={"cluster_name": "east"}, b={"primary": "east"}), ["b"]),  # a primary named by its cluster name
        (inventory(a={"cluster_name": "a"}, b={"primary": "a"}), ["b"]),  # host and cluster name the same cluster
        (inventory(a={"kubeconfig": "/k/a", "context": ""}, b={"kubeconfig": "/k/b", "context": ""}), []),
        (inventory(a={"eastwest_external_ips": ["192.0.2.1", "2001:db8::1"], "api_server": "https://a.example:6443"}), []),
        (inventory(a={"api_server": "https://rancher.example/k8s/clusters/c-1"}), []),  # an API proxy's path
        (inventory(a={"istio_version": "1.31-dev", "revision": "1-30-1", "namespace": "istio", "allow_migration": "yes"}), []),
        (inventory(a={"cluster_name": "", "istioctl": "", "revision": None, "eastwest_external_ips": []}), []),  # empty = unset
        (inventory(a={"istio_target_revision": "1-31-0", "istio_target_istioctl": "/opt/istio-1.31.0/bin/istioctl"}), []),
    ],
)
def test_consistent_inventories_have_no_problems(variables, remotes):
    plan, found = _mesh.plan(variables, remotes)
    assert found == []
    assert sorted(plan["clusters"]) == sorted(variables)


@pytest.mark.parametrize(
    ("variables", "remotes", "expected"),
    [
        ({}, [], "the inventory has no cluster"),
        (inventory(east={}, west={"cluster_name": "east"}), [], "cluster name 'east' appears more than once (east, west)"),
        (inventory(east={"cluster_name": "East_1"}), [], "east: meshfed_cluster_name 'East_1' is not a DNS-1123 label"),
        (inventory(east={"cluster_name": "Kubernetes"}), [], "east: meshfed_cluster_name is 'Kubernetes', Istio's default"),
        (inventory(Kubernetes={}), [], "Kubernetes: the inventory hostname is the cluster name when meshfed_cluster_name is unset"),
        (inventory(east={}, west={"mesh_id": "mesh2"}), [], "the clusters disagree on meshfed_mesh_id (mesh1: east, mesh2: west)"),
        (inventory(east={"mesh_id": ""}), [], "meshfed_mesh_id is not set"),
        (inventory(east={"network": ""}), [], "east: meshfed_network is not set"),
        (inventory(east={"network": "Net_1"}), [], "east: meshfed_network 'Net_1' is not a DNS-1123 label"),
        (inventory(west={"primary": "east"}), ["west"], "the inventory has no primary cluster"),
        (inventory(east={}, west={}), ["west"], "west: a remote must name its primary"),
        (inventory(east={}, west={"primary": "north"}), ["west"], "west: meshfed_primary 'north' is not a primary of this inventory"),
        (inventory(east={}, x={"primary": "east"}, west={"primary": "x"}), ["x", "west"], "west: meshfed_primary 'x' is not a primary: x is a remote"),
        (inventory(east={"primary": "west"}, west={}), [], "east: meshfed_primary is set on a primary"),
    ],
)
def test_every_problem_names_the_host_and_the_fix(variables, remotes, expected):
    plan, found = _mesh.plan(variables, remotes)
    assert plan == {}
    assert any(problem.startswith(expected) for problem in found), found


def test_a_group_variable_refused_on_every_host_is_one_problem():
    variables = inventory(east={"revision": "Canary"}, west={"revision": "Canary", "network": "net2"})
    assert _mesh.plan(variables)[1] == [f"east, west: meshfed_revision 'Canary' is not a DNS-1123 label ({_mesh.LABEL_RULE})"]


@pytest.mark.parametrize(
    ("clusters", "edges"),
    [
        (TWO_PRIMARIES, [("east", "west"), ("west", "east")]),
        (PRIMARY_REMOTE, [("east", "west")]),
        (THREE, [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c")]),
    ],
)
def test_watch_edges(clusters, edges):
    assert _mesh.problems(clusters) == []
    assert _mesh.watch_edges(clusters) == edges


def test_remote_may_name_its_primary_by_cluster_name():
    clusters = [cluster("host-a", name="east"), cluster("host-b", role="remote", primary="east")]
    assert _mesh.problems(clusters) == []
    assert _mesh.watch_edges(clusters) == [("host-a", "host-b")]


def test_topology():
    plan = _mesh.topology(THREE)
    assert plan["primaries"] == ["a", "b"] and plan["remotes"] == ["c"]
    assert plan["networks"] == ["net1", "net2"]
    assert plan["watched_by"] == {"a": ["b", "c"], "b": ["a", "c"], "c": []}
    assert plan["clusters"]["c"]["primary"] == "a"
    assert "refused" not in plan["clusters"]["c"]
    assert plan["names"] == _istio.role_names()


def test_plan_normalizes_what_the_inventory_gives():
    plan, found = _mesh.plan(inventory(a={"allow_migration": "false", "eastwest_external_ips": ["192.0.2.1"]}, b={"allow_migration": False}))
    assert found == []
    assert plan["settings"]["allow_migration"] is False
    assert plan["clusters"]["a"]["eastwest_external_ips"] == ["192.0.2.1"]
    assert plan["clusters"]["a"]["name"] == "a" and plan["clusters"]["a"]["primary"] is None


@pytest.mark.parametrize(
    ("per_host", "settings", "problem"),
    [
        ({"a": {}, "b": {}}, {"istioctl": "istioctl", "namespace": "istio-system"}, None),
        ({"a": {"istio_version": "1.30.0"}, "b": {"istio_version": "1.30.0"}}, {"istio_version": "1.30.0"}, None),
        ({"a": {"istio_version": "1.30.0"}, "b": {}}, {}, "the clusters disagree on meshfed_istio_version (<unset>: b, 1.30.0: a)"),
        ({"a": {"pki_dir": "/x"}, "b": {"pki_dir": "/y"}}, {}, "the clusters disagree on meshfed_pki_dir (/x: a, /y: b)"),
        ({"a": {"allow_migration": True}, "b": {}}, {}, "the clusters disagree on meshfed_allow_migration (False: b, True: a)"),
        ({"a": {"revision": None}, "b": {"revision": "canary"}}, {"revision": "canary"}, None),  # None: refused, reported before
    ],
)
def test_mesh_settings(per_host, settings, problem):
    found_settings, found = _mesh.mesh_settings(per_host)
    assert {key: found_settings[key] for key in settings} == settings
    assert found == ([] if problem is None else [problem + "; set it once for the whole inventory"])


def test_cluster_facts_link_remotes_and_primaries():
    plan = _mesh.topology(PRIMARY_REMOTE)
    assert plan["clusters"]["west"]["primary_host"] == "east"
    assert plan["clusters"]["west"]["primary_name"] == "east"
    assert plan["clusters"]["east"]["remotes"] == ["west"]
    assert plan["clusters"]["east"]["primary_host"] is None


def test_an_unreadable_value_is_reported_once():
    variables = inventory(east={"network": _mesh.Unreadable("'x' is undefined"), "revision": _mesh.Unreadable("'y' is undefined")}, west={})
    assert _mesh.plan(variables) == ({}, ["east: meshfed_network cannot be read: 'x' is undefined", "east: meshfed_revision cannot be read: 'y' is undefined"])
