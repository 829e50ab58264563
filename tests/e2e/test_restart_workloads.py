"""The bounded rolling restart of workloads after a CA rotation, on a kwok cluster with the real istiod (for the rotation's
read-back): kube-controller-manager rolls the Deployments out through new ReplicaSets and kwok marks their pods Ready.

Batches are read back from the cluster (one restartedAt per batch, each batch's pods Ready before the next batch was
patched), a rerun restarts nothing, and a Deployment that can never become ready stops the restart within its bound,
naming it, with no further batch started. Tests run in order and share one bed.
"""

from __future__ import annotations

import datetime
import json
import time

import pytest
from test_istiod import NS, istiod, wait_for
from test_rotate_ca import cacerts, published, rotate

from conftest import Bed, in_bed, kubectl_json

APP, OTHER = "shop", "plain"
WEB = [f"web{i}" for i in range(1, 6)]
MARKER, RESTARTED_AT = "meshfed.istio/restarted-for", "kubectl.kubernetes.io/restartedAt"
TIMES: dict = {}


def kubectl(*args: str) -> None:
    in_bed("kubectl", "--request-timeout=10s", "--context", "cluster1", *args)


def deployments(namespace: str = APP) -> dict:
    return {item["metadata"]["name"]: item for item in kubectl_json("cluster1", "-n", namespace, "get", "deployments")["items"]}


def rolled_out(item: dict) -> bool:
    status, replicas = item.get("status") or {}, item["spec"].get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= item["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
    )


def template_annotations(item: dict) -> dict:
    return item["spec"]["template"]["metadata"].get("annotations") or {}


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def ready_times(namespace: str) -> dict:
    """restartedAt of each pod's template -> when its pods became Ready (the latest)."""
    found: dict = {}
    for pod in kubectl_json("cluster1", "-n", namespace, "get", "pods")["items"]:
        stamp = (pod["metadata"].get("annotations") or {}).get(RESTARTED_AT)
        ready = [c["lastTransitionTime"] for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "Ready" and c["status"] == "True"]
        if stamp and ready:
            found[stamp] = max(found.get(stamp, ready[0]), ready[0])
    return found


@pytest.fixture(scope="module")
def bed():
    bed = Bed(1, False)
    bed.up()
    site = bed.playbook("site")
    assert site.rc == 0, site.output[-4000:]
    istiod("start", "cluster1")
    wait_for("istio-ca-root-cert in istio-system", lambda: published("cluster1") == cacerts(bed, "cluster1")["root-cert.pem"], timeout=120)
    kubectl("create", "namespace", APP)
    kubectl("label", "namespace", APP, "istio-injection=enabled")
    kubectl("create", "namespace", OTHER)
    for name in WEB:
        kubectl("-n", APP, "create", "deployment", name, "--image=example.invalid/web")
    kubectl("-n", OTHER, "create", "deployment", "outside", "--image=example.invalid/web")
    wait_for("every Deployment rolled out", lambda: all(map(rolled_out, [*deployments().values(), *deployments(OTHER).values()])), timeout=120)
    yield bed
    print(f"\nrestart timings (s): {TIMES}")
    bed.down()


RESTART = ("rotate_ca_restart_workloads=true", "rotate_ca_restart_batch_size=2", "rotate_ca_mode=intermediate")


def test_an_intermediate_rotation_restarts_injected_workloads_in_batches_and_a_rerun_restarts_nothing(bed):
    before = {name: item["metadata"]["generation"] for name, item in deployments().items()}
    plan = rotate(bed, "rotate_ca_id=w1", *RESTART, check=True)
    assert plan.rc == 0, plan.output[-4000:]
    for name in WEB:
        assert f"Deployment {APP}/{name}" in plan.output
    assert {name: item["metadata"]["generation"] for name, item in deployments().items()} == before

    run = rotate(bed, "rotate_ca_id=w1", *RESTART, "rotate_ca_restart_timeout=180")
    assert run.rc == 0, run.output[-4000:]
    TIMES["rotation_with_restart"] = run.seconds
    found = deployments()
    assert all(rolled_out(item) for item in found.values())
    assert {name: template_annotations(item).get(MARKER) for name, item in found.items()} == dict.fromkeys(WEB, "rotate_ca/w1")
    assert MARKER not in template_annotations(deployments(OTHER)["outside"])  # a namespace without injection is left alone
    # one restartedAt per batch: [web1, web2], [web3, web4], [web5], in that order
    stamps = [template_annotations(found[name])[RESTARTED_AT] for name in WEB]
    assert stamps[0] == stamps[1] < stamps[2] == stamps[3] < stamps[4], stamps
    # a batch is patched only once every pod of the one before is Ready (Ready times are to the second)
    ready = ready_times(APP)
    for earlier, later in ((stamps[0], stamps[2]), (stamps[2], stamps[4])):
        assert parse(ready[earlier]) <= parse(later), (ready, stamps)

    generations = {name: item["metadata"]["generation"] for name, item in found.items()}
    again = rotate(bed, "rotate_ca_id=w1", *RESTART, "rotate_ca_restart_timeout=180")
    assert again.rc == 0 and set(again.changed.values()) == {0}, again.output[-4000:]
    assert {name: item["metadata"]["generation"] for name, item in deployments().items()} == generations
    TIMES["rerun"] = again.seconds


def test_a_deployment_that_never_becomes_ready_stops_the_restart_within_its_bound_then_a_rerun_resumes(bed):
    # sorted first in its namespace, so it is in the first batch; no node carries the label
    labels = {"app": "a-stuck"}
    stuck = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a-stuck", "namespace": APP},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {"meshfed.example/none": "x"}, "containers": [{"name": "web", "image": "example.invalid/web"}]},
            },
        },
    }
    in_bed("kubectl", "--request-timeout=10s", "--context", "cluster1", "create", "-f", "-", input=json.dumps(stuck))
    generations = {name: item["metadata"]["generation"] for name, item in deployments().items()}
    bound = 20
    started = time.monotonic()
    failed = rotate(bed, "rotate_ca_id=w2", *RESTART, f"rotate_ca_restart_timeout={bound}")
    TIMES["timeout_run"] = round(time.monotonic() - started, 1)
    assert failed.rc != 0
    assert f"Deployment {APP}/a-stuck (" in failed.output and f"within {bound} s" in failed.output, failed.output[-4000:]
    assert f"not restarted: Deployment {APP}/web2, Deployment {APP}/web3" in failed.output
    found = deployments()
    assert template_annotations(found["web1"]).get(MARKER) == "rotate_ca/w2"  # its batch
    assert all(found[name]["metadata"]["generation"] == generations[name] for name in WEB[1:])  # no further batch
    assert TIMES["timeout_run"] < TIMES["rotation_with_restart"] + bound + 30  # the rotation, then at most the bound

    kubectl("-n", APP, "delete", "deployment", "a-stuck")
    resumed = rotate(bed, "rotate_ca_id=w2", *RESTART, "rotate_ca_restart_timeout=180")
    assert resumed.rc == 0, resumed.output[-4000:]
    found = deployments()
    assert {name: template_annotations(item).get(MARKER) for name, item in found.items()} == dict.fromkeys(WEB, "rotate_ca/w2")
    assert found["web1"]["metadata"]["generation"] == generations["web1"] + 1  # restarted once, not again on the rerun
    # the Istio namespace is not injected: istiod's Deployment is left alone
    assert MARKER not in template_annotations(kubectl_json("cluster1", "-n", NS, "get", "deployment", "istiod"))
