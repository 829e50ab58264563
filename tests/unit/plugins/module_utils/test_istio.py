from __future__ import annotations

import pathlib

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _istio


@pytest.mark.parametrize(
    ("base", "overlay", "merged"),
    [
        ({"a": {"b": 1}}, {"a": {"c": 2}}, {"a": {"b": 1, "c": 2}}),
        ({"a": {"b": 1}}, {"a": {"b": 3}}, {"a": {"b": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": {"b": 1}}, {"a": "x"}, {"a": "x"}),
        ({"a": 1}, None, {"a": 1}),
    ],
)
def test_deep_merge(base, overlay, merged):
    before = repr(base)
    assert _istio.deep_merge(base, overlay) == merged
    assert repr(base) == before


def test_primary_carries_mesh_identity():
    operator = _istio.control_plane(mesh_id="mesh1", cluster_name="east", network="net1")
    assert operator["metadata"] == {"name": "control-plane", "namespace": "istio-system"}
    assert operator["spec"] == {
        "values": {
            "global": {"meshID": "mesh1", "multiCluster": {"clusterName": "east"}, "network": "net1"},
            "pilot": {"env": {"ISTIO_MULTIROOT_MESH": "true"}},
        },
        "meshConfig": {"defaultConfig": {"proxyMetadata": {"PROXY_CONFIG_XDS_AGENT": "true"}}},
    }


def test_primary_opted_out_of_rotation_flags_gets_istios_defaults():
    operator = _istio.control_plane(mesh_id="mesh1", cluster_name="east", network="net1", multiroot=False)
    assert operator["spec"] == {"values": {"global": {"meshID": "mesh1", "multiCluster": {"clusterName": "east"}, "network": "net1"}}}


@pytest.mark.parametrize("multiroot", [True, False])
def test_remote_never_gets_rotation_flags(multiroot):
    # profile remote installs no istiod and no mesh ConfigMap: its proxies take both flags from the primary
    operator = _istio.control_plane(mesh_id="m", cluster_name="w", network="n", role="remote", remote_pilot_address="192.0.2.1", multiroot=multiroot)
    assert "meshConfig" not in operator["spec"] and "pilot" not in operator["spec"]["values"]


def test_overlay_keeps_flags_and_adds_beside_them():
    operator = _istio.control_plane(
        mesh_id="m",
        cluster_name="e",
        network="n",
        overlay={
            "values": {"pilot": {"env": {"ISTIO_MULTIROOT_MESH": True, "PILOT_TRACE_SAMPLING": "1"}}},
            "meshConfig": {"defaultConfig": {"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"}}, "accessLogFile": "/dev/stdout"},
        },
    )
    assert operator["spec"]["values"]["pilot"]["env"] == {"ISTIO_MULTIROOT_MESH": True, "PILOT_TRACE_SAMPLING": "1"}
    assert operator["spec"]["meshConfig"] == {
        "defaultConfig": {"proxyMetadata": {"PROXY_CONFIG_XDS_AGENT": "true", "ISTIO_META_DNS_CAPTURE": "true"}},
        "accessLogFile": "/dev/stdout",
    }


@pytest.mark.parametrize(
    ("multiroot", "overlay", "named"),
    [
        (
            True,
            {"values": {"pilot": {"env": {"ISTIO_MULTIROOT_MESH": "false"}}}},
            "spec.values.pilot.env.ISTIO_MULTIROOT_MESH (set it with control_plane_multiroot)",
        ),
        (
            True,
            {"meshConfig": {"defaultConfig": {"proxyMetadata": {"PROXY_CONFIG_XDS_AGENT": False}}}},
            "spec.meshConfig.defaultConfig.proxyMetadata.PROXY_CONFIG_XDS_AGENT (set it with control_plane_multiroot)",
        ),
        (
            False,
            {"values": {"pilot": {"env": {"ISTIO_MULTIROOT_MESH": "true"}}}},
            "spec.values.pilot.env.ISTIO_MULTIROOT_MESH (set it with control_plane_multiroot)",
        ),
    ],
)
def test_rotation_flags_belong_to_their_option(multiroot, overlay, named):
    with pytest.raises(_istio.OverlayError) as failure:
        _istio.control_plane(mesh_id="m", cluster_name="e", network="n", multiroot=multiroot, overlay=overlay)
    assert named in str(failure.value)


def test_primary_serving_remotes_and_revision_and_overlay():
    operator = _istio.control_plane(
        mesh_id="m",
        cluster_name="east",
        network="n",
        revision="1-30",
        external_istiod=True,
        overlay={"values": {"pilot": {"env": {"ISTIO_MULTIROOT_MESH": "true"}}, "global": {"network": "n", "logAsJson": True}}},
    )
    assert operator["metadata"]["name"] == "control-plane-1-30"
    assert operator["spec"]["revision"] == "1-30"
    assert operator["spec"]["values"]["global"]["externalIstiod"] is True
    assert operator["spec"]["values"]["pilot"]["env"] == {"ISTIO_MULTIROOT_MESH": "true"}
    assert operator["spec"]["values"]["global"]["meshID"] == "m"
    assert operator["spec"]["values"]["global"]["logAsJson"] is True


@pytest.mark.parametrize(
    ("overlay", "named"),
    [
        ({"values": {"global": {"meshID": "other"}}}, "spec.values.global.meshID (set it with meshfed_mesh_id)"),
        ({"values": {"global": {"multiCluster": {"clusterName": "x"}}}}, "clusterName (set it with meshfed_cluster_name)"),
        ({"values": {"global": {"network": "x"}}}, "spec.values.global.network (set it with meshfed_network)"),
        ({"revision": "canary"}, "spec.revision (set it with meshfed_revision)"),
    ],
)
def test_overlay_cannot_change_what_the_inventory_sets(overlay, named):
    with pytest.raises(_istio.OverlayError, match="overlay changes what the inventory sets") as failure:
        _istio.control_plane(mesh_id="m", cluster_name="east", network="n", overlay=overlay)
    assert named in str(failure.value)


def test_eastwest_overlay_cannot_change_the_network():
    with pytest.raises(_istio.OverlayError, match=r"eastwest_gateway overlay .* spec.values.global.network"):
        _istio.eastwest_gateway(network="n", overlay={"values": {"global": {"network": "m"}}})
    with pytest.raises(_istio.OverlayError, match="must be a mapping"):
        _istio.eastwest_gateway(network="n", overlay=["x"])


def test_remote_points_at_its_primary():
    operator = _istio.control_plane(mesh_id="m", cluster_name="west", network="n2", role="remote", remote_pilot_address="127.0.1.1")
    assert operator["spec"]["profile"] == "remote"
    assert operator["spec"]["values"]["global"]["remotePilotAddress"] == "127.0.1.1"
    assert operator["spec"]["values"]["istiodRemote"]["injectionPath"] == "/inject/cluster/west/net/n2"


def test_eastwest_gateway_is_the_documented_one():
    operator = _istio.eastwest_gateway(network="net1")
    gateway = operator["spec"]["components"]["ingressGateways"][0]
    assert operator["spec"]["profile"] == "empty"
    assert gateway["name"] == "istio-eastwestgateway"
    assert gateway["label"] == {"istio": "eastwestgateway", "app": "istio-eastwestgateway", "topology.istio.io/network": "net1"}
    assert gateway["k8s"]["env"] == [{"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": "net1"}]
    assert [port["port"] for port in gateway["k8s"]["service"]["ports"]] == [15021, 15443, 15012, 15017]


def test_digest_changes_with_document_and_istioctl():
    operator = _istio.control_plane(mesh_id="m", cluster_name="c", network="n")
    same = _istio.control_plane(mesh_id="m", cluster_name="c", network="n")
    assert _istio.digest(operator, "1.30.0") == _istio.digest(same, "1.30.0")
    assert _istio.digest(operator, "1.30.0") != _istio.digest(operator, "1.30.1")
    assert _istio.digest(operator, "1.30.0") != _istio.digest(_istio.control_plane(mesh_id="m", cluster_name="c", network="n2"), "1.30.0")


def svc(type_="LoadBalancer", ingress=None, external_ips=None):
    return {"spec": {"type": type_, "externalIPs": external_ips}, "status": {"loadBalancer": {"ingress": ingress or []}}}


@pytest.mark.parametrize(
    ("service", "addresses", "problem"),
    [
        (svc(ingress=[{"ip": "127.0.1.1"}]), ["127.0.1.1"], None),
        (svc(external_ips=["127.0.2.1"]), ["127.0.2.1"], None),
        (svc(ingress=[{"ip": "127.0.1.1"}], external_ips=["127.0.1.1"]), ["127.0.1.1"], None),
        (svc(), [], "is pending"),
        (svc(ingress=[{"hostname": "lb.example"}]), [], "has only a hostname (lb.example)"),
        (svc(type_="NodePort"), [], "is of type NodePort"),
        (None, [], "does not exist"),
    ],
)
def test_gateway_address_problem(service, addresses, problem):
    found, text = _istio.gateway_address_problem(service)
    assert found == addresses
    assert (text is None) if problem is None else (problem in text)


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("1.30.0\n", "1.30.0"),
        ("client version: 1.31-dev\n", "1.31-dev"),
        ("Client Version: 1.29.1", "1.29.1"),
        ("", ""),
        ("1.30.0\nwarning: x\n", ""),
        ("client version:", ""),
    ],
)
def test_istioctl_version(output, version):
    assert _istio.istioctl_version(output) == version


@pytest.mark.parametrize(
    ("revision", "operator", "istiod"),
    [("", "control-plane", "istiod"), ("default", "control-plane", "istiod"), ("1-31-0", "control-plane-1-31-0", "istiod-1-31-0")],
)
def test_names_per_revision(revision, operator, istiod):
    assert _istio.control_plane_name(revision) == operator
    assert _istio.suffixed("istiod", revision) == istiod


def test_eastwest_objects_of_a_revision_route_to_its_istiod_and_by_sni():
    objects = {obj["metadata"]["name"]: obj for obj in _istio.eastwest_objects("istio-system", True, revision="1-31-0")}
    assert sorted(objects) == ["cross-network-gateway", "istiod-gateway", "istiod-vs", "istiod-vs-1-31-0"]
    catch_all = objects["istiod-vs"]["spec"]["tls"]
    assert {route["route"][0]["destination"]["host"] for route in catch_all} == {"istiod-1-31-0.istio-system.svc.cluster.local"}
    by_sni = objects["istiod-vs-1-31-0"]["spec"]
    assert by_sni["gateways"] == ["istiod-gateway"]
    assert [(route["match"][0]["port"], route["match"][0]["sniHosts"], route["route"][0]["destination"]["port"]["number"]) for route in by_sni["tls"]] == [
        (15012, ["istiod-1-31-0.istio-system.svc", "istiod-1-31-0.istio-system.svc.cluster.local"], 15012),
        (15017, ["istiod-1-31-0.istio-system.svc", "istiod-1-31-0.istio-system.svc.cluster.local"], 443),
    ]


def test_eastwest_objects_without_a_revision_are_as_before():
    assert _istio.eastwest_objects("istio-system", True) == _istio.eastwest_objects("istio-system", True, revision="default")
    assert "istiod-vs-default" not in {obj["metadata"]["name"] for obj in _istio.eastwest_objects("istio-system", True)}


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("docker.io/istio/pilot:1.31.0", "1.31.0"),
        ("localhost:5000/pilot:1.30-dev", "1.30-dev"),
        ("localhost:5000/pilot", ""),
        ("pilot@sha256:ab", ""),
        ("pilot:1.29.1@sha256:ab", "1.29.1"),
        ("pilot", ""),
        ("", ""),
    ],
)
def test_image_version(image, version):
    assert _istio.image_version(image) == version


def test_roles_take_istios_names_from_the_plan():
    """The roles' YAML spells none of Istio's names that mesh_plan hands them (`names`): this module is their one home."""
    roles = pathlib.Path(__file__).parents[4] / "roles"
    names = _istio.role_names()
    spelled = [names["istio_ca_secret"], names["istiod_selector"], names["eastwest_gateway"], *names["managed_by_labels"]]
    found = [
        f"{path.relative_to(roles)}: {name}" for path in sorted(roles.glob("*/tasks/*.yml")) for name in spelled if name in path.read_text(encoding="utf-8")
    ]
    assert found == []
