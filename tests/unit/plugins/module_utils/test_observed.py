"""Whether a write would change what the preflight read: the decision the roles skip kubernetes.core.k8s runs on."""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _observed


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


NAMESPACE = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {
        "name": "istio-system",
        "resourceVersion": "12",
        "uid": "u-1",
        "labels": {"kubernetes.io/metadata.name": "istio-system", "topology.istio.io/network": "net1"},
    },
    "spec": {"finalizers": ["kubernetes"]},
    "status": {"phase": "Active"},
}
CACERTS = {
    "apiVersion": "v1",
    "kind": "Secret",
    "type": "Opaque",
    "metadata": {
        "name": "cacerts",
        "namespace": "istio-system",
        "labels": {"app.kubernetes.io/managed-by": "meshfed.istio"},
        "annotations": {_observed.LAST_APPLIED: json.dumps({"data": {"ca-key.pem": b64("KEY")}})},
    },
    "data": {"ca-cert.pem": b64("CERT"), "ca-key.pem": b64("KEY")},
}
OTHER_SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "type": "Opaque",
    "metadata": {"name": "db", "namespace": "istio-system"},
    "data": {"password": b64("hunter2")},
}
GATEWAY = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "cross-network-gateway", "namespace": "istio-system", "generation": 1},
    "spec": {
        "selector": {"istio": "eastwestgateway"},
        "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}],
    },
}
OBSERVED = _observed.index([NAMESPACE, CACERTS, GATEWAY, OTHER_SECRET])


def wanted_namespace(**labels):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system", "labels": labels, "annotations": {}}}


def wanted_cacerts(**data):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "cacerts", "namespace": "istio-system", "labels": {"app.kubernetes.io/managed-by": "meshfed.istio"}},
        "data": {key.replace("_", "-") + ".pem": b64(value) for key, value in data.items()},
    }


def wanted_gateway(hosts=("*.local",), number=15443):
    gateway = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "cross-network-gateway", "namespace": "istio-system"},
        "spec": {
            "selector": {"istio": "eastwestgateway"},
            "servers": [{"port": {"number": number, "name": "tls", "protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": list(hosts)}],
        },
    }
    return gateway


def test_keys_ignore_the_version_and_cluster_scope():
    assert _observed.object_key(GATEWAY) == _observed.object_key(wanted_gateway()) == "networking.istio.io/Gateway/istio-system/cross-network-gateway"
    assert _observed.object_key({"kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}}) == "/Namespace//x"
    assert _observed.object_key({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, "ns") == "/Secret/ns/s"


def test_secret_values_are_kept_as_digests_only():
    projected = OBSERVED["/Secret/istio-system/cacerts"]
    assert projected["data"] == {"ca-cert.pem": _observed.digest(b"CERT"), "ca-key.pem": _observed.digest(b"KEY")}
    assert "KEY" not in repr(OBSERVED) and b64("KEY") not in repr(OBSERVED)


def test_only_the_secrets_the_roles_write_are_kept():
    assert "/Secret/istio-system/db" not in OBSERVED
    assert _observed.digest(b"hunter2") not in repr(OBSERVED)
    remote = {
        "kind": "Secret",
        "metadata": {"name": "istio-remote-secret-b", "namespace": "istio-system", "labels": {"istio/multiCluster": "true"}},
        "data": {},
    }
    assert "/Secret/istio-system/istio-remote-secret-b" in _observed.index([remote])


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        (wanted_namespace(**{"topology.istio.io/network": "net1"}), True),
        (wanted_namespace(**{"topology.istio.io/network": "net2"}), False),
        (wanted_namespace(**{"topology.istio.io/network": "net1", "extra": "x"}), False),
        ({**wanted_namespace(), "metadata": {"name": "istio-system", "annotations": {"topology.istio.io/controlPlaneClusters": "a"}}}, False),
        (wanted_cacerts(ca_cert="CERT", ca_key="KEY"), True),
        (wanted_cacerts(ca_cert="CERT", ca_key="OTHER KEY"), False),
        (wanted_cacerts(ca_cert="CERT", ca_key="KEY", root_cert="ROOT"), False),
        ({**wanted_cacerts(ca_cert="CERT"), "type": "kubernetes.io/tls"}, False),
        ({**wanted_cacerts(), "data": {"ca-cert.pem": "not base64!"}}, False),
        ({**wanted_cacerts(), "data": {}, "stringData": {"ca-key.pem": "KEY"}}, True),
        ({**wanted_cacerts(), "data": {"ca-key.pem": None}}, False),
        ({**wanted_cacerts(), "data": None}, False),
        ({**wanted_cacerts(ca_cert="CERT"), "immutable": True}, False),
        ({**wanted_namespace(), "metadata": {"name": "istio-system", "labels": None}}, False),
        ({**wanted_namespace(), "metadata": {"name": "istio-system", "finalizers": ["x"]}}, False),
        (wanted_gateway() | {"spec": wanted_gateway()["spec"] | {"servers": [wanted_gateway()["spec"]["servers"][0] | {"bind": "0.0.0.0"}]}}, False),
        (wanted_gateway(), True),
        (wanted_gateway(hosts=("*.local", "*.global")), False),
        (wanted_gateway(number="15443"), False),
        ([wanted_gateway(), wanted_namespace(**{"topology.istio.io/network": "net1"})], True),
        ([wanted_gateway(), {**wanted_gateway(), "metadata": {"name": "istiod-gateway", "namespace": "istio-system"}}], False),
        ([], True),
    ],
    ids=[
        "same label",
        "other network",
        "a label more",
        "an annotation more",
        "same cacerts",
        "other key",
        "a file more",
        "other type",
        "data not base64",
        "stringData digested alike",
        "a null value",
        "null data",
        "a field not projected",
        "null labels",
        "finalizers",
        "a field more inside a list element",
        "same gateway",
        "a host more",
        "port as text",
        "two objects seen",
        "one object not seen",
        "nothing to write",
    ],
)
def test_unchanged_only_when_a_merge_patch_would_change_nothing(desired, expected):
    assert _observed.unchanged(desired, OBSERVED) is expected


def test_without_a_read_every_write_happens():
    assert _observed.unchanged(wanted_namespace(**{"topology.istio.io/network": "net1"}), None) is False


def test_objects_without_a_namespace_take_the_default():
    secret = {**wanted_cacerts(ca_cert="CERT", ca_key="KEY")}
    secret["metadata"] = {key: value for key, value in secret["metadata"].items() if key != "namespace"}
    assert _observed.unchanged(secret, OBSERVED) is False
    assert _observed.unchanged(secret, OBSERVED, "istio-system") is True


@pytest.mark.parametrize(
    ("observed", "wanted", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": None}, False),
        ({"b": 1}, {"a": None}, True),
        ([{"a": 1, "x": 0}], [{"a": 1}], False),
        ([{"a": 1}], [{"a": 1}], True),
        ([{"a": 1}, {"a": 2}], [{"a": 1}], False),
        ([1, 2], [2, 1], False),
        (True, 1, False),
        (1, True, False),
        ("1", 1, False),
        ({"a": {"b": [1]}}, {"a": {"b": [1]}}, True),
        ("x", {"a": 1}, False),
        ({"a": 1}, [1], False),
    ],
)
def test_contains(observed, wanted, expected):
    assert _observed.contains(observed, wanted) is expected


def test_a_field_added_inside_a_list_element_is_drift():
    """A merge patch replaces lists whole: an edit inside servers[0] is undone by the write, so it must not be skipped."""
    server = {**GATEWAY["spec"]["servers"][0], "tls": {"mode": "AUTO_PASSTHROUGH", "credentialName": "x"}}
    edited = {**GATEWAY, "spec": {**GATEWAY["spec"], "servers": [server]}}
    assert _observed.unchanged(wanted_gateway(), _observed.index([edited])) is False
    assert _observed.unchanged(wanted_gateway(), _observed.index([GATEWAY])) is True
