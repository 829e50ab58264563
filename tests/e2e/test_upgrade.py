"""The upgrade playbook on a primary + remote + second primary mesh of kwok clusters, with two real Istio releases.

Site installs the mesh with the older release's istioctl (1.30-dev, testbin.sh's istioctl-old: the default revision),
and the upgrade goes to revision 1-31-dev with the newer one (1.31-dev): the versions are read back from the istiod
Deployments' image tags, and a downgrade is refused by the skew rules. The tests run in order on one bed: check mode,
the target's istioctl x precheck refusing a cluster (and its warnings shown), an injected failure, a stop after one
stage, a removal held back by a pod still on the old revision, the Deployments on the old revision restarted in that
same run, the finish, the order from the timestamps, a rerun, a downgrade refused, and site and verify on the new
revision. The upgrade runs one stage per module call and the doctor after each stage that changed something: every
such run shows it per stage, with no error mid-upgrade.

The old revision's istiod does not run on the bed, so its injector webhooks fail open: a Deployment's pods are labelled
as that injector labels them (security.istio.io/tlsMode=istio, istio.io/rev=default) by the test, and their template has
the istio-proxy container's network and rotation environment that injection would have given them (the doctor reads it).
The target's real istiod (tests/testbed/istiod.sh start CLUSTER REVISION) runs from the end of the primaries stage, on
each primary, and is checked to sign on the mesh root before any namespace moves; the bed's API servers reach it for
the webhooks of its revision, so the pods the restart creates, and a pod created after its namespace moved (in a
primary and in the remote), carry the sidecar it injected.
"""

from __future__ import annotations

import datetime
import functools
import json
import os

import pytest
import yaml
from test_injection import served, sidecar
from test_istiod import Workload, collection_writes, fingerprint, istiod, wait_for
from test_restart_workloads import rolled_out, template_annotations

from conftest import ENV, PLAYBOOK_TIMEOUT, REPO, Bed, in_bed, istio_version, istioctl, kubectl_json

TARGET = "1-31-dev"
OLD_VERSION, NEW_VERSION = "1.30-dev", "1.31-dev"
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
GATEWAY_CRD = "gateways.gateway.networking.k8s.io"
PREFLIGHT_DOCTOR = "Preflight - no error-level finding before the upgrade starts"


def networks(bed: Bed) -> dict[str, str]:
    with open(bed.inventory, encoding="utf-8") as handle:
        groups = yaml.safe_load(handle)["all"]["children"]
    return {host: facts["meshfed_network"] for group in groups.values() for host, facts in group["hosts"].items()}


def proxy(network: str) -> dict:
    """The istio-proxy container as the old revision's injector would have added it (what the doctor reads of it)."""
    env = [{"name": "ISTIO_META_NETWORK", "value": network}, {"name": "PROXY_CONFIG_XDS_AGENT", "value": "true"}]
    return {"name": "istio-proxy", "image": "example.invalid/proxyv2", "env": env}


def web_manifest(namespace: str, network: str) -> str:
    labels = {"app": "web"}
    containers = [{"name": "web", "image": "example.invalid/web"}, proxy(network)]
    spec = {"replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}}}
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace}, "spec": spec})


def gateway_crd(*versions: str) -> str:
    """Gateway API's Gateway CRD serving only these versions (what istioctl x precheck looks at)."""
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": GATEWAY_CRD, "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/1538"}},
        "spec": {
            "group": "gateway.networking.k8s.io",
            "names": {"kind": "Gateway", "listKind": "GatewayList", "plural": "gateways", "singular": "gateway"},
            "scope": "Namespaced",
            "versions": [{"name": version, "served": True, "storage": index == 0, "schema": schema} for index, version in enumerate(versions)],
        },
    }
    return json.dumps(crd)


@pytest.fixture(scope="module")
def bed():
    bed = Bed(3, True)
    bed.up()
    old = istioctl("istioctl-old")
    bed.old = {"meshfed_istioctl": old, "meshfed_istio_version": istio_version(old)}
    assert bed.old["meshfed_istio_version"] == OLD_VERSION and istio_version() == NEW_VERSION
    bed.write_settings(bed.old)
    bed.networks = networks(bed)
    for (context, namespace), labels in APPS.items():
        in_bed("kubectl", "--request-timeout=10s", "--context", context, "create", "namespace", namespace)
        if labels:
            in_bed("kubectl", "--request-timeout=10s", "--context", context, "label", "namespace", namespace, *(f"{k}={v}" for k, v in labels.items()))
    converged = bed.playbook("site")
    assert converged.rc == 0, converged.output[-6000:]
    for context, namespace in WEB.items():
        in_bed("kubectl", "--request-timeout=10s", "--context", context, "apply", "-f", "-", input=web_manifest(namespace, bed.networks[context]))
    wait_for("the web Deployments rolled out", lambda: all(rolled_out(web(context)) for context in WEB), timeout=120)
    for context, namespace in WEB.items():
        pods = [f"pod/{name}" for name in web_pods(context)]
        in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", namespace, "label", *pods, *(f"{k}={v}" for k, v in OLD_PROXY.items()))
    target = {"meshfed_istio_target_revision": TARGET, "meshfed_istio_target_istioctl": istioctl()}
    bed.target = bed.write_settings({**bed.old, **target}, os.path.join(bed.work, "target.yml"))
    yield bed
    bed.down()


def upgrade(bed: Bed, *args: str, target: str | None = None) -> tuple[int, dict, dict]:
    """The upgrade playbook (JSON output): rc, changed per host, and the upgrade module's results - one call per stage -
    as one: the last call's, with the first's stage_before, plan and precheck, every call's events, and under doctors
    the doctor's result after each stage that changed something."""
    inventories = ["-i", bed.inventory, "-i", bed.settings, "-i", target or bed.target]
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "meshfed.istio.upgrade", *inventories, *args]
    result = in_bed(*argv, check=False, timeout=PLAYBOOK_TIMEOUT, env={**ENV, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    document = json.loads(result.stdout)
    tasks = [task for play in document["plays"] for task in play["tasks"]]
    calls = [task["hosts"]["cluster1"] for task in tasks if "Upgrade, stage by stage" in task["task"]["name"]]
    doctors = [
        task["hosts"]["cluster1"]["msg"]
        for task in tasks
        if task["task"]["name"].endswith(" : The doctor after the stage") and not task["hosts"]["cluster1"].get("skipped")
    ]
    module = {
        **calls[-1],
        **{key: calls[0][key] for key in ("stage_before", "plan", "precheck") if key in calls[0]},
        "events": [event for call in calls for event in call.get("events") or []],
        "calls": len(calls),
        "doctors": [{"stage": item["stage"], **item["summary"]} for item in doctors],
        "preflight_doctor": [not task["hosts"]["cluster1"].get("failed", False) for task in tasks if PREFLIGHT_DOCTOR in task["task"]["name"]],
    }
    EVENTS.extend(module["events"])
    return result.returncode, {host: stats["changed"] for host, stats in document["stats"].items()}, module


def doctor_clean(result: dict, stages: list[str]) -> None:
    """The doctor ran after each of these stages (and no other), each time without an error-level finding."""
    assert [item["stage"] for item in result["doctors"]] == stages, result["doctors"]
    assert all(item["error"] == 0 for item in result["doctors"]), result["doctors"]


def image_tag(context: str, name: str) -> str:
    return deployment(context, name)["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]


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
    assert result["calls"] == 1 and result["doctors"] == []  # one call for the whole plan, no doctor after it: nothing was written
    assert result["preflight_doctor"] == [True]  # the doctor ran before any write (reads only) and found no error
    # the target's precheck ran in every cluster (the target is installed nowhere yet) and found nothing
    assert result["precheck"] == {name: {"errors": [], "warnings": []} for name in bed.names}
    assert result["target_version"] == NEW_VERSION
    assert changed == {"cluster1": 1, "cluster2": 0, "cluster3": 0}  # the one task that runs once for the mesh
    assert bed.written_state() == before
    # what site installed with the older istioctl: its release's istiod image on both primaries
    assert [image_tag(context, "istiod") for context in ("cluster1", "cluster2")] == [OLD_VERSION, OLD_VERSION]


def test_the_targets_precheck_refuses_a_cluster_it_finds_unsafe_and_shows_its_warnings(bed):
    before = bed.written_state()
    apply = ("kubectl", "--request-timeout=10s", "--context", "cluster3", "apply", "-f", "-")
    delete = ("kubectl", "--request-timeout=10s", "--context", "cluster3", "delete", "crd", GATEWAY_CRD, "--ignore-not-found", "--timeout=60s")
    try:
        in_bed(*apply, input=gateway_crd("v1alpha2"))  # below the v1beta1 Istio 1.31 needs: an error-level message
        rc, _changed, result = upgrade(bed)
        assert rc != 0
        assert result["msg"].startswith(
            "the upgrade does not start: cluster cluster3: istioctl x precheck of the target: IST0156 "
            f"(CustomResourceDefinition {GATEWAY_CRD}): The Gateway API CRD version v1alpha2 is lower than the minimum version: v1beta1"
        ), result["msg"]
        assert "skip it with upgrade_precheck=false" in result["msg"]
        assert result["events"] == [] and bed.written_state() == before
        in_bed(*delete)  # v1alpha2 was its storage version: a new CRD, not an update
        in_bed(*apply, input=gateway_crd("v1beta1"))  # a warning only (v1 missing): shown, not refused
        rc, _changed, result = upgrade(bed, "--check")
        assert rc == 0, result.get("msg")
        assert result["precheck"]["cluster3"] == {
            "errors": [],
            "warnings": [f"IST0172 (CustomResourceDefinition {GATEWAY_CRD}): The Gateway API CRD version v1beta1 is lower than the minimum version: v1"],
        }
        assert [warning for warning in result.get("warnings") or [] if "IST0172" in warning] == [
            f"cluster cluster3: istioctl x precheck of the target: {result['precheck']['cluster3']['warnings'][0]}"
        ]
    finally:
        in_bed(*delete)
    assert bed.written_state() == before


def test_a_new_istiod_that_cannot_become_ready_leaves_the_old_revision_serving(bed):
    before = app_labels()
    unschedulable = {"components": {"pilot": {"k8s": {"nodeSelector": {"meshfed.test/nowhere": "true"}}}}}
    rc, _changed, result = upgrade(bed, "-e", json.dumps({"upgrade_control_plane_overlay": unschedulable, "upgrade_readiness_timeout": 20}))
    assert rc != 0
    assert result["msg"].startswith(f"cluster cluster1: istioctl install of control-plane-{TARGET} failed"), result["msg"]
    assert result["calls"] == 1 and result["doctors"] == []
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
    doctor_clean(result, ["primaries"])  # two revisions on both primaries: no error
    for context in ("cluster1", "cluster2"):
        assert ready(deployment(context, f"istiod-{TARGET}")) and ready(deployment(context, "istiod"))
        assert (image_tag(context, "istiod"), image_tag(context, f"istiod-{TARGET}")) == (OLD_VERSION, NEW_VERSION), context
    assert exists("cluster1", "virtualservices.networking.istio.io", f"istiod-vs-{TARGET}")
    assert not exists("cluster3", "service", f"istiod-{TARGET}")
    assert app_labels() == before


def test_site_mid_upgrade_writes_nothing_and_verify_finds_no_error(bed):
    """Two revisions on both primaries (the default one serving, the target's installed): site, as the inventory still
    describes the default revision, writes nothing to any cluster and ends with a verify that finds no error."""
    before = bed.written_state()
    site = bed.playbook("site")
    assert site.rc == 0, site.output[-6000:]
    assert bed.written_state() == before
    # the one task that may change: the doctor's report on the control node, which now describes two revisions
    changed_tasks = {chunk.split("]", 1)[0] for chunk in site.output.split("\nTASK [")[1:] if "\nchanged: [" in chunk}
    assert changed_tasks <= {"meshfed.istio.verify : Diagnose the mesh on the control node"}, changed_tasks


def test_the_new_revisions_real_istiod_signs_on_the_mesh_root_before_any_namespace_moves(bed):
    """The real istiod of the target (the 1.31-dev build: istiod.sh picks it by the Deployment's image tag) started from
    what the primaries stage installed: it takes the plugged-in CA and issues workload certificates on the mesh root.
    It keeps running, so the namespaces that move are injected by it from now on."""
    with open(os.path.join(bed.work, "pki", "root-cert.pem"), encoding="ascii") as handle:
        root = fingerprint(handle.read())
    assert app_labels() == dict(APPS)  # no namespace moved yet
    for context in ("cluster1", "cluster2"):
        istiod("start", context, TARGET)
        log = istiod("logs", context, TARGET).stdout
        assert "Use local CA certificate" in log and "Use root cert from etc/cacerts/root-cert.pem" in log, context
        assert f"\tversion: {NEW_VERSION}-" in log, log[:2000]  # the 1.31-dev build runs it
        workload = Workload(bed, context, "canary", f"-{TARGET}", revision=TARGET)
        assert workload.chain["fingerprints"][-1] == root, context
        assert workload.chain["issuers"][0] == f"CN=Intermediate CA,L={context},O=Istio", workload.chain


def test_the_old_revision_stays_where_a_pod_still_runs_its_proxy(bed):
    spec = {"restartPolicy": "Never", "containers": [{"name": "app", "image": "example.invalid/app"}, proxy(bed.networks["cluster2"])]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "old-proxy", "namespace": "shop", "labels": OLD_PROXY}, "spec": spec}
    in_bed("kubectl", "--request-timeout=10s", "--context", "cluster2", "apply", "-f", "-", input=json.dumps(pod))
    HELD_BACK["before"] = {context: web(context) for context in WEB}
    HELD_BACK["pods"] = {context: set(web_pods(context)) for context in WEB}
    try:
        rc, _changed, result = upgrade(bed)
    finally:
        in_bed("kubectl", "--context", "cluster2", "-n", "shop", "delete", "pod", "old-proxy", "--timeout=60s")
    HELD_BACK["events"] = result.get("events") or []
    assert rc != 0
    # the doctor after each stage that wrote, before the one that failed: two revisions, namespaces on the target,
    # workloads restarted, gateways on the target - never an error
    doctor_clean(result, ["remotes", "namespaces", "workloads", "gateways"])
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


def test_a_pod_created_after_its_namespace_moved_carries_the_new_revisions_sidecar(bed):
    """Injected by the real istiod of the target: in the primary by its own, in the remote by its primary's (through
    the remote's istiod-<rev> Service): the new revision's proxy image, istiod-<rev> as discovery and CA address."""
    for context, namespace in WEB.items():
        name = f"after-{namespace}"
        in_bed("kubectl", "--request-timeout=20s", "--context", context, "-n", namespace, "run", name, "--image=example.invalid/app", "--restart=Never")
        pod = kubectl_json(context, "-n", namespace, "get", "pod", name)
        got = sidecar(pod)
        assert got is not None, f"{context}/{namespace}: no sidecar"
        discovery = f"istiod-{TARGET}.istio-system.svc:15012"
        assert (got["revision"], got["discovery"], got["ca"], got["cluster"]) == (TARGET, discovery, discovery, context), got
        proxy_image = next(c["image"] for c in pod["spec"]["containers"] if c["name"] == "istio-proxy")
        assert proxy_image.endswith(f"/proxyv2:{NEW_VERSION}"), proxy_image
        serving = "cluster1" if context == "cluster3" else context  # the remote's injection is its primary's
        logged = functools.partial(served, TARGET, context, namespace, name, serving, bed.networks[context])
        assert wait_for(f"{serving}'s istiod-{TARGET} logged {namespace}/{name}", logged), context
    # the web Deployments' pods of the restart were injected by the target too (their template's istio-proxy overlays it)
    for context, namespace in WEB.items():
        for pod in kubectl_json(context, "-n", namespace, "get", "pods", "-l", "app=web")["items"]:
            if not pod["metadata"].get("deletionTimestamp"):
                assert json.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])["revision"] == TARGET, pod["metadata"]["name"]


def test_the_next_run_finishes_the_upgrade(bed):
    rc, _changed, result = upgrade(bed)
    assert rc == 0, result.get("msg")
    assert result["stage"] == "done"
    doctor_clean(result, ["old_revision"])
    assert result["calls"] == len(STAGE_TITLES)
    assert [image_tag(context, f"istiod-{TARGET}") for context in ("cluster1", "cluster2")] == [NEW_VERSION, NEW_VERSION]
    assert deployment("cluster1", "istiod") is None and deployment("cluster2", "istiod") is None
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
    # the target's real istiod runs from the primaries stage on: what it writes itself (leader elections, the root
    # certificate ConfigMaps, webhook caBundles) is left out of what is compared, here and below
    before = collection_writes(bed)
    rc, changed, result = upgrade(bed)
    assert rc == 0, result.get("msg")
    assert changed == {name: 0 for name in bed.names}
    assert result["stage_before"] == "done" and not any(event["changed"] for event in result["events"])
    assert result["doctors"] == [] and result["precheck"] == {}  # nothing changed, nothing left to install
    assert collection_writes(bed) == before


def test_a_downgrade_is_refused_before_any_write(bed):
    before = collection_writes(bed)
    back = {**bed.old, "meshfed_istio_target_revision": "1-30-dev", "meshfed_istio_target_istioctl": bed.old["meshfed_istioctl"]}
    rc, _changed, result = upgrade(bed, target=bed.write_settings(back, os.path.join(bed.work, "back.yml")))
    assert rc != 0
    assert result["msg"].startswith("the upgrade does not start: "), result["msg"]
    for context in ("cluster1", "cluster2"):
        assert f"cluster {context}: revision {TARGET} runs Istio {NEW_VERSION}, newer than the target {OLD_VERSION} (no downgrades)" in result["msg"]
    assert result["events"] == [] and result["calls"] == 1
    assert collection_writes(bed) == before


def test_site_and_verify_on_the_new_revision_write_nothing(bed):
    after = os.path.join(bed.work, "after.yml")
    with open(bed.settings, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    settings["all"]["vars"].update(meshfed_revision=TARGET, meshfed_istioctl=istioctl(), meshfed_istio_version=NEW_VERSION)
    with open(after, "w", encoding="utf-8") as handle:
        yaml.safe_dump(settings, handle)
    before = collection_writes(bed)
    site = bed.playbook("site", inventories=(after,))
    assert site.rc == 0, site.output[-6000:]  # verify is the site playbook's last play: the doctor finds nothing
    assert collection_writes(bed) == before
