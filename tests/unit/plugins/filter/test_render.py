"""The rendering filters: what the roles write, from a cluster of the mesh plan."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.filter.render import FilterModule
from ansible_collections.meshfed.istio.plugins.module_utils import _mesh

FILTERS = FilterModule().filters()


def plan() -> dict:
    return _mesh.topology(
        [
            _mesh.InventoryCluster(host="a", name="east", role="primary", network="n1", mesh_id="m", context="ctx-a"),
            _mesh.InventoryCluster(host="b", name="west", role="primary", network="n2", mesh_id="m"),
            _mesh.InventoryCluster(host="c", name="edge", role="remote", network="n2", mesh_id="m", primary="a"),
        ],
        {"namespace": "istio-system", "revision": ""},
    )


def test_auth_holds_only_what_is_set():
    assert plan()["clusters"]["a"]["auth"] == {"context": "ctx-a"}
    assert plan()["clusters"]["b"]["auth"] == {}


@pytest.mark.parametrize(
    ("host", "labels", "annotations"),
    [
        ("a", {"topology.istio.io/network": "n1"}, None),
        ("c", {"topology.istio.io/network": "n2"}, {"topology.istio.io/controlPlaneClusters": "east"}),
    ],
)
def test_namespace(host, labels, annotations):
    mesh = plan()
    namespace = FILTERS["istio_namespace"](mesh["clusters"][host], mesh["settings"])
    assert namespace["metadata"]["name"] == "istio-system"
    assert namespace["metadata"]["labels"] == labels
    assert namespace["metadata"].get("annotations") == annotations


@pytest.mark.parametrize(
    ("host", "names"),
    [
        ("a", [("Gateway", "cross-network-gateway"), ("Gateway", "istiod-gateway"), ("VirtualService", "istiod-vs")]),
        ("b", [("Gateway", "cross-network-gateway")]),
    ],
)
def test_eastwest_objects_expose_istiod_only_with_remotes(host, names):
    mesh = plan()
    objects = FILTERS["eastwest_objects"](mesh["clusters"][host], mesh["settings"])
    assert [(item["kind"], item["metadata"]["name"]) for item in objects] == names
    cross = objects[0]["spec"]["servers"][0]
    assert cross == {"port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}
    if len(objects) > 1:
        routes = [route["route"][0]["destination"] for route in objects[2]["spec"]["tls"]]
        assert routes == [
            {"host": "istiod.istio-system.svc.cluster.local", "port": {"number": 15012}},
            {"host": "istiod.istio-system.svc.cluster.local", "port": {"number": 443}},
        ]


def test_control_plane_of_a_primary_with_remotes_and_of_a_remote():
    mesh = plan()
    primary = FILTERS["istio_operator"](mesh["clusters"]["a"], mesh["settings"], remote_pilot_address="ignored")
    assert primary["spec"]["values"]["global"] == {"meshID": "m", "multiCluster": {"clusterName": "east"}, "network": "n1", "externalIstiod": True}
    remote = FILTERS["istio_operator"](mesh["clusters"]["c"], mesh["settings"], remote_pilot_address="192.0.2.1")
    assert remote["spec"]["profile"] == "remote" and remote["spec"]["values"]["global"]["remotePilotAddress"] == "192.0.2.1"


@pytest.mark.parametrize(
    ("options", "env", "metadata"),
    [
        ({}, {"ISTIO_MULTIROOT_MESH": "true"}, {"PROXY_CONFIG_XDS_AGENT": "true"}),
        ({"multiroot": True}, {"ISTIO_MULTIROOT_MESH": "true"}, {"PROXY_CONFIG_XDS_AGENT": "true"}),
        ({"multiroot": False}, None, None),
    ],
)
def test_rotation_flags_on_primaries_by_default(options, env, metadata):
    mesh = plan()
    primary = FILTERS["istio_operator"](mesh["clusters"]["a"], mesh["settings"], **options)
    assert primary["spec"]["values"].get("pilot", {}).get("env") == env
    assert primary["spec"].get("meshConfig", {}).get("defaultConfig", {}).get("proxyMetadata") == metadata
    remote = FILTERS["istio_operator"](mesh["clusters"]["c"], mesh["settings"], remote_pilot_address="192.0.2.1", **options)
    assert "meshConfig" not in remote["spec"] and "pilot" not in remote["spec"]["values"]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("istio_operator", ("c", {}), "remote_pilot_address (its primary's gateway address) is required"),
        ("istio_operator", ("a", {"overlay": {"values": {"global": {"meshID": "x"}}}}), "set it with meshfed_mesh_id"),
        ("eastwest_operator", ("a", {"overlay": {"revision": "x"}}), "set it with meshfed_revision"),
        ("istio_namespace", (None, {}), "takes a cluster of meshfed.istio.mesh_plan"),
        ("istio_operator", ("a", {"multiroot": "no"}), "multiroot must be a boolean, got str"),
        (
            "istio_operator",
            ("a", {"multiroot": False, "overlay": {"values": {"pilot": {"env": {"ISTIO_MULTIROOT_MESH": "true"}}}}}),
            "set it with control_plane_multiroot",
        ),
    ],
)
def test_errors_name_what_to_fix(name, args, message):
    mesh = plan()
    host, options = args
    cluster = mesh["clusters"][host] if host else {"name": "x"}
    with pytest.raises(AnsibleFilterError, match=name) as failure:
        FILTERS[name](cluster, mesh["settings"], **options)
    assert message in str(failure.value)


def test_settings_are_required():
    with pytest.raises(AnsibleFilterError, match="takes the settings of meshfed.istio.mesh_plan"):
        FILTERS["eastwest_objects"](plan()["clusters"]["a"], {"namespace": "istio-system"})
