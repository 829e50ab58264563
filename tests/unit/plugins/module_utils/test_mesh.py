from __future__ import annotations

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _mesh


def cluster(host, role="primary", network="net1", mesh_id="mesh1", primary=None, name=None):
    return _mesh.Cluster(host=host, name=name or host, role=role, network=network, mesh_id=mesh_id, primary=primary)


TWO_PRIMARIES = [cluster("east"), cluster("west", network="net2")]
PRIMARY_REMOTE = [cluster("east"), cluster("west", role="remote", network="net2", primary="east")]
THREE = [cluster("a"), cluster("b", network="net2"), cluster("c", role="remote", primary="a")]


@pytest.mark.parametrize("clusters", [TWO_PRIMARIES, PRIMARY_REMOTE, THREE])
def test_consistent_inventories_have_no_problems(clusters):
    assert _mesh.problems(clusters) == []


@pytest.mark.parametrize(
    ("clusters", "expected"),
    [
        ([], "the inventory has no cluster"),
        ([cluster("east"), cluster("west", name="east")], "cluster name 'east' appears more than once"),
        ([cluster("east", name="East_1")], "cluster name 'East_1' is not a DNS-1123 label"),
        ([cluster("east", name="Kubernetes")], "east: cluster name 'Kubernetes' is Istio's default"),
        ([cluster("east"), cluster("west", mesh_id="mesh2")], "the clusters disagree on meshfed_mesh_id (mesh1: east, mesh2: west)"),
        ([cluster("east", mesh_id="")], "meshfed_mesh_id is not set"),
        ([cluster("east", network="")], "east: meshfed_network is not set"),
        ([cluster("east", network="Net_1")], "east: network 'Net_1' is not a DNS-1123 label"),
        ([cluster("west", role="remote", primary="east")], "the inventory has no primary cluster"),
        ([cluster("east"), cluster("west", role="remote")], "west: a remote must name its primary"),
        ([cluster("east"), cluster("west", role="remote", primary="north")], "west: meshfed_primary 'north' is not a primary"),
        ([cluster("east"), cluster("x", role="remote", primary="east"), cluster("west", role="remote", primary="x")],
         "west: meshfed_primary 'x' is not a primary"),
        ([cluster("east", primary="west"), cluster("west")], "east: meshfed_primary is set on a primary"),
    ],
)
def test_every_problem_names_the_host_and_the_fix(clusters, expected):
    found = _mesh.problems(clusters)
    assert any(problem.startswith(expected) for problem in found), found


@pytest.mark.parametrize(
    ("clusters", "edges"),
    [
        (TWO_PRIMARIES, [("east", "west"), ("west", "east")]),
        (PRIMARY_REMOTE, [("east", "west")]),
        (THREE, [("a", "b"), ("a", "c"), ("b", "a")]),
    ],
)
def test_watch_edges(clusters, edges):
    assert _mesh.watch_edges(clusters) == edges


def test_remote_may_name_its_primary_by_cluster_name():
    clusters = [cluster("host-a", name="east"), cluster("host-b", role="remote", primary="east")]
    assert _mesh.problems(clusters) == []
    assert _mesh.watch_edges(clusters) == [("host-a", "host-b")]


def test_topology():
    plan = _mesh.topology(THREE)
    assert plan["primaries"] == ["a", "b"] and plan["remotes"] == ["c"]
    assert plan["networks"] == ["net1", "net2"]
    assert plan["watched_by"] == {"a": ["b", "c"], "b": ["a"], "c": []}
    assert plan["clusters"]["c"]["primary"] == "a"


@pytest.mark.parametrize(
    ("per_host", "settings", "problem"),
    [
        ({"a": {}, "b": {}}, {"istioctl": "istioctl", "namespace": "istio-system"}, None),
        ({"a": {"istio_version": "1.30.0"}, "b": {"istio_version": "1.30.0"}}, {"istio_version": "1.30.0"}, None),
        ({"a": {"istio_version": "1.30.0"}, "b": {}}, {}, "the clusters disagree on meshfed_istio_version (<unset>: b, 1.30.0: a)"),
        ({"a": {"pki_dir": "/x"}, "b": {"pki_dir": "/y"}}, {}, "the clusters disagree on meshfed_pki_dir (/x: a, /y: b)"),
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
