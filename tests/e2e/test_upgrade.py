"""The upgrade playbook on a primary + remote + second primary mesh of kwok clusters, with the real istioctl.

One Istio build exists on the test bed, so the upgrade goes from the default revision (what site installs) to a second
revision of the same build, 1-31-x: the mechanics (ordering, gates, resume, removal) are the same as between releases.
The tests run in order on one bed: check mode, an injected failure, a stop after one stage, a removal held back by a pod
still on the old revision, the Deployments on the old revision restarted in that same run, the finish, the order from
the timestamps, a rerun, and site and verify on the new revision.

The bed's injector webhooks fail open (no webhook backend answers on kwok), so a Deployment's pods are labelled as the old
revision's injector labels them (security.istio.io/tlsMode=istio, istio.io/rev=default) by the test; the pods its
restart creates carry no such label, as pods injected by the new revision would not carry the old one.
"""

from __future__ import annotations

import datetime
import json
import os

import pytest
import yaml
from test_istiod import wait_for
from test_restart_workloads import rolled_out, template_annotations

from conftest import ENV, PLAYBOOK_TIMEOUT, REPO, Bed, in_bed, kubectl_json

TARGET = "1-31-x"
STAGE_TITLES = {
    "1. the target control plane on every primary, Ready",
    "2. the target control plane on every remote",
    "3. namespaces moved to the target revision",
    "4. workloads of the injecting namespaces restarted, in batches",
    "5. east-west gateways on the target revision",
    "6. the old revision removed, remotes first",
}
# namespaces that inject from the old (default) revision, and one that does not inject
APPS = {("cluster2", "shop"): {"istio-injection": "enabled"}, ("cluster3", "pay"): {"istio.io/rev": "default"}, ("cluster1", "plain"): {}}
EVENTS: list[dict] = []
# a Deployment in a namespace that moves, its pods on the old revision: a primary's and the remote's
WEB = {"cluster2": "shop", "cluster3": "pay"}
OLD_PROXY = {"security.istio.io/tlsMode": "istio", "istio.io/rev": "default"}
MARKER, RESTARTED_AT = "meshfed.istio/restarted-for", "kubectl.kubernetes.io/restartedAt"
HELD_BACK: dict = {}


@pytest.fixture(scope="module")
def bed():
    bed = Bed(3, True)
    bed.up()
    for (context, namespace), labels in APPS.items():
        in_bed("kubectl", "--request-timeout=10s", "--context", context, "create", "namespace", namespace)
        if labels:
            in_bed("kubectl", "--request-timeout=10s", "--context", context, "label", "namespace", namespace, *(f"{k}={v}" for k, v in labels.items()))
    converged = bed.playbook("site")
    assert converged.rc == 0, converged.output[-6000:]
    for context, namespace in WEB.items():
        create = ("create", "deployment", "web", "--image=example.invalid/web", "--replicas=2")
        in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", namespace, *create)
    wait_for("the web Deployments rolled out", lambda: all(rolled_out(web(context)) for context in WEB), timeout=120)
    for context, namespace in WEB.items():
        pods = [f"pod/{name}" for name in web_pods(context)]
        in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", namespace, "label", *pods, *(f"{k}={v}" for k, v in OLD_PROXY.items()))
    bed.target = bed.write_settings({"meshfed_istio_target_revision": TARGET}, os.path.join(bed.work, "target.yml"))
    yield bed
    bed.down()


def upgrade(bed: Bed, *args: str) -> tuple[int, dict, dict]:
    """The upgrade playbook (JSON output): rc, changed per host, and the upgrade module's result."""
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "meshfed.istio.upgrade", "-i", bed.inventory, "-i", bed.settings, "-i", bed.target, *args]
    result = in_bed(*argv, check=False, timeout=PLAYBOOK_TIMEOUT, env={**ENV, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    document = json.loads(result.stdout)
    module = next(task["hosts"]["cluster1"] for play in document["plays"] for task in play["tasks"] if "Upgrade, stage by stage" in task["task"]["name"])
    EVENTS.extend(module.get("events") or [])
    return result.returncode, {host: stats["changed"] for host, stats in document["stats"].items()}, module


def labels(context: str, namespace: str) -> dict:
    return kubectl_json(context, "get", "namespace", namespace)["metadata"].get("labels") or {}


def app_labels() -> dict:
    return {key: {k: v for k, v in labels(*key).items() if k in ("istio-injection", "istio.io/rev")} for key in APPS}


def deployment(context: str, name: str) -> dict | None:
    result = in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", "istio-system", "get", "deployment", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def ready(item: dict | None) -> bool:
    return item is not None and (item.get("status") or {}).get("readyReplicas", 0) >= 1


def web(context: str) -> dict:
    return kubectl_json(context, "-n", WEB[context], "get", "deployment", "web")


def web_pods(context: str) -> dict[str, dict]:
    """The web Deployment's pods by name: their labels (pods being deleted left out)."""
    pods = kubectl_json(context, "-n", WEB[context], "get", "pods", "-l", "app=web")["items"]
    return {pod["metadata"]["name"]: pod["metadata"].get("labels") or {} for pod in pods if not pod["metadata"].get("deletionTimestamp")}


def exists(context: str, kind: str, name: str, namespaced: bool = True) -> bool:
    args = ["-n", "istio-system"] if namespaced else []
    return in_bed("kubectl", "--request-timeout=10s", "--context", context, *args, "get", kind, name, check=False).returncode == 0


def default_tag(context: str) -> str:
    return kubectl_json(context, "get", "mutatingwebhookconfiguration", "istio-revision-tag-default")["metadata"]["labels"]["istio.io/rev"]


def test_check_mode_plans_every_stage_and_writes_nothing(bed):
    before = bed.written_state()
    rc, changed, result = upgrade(bed, "--check")
    assert rc == 0, result
    assert set(result["plan"]) == STAGE_TITLES
    # the restart batches, listed from the clusters: cluster1's only namespace does not inject
    assert result["plan"]["4. workloads of the injecting namespaces restarted, in batches"] == {
        context: [f"restart the workloads of {namespace} in batches, marked {MARKER}=upgrade/{TARGET}", f"batch 1: Deployment {namespace}/web"]
        for context, namespace in WEB.items()
    }
    assert result["plan"]["6. the old revision removed, remotes first"]["cluster3"] == [
        f"move the default tag to {TARGET} (from default)",
        "uninstall revision default (control-plane)",
    ]
    assert result["stage"] == "primaries" and result["events"] == []
    assert changed == {"cluster1": 1, "cluster2": 0, "cluster3": 0}  # the one task that runs once for the mesh
    assert bed.written_state() == before


def test_a_new_istiod_that_cannot_become_ready_leaves_the_old_revision_serving(bed):
    before = app_labels()
    unschedulable = {"components": {"pilot": {"k8s": {"nodeSelector": {"meshfed.test/nowhere": "true"}}}}}
    rc, _changed, result = upgrade(bed, "-e", json.dumps({"upgrade_control_plane_overlay": unschedulable, "upgrade_readiness_timeout": 20}))
    assert rc != 0
    assert result["msg"].startswith("cluster cluster1: istioctl install of control-plane-1-31-x failed"), result["msg"]
    assert "the old revision keeps serving, no namespace was moved" in result["msg"]
    assert app_labels() == before
    for context in ("cluster1", "cluster2"):
        assert ready(deployment(context, "istiod")), context
        assert default_tag(context) == "default"
    assert not ready(deployment("cluster1", f"istiod-{TARGET}"))
    assert deployment("cluster2", f"istiod-{TARGET}") is None  # the next primary was not touched
    assert not exists("cluster3", "service", f"istiod-{TARGET}")


def test_a_run_stops_after_the_stage_asked_for_once_the_fault_is_gone(bed):
    before = app_labels()
    rc, _changed, result = upgrade(bed, "-e", "upgrade_stage=primaries")
    assert rc == 0, result.get("msg")
    assert result["stage_before"] == "primaries" and result["stage"] == "remotes"
    for context in ("cluster1", "cluster2"):
        assert ready(deployment(context, f"istiod-{TARGET}")) and ready(deployment(context, "istiod"))
    assert exists("cluster1", "virtualservices.networking.istio.io", f"istiod-vs-{TARGET}")
    assert not exists("cluster3", "service", f"istiod-{TARGET}")
    assert app_labels() == before


def test_the_old_revision_stays_where_a_pod_still_runs_its_proxy(bed):
    pod_labels = ",".join(f"{k}={v}" for k, v in OLD_PROXY.items())
    in_bed("kubectl", "--context", "cluster2", "-n", "shop", "run", "old-proxy", "--image=app", "--restart=Never", f"--labels={pod_labels}")
    HELD_BACK["before"] = {context: web(context) for context in WEB}
    HELD_BACK["pods"] = {context: set(web_pods(context)) for context in WEB}
    try:
        rc, _changed, result = upgrade(bed)
    finally:
        in_bed("kubectl", "--context", "cluster2", "-n", "shop", "delete", "pod", "old-proxy", "--timeout=60s")
    HELD_BACK["events"] = result.get("events") or []
    assert rc != 0
    # the bare pod only: the web Deployment's two pods there were restarted off the old revision in this run
    assert result["msg"].startswith("cluster cluster2: 1 injected pod(s) still run proxies of revision default"), result["msg"]
    # remotes first: the remote and the first primary are done, the primary with the pod still serves the old revision
    assert not exists("cluster3", "service", "istiod") and not exists("cluster1", "deployment", "istiod")
    assert ready(deployment("cluster2", "istiod")) and default_tag("cluster2") == TARGET


def test_the_deployments_on_the_old_revision_were_restarted_so_that_their_old_revision_went_in_the_same_run(bed):
    token = f"upgrade/{TARGET}"
    for context, namespace in WEB.items():
        before, after = HELD_BACK["before"][context], web(context)
        annotations = template_annotations(after)
        assert annotations.get(MARKER) == token, context
        assert RESTARTED_AT in annotations and annotations[RESTARTED_AT] != template_annotations(before).get(RESTARTED_AT), context
        assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1, context  # restarted once
        assert rolled_out(after), context
        pods = web_pods(context)
        assert len(pods) == 2 and not set(pods) & HELD_BACK["pods"][context], context  # every old pod replaced
        assert all(pod_labels.get("istio.io/rev") != "default" for pod_labels in pods.values()), pods
        assert kubectl_json(context, "get", "namespace", namespace)["metadata"]["annotations"][MARKER] == token, context
    # in the run held back in cluster2: the restart after the last namespace moved and before the first gateway, then
    # the remote's old revision removed (its Deployment's old proxies gone) without another run
    order = [(event["action"], event["cluster"]) for event in HELD_BACK["events"] if event["action"] != "stage_finished"]
    restarts = [index for index, item in enumerate(order) if item[0] == "restart_workloads"]
    assert [order[index][1] for index in restarts] == ["cluster2", "cluster3"]
    assert max(i for i, item in enumerate(order) if item[0] == "move_namespace") < min(restarts)
    assert max(restarts) < min(i for i, item in enumerate(order) if item[0] == "install_gateway")
    assert ("uninstall", "cluster3") in order[max(restarts) :]
    assert not exists("cluster3", "mutatingwebhookconfiguration", "istio-sidecar-injector", namespaced=False)


def test_the_next_run_finishes_the_upgrade(bed):
    rc, _changed, result = upgrade(bed)
    assert rc == 0, result.get("msg")
    assert result["stage"] == "done"
    assert app_labels() == {key: ({"istio.io/rev": TARGET} if value else {}) for key, value in APPS.items()}
    for context in bed.names:
        assert default_tag(context) == TARGET
        assert deployment(context, "istio-eastwestgateway")["metadata"]["labels"]["istio.io/rev"] == TARGET
        assert not exists(context, "configmap", "meshfed-install-control-plane")
        assert not exists(context, "mutatingwebhookconfiguration", "istio-sidecar-injector", namespaced=False)
    assert kubectl_json("cluster1", "-n", "istio-system", "get", "virtualservices.networking.istio.io", "istiod-vs")["spec"]["tls"][0]["route"][0][
        "destination"
    ]["host"] == (f"istiod-{TARGET}.istio-system.svc.cluster.local")
    slices = kubectl_json("cluster3", "-n", "istio-system", "get", "endpointslices", "-l", f"kubernetes.io/service-name=istiod-{TARGET}")["items"]
    assert [address for item in slices for endpoint in item["endpoints"] for address in endpoint["addresses"]] == ["198.51.100.1"]


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_order_from_the_timestamps(bed):
    def times(action: str, cluster: str | None = None) -> list[float]:
        return [event["at"] for event in EVENTS if event["action"] == action and cluster in (None, event["cluster"])]

    primaries_ready = max(times("wait_ready"))
    assert sorted({event["cluster"] for event in EVENTS if event["action"] == "wait_ready"}) == ["cluster1", "cluster2"]
    assert primaries_ready < min(times("install_control_plane", "cluster3"))
    assert max(times("install_control_plane")) < min(times("move_namespace"))
    assert max(times("move_namespace")) < min(times("restart_workloads")) <= max(times("restart_workloads")) < min(times("install_gateway"))
    assert max(times("install_gateway")) < min(times("uninstall"))
    assert max(times("uninstall", "cluster3")) < min(times("uninstall", "cluster1")) < min(times("uninstall", "cluster2"))
    # and from the clusters' own clocks: each new istiod was Available before the namespace moved (seconds)
    moved = kubectl_json("cluster2", "get", "namespace", "shop", "--show-managed-fields")["metadata"]["managedFields"]
    label_time = max(_time(entry["time"]) for entry in moved if "f:istio.io/rev" in json.dumps(entry.get("fieldsV1") or {}))
    for context in ("cluster1", "cluster2"):
        conditions = deployment(context, f"istiod-{TARGET}")["status"]["conditions"]
        available = next(_time(item["lastTransitionTime"]) for item in conditions if item["type"] == "Available" and item["status"] == "True")
        assert available <= label_time, context


def test_a_rerun_changes_nothing(bed):
    before = bed.written_state()
    rc, changed, result = upgrade(bed)
    assert rc == 0, result.get("msg")
    assert changed == {name: 0 for name in bed.names}
    assert result["stage_before"] == "done" and not any(event["changed"] for event in result["events"])
    assert bed.written_state() == before


def test_site_and_verify_on_the_new_revision_write_nothing(bed):
    after = os.path.join(bed.work, "after.yml")
    with open(bed.settings, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    settings["all"]["vars"]["meshfed_revision"] = TARGET
    with open(after, "w", encoding="utf-8") as handle:
        yaml.safe_dump(settings, handle)
    before = bed.written_state()
    site = bed.playbook("site", inventories=(after,))
    assert site.rc == 0, site.output[-6000:]  # verify is the site playbook's last play: the doctor finds nothing
    assert bed.written_state() == before
