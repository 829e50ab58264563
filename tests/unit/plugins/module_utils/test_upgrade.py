"""The canary-revision upgrade as pure functions: what a cluster runs, how far the upgrade is, what comes next, refusals."""

from __future__ import annotations

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _upgrade
from ansible_collections.meshfed.istio.plugins.module_utils._istio import BUNDLE_KEYS
from ansible_collections.meshfed.istio.plugins.module_utils._istio import OWNER_LABEL as OWNER
from ansible_collections.meshfed.istio.plugins.module_utils._upgrade import GATEWAYS_RESTARTED_FOR as GATEWAYS_MARKER
from ansible_collections.meshfed.istio.plugins.module_utils._workloads import RESTARTED_FOR as MARKER

T = "1-31-x"
NS = "istio-system"
CLUSTERS = {
    "east": {"name": "east", "role": "primary", "remotes": ["edge"], "primary_name": None},
    "west": {"name": "west", "role": "primary", "remotes": [], "primary_name": None},
    "edge": {"name": "edge", "role": "remote", "remotes": [], "primary_name": "east"},
}


def meta(name: str, labels: dict, namespace: str | None = NS) -> dict:
    return {"name": name, "labels": labels, **({"namespace": namespace} if namespace else {})}


def deployment(
    name: str, rev: str, *, ready: bool = True, image: str = "docker.io/istio/pilot:1.30.2", multiroot: str = "true", app: str = "istiod", owner: str = ""
) -> dict:
    return {
        "metadata": {**meta(name, {"app": app, "istio.io/rev": rev, OWNER: owner}), "generation": 2},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": image, "env": [{"name": "ISTIO_MULTIROOT_MESH", "value": multiroot}]}]}}},
        "status": {"observedGeneration": 2, "readyReplicas": 1 if ready else 0, "updatedReplicas": 1},
    }


def tagged(name: str, rev: str, tag: str | None = None, owner: str = "") -> dict:
    return {"metadata": meta(name, {"istio.io/rev": rev, **({"istio.io/tag": tag} if tag else {}), **({OWNER: owner} if owner else {})}, None)}


def control_plane(role: str, rev: str, *, ready: bool = True, image: str = "docker.io/istio/pilot:1.30.2", record: bool = True, owner: str = "") -> dict:
    """What istioctl installs for one revision (as the test bed shows it), and this collection's install record."""
    suffix = "" if rev == "default" else f"-{rev}"
    owner = owner or f"control-plane{suffix}"
    raw = {
        "deployments": [deployment(f"istiod{suffix}", rev, ready=ready, image=image, owner=owner)] if role == "primary" else [],
        "services": [tagged(f"istiod{suffix}", rev, owner=owner)],
        "webhooks": [tagged(f"istio-sidecar-injector{suffix}", rev, owner=owner)],
        "records": [f"control-plane{suffix}"] if record else [],
    }
    return raw


def cluster(role: str, revisions: list[str], *, namespaces: dict | None = None, gateway: str = "default", default_tag: str | None = "default", **extra) -> dict:
    raw: dict = {
        "deployments": [],
        "services": [],
        "webhooks": [],
        "records": ["eastwest"],
        "cacerts": sorted(BUNDLE_KEYS),
    }
    for rev in revisions:
        for key, items in control_plane(role, rev, **extra.get(rev, {})).items():
            raw[key] += items
    if default_tag:
        raw["webhooks"].append(tagged("istio-revision-tag-default", default_tag, "default"))
        raw["services"].append(tagged("istiod-revision-tag-default", default_tag, "default"))
    if gateway:
        raw["deployments"].append(deployment("istio-eastwestgateway", gateway, app="istio-eastwestgateway"))
    marked, gateways_marked = extra.get("restarted", {}), extra.get("gateways_restarted", {})
    raw["namespaces"] = [
        {"metadata": {**meta(name, labels, None), **({"annotations": {MARKER: marked[name]}} if name in marked else {})}}
        for name, labels in (namespaces or {}).items()
    ]
    for item in raw["namespaces"]:
        if item["metadata"]["name"] in gateways_marked:
            item["metadata"].setdefault("annotations", {})[GATEWAYS_MARKER] = gateways_marked[item["metadata"]["name"]]
    raw["pods"] = extra.get("pods", [])
    raw["routes"] = extra.get("routes", [])
    return raw


def route(name: str, host: str) -> dict:
    return {"metadata": meta(name, {}), "spec": {"tls": [{"route": [{"destination": {"host": host}}]}]}}


APPS = {"shop": {"istio-injection": "enabled"}, "pay": {"istio.io/rev": "default"}, "plain": {}}
TOKEN = f"upgrade/{T}"
OLD_ROUTE = route("istiod-vs", "istiod.istio-system.svc.cluster.local")


def views(point: str) -> dict[str, dict]:
    """The mesh (east with remote edge, west) at a point of the upgrade from the default revision to T."""
    order = ["fresh", "east", "primaries", "remotes", "namespaces", "workloads", "gateways", "edge_removed", "done"]
    at = order.index(point)
    result = {}
    for name, facts in CLUSTERS.items():
        role = facts["role"]
        installed = at >= order.index("primaries") or (at >= order.index("east") and name == "east") or False
        if role == "remote":
            installed = at >= order.index("remotes")
        removed = at >= order.index("done") or (at >= order.index("edge_removed") and role == "remote")
        revisions = ([] if removed else ["default"]) + ([T] if installed else [])
        moved = at >= order.index("namespaces")
        namespaces = {"shop": {"istio.io/rev": T}, "pay": {"istio.io/rev": T}, "plain": {}} if moved else APPS
        routes = []
        if name == "east":
            routes = [route(f"istiod-vs-{T}", f"istiod-{T}.istio-system.svc.cluster.local")] if installed else []
            routes.append(route("istiod-vs", f"istiod-{T}.istio-system.svc.cluster.local") if removed else OLD_ROUTE)
        raw = cluster(
            role,
            revisions,
            namespaces=namespaces,
            gateway=T if at >= order.index("gateways") else "default",
            default_tag=T if removed else "default",
            routes=routes,
            restarted={"shop": TOKEN, "pay": TOKEN} if at >= order.index("workloads") else {},
            gateways_restarted={"shop": TOKEN, "pay": TOKEN} if at >= order.index("gateways") else {},
        )
        result[name] = _upgrade.observe(raw)
    return result


def progresses(current: dict[str, dict]) -> dict[str, dict]:
    return {name: _upgrade.progress(view, CLUSTERS[name], T) for name, view in current.items()}


def test_observe_reads_a_default_install_as_the_test_bed_shows_it():
    view = _upgrade.observe(cluster("primary", ["default"], namespaces=APPS, routes=[OLD_ROUTE]))
    assert view["revisions"] == {
        "default": {
            "istiod": True,
            "ready": True,
            "version": "1.30.2",
            "multiroot": True,
            "injector": True,
            "service": True,
            "record": True,
            "owner": "control-plane",
            "owners": ["control-plane"] * 3,
        }
    }
    assert view["tags"] == {"default": "default"}
    assert view["namespaces"] == {"shop": "default", "pay": "default"}
    assert view["gateway"] == "default"
    assert view["cacerts"] is True
    assert view["routes"] == {"istiod-vs": "istiod.istio-system.svc.cluster.local"}


def test_observe_a_remote_has_revisions_without_istiod():
    view = _upgrade.observe(cluster("remote", ["default", T]))
    assert set(view["revisions"]) == {"default", T}
    assert not view["revisions"][T]["istiod"] and view["revisions"][T]["service"] and view["revisions"][T]["injector"]


@pytest.mark.parametrize(
    ("labels", "tags", "expected"),
    [
        ({"istio-injection": "enabled"}, {"default": "default"}, "default"),
        ({"istio-injection": "enabled"}, {"default": T}, T),
        ({"istio-injection": "enabled"}, {}, "default"),
        ({"istio-injection": "disabled", "istio.io/rev": T}, {}, ""),  # istio-injection wins
        ({"istio-injection": "enabled", "istio.io/rev": T}, {"default": "default"}, "default"),
        ({"istio.io/rev": "canary"}, {"canary": T}, T),  # a tag
        ({"istio.io/rev": "1-30-2"}, {}, "1-30-2"),
        ({}, {"default": "default"}, ""),
    ],
)
def test_injects_from(labels, tags, expected):
    assert _upgrade.injects_from(labels, tags) == expected


def test_moved_labels_drop_istio_injection_and_keep_the_rest():
    assert _upgrade.moved_labels({"istio-injection": "enabled", "team": "a"}, T) == {"team": "a", "istio.io/rev": T}


@pytest.mark.parametrize(
    ("point", "stage"),
    [
        ("fresh", "primaries"),
        ("east", "primaries"),
        ("primaries", "remotes"),
        ("remotes", "namespaces"),
        ("namespaces", "workloads"),
        ("workloads", "gateways"),
        ("gateways", "old_revision"),
        ("edge_removed", "old_revision"),
        ("done", "done"),
    ],
)
def test_mesh_stage_at_every_point(point, stage):
    assert _upgrade.mesh_stage(progresses(views(point))) == stage


def kinds(planned: list[dict]) -> list[tuple[str, str, str]]:
    return [(item["stage"], item["cluster"], item["action"]) for item in planned]


FULL = [
    ("primaries", "east", "install_control_plane"),
    ("primaries", "east", "expose_istiod"),
    ("primaries", "east", "wait_ready"),
    ("primaries", "west", "install_control_plane"),
    ("primaries", "west", "wait_ready"),
    ("remotes", "edge", "install_control_plane"),
    ("namespaces", "east", "move_namespace"),
    ("namespaces", "east", "move_namespace"),
    ("namespaces", "edge", "move_namespace"),
    ("namespaces", "edge", "move_namespace"),
    ("namespaces", "west", "move_namespace"),
    ("namespaces", "west", "move_namespace"),
    ("workloads", "east", "restart_workloads"),
    ("workloads", "edge", "restart_workloads"),
    ("workloads", "west", "restart_workloads"),
    ("gateways", "east", "install_gateway"),
    ("gateways", "edge", "install_gateway"),
    ("gateways", "west", "install_gateway"),
    ("gateways", "east", "restart_gateways"),
    ("gateways", "edge", "restart_gateways"),
    ("gateways", "west", "restart_gateways"),
    ("old_revision", "edge", "move_default_tag"),
    ("old_revision", "edge", "uninstall"),
    ("old_revision", "east", "move_default_tag"),
    ("old_revision", "east", "uninstall"),
    ("old_revision", "east", "expose_istiod_catch_all"),
    ("old_revision", "west", "move_default_tag"),
    ("old_revision", "west", "uninstall"),
]


@pytest.mark.parametrize(
    ("point", "skip"),
    [
        ("fresh", 0),
        ("east", 3),
        ("primaries", 5),
        ("remotes", 6),
        ("namespaces", 12),
        ("workloads", 15),
        ("gateways", 21),
        ("edge_removed", 23),
        ("done", 28),
    ],
)
def test_the_plan_resumes_from_any_point_with_what_is_left_in_order(point, skip):
    assert kinds(_upgrade.plan(views(point), CLUSTERS, T)) == FULL[skip:]


def test_the_plan_stops_at_the_last_stage_asked_for():
    assert kinds(_upgrade.plan(views("fresh"), CLUSTERS, T, "remotes")) == FULL[:6]


def test_the_plan_moves_every_injecting_namespace_and_leaves_the_others():
    moves = [item for item in _upgrade.plan(views("remotes"), CLUSTERS, T) if item["action"] == "move_namespace" and item["cluster"] == "west"]
    assert [(item["namespace"], item["previous"], item["revision"]) for item in moves] == [("pay", "default", T), ("shop", "default", T)]


def test_old_revisions_go_remotes_first_then_primaries():
    order = [item["cluster"] for item in _upgrade.plan(views("gateways"), CLUSTERS, T) if item["action"] == "uninstall"]
    assert order == ["edge", "east", "west"]


@pytest.mark.parametrize(
    ("point", "stage", "waiting"),
    [
        ("east", "remotes", ["stage primaries is not finished in west"]),
        ("primaries", "namespaces", ["stage remotes is not finished in edge"]),
        ("remotes", "namespaces", []),
        (
            "fresh",
            "old_revision",
            [
                "stage primaries is not finished in east, west",
                "stage remotes is not finished in edge",
                "stage namespaces is not finished in east, edge, west",
                "stage workloads is not finished in east, edge, west",
                "stage gateways is not finished in east, edge, west",
            ],
        ),
    ],
)
def test_a_stage_waits_for_every_earlier_stage_everywhere(point, stage, waiting):
    assert _upgrade.gate(stage, progresses(views(point))) == waiting


def test_no_namespace_moves_while_a_new_istiod_is_not_ready():
    current = views("remotes")
    raw = cluster("primary", ["default", T], namespaces=APPS, **{T: {"ready": False}})
    current["west"] = _upgrade.observe(raw)
    assert _upgrade.mesh_stage(progresses(current)) == "primaries"
    assert _upgrade.gate("namespaces", progresses(current)) == ["stage primaries is not finished in west"]
    assert [item["action"] for item in _upgrade.actions("primaries", current, CLUSTERS, T)] == ["install_control_plane", "wait_ready"]


def test_a_primary_with_remotes_is_not_done_before_its_istiod_is_exposed_per_revision():
    current = views("primaries")
    current["east"]["routes"].pop(f"istiod-vs-{T}")
    assert not _upgrade.progress(current["east"], CLUSTERS["east"], T)["primaries"]
    assert [item["action"] for item in _upgrade.actions("primaries", current, CLUSTERS, T)] == ["install_control_plane", "expose_istiod", "wait_ready"]


def test_pods_still_on_the_old_revision_are_counted():
    view = _upgrade.observe(cluster("primary", ["default", T], pods=[{"metadata": meta("a", {"istio.io/rev": "default"}, "shop")}] * 2))
    assert view["pods"] == {"default": 2}


def refused(current: dict[str, dict], version: str = "1.31-dev", target: str = T, ahead: int = 1) -> list[str]:
    return _upgrade.refusals(current, CLUSTERS, target, version, ahead)


def test_no_refusal_for_a_mesh_site_installed_nor_for_the_same_release_in_another_revision():
    assert refused(views("fresh")) == []
    assert refused(views("fresh"), version="1.30.2") == []


@pytest.mark.parametrize(
    ("version", "ahead", "expected"),
    [
        ("1.32.0", 1, "cluster east: the target 1.32.0 is more than 1 minor ahead of default (Istio 1.30.2); upgrade in steps"),
        ("1.32.0", 2, None),
        ("1.29.0", 1, "cluster east: revision default runs Istio 1.30.2, newer than the target 1.29.0 (no downgrades)"),
        ("1.30.1", 1, "cluster east: revision default runs Istio 1.30.2, newer than the target 1.30.1 (no downgrades)"),
        ("1.30.2-rc.0", 1, "cluster east: revision default runs Istio 1.30.2, newer than the target 1.30.2-rc.0 (no downgrades)"),
        ("1.30.10", 1, None),
        ("1.30.2-distroless", 1, None),
        ("1.30-dev", 1, None),  # no patch: only the minor compares
        ("1.31.0", 1, None),
        ("2.0.0", 1, "cluster east: the target 2.0.0 is more than 1 minor ahead of default (Istio 1.30.2); upgrade in steps"),
        ("nightly", 1, "the target istioctl reports 'nightly', not an Istio version: set meshfed_istio_target_istioctl to the target's istioctl"),
    ],
)
def test_skew_refusals(version, ahead, expected):
    found = refused(views("fresh"), version=version, ahead=ahead)
    if expected is None:
        assert found == []
    else:
        assert found[0] == expected


def test_refusals_before_any_write():
    current = views("fresh")
    current["west"] = _upgrade.observe({**cluster("primary", ["default", "1-30-2"], **{"1-30-2": {"record": False}}), "cacerts": ["ca-cert.pem"]})
    current["edge"] = _upgrade.observe(cluster("remote", []))
    raw = cluster("primary", ["default", T], **{"default": {"image": "istio/pilot@sha256:abc"}, T: {"record": False, "owner": "installed-by-hand"}})
    current["east"] = _upgrade.observe(raw)
    assert refused(current) == [
        "cluster east: the istiod of revision default runs image tag '', no Istio version; the skew cannot be checked",
        "cluster east: revision 1-31-x is installed already, but not by meshfed.istio; choose another meshfed_istio_target_revision",
        "cluster edge: no Istio control plane is installed; run the site playbook first",
        "cluster west: cacerts is missing or incomplete, so the new istiod would start on a self-signed root; run the site playbook first",
        "cluster west: revision 1-30-2 was not installed by meshfed.istio (no install record), so this upgrade would not remove it; "
        "remove it with istioctl uninstall --revision 1-30-2, or install it with the site playbook",
    ]


@pytest.mark.parametrize("owner", ["", "someone-elses"])
def test_a_target_service_and_injector_planted_in_a_remote_are_refused_not_taken_for_its_control_plane(owner):
    """A remote has no istiod: its control plane is a Service istiod-<target> and an injector. Planted by someone else,
    they made stage remotes look finished, and the namespaces moved to an injector that is not the mesh's."""
    current = views("primaries")
    raw = cluster("remote", ["default"])
    raw["services"].append(tagged(f"istiod-{T}", T, owner=owner))
    raw["webhooks"].append(tagged(f"istio-sidecar-injector-{T}", T, owner=owner))
    current["edge"] = _upgrade.observe(raw)
    assert refused(current) == ["cluster edge: revision 1-31-x is installed already, but not by meshfed.istio; choose another meshfed_istio_target_revision"]


def test_a_failed_install_of_the_target_is_resumed_not_refused():
    current = views("fresh")
    current["east"] = _upgrade.observe(cluster("primary", ["default", T], **{T: {"record": False, "ready": False}}))
    assert refused(current) == []
    assert [item["action"] for item in _upgrade.actions("primaries", current, CLUSTERS, T)][:1] == ["install_control_plane"]


@pytest.mark.parametrize("target", ["", "default"])
def test_the_target_must_name_a_revision(target):
    assert refused(views("fresh"), target=target)[0].startswith("set meshfed_istio_target_revision")


def test_the_summary_reads_per_stage_and_cluster():
    lines = _upgrade.summary(_upgrade.plan(views("gateways"), CLUSTERS, T))
    assert lines == {
        "6. the old revision removed, remotes first": {
            "edge": ["move the default tag to 1-31-x (from default)", "uninstall revision default (control-plane)"],
            "east": [
                "move the default tag to 1-31-x (from default)",
                "uninstall revision default (control-plane)",
                "route every other SNI to istiod-1-31-x (istiod-vs)",
            ],
            "west": ["move the default tag to 1-31-x (from default)", "uninstall revision default (control-plane)"],
        }
    }


def test_observe_reads_the_restart_mark_of_each_injecting_namespace():
    view = _upgrade.observe(cluster("primary", ["default"], namespaces=APPS, restarted={"shop": TOKEN, "plain": TOKEN}))
    assert view["restarted"] == {"shop": TOKEN, "pay": ""}


@pytest.mark.parametrize(
    ("point", "restarted", "restart", "due"),
    [
        ("namespaces", {}, True, ["pay", "shop"]),
        ("namespaces", {"pay": TOKEN}, True, ["shop"]),  # an interrupted restart: what is left
        ("namespaces", {"pay": "upgrade/1-30-x", "shop": "rotate_ca/r1"}, True, ["pay", "shop"]),  # another restart's token
        ("namespaces", {}, False, []),  # the user's opt-out
        ("workloads", None, True, []),
        ("done", {}, True, []),  # no old revision left: no proxy of one either
    ],
)
def test_a_restart_is_due_while_an_old_revision_is_installed_in_every_unmarked_injecting_namespace(point, restarted, restart, due):
    view = views(point)["west"]
    if restarted is not None:
        view["restarted"] = {namespace: restarted.get(namespace, "") for namespace in view["namespaces"]}
    assert _upgrade.restart_due(view, T, restart) == due
    assert _upgrade.progress(view, CLUSTERS["west"], T, restart)["workloads"] is (due == [])


def test_namespaces_istio_never_injects_into_are_not_restarted():
    namespaces = {**APPS, "kube-system": {"istio.io/rev": T}, "kube-public": {"istio-injection": "enabled"}}
    view = _upgrade.observe(cluster("primary", ["default", T], namespaces=namespaces))
    assert _upgrade.restart_due(view, T) == ["pay", "shop"]


def test_the_restart_comes_after_every_namespace_moved_and_before_any_gateway():
    current = views("namespaces")
    assert _upgrade.gate("gateways", progresses(current)) == ["stage workloads is not finished in east, edge, west"]
    restarts = _upgrade.actions("workloads", current, CLUSTERS, T)
    assert [(item["cluster"], item["namespaces"], item["token"]) for item in restarts] == [
        ("east", ["pay", "shop"], TOKEN),
        ("edge", ["pay", "shop"], TOKEN),
        ("west", ["pay", "shop"], TOKEN),
    ]
    assert _upgrade.gate("workloads", progresses(views("remotes"))) == ["stage namespaces is not finished in east, edge, west"]


def test_without_restarts_the_stage_is_finished_and_planned_nowhere():
    assert _upgrade.mesh_stage({name: _upgrade.progress(view, CLUSTERS[name], T, False) for name, view in views("namespaces").items()}) == "gateways"
    planned = _upgrade.plan(views("fresh"), CLUSTERS, T, restart=False)
    assert kinds(planned) == [item for item in FULL if item[0] != "workloads" and item[2] != "restart_gateways"]


def test_the_summary_lists_the_restart_batches_once_the_runner_has_listed_them():
    action = _upgrade.actions("workloads", views("namespaces"), CLUSTERS, T)[0]
    title = "4. workloads of the injecting namespaces restarted, in batches"
    header = f"restart the workloads of pay, shop in batches, marked meshfed.istio/restarted-for={TOKEN}"
    assert _upgrade.summary([action]) == {title: {"east": [header]}}
    listed = {
        **action,
        "batches": [["Deployment pay/api", "Deployment shop/web"], ["StatefulSet shop/db"]],
        "resumed": ["Deployment pay/old"],
        "skipped": [{"workload": "Deployment shop/held", "reason": "paused"}],
    }
    assert _upgrade.summary([listed])[title]["east"] == [
        header,
        "batch 1: Deployment pay/api, Deployment shop/web",
        "batch 2: StatefulSet shop/db",
        "resume (in flight): Deployment pay/old",
        "not restartable: Deployment shop/held (paused)",
    ]
    assert _upgrade.summary([{**action, "batches": []}])[title]["east"] == [header, "no workload to restart"]


@pytest.mark.parametrize(
    ("point", "due"),
    [("fresh", ["east", "edge", "west"]), ("east", ["edge", "west"]), ("primaries", ["edge"]), ("remotes", []), ("done", [])],
)
def test_the_precheck_applies_where_the_target_control_plane_is_still_to_install(point, due):
    current = views(point)
    assert sorted(name for name in CLUSTERS if _upgrade.precheck_due(current[name], CLUSTERS[name], T)) == due


GATEWAY_CRD = "CustomResourceDefinition gateways.gateway.networking.k8s.io"
PRECHECK_JSON = """[
  {"code": "IST0156", "level": "Error", "message": "The Gateway API CRD version v1alpha2 is lower than the minimum version: v1beta1",
   "origin": "CustomResourceDefinition gateways.gateway.networking.k8s.io", "documentationUrl": "https://istio.io/v1.31/docs/"},
  {"code": "IST0172", "level": "Warning", "message": "The Gateway API CRD version v1alpha2 is lower than the minimum version: v1",
   "origin": "CustomResourceDefinition gateways.gateway.networking.k8s.io"},
  {"code": "IST0001", "level": "Info", "message": "an info line"}
]"""


@pytest.mark.parametrize(
    ("returncode", "stdout", "stderr", "expected"),
    [
        # nothing found: istioctl prints its all-clear on stderr and nothing on stdout
        (0, "", "No issues found when checking the cluster. Istio is safe to install or upgrade!", {"errors": [], "warnings": []}),
        (
            1,
            PRECHECK_JSON,
            "Error: Issues found when checking the cluster.",
            {
                "errors": [f"IST0156 ({GATEWAY_CRD}): The Gateway API CRD version v1alpha2 is lower than the minimum version: v1beta1"],
                "warnings": [f"IST0172 ({GATEWAY_CRD}): The Gateway API CRD version v1alpha2 is lower than the minimum version: v1"],
            },
        ),
        # warnings only: istioctl exits 1 as well; they do not refuse
        (1, '[{"code": "IST0172", "level": "Warning", "message": "m"}]', "Error: Issues found", {"errors": [], "warnings": ["IST0172: m"]}),
        # the precheck itself failed (no messages)
        (
            1,
            "",
            "Error: failed to get the Kubernetes version: connection refused",
            {"errors": ["istioctl x precheck failed: Error: failed to get the Kubernetes version: connection refused"], "warnings": []},
        ),
        (0, "not json", "", {"errors": ["istioctl x precheck gave no readable result: not json"], "warnings": []}),
        # text from the cluster's objects: bounded, printable, codes checked
        (
            1,
            '[{"code": "rm -rf", "level": "Error", "message": "a\\u001b[31mb\\nc", "origin": "Pod x"}]',
            "",
            {"errors": ["IST???? (Pod x): a?[31mb?c"], "warnings": []},
        ),
        (1, '[{"code": "IST0101", "level": "Error", "message": "' + "x" * 400 + '"}]', "", {"errors": ["IST0101: " + "x" * 297 + "..."], "warnings": []}),
    ],
)
def test_precheck_result(returncode, stdout, stderr, expected):
    assert _upgrade.precheck_result(returncode, stdout, stderr) == expected


def test_precheck_errors_refuse_naming_the_cluster_and_the_check_and_warnings_do_not():
    found = _upgrade.precheck_refusals(
        {"west": {"errors": ["IST0156 (x): old CRD"], "warnings": ["IST0172 (x): w"]}, "east": {"errors": [], "warnings": ["IST0172 (x): w"]}}
    )
    assert found == [
        "cluster west: istioctl x precheck of the target: IST0156 (x): old CRD",
        "fix what the precheck found (https://istio.io/latest/docs/reference/config/analysis/), or skip it with upgrade_precheck=false",
    ]
    assert _upgrade.precheck_refusals({"east": {"errors": [], "warnings": ["IST0172 (x): w"]}}) == []


def with_tags(raw: dict, tags: dict[str, str]) -> dict:
    """A raw cluster read with revision tags of the user's (tag -> revision) beside the default one."""
    raw["webhooks"] += [tagged(f"istio-revision-tag-{tag}", rev, tag) for tag, rev in tags.items()]
    return raw


@pytest.mark.parametrize(
    ("labels", "tags", "expected"),
    [
        ({"istio.io/rev": "prod"}, {"prod": "default"}, "prod"),
        ({"istio.io/rev": "prod"}, {"prod": T}, "prod"),  # moved already: still on the tag
        ({"istio.io/rev": "default"}, {"default": "default"}, ""),  # the default tag is the upgrade's own
        ({"istio.io/rev": "default"}, {}, ""),
        ({"istio.io/rev": "1-30-2"}, {"prod": "default"}, ""),  # a revision, not a tag
        ({"istio.io/rev": "prod", "istio-injection": "enabled"}, {"prod": "default"}, ""),  # istio-injection wins
    ],
)
def test_user_tag(labels, tags, expected):
    assert _upgrade.user_tag(labels, tags) == expected


def test_a_tag_of_the_users_is_moved_in_each_cluster_and_its_namespaces_keep_their_labels():
    current = views("remotes")
    namespaces = {**APPS, "orders": {"istio.io/rev": "prod"}, "billing": {"istio.io/rev": "prod"}, "lab": {"istio.io/rev": "canary"}}
    for name in ("east", "edge"):
        raw = cluster(CLUSTERS[name]["role"], ["default", T], namespaces=namespaces)
        current[name] = _upgrade.observe(with_tags(raw, {"prod": "default", "canary": T, "unused": "default"}))
    assert current["east"]["tagged"] == {"orders": "prod", "billing": "prod", "lab": "canary"}
    assert current["east"]["namespaces"]["orders"] == "default"
    assert _upgrade.tags_to_move(current["east"], T) == ["prod"]  # canary points at the target, unused is no namespace's
    moves = [(item["cluster"], item["action"], item.get("tag") or item.get("namespace")) for item in _upgrade.actions("namespaces", current, CLUSTERS, T)]
    assert moves == [
        ("east", "move_tag", "prod"),
        ("east", "move_namespace", "pay"),
        ("east", "move_namespace", "shop"),
        ("edge", "move_tag", "prod"),
        ("edge", "move_namespace", "pay"),
        ("edge", "move_namespace", "shop"),
        ("west", "move_namespace", "pay"),
        ("west", "move_namespace", "shop"),
    ]
    assert _upgrade.summary(_upgrade.actions("namespaces", current, CLUSTERS, T))["3. namespaces moved to the target revision"]["east"][0] == (
        "move the revision tag prod to 1-31-x (from default); its namespaces keep their labels"
    )
    # the tag moved: the namespaces inject from the target, the stage is done there; the unused tag holds the old revision
    moved = _upgrade.observe(
        with_tags(
            cluster("primary", ["default", T], namespaces={**namespaces, "shop": {"istio.io/rev": T}, "pay": {"istio.io/rev": T}}),
            {"prod": T, "canary": T, "unused": "default"},
        )
    )
    assert _upgrade.progress(moved, CLUSTERS["west"], T)["namespaces"]
    assert _upgrade.tags_holding(moved, "default") == ["unused"] and _upgrade.tags_holding(moved, T) == ["canary", "prod"]
    # check mode's plan: the tag is projected moved for the later stages
    projected = _upgrade.project(current["east"], CLUSTERS["east"], T, upto="namespaces")
    assert projected["tags"]["prod"] == T and projected["tags"]["unused"] == "default"


def test_the_gateways_stage_restarts_the_injected_gateways_after_every_east_west_gateway():
    current = views("workloads")
    planned = _upgrade.actions("gateways", current, CLUSTERS, T)
    assert [(item["cluster"], item["action"]) for item in planned] == [
        ("east", "install_gateway"),
        ("edge", "install_gateway"),
        ("west", "install_gateway"),
        ("east", "restart_gateways"),
        ("edge", "restart_gateways"),
        ("west", "restart_gateways"),
    ]
    assert planned[3]["namespaces"] == ["pay", "shop"] and planned[3]["token"] == TOKEN
    lines = _upgrade.summary(planned)["5. east-west gateways on the target revision"]["east"]
    assert lines[1] == f"restart the gateways (injected) of pay, shop in batches, marked {GATEWAYS_MARKER}={TOKEN}"


@pytest.mark.parametrize(
    ("gateway", "marks", "restart", "done"),
    [
        (T, {"shop": TOKEN, "pay": TOKEN}, True, True),
        (T, {"shop": TOKEN}, True, False),  # pay's gateways not restarted yet
        (T, {"shop": TOKEN, "pay": "upgrade/1-30-x"}, True, False),  # another upgrade's mark
        ("default", {"shop": TOKEN, "pay": TOKEN}, True, False),  # the east-west gateway first
        (T, {}, False, True),  # the user's opt-out
    ],
)
def test_the_gateways_stage_is_done_in_a_cluster_once_its_gateways_are_restarted_too(gateway, marks, restart, done):
    view = views("workloads")["west"]
    view["gateway"] = gateway
    view["gateways_restarted"] = {namespace: marks.get(namespace, "") for namespace in view["namespaces"]}
    assert _upgrade.progress(view, CLUSTERS["west"], T, restart)["gateways"] is done


def test_observe_reads_the_gateway_restart_mark_of_each_injecting_namespace():
    view = _upgrade.observe(cluster("primary", ["default", T], namespaces=APPS, gateways_restarted={"shop": TOKEN, "plain": TOKEN}))
    assert view["gateways_restarted"] == {"shop": TOKEN, "pay": ""}
    assert _upgrade.gateways_due(view, T) == ["pay"]
    assert _upgrade.gateways_due(_upgrade.observe(cluster("primary", [T], namespaces=APPS)), T) == []  # no old revision left


def gateway_deployment(namespace: str, name: str, rev: str | None, *, templates: str = "gateway", owner: str = "") -> dict:
    labels = {"app": name, "sidecar.istio.io/inject": "true", **({"istio.io/rev": rev} if rev else {})}
    return {
        "metadata": {"namespace": namespace, "name": name, "labels": {OWNER: owner} if owner else {}},
        "spec": {"template": {"metadata": {"labels": labels, "annotations": {"inject.istio.io/templates": templates}}}},
    }


def test_a_gateway_pinned_to_an_old_revision_outside_the_injecting_namespaces_is_found():
    view = _upgrade.observe(with_tags(cluster("primary", ["default", T], namespaces=APPS), {"prod": "default", "next": T}))
    deployments = [
        gateway_deployment("edge-gw", "ingress", "default"),  # pinned to the old revision
        gateway_deployment("egress", "egress", "prod"),  # through a tag pointing at it
        gateway_deployment("edge-gw", "canary", T),  # on the target already
        gateway_deployment("edge-gw", "tagged", "next"),
        gateway_deployment("shop", "ingress", "default"),  # in an injecting namespace: the namespace's label wins
        gateway_deployment("edge-gw", "plain", None),  # the default tag's: follows it
        gateway_deployment("edge-gw", "sidecar", "default", templates="sidecar"),  # no gateway
        gateway_deployment(NS, "istio-ingressgateway", "default", owner="control-plane"),  # istioctl's, uninstalled with it
    ]
    pinned = _upgrade.pinned_gateways(deployments, view, T)
    assert pinned == [
        {"workload": "Deployment edge-gw/ingress", "revision": "default", "resolved": "default"},
        {"workload": "Deployment egress/egress", "revision": "prod", "resolved": "default"},
    ]
    message = _upgrade.pinned_message("west", pinned[:1], T)
    assert message.startswith("cluster west: gateway Deployment(s) pin an old revision in their pod template, so a restart keeps them on it: ")
    assert "Deployment edge-gw/ingress (istio.io/rev=default)" in message and f"set the pod template label istio.io/rev={T}" in message
    line = _upgrade.summary([{"stage": "gateways", "cluster": "west", "action": "pinned_gateways", "pinned": pinned[:1]}])
    assert line == {
        "5. east-west gateways on the target revision": {"west": ["not moved, pins revision default: Deployment edge-gw/ingress (istio.io/rev=default)"]}
    }


def test_a_revision_selector_takes_only_a_label_value():
    assert _upgrade.revision_pods_selector("1-30") == "security.istio.io/tlsMode=istio,istio.io/rev=1-30"
    for planted in ("a,b", "--flag", "../x", "x y", "x\ny", "", "x" * 64):
        with pytest.raises(_upgrade.UpgradeError):
            _upgrade.revision_pods_selector(planted)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("istio/pilot:1.32.0\x1b[2J" + "x" * 10_000, "xxx...' (10010 characters), newer than the target 1.31-dev"),
        ("istio/pilot:1.32.0;rm -rf", "runs Istio '1.32.0;rm -rf', newer than the target 1.31-dev"),
        ("istio/pilot:\x1b[31mnightly", "runs image tag '?[31mnightly', no Istio version"),
    ],
)
def test_an_image_tag_from_the_cluster_is_described_bounded_not_copied(image, expected):
    current = views("fresh")
    current["west"] = _upgrade.observe(cluster("primary", ["default"], default={"image": image}))
    found = [line for line in refused(current) if line.startswith("cluster west")]
    assert len(found) == 1 and expected in found[0] and len(found[0]) < 250 and "\x1b" not in found[0]
