"""Sidecar injection by the real istiod, per revision, in a primary and in its remote.

The bed's API servers send their calls to Services (webhooks given by clientConfig.service) through the filler's egress
proxy, which joins an istiod Service to the local istiod of that revision (tests/testbed/istiod.sh start CLUSTER
[REVISION]), and a remote's to its primary's. So a pod created in an injecting namespace is mutated by the istiod of the
revision its namespace names, over the API server's own TLS (istiod's certificate for istiod[-<rev>].istio-system.svc);
with that istiod stopped, the webhook fails open (failurePolicy Ignore on the bed) and the pod is created as it is.
The site playbook installs the default revision, the upgrade playbook's first two stages the canary one.
"""

from __future__ import annotations

import json
import os

import pytest
from test_istiod import istiod, wait_for

from conftest import Bed, in_bed, kubectl_json

CANARY = "canary"
PRIMARY, REMOTE = "cluster1", "cluster2"
# namespace -> (its injection label, the revision that injects it)
NAMESPACES = {"shop": ("istio-injection=enabled", "default"), "pay": (f"istio.io/rev={CANARY}", CANARY)}
NETWORKS = {PRIMARY: "network1", REMOTE: "network2"}


def service(revision: str) -> str:
    return "istiod.istio-system.svc" if revision == "default" else f"istiod-{revision}.istio-system.svc"


@pytest.fixture(scope="module")
def bed():
    bed = Bed(2, True)
    bed.up()
    site = bed.playbook("site")
    assert site.rc == 0, site.output[-4000:]
    target = bed.write_settings({"meshfed_istio_target_revision": CANARY}, os.path.join(bed.work, "target.yml"))
    upgrade = bed.playbook("upgrade", "-e", "upgrade_stage=remotes", inventories=(target,))
    assert upgrade.rc == 0, upgrade.output[-4000:]
    for cluster in bed.names:
        for namespace, (label, _revision) in NAMESPACES.items():
            in_bed("kubectl", "--request-timeout=10s", "--context", cluster, "create", "namespace", namespace)
            in_bed("kubectl", "--request-timeout=10s", "--context", cluster, "label", "namespace", namespace, label)
    yield bed
    bed.down()


def run_pod(cluster: str, namespace: str, name: str) -> dict:
    in_bed("kubectl", "--request-timeout=20s", "--context", cluster, "-n", namespace, "run", name, "--image=example.invalid/app", "--restart=Never")
    return kubectl_json(cluster, "-n", namespace, "get", "pod", name)


def sidecar(pod: dict) -> dict | None:
    """What the injector put into the pod: the revision of its status annotation, and istio-proxy's discovery address
    (PROXY_CONFIG, Istio's default when not overridden), CA address and cluster; None when the pod is as created."""
    status = (pod["metadata"].get("annotations") or {}).get("sidecar.istio.io/status")
    proxy = next((c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy"), None)
    if status is None and proxy is None:
        return None
    assert status is not None and proxy is not None, pod
    env = {entry["name"]: entry.get("value") for entry in proxy.get("env") or []}
    return {
        "revision": json.loads(status)["revision"],
        "discovery": json.loads(env.get("PROXY_CONFIG") or "{}").get("discoveryAddress", f"{service('default')}:15012"),
        "ca": env.get("CA_ADDR"),
        "cluster": env.get("ISTIO_META_CLUSTER_ID"),
        "containers": [c["name"] for c in pod["spec"]["containers"]],
    }


def served(revision: str, cluster: str, namespace: str, name: str, primary: str = PRIMARY, network: str = "") -> bool:
    """The primary's istiod of that revision logged the injection of that pod, on the path of that cluster (a remote's:
    /inject/cluster/<remote>/net/<its network>)."""
    path = "/inject" if cluster == primary else f"/inject/cluster/{cluster}/net/{network or NETWORKS[cluster]}"
    return any(
        "Process sidecar injection request" in line and f"path={path} " in line and line.endswith(f"pod={namespace}/{name}")
        for line in istiod("logs", primary, revision).stdout.splitlines()
    )


def test_each_revision_injects_the_pods_of_its_namespaces_in_the_primary_and_the_remote(bed):
    istiod("start", PRIMARY)
    istiod("start", PRIMARY, CANARY)
    for cluster in bed.names:
        for namespace, (_label, revision) in NAMESPACES.items():
            got = sidecar(run_pod(cluster, namespace, "app"))
            assert got == {
                "revision": revision,
                "discovery": f"{service(revision)}:15012",
                "ca": f"{service(revision)}:15012",
                "cluster": cluster,
                "containers": ["app", "istio-proxy"],
            }, (cluster, namespace)
            assert served(revision, cluster, namespace, "app"), (cluster, namespace)
            other = CANARY if revision == "default" else "default"
            assert not served(other, cluster, namespace, "app"), (cluster, namespace)
    log = istiod("logs", PRIMARY).stdout
    assert "initializing sidecar injector" in log and "starting\tcontroller=configmap istio-sidecar-injector" in log


def test_with_its_istiod_stopped_a_revision_fails_open_and_the_other_keeps_injecting(bed):
    istiod("stop", PRIMARY)
    for cluster in bed.names:
        assert sidecar(run_pod(cluster, "shop", "plain")) is None, cluster
        assert sidecar(run_pod(cluster, "pay", "still"))["revision"] == CANARY, cluster
    istiod("start", PRIMARY)
    for cluster in bed.names:
        assert sidecar(run_pod(cluster, "shop", "again"))["revision"] == "default", cluster


def test_the_default_tag_moved_by_istioctl_injects_from_the_canary(bed):
    """istioctl recreates the tag's webhooks: the bed rewrites nothing, so istioctl's own apply stays valid."""
    for cluster in bed.names:
        in_bed("istioctl", "--context", cluster, "tag", "set", "default", "--revision", CANARY, "--overwrite", "--skip-confirmation")
    for cluster in bed.names:
        wait_for(
            f"{cluster}: the default tag points at {CANARY}",
            lambda: kubectl_json(cluster, "get", "mutatingwebhookconfiguration", "istio-revision-tag-default")["metadata"]["labels"]["istio.io/rev"] == CANARY,
            timeout=30,
        )
        got = sidecar(run_pod(cluster, "shop", "moved"))
        assert got["revision"] == CANARY and got["discovery"] == f"{service(CANARY)}:15012", cluster
        assert served(CANARY, cluster, "shop", "moved"), cluster
