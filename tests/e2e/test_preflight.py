"""Bad inputs: each refused by the preflight, naming the cluster and the fix, with no cluster written to."""

from __future__ import annotations

import os

import pytest
import yaml

from conftest import Bed, in_bed, istioctl, kubectl_json


@pytest.fixture(scope="module")
def bed():
    bed = Bed(2, False)
    bed.up()
    yield bed
    bed.down()


def host_overrides(bed, hosts: dict, groups: dict | None = None) -> str:
    path = os.path.join(bed.work, "override.yml")
    children = {"istio_primary": {"hosts": hosts}}
    children.update(groups or {})
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"all": {"children": children}}, handle)
    return path


def unreachable_kubeconfig(bed) -> str:
    path = os.path.join(bed.work, "unreachable.kubeconfig")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "gone", "user": {"token": "x"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
    }
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    return path


CASES = {
    "duplicate-cluster-names": (
        lambda bed: host_overrides(bed, {"cluster2": {"meshfed_cluster_name": "cluster1"}}),
        ["cluster name 'cluster1' appears more than once"],
    ),
    "remote-without-primary": (
        lambda bed: host_overrides(bed, {}, {"istio_remote": {"hosts": {"cluster2": {}}}}),
        ["cluster2: a remote must name its primary; set meshfed_primary"],
    ),
    "mismatched-mesh-ids": (
        lambda bed: host_overrides(bed, {"cluster2": {"meshfed_mesh_id": "mesh2"}}),
        ["the clusters disagree on meshfed_mesh_id (mesh1: cluster1, mesh2: cluster2)"],
    ),
    "invalid-network-name": (
        lambda bed: host_overrides(bed, {"cluster2": {"meshfed_network": "Network_2"}}),
        ["cluster2: meshfed_network 'Network_2' is not a DNS-1123 label"],
    ),
    "unreachable-cluster": (
        lambda bed: host_overrides(bed, {"cluster2": {"meshfed_kubeconfig": unreachable_kubeconfig(bed), "meshfed_context": "gone"}}),
        ["cluster cluster2 (cluster2)", "is unreachable", "check meshfed_kubeconfig and meshfed_context"],
    ),
    "istioctl-missing": (
        lambda bed: bed.write_settings({"meshfed_istioctl": "/nonexistent/istioctl"}, os.path.join(bed.work, "o.yml")),
        ["istioctl (/nonexistent/istioctl) does not run", "set the istioctl option (meshfed_istioctl) to its path"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_inventory_is_refused_before_any_write(bed, case):
    make_override, messages = CASES[case]
    before = bed.written_state()
    result = bed.playbook("site", inventories=(make_override(bed),))
    assert result.rc != 0
    for message in messages:
        assert message in result.output, result.output[-3000:]
    assert "Trust - PKI on the control node" not in result.output
    assert not os.path.exists(os.path.join(bed.work, "pki"))
    assert bed.written_state() == before


def test_istiod_on_its_own_self_signed_ca_is_refused(bed):
    """istio-ca-secret without cacerts: istiod started before the mesh PKI. Refused unless migration is opted in."""
    in_bed("kubectl", "--context", "cluster2", "create", "namespace", "istio-system")
    in_bed("kubectl", "--context", "cluster2", "-n", "istio-system", "create", "secret", "generic", "istio-ca-secret", "--from-literal=ca-cert.pem=")
    before = bed.written_state()
    result = bed.playbook("site")
    assert result.rc != 0
    assert "cluster cluster2: istiod already runs with its own self-signed root" in result.output
    assert "set meshfed_allow_migration=true" in result.output
    assert bed.written_state() == before
    assert bed.secret("cluster1", "istio-system", "cacerts") is None


def test_migration_opt_in_restarts_istiod_then_the_workloads(bed):
    """After the refusal above: with meshfed_allow_migration, cacerts goes in, istiod restarts, then the workloads."""
    minimal = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testbed", "istio-minimal.yaml")
    in_bed(istioctl(), "install", "-y", "--context", "cluster2", "-f", minimal, timeout=600)
    in_bed("kubectl", "--context", "cluster2", "create", "namespace", "app")
    in_bed("kubectl", "--context", "cluster2", "label", "namespace", "app", "istio-injection=enabled")
    in_bed("kubectl", "--context", "cluster2", "-n", "app", "create", "deployment", "web", "--image=example.invalid/web")
    settings = bed.write_settings({"meshfed_allow_migration": True}, os.path.join(bed.work, "migrate.yml"))
    result = bed.playbook("site", inventories=(settings,))
    assert result.rc == 0, result.output[-5000:]
    assert "Restart istiod so it loads cacerts" in result.output
    istiod = kubectl_json("cluster2", "get", "deployment", "istiod", "-n", "istio-system")
    web = kubectl_json("cluster2", "get", "deployment", "web", "-n", "app")
    restarted_istiod = istiod["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    restarted_web = web["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert restarted_istiod <= restarted_web
    # restarted by meshfed.istio.restart_workloads (batched, bounded), marked for this migration
    assert web["spec"]["template"]["metadata"]["annotations"]["meshfed.istio/restarted-for"].startswith("cacerts-migration/")
    assert bed.secret("cluster2", "istio-system", "istio-ca-secret") is None
    assert bed.secret("cluster2", "istio-system", "cacerts") is not None
    again = bed.playbook("site", inventories=(settings,))
    assert again.rc == 0 and again.changed == {"cluster1": 0, "cluster2": 0}, again.output[-3000:]
