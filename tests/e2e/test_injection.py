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

from conftest import ENV, PLAYBOOK_TIMEOUT, REPO, Bed, in_bed, istioctl, kubectl_json

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


# The rest of the upgrade on the same bed: a revision tag of the user's, a gateway by injection, plain workloads.
TAGGED, GATEWAYS, PROD = "orders", "gw", "prod"
APPS = ((TAGGED, "api"), (GATEWAYS, "ingress"))  # both namespaces on the user's tag prod
UPGRADE: dict = {}
GATEWAY = """apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: %s}
spec:
  replicas: 1
  selector: {matchLabels: {app: ingress}}
  template:
    metadata:
      annotations: {inject.istio.io/templates: gateway}
      labels: {app: ingress, sidecar.istio.io/inject: "true"}
    spec:
      containers: [{name: istio-proxy, image: auto}]
"""


def upgrade(bed: Bed, *args: str) -> tuple[int, dict, dict]:
    """The upgrade playbook, every stage (JSON output): rc, changed per host, and the upgrade module's calls as one."""
    target = os.path.join(bed.work, "target.yml")
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "meshfed.istio.upgrade", "-i", bed.inventory, "-i", bed.settings, "-i", target, *args]
    result = in_bed(*argv, check=False, timeout=PLAYBOOK_TIMEOUT, env={**ENV, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    document = json.loads(result.stdout)
    calls = [task["hosts"][PRIMARY] for play in document["plays"] for task in play["tasks"] if "Upgrade, stage by stage" in task["task"]["name"]]
    # one module call per stage: the last call's result, the first's stage_before, every call's events
    module = {**calls[-1], "stage_before": calls[0].get("stage_before"), "events": [event for call in calls for event in call.get("events") or []]}
    return result.returncode, {host: stats["changed"] for host, stats in document["stats"].items()}, module


def pods(cluster: str, namespace: str, app: str) -> list[dict]:
    items = kubectl_json(cluster, "-n", namespace, "get", "pods", "-l", f"app={app}")["items"]
    return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]


def admitted_as(pod: dict) -> str:
    """The name istiod logs for a pod of a controller: at admission it has only its generateName (its ReplicaSet's)."""
    return pod["metadata"]["generateName"] + "***** (actual name not yet known)"


def tag_revision(cluster: str, tag: str) -> str:
    return kubectl_json(cluster, "get", "mutatingwebhookconfiguration", f"istio-revision-tag-{tag}")["metadata"]["labels"]["istio.io/rev"]


def test_a_user_tag_a_gateway_and_a_workload_on_the_old_revision_before_the_rest_of_the_upgrade(bed):
    for cluster in bed.names:
        # the pods of the earlier tests the old revision injected would hold its removal back: not this test's subject
        in_bed("kubectl", "--request-timeout=60s", "--context", cluster, "-n", "shop", "delete", "pods", "--all", "--timeout=60s")
        in_bed(istioctl(), "--context", cluster, "tag", "set", PROD, "--revision", "default", "--skip-confirmation")
        for namespace in (TAGGED, GATEWAYS):
            in_bed("kubectl", "--request-timeout=10s", "--context", cluster, "create", "namespace", namespace)
            in_bed("kubectl", "--request-timeout=10s", "--context", cluster, "label", "namespace", namespace, f"istio.io/rev={PROD}")
        in_bed("kubectl", "--request-timeout=20s", "--context", cluster, "-n", TAGGED, "create", "deployment", "api", "--image=example.invalid/api")
        in_bed("kubectl", "--request-timeout=20s", "--context", cluster, "apply", "-f", "-", input=GATEWAY % GATEWAYS)
    for cluster in bed.names:
        for namespace, app in APPS:
            wait_for(f"{cluster}: {namespace}/{app} has its pod", lambda: len(pods(cluster, namespace, app)) == 1, timeout=60)
            pod = pods(cluster, namespace, app)[0]
            got = sidecar(pod)
            assert got["revision"] == "default" and got["discovery"] == f"{service('default')}:15012", (cluster, namespace, got)
            assert served("default", cluster, namespace, admitted_as(pod)), (cluster, namespace)
        UPGRADE.setdefault("before", {})[cluster] = {app: {pod["metadata"]["name"] for pod in pods(cluster, ns, app)} for ns, app in APPS}
    assert sidecar(pods(PRIMARY, GATEWAYS, "ingress")[0])["containers"] == ["istio-proxy"]  # the gateway template, not the sidecar's


def test_the_upgrade_moves_the_tag_then_restarts_the_workloads_then_the_gateways_after_the_eastwest_one(bed):
    rc, _changed, result = upgrade(bed)
    assert rc == 0, result.get("msg")
    assert result["stage"] == "done"
    events = result["events"]
    UPGRADE["events"] = events
    for cluster in bed.names:
        assert tag_revision(cluster, PROD) == CANARY, cluster
        for namespace in (TAGGED, GATEWAYS):
            labels = kubectl_json(cluster, "get", "namespace", namespace)["metadata"]["labels"]
            assert labels.get("istio.io/rev") == PROD and "istio-injection" not in labels, labels  # the tag moved, not the label
    moves = [(event["cluster"], event["tag"]) for event in events if event["action"] == "move_tag"]
    assert sorted(moves) == [(cluster, PROD) for cluster in bed.names]
    assert not any(event["action"] == "move_namespace" and event["namespace"] in (TAGGED, GATEWAYS) for event in events)

    def one(action: str, cluster: str) -> dict:
        found = [event for event in events if event["action"] == action and event["cluster"] == cluster]
        assert len(found) == 1, (action, cluster, events)
        return found[0]

    eastwest = max(one("install_gateway", cluster)["at"] for cluster in bed.names)
    for cluster in bed.names:
        workloads, gateways = one("restart_workloads", cluster), one("restart_gateways", cluster)
        restarted = [ref for batch in workloads["batches"] for ref in batch]
        assert f"Deployment {TAGGED}/api" in restarted and f"Deployment {GATEWAYS}/ingress" not in restarted, workloads
        assert [ref for batch in gateways["batches"] for ref in batch] == [f"Deployment {GATEWAYS}/ingress"], gateways
        assert workloads["at"] < eastwest < gateways["at"], cluster
        assert gateways["at"] < min(event["at"] for event in events if event["action"] == "uninstall")
        for namespace, app in APPS:
            now = pods(cluster, namespace, app)
            assert len(now) == 1 and now[0]["metadata"]["name"] not in UPGRADE["before"][cluster][app], (cluster, app)
            got = sidecar(now[0])
            assert got["revision"] == CANARY and got["discovery"] == f"{service(CANARY)}:15012", (cluster, app, got)
            assert served(CANARY, cluster, namespace, admitted_as(now[0])), (cluster, app)
            assert not served("default", cluster, namespace, admitted_as(now[0])), (cluster, app)
        annotations = kubectl_json(cluster, "get", "namespace", GATEWAYS)["metadata"]["annotations"]
        assert annotations["meshfed.istio/gateways-restarted-for"] == f"upgrade/{CANARY}", annotations
        # the old revision is gone: its injector and (in the primary) its istiod
        gone = in_bed("kubectl", "--request-timeout=10s", "--context", cluster, "get", "mutatingwebhookconfiguration", "istio-sidecar-injector", check=False)
        assert gone.returncode != 0, cluster
    assert in_bed("kubectl", "--request-timeout=10s", "--context", PRIMARY, "-n", "istio-system", "get", "deployment", "istiod", check=False).returncode != 0


def test_a_rerun_of_the_finished_upgrade_changes_nothing(bed):
    rc, changed, result = upgrade(bed)
    assert rc == 0, result.get("msg")
    assert result["stage_before"] == "done" and changed == {name: 0 for name in bed.names}
    assert not any(event["changed"] for event in result["events"])
