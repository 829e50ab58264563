"""_cluster_state.read with objects: what the preflight hands the roles, from list calls as the API server answers them."""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _cluster_state, _observed

NS = "istio-system"


class FakeCluster:
    """Answers GETs from a table of paths; a path not in it is a 404 (an error unless missing_ok)."""

    timeout = 5

    def __init__(self, answers: dict):
        self.answers = answers
        self.paths: list[str] = []

    def get(self, what, path, missing_ok=False, **query):
        self.paths.append(path)
        if path not in self.answers:
            if missing_ok:
                return None
            raise AssertionError(f"unexpected call {what}: {path}")
        return self.answers[path]

    def items(self, what, path, missing_ok=False, **query):
        result = self.get(what, path, missing_ok=missing_ok, **query)
        return (result or {}).get("items") or []


def listed(*items):
    return {"items": list(items)}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


CACERTS = {
    "metadata": {"name": "cacerts", "namespace": NS, "annotations": {_observed.LAST_APPLIED: json.dumps({"data": {"ca-key.pem": b64("KEY")}})}},
    "type": "Opaque",
    "data": {"ca-key.pem": b64("KEY")},
}
HELM = {"metadata": {"name": "sh.helm.release.v1.x.v1", "namespace": NS}, "type": "helm.sh/release.v1", "data": {"release": b64("R")}}
VS = {"metadata": {"name": "istiod-vs", "namespace": NS}, "spec": {"hosts": ["*"]}}


def answers(virtualservices_version="v1"):
    base = "/apis/networking.istio.io"
    return {
        f"/api/v1/namespaces/{NS}": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"topology.istio.io/network": "n1"}}},
        f"/api/v1/namespaces/{NS}/secrets": listed(CACERTS, HELM),
        f"/api/v1/namespaces/{NS}/configmaps": listed({"metadata": {"name": "values"}, "data": {"merged-values": "[1, 2]"}}),
        f"/api/v1/namespaces/{NS}/services": listed(),
        "/api/v1/configmaps": listed(),
        f"/apis/apps/v1/namespaces/{NS}/deployments": listed(),
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices": listed(),
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": listed(),
        f"{base}/v1/namespaces/{NS}/gateways": listed(),
        f"{base}/{virtualservices_version}/namespaces/{NS}/virtualservices": listed(VS),
        "/api/v1/pods": listed(),
    }


def test_objects_are_read_only_when_asked():
    cluster = FakeCluster(answers())
    state = _cluster_state.read(cluster, NS, check_credentials=False)
    assert "objects" not in state
    assert not any(path.endswith("/virtualservices") for path in cluster.paths)


def test_objects_keep_what_the_roles_write_and_no_value():
    state = _cluster_state.read(FakeCluster(answers(virtualservices_version="v1beta1")), NS, check_credentials=False, objects=True)
    objects = state["objects"]
    assert sorted(objects) == ["/Namespace//istio-system", "/Secret/istio-system/cacerts", "networking.istio.io/VirtualService/istio-system/istiod-vs"]
    assert objects["/Secret/istio-system/cacerts"] == {"labels": {}, "annotations": {}, "type": "Opaque", "data": {"ca-key.pem": _observed.digest(b"KEY")}}
    assert b64("KEY") not in repr(state) and _observed.digest(b"R") not in repr(state)
    assert _observed.unchanged(
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "istiod-vs", "namespace": NS}, "spec": {"hosts": ["*"]}},
        objects,
    )


def test_injector_values_that_are_not_a_map_are_a_fact():
    state = _cluster_state.read(FakeCluster(answers()), NS, check_credentials=False)
    assert state["injector"]["present"] is False


def _remote(name: str, user: dict) -> dict:
    config = (
        '{"apiVersion": "v1", "kind": "Config", "current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "x", '
        '"user": "x"}}], "clusters": [{"name": "x", "cluster": {"server": "https://192.0.2.5:6443"}}], '
        f'"users": [{{"name": "x", "user": {json.dumps(user)}}}]}}'
    )
    return {
        "metadata": {"name": name, "namespace": NS, "labels": {"istio/multiCluster": "true"}, "annotations": {"networking.istio.io/cluster": name}},
        "data": {name: b64(config)},
    }


def test_remote_secret_tokens_stay_out_of_the_state_and_unsafe_ones_get_no_connection():
    raw = _cluster_state.fetch(FakeCluster(answers()), NS)
    raw["secrets"] = [_remote("good", {"token": "tok-GOOD"}), _remote("planted", {"exec": {"command": "/bin/sh"}, "token": "tok-BAD"})]
    state, connections = _cluster_state.assemble(raw)
    assert sorted(connections) == [("good", "good")] and connections["good", "good"]["token"] == "tok-GOOD"
    facts = {secret["name"]: secret for secret in state["remote_secrets"]}
    assert facts["good"]["unsafe"] == [] and facts["good"]["entries"][0]["server"] == "https://192.0.2.5:6443"
    assert facts["planted"]["unsafe"] == ["secret planted key planted: users[0] (user) field exec: would run a command on the control node"]
    assert "tok-" not in repr(state)


def test_assemble_reads_nothing():
    raw = _cluster_state.fetch(FakeCluster(answers()), NS, objects=True)
    state, _connections = _cluster_state.assemble(raw)
    assert state == _cluster_state.assemble(raw)[0] and "objects" in state


def _mesh(text):
    return {"metadata": {"name": "istio"}, "data": {"mesh": text}}


@pytest.mark.parametrize(
    ("configmap", "xds_agent"),
    [
        (_mesh('defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: "true"\n'), "true"),
        (_mesh("defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: true\n"), "true"),
        (_mesh('defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: "false"\n'), "false"),
        (_mesh("defaultConfig:\n  meshId: m\n"), ""),
        (_mesh("defaultConfig:\n  proxyMetadata: [1]\n"), ""),
        (_mesh("defaultConfig: 7\n"), ""),
        (_mesh("[unclosed"), ""),
        (None, ""),
    ],
)
def test_mesh_config_reads_the_agent_flag(configmap, xds_agent):
    assert _cluster_state.mesh_config(configmap)["xds_agent"] == xds_agent


def _pod(containers=(), init=()):
    return {"metadata": {"namespace": "shop", "name": "cart"}, "spec": {"containers": list(containers), "initContainers": list(init)}}


PROXY = {"name": "istio-proxy", "env": [{"name": "ISTIO_META_NETWORK", "value": "n1"}, {"name": "PROXY_CONFIG_XDS_AGENT", "value": "true"}]}


@pytest.mark.parametrize(
    ("pod", "facts"),
    [
        (_pod([{"name": "app"}, PROXY]), {"network": "n1", "xds_agent": "true"}),
        (_pod([{"name": "app"}], [PROXY]), {"network": "n1", "xds_agent": "true"}),  # native sidecar
        (_pod([{"name": "app"}, {"name": "istio-proxy", "env": [{"name": "ISTIO_META_NETWORK", "value": "n1"}]}]), {"network": "n1", "xds_agent": ""}),
        (_pod([{"name": "app"}]), {"network": "", "xds_agent": ""}),
    ],
)
def test_injected_pods_carry_network_and_agent_flag(pod, facts):
    raw = _cluster_state.fetch(FakeCluster({**answers(), "/api/v1/pods": listed(pod)}), NS)
    state, _connections = _cluster_state.assemble(raw)
    assert state["injected_pods"] == [{"namespace": "shop", "name": "cart", **facts}]


def test_a_broken_secret_is_invalid_not_unsafe_so_site_can_overwrite_it():
    raw = _cluster_state.fetch(FakeCluster(answers()), NS)
    broken = {
        "metadata": {"name": "istio-remote-secret-b", "namespace": NS, "labels": {"istio/multiCluster": "true"}},
        "data": {"b": b64("apiVersion: v1\nkind: Config\n")},
    }
    raw["secrets"] = [broken]
    state, connections = _cluster_state.assemble(raw)
    [facts] = state["remote_secrets"]
    assert connections == {} and facts["unsafe"] == []
    assert facts["entries"][0]["invalid"] == ["no current context"]


def test_installs_are_the_records_the_collection_made():
    managed = {"app.kubernetes.io/managed-by": "meshfed.istio"}
    raw = _cluster_state.fetch(FakeCluster(answers()), NS)
    raw["configmaps"] = [
        {"metadata": {"name": "meshfed-install-control-plane", "labels": managed}, "data": {"digest": "abc"}},
        {"metadata": {"name": "meshfed-install-eastwest", "labels": managed}, "data": {}},
        {"metadata": {"name": "meshfed-install-lookalike"}, "data": {"digest": "planted"}},
        {"metadata": {"name": "istio", "labels": managed}, "data": {"digest": "x"}},
    ]
    state, _connections = _cluster_state.assemble(raw)
    assert state["installs"] == {"control-plane": "abc", "eastwest": ""}


BOMB = "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}' if n else '1'] * 9)}]\n" for n in range(6))  # 9**6 items behind aliases


@pytest.mark.parametrize(
    ("configmap", "xds_agent"),
    [
        (_mesh(BOMB + "defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: *l5\n"), "<not a string>"),
        (_mesh('defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: "\\e]0;x\\a\\e[2J"\n'), "<a value of 10 characters, not shown>"),
        (_mesh(f"defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: {'y' * 100000}\n"), "<a value of 100000 characters, not shown>"),
        (_mesh('defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: "true\\n"\n'), "<a value of 5 characters, not shown>"),  # '$' took it
    ],
)
def test_a_crafted_flag_value_is_described_not_copied(configmap, xds_agent):
    # the mesh ConfigMap is written by whoever may write ConfigMaps in istio-system: its values reach messages
    assert _cluster_state.mesh_config(configmap)["xds_agent"] == xds_agent
    deployment = {
        "metadata": {"name": "istiod"},
        "spec": {"template": {"spec": {"containers": [{"name": "discovery", "env": [{"name": "ISTIO_MULTIROOT_MESH", "value": "\x1b[2J"}]}]}}},
    }
    assert _cluster_state.istiod_facts(deployment)["multiroot"] == "<a value of 4 characters, not shown>"
