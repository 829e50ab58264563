"""The upgrade runner's workloads stage against fakes: the restart hook called per cluster within one deadline, the
namespaces marked afterwards, a rerun that calls and writes nothing, check mode listing the batches, a timeout that stops
the run before the gateways, the opt-out; and restarter() on _workloads' restart."""

from __future__ import annotations

import copy
import subprocess

import pytest
from test_upgrade import CLUSTERS, MARKER, TOKEN, T, views
from test_workloads import FakeCluster

from ansible_collections.meshfed.istio.plugins.module_utils import _upgrade, _upgrade_run, _workloads

BATCHES = {"east": [["Deployment pay/api", "Deployment shop/web"]], "edge": [["Deployment pay/api"]], "west": []}


class FakeApi:
    """A cluster's namespaces: GET one, merge-PATCH its annotations; every write recorded."""

    def __init__(self, name: str, writes: list) -> None:
        self.name, self.writes, self.namespaces = name, writes, {}
        self.pods: dict[str, int] = {}  # revision -> injected pods, listed in pages of `limit`

    def get(self, what, path, missing_ok=False, **query):
        if path == "/api/v1/pods":
            selector = dict(term.split("=", 1) for term in query["labelSelector"].split(","))
            assert selector["security.istio.io/tlsMode"] == "istio"
            count, limit, start = self.pods.get(selector["istio.io/rev"], 0), query["limit"], int(query.get("continue") or 0)
            # as the API server with a label selector: no remainingItemCount, and a continue token after a page even
            # when no other pod matches (it pages through every pod)
            page = min(limit, max(0, count - start))
            return {"items": [{}] * page, "metadata": {"continue": str(start + page)} if start < count else {}}
        found = self.namespaces.get(path.rsplit("/", 1)[-1])
        assert found is not None or missing_ok
        return copy.deepcopy(found)

    def request(self, what, method, path, body=None, content_type="", missing_ok=False, query=None):
        assert (method, content_type) == ("PATCH", _workloads.MERGE_PATCH) and set(body) == {"metadata"}
        name = path.rsplit("/", 1)[-1]
        self.namespaces[name]["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        self.writes.append((self.name, name, body["metadata"]["annotations"]))


class Mesh:
    """The three clusters of test_upgrade at one point of the upgrade; the views are read from the fake APIs' namespaces."""

    def __init__(self, point: str) -> None:
        self.writes: list = []
        self.views = views(point)
        self.apis = {name: FakeApi(name, self.writes) for name in CLUSTERS}
        for name, view in self.views.items():
            for namespace in view["namespaces"]:
                annotations = {MARKER: view["restarted"][namespace]} if view["restarted"][namespace] else {}
                self.apis[name].namespaces[namespace] = {"metadata": {"name": namespace, "annotations": annotations}}

    def observe(self) -> dict[str, dict]:
        for name, view in self.views.items():
            view["restarted"] = {ns: (self.apis[name].namespaces[ns]["metadata"].get("annotations") or {}).get(MARKER, "") for ns in view["namespaces"]}
        return copy.deepcopy(self.views)


class Hook:
    """The restart hook: each call recorded; a cluster in `fail` times out."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list = []
        self.fail = fail

    def __call__(self, name, namespaces, token, check_mode, deadline):
        self.calls.append((name, namespaces, token, check_mode, deadline))
        if name == self.fail:
            raise _workloads.RestartError(f"context {name!r}: the restart did not finish within 50 s: Deployment pay/api (0 of 1 replicas updated)")
        return {"changed": bool(BATCHES[name]), "batches": BATCHES[name], "resumed": [], "skipped": []}


class Precheck:
    """istioctl x precheck -o json per cluster (by its --context): a cluster in `found` answers with those messages."""

    def __init__(self, found: dict | None = None) -> None:
        self.found, self.calls = found or {}, []

    def __call__(self, argv, timeout):
        context = argv[argv.index("--context") + 1]
        self.calls.append((context, argv[:7]))
        stdout = self.found.get(context, "")
        return subprocess.CompletedProcess(argv, 1 if stdout else 0, stdout, "Error: Issues found" if stdout else "No issues found")


def runner(mesh: Mesh, hook, monkeypatch, last_stage: str = "workloads", precheck: Precheck | None = None) -> _upgrade_run.Runner:
    monkeypatch.setattr(_upgrade_run._istioctl, "version", lambda _path: "1.31-dev")
    monkeypatch.setattr(_upgrade_run._istioctl, "run", precheck or Precheck())
    options = _upgrade_run.UpgradeOptions(target=T, istioctl="istioctl", settings={}, last_stage=last_stage, restart=hook, restart_timeout=50)
    members = [_upgrade_run.UpgradeTarget(host=name, cluster={**cluster, "auth": {"context": name}}, api=mesh.apis[name]) for name, cluster in CLUSTERS.items()]
    run = _upgrade_run.Runner(options, members, sleep=lambda _s: None, clock=lambda: 100.0, now=lambda: 1700000000.0)
    run.observe = mesh.observe
    return run


def test_the_workloads_stage_restarts_every_cluster_within_one_deadline_then_marks_its_namespaces(monkeypatch):
    mesh, hook = Mesh("namespaces"), Hook()
    result = runner(mesh, hook, monkeypatch).run(check_mode=False)
    assert hook.calls == [(name, ["pay", "shop"], TOKEN, False, 150.0) for name in ("east", "edge", "west")]
    assert mesh.writes == [(name, namespace, {MARKER: TOKEN}) for name in ("east", "edge", "west") for namespace in ("pay", "shop")]
    assert result["changed"] and result["stage_before"] == "workloads" and result["stage"] == "gateways"
    restarts = [event for event in result["events"] if event["action"] == "restart_workloads"]
    assert [(event["cluster"], event["batches"], event["marked"]) for event in restarts] == [
        ("east", BATCHES["east"], ["pay", "shop"]),
        ("edge", BATCHES["edge"], ["pay", "shop"]),
        ("west", [], ["pay", "shop"]),
    ]
    assert result["done"]["4. workloads of the injecting namespaces restarted, in batches"]["east"][1:] == ["batch 1: Deployment pay/api, Deployment shop/web"]


def test_a_rerun_after_the_restart_calls_no_restart_and_writes_nothing(monkeypatch):
    mesh, hook = Mesh("namespaces"), Hook()
    runner(mesh, hook, monkeypatch).run(check_mode=False)
    hook.calls.clear()
    mesh.writes.clear()
    for last_stage in ("workloads", "old_revision"):
        result = runner(mesh, hook, monkeypatch, last_stage).run(check_mode=True)
        assert result["stage_before"] == "gateways"
        assert all(item["action"] != "restart_workloads" for item in result["actions"])
    result = runner(mesh, hook, monkeypatch).run(check_mode=False)
    assert not result["changed"] and hook.calls == [] and mesh.writes == []


def test_check_mode_lists_the_batches_of_every_planned_restart_and_writes_nothing(monkeypatch):
    for point in ("fresh", "namespaces"):
        mesh, hook = Mesh(point), Hook()
        result = runner(mesh, hook, monkeypatch, "old_revision").run(check_mode=True)
        assert hook.calls == [(name, ["pay", "shop"], TOKEN, True, None) for name in ("east", "edge", "west")], point
        assert mesh.writes == [] and result["events"] == []
        lines = result["plan"]["4. workloads of the injecting namespaces restarted, in batches"]
        assert lines["east"][1:] == ["batch 1: Deployment pay/api, Deployment shop/web"]
        assert lines["west"][1:] == ["no workload to restart"]


def test_a_restart_timeout_stops_the_run_before_the_gateways_and_a_rerun_resumes(monkeypatch):
    mesh = Mesh("namespaces")
    with pytest.raises(_upgrade.UpgradeError) as error:
        runner(mesh, Hook(fail="edge"), monkeypatch, "old_revision").run(check_mode=False)
    message = str(error.value)
    assert message.startswith("cluster edge: restarting the workloads of pay, shop: context 'edge': the restart did not finish within 50 s")
    assert "Deployment pay/api (0 of 1 replicas updated)" in message
    assert message.endswith("The upgrade stops before the gateways stage: the old revision keeps serving; a rerun resumes the restart")
    assert [name for name, _namespace, _marks in mesh.writes] == ["east", "east"]  # edge unmarked, west not started
    assert mesh.views["east"]["gateway"] == "default"
    hook = Hook()
    result = runner(mesh, hook, monkeypatch).run(check_mode=False)
    assert [call[0] for call in hook.calls] == ["edge", "west"]
    assert result["stage"] == "gateways"


def test_without_restarts_the_stage_passes_without_a_call_or_a_write(monkeypatch):
    mesh = Mesh("namespaces")
    result = runner(mesh, None, monkeypatch).run(check_mode=False)
    assert result["stage"] == "gateways" and not result["changed"] and mesh.writes == []


@pytest.mark.parametrize(
    ("hook", "why"),
    [
        (Hook(), "the workloads stage did not restart them (pods without a Deployment, StatefulSet or DaemonSet"),
        (None, "workload restarts are off"),
    ],
)
def test_an_old_revision_with_pods_left_says_why_they_are_left(monkeypatch, hook, why):
    mesh = Mesh("gateways")
    mesh.apis["west"].pods = {"default": 1}  # one page, and a continue token after it, as the API server answers
    run = runner(mesh, hook, monkeypatch, "old_revision")
    with pytest.raises(_upgrade.UpgradeError) as error:
        run.execute({"stage": "old_revision", "cluster": "west", "action": "uninstall", "revision": "default"}, mesh.views)
    assert str(error.value).startswith(f"cluster west: 1 injected pod(s) still run proxies of revision default; {why}")


def refused_uninstall(mesh, cluster: str, monkeypatch) -> str:
    """The message of the uninstall of revision default in cluster, which must be refused before istioctl runs."""
    run = runner(mesh, Hook(), monkeypatch, "old_revision")
    monkeypatch.setattr(run, "_istioctl", lambda *_args: pytest.fail("nothing is uninstalled"))
    with pytest.raises(_upgrade.UpgradeError) as error:
        run.execute({"stage": "old_revision", "cluster": cluster, "action": "uninstall", "revision": "default"}, mesh.views)
    return str(error.value)


def test_an_old_revision_is_kept_while_any_pod_uses_it_not_only_one_in_the_views_sample(monkeypatch):
    """The view reads one page of pod_sample injected pods (the first 500 by namespace): the 600 users of the old revision
    in namespaces after them are not in it, yet each would lose its istiod."""
    mesh = Mesh("gateways")
    mesh.views["west"]["pods"] = {T: 500}  # the sample: the first page holds only pods of the target
    mesh.apis["west"].pods = {T: 500, "default": 1600}
    assert refused_uninstall(mesh, "west", monkeypatch).startswith("cluster west: 1600 injected pod(s) still run proxies of revision default; ")


def test_a_primarys_old_revision_is_kept_while_pods_of_its_remote_use_it(monkeypatch):
    """The remote's objects of the old revision are gone (removed first, or by hand), but pods there still run its
    proxies: the primary's istiod serves them through the east-west gateway."""
    mesh = Mesh("edge_removed")
    mesh.apis["edge"].pods = {"default": 3}
    assert refused_uninstall(mesh, "east", monkeypatch).startswith("cluster east: 3 injected pod(s) of its remote edge still run proxies of revision default, ")


def test_a_revision_that_is_no_label_value_never_reaches_a_selector_and_is_not_removed(monkeypatch):
    mesh = Mesh("gateways")
    run = runner(mesh, Hook(), monkeypatch, "old_revision")
    monkeypatch.setattr(run, "_istioctl", lambda *_args: pytest.fail("nothing is uninstalled"))
    for planted in ("x,app=istiod", "../x", "a b\nc", "x" * 10_000):
        with pytest.raises(_upgrade.UpgradeError, match="is no Kubernetes label value") as error:
            run.execute({"stage": "old_revision", "cluster": "west", "action": "uninstall", "revision": planted}, mesh.views)
        assert "\n" not in str(error.value) and len(str(error.value)) < 200


def test_restarter_runs_the_bounded_restart_of_the_named_namespaces_on_the_members_api():
    api = FakeCluster({}, ["shop/a", "shop/b", "pay/c", "plain/d"])
    members = [_upgrade_run.UpgradeTarget(host="east", cluster=CLUSTERS["east"], api=api)]
    clock = iter(range(10**6)).__next__
    restart = _upgrade_run.restarter(members, batch_size=1, timeout=30, sleep=lambda _s: None, clock=clock)
    listed = restart("east", ["pay", "shop"], TOKEN, True, None)
    assert listed["batches"] == [["Deployment pay/c"], ["Deployment shop/a"], ["Deployment shop/b"]] and api.patches == []
    done = restart("east", ["pay", "shop"], TOKEN, False, 1000)
    assert done["restarted"] == ["Deployment pay/c", "Deployment shop/a", "Deployment shop/b"]
    assert [key for key, _stamp in api.patches] == ["pay/c", "shop/a", "shop/b"]
    assert MARKER not in (api.objects["plain/d"]["spec"]["template"]["metadata"].get("annotations") or {})
    with pytest.raises(_workloads.RestartError, match="did not finish within 30 s"):
        restart("east", ["plain"], TOKEN, False, 0.0)  # a deadline already passed: no batch starts
    assert len(api.patches) == 3


ERROR_CRD = '[{"code": "IST0156", "level": "Error", "message": "old Gateway API CRD", "origin": "CustomResourceDefinition gateways.gateway.networking.k8s.io"}]'
WARNING_CRD = '[{"code": "IST0172", "level": "Warning", "message": "Gateway API CRD before v1"}]'


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_precheck_error_refuses_the_upgrade_before_any_write_naming_the_cluster_and_the_check(monkeypatch, check_mode):
    mesh, hook, precheck = Mesh("fresh"), Hook(), Precheck({"west": ERROR_CRD, "edge": WARNING_CRD})
    run = runner(mesh, hook, monkeypatch, "old_revision", precheck)
    with pytest.raises(_upgrade.UpgradeError) as error:
        run.run(check_mode=check_mode)
    assert str(error.value) == (
        "the upgrade does not start: cluster west: istioctl x precheck of the target: IST0156 (CustomResourceDefinition "
        "gateways.gateway.networking.k8s.io): old Gateway API CRD; fix what the precheck found "
        "(https://istio.io/latest/docs/reference/config/analysis/), or skip it with upgrade_precheck=false"
    )
    assert sorted(call[0] for call in precheck.calls) == ["east", "edge", "west"]
    assert precheck.calls[0][1] == ["istioctl", "x", "precheck", "-o", "json", "--istioNamespace", "istio-system"]
    assert run.events == [] and mesh.writes == [] and hook.calls == []


def test_precheck_warnings_are_returned_and_the_precheck_runs_only_where_the_target_is_still_to_install(monkeypatch):
    precheck = Precheck({"edge": WARNING_CRD})
    result = runner(Mesh("primaries"), Hook(), monkeypatch, "old_revision", precheck).run(check_mode=True)
    assert result["precheck"] == {"edge": {"errors": [], "warnings": ["IST0172: Gateway API CRD before v1"]}}
    assert result["actions"]
    precheck = Precheck({"edge": ERROR_CRD})
    result = runner(Mesh("remotes"), Hook(), monkeypatch, "old_revision", precheck).run(check_mode=True)
    assert precheck.calls == [] and result["precheck"] == {}


def test_without_the_precheck_no_istioctl_runs(monkeypatch):
    precheck = Precheck({"west": ERROR_CRD})
    run = runner(Mesh("fresh"), Hook(), monkeypatch, "old_revision", precheck)
    run.options.precheck = False
    assert run.run(check_mode=True)["precheck"] == {} and precheck.calls == []


class GatewayApi(FakeApi):
    """FakeApi with the cluster's Deployments listed (one page)."""

    def __init__(self, name: str, writes: list, deployments: list[dict]) -> None:
        super().__init__(name, writes)
        self.deployments = deployments

    def get(self, what, path, missing_ok=False, **query):
        if path == "/apis/apps/v1/deployments":
            return {"items": copy.deepcopy(self.deployments), "metadata": {}}
        return super().get(what, path, missing_ok, **query)


PINNED = {
    "metadata": {"namespace": "edge-gw", "name": "ingress"},
    "spec": {"template": {"metadata": {"labels": {"istio.io/rev": "default"}, "annotations": {"inject.istio.io/templates": "gateway"}}}},
}


def test_the_gateways_are_restarted_within_their_own_deadline_and_their_namespaces_marked_apart(monkeypatch):
    mesh, hook, gateways = Mesh("workloads"), Hook(), Hook()
    mesh.apis["west"] = GatewayApi("west", mesh.writes, [PINNED])
    mesh.apis["west"].namespaces = {ns: {"metadata": {"name": ns, "annotations": {MARKER: TOKEN}}} for ns in ("pay", "shop")}
    run = runner(mesh, hook, monkeypatch, "gateways")
    run.options.restart_gateways = gateways
    action = {"stage": "gateways", "cluster": "west", "action": "restart_gateways", "namespaces": ["pay", "shop"], "token": TOKEN}
    run.execute(action, mesh.views)
    assert hook.calls == [] and gateways.calls == [("west", ["pay", "shop"], TOKEN, False, 150.0)]
    assert mesh.writes == [("west", namespace, {_upgrade.GATEWAYS_RESTARTED_FOR: TOKEN}) for namespace in ("pay", "shop")]
    assert [event["action"] for event in run.events] == ["restart_gateways", "pinned_gateways"]
    assert run.events[1]["pinned"] == [{"workload": "Deployment edge-gw/ingress", "revision": "default", "resolved": "default"}]
    run.execute(action, mesh.views)  # marked already: nothing written again, the same deadline
    assert len(mesh.writes) == 2 and gateways.calls[-1][-1] == 150.0 and not run.events[2]["changed"]


def test_a_tag_of_the_users_is_moved_with_istioctl_in_its_cluster(monkeypatch):
    mesh = Mesh("remotes")
    run = runner(mesh, Hook(), monkeypatch, "namespaces")
    calls = []
    monkeypatch.setattr(run, "_istioctl", lambda member, argv, what: calls.append((member.name, argv, what)))
    run.execute({"stage": "namespaces", "cluster": "edge", "action": "move_tag", "tag": "prod", "revision": T, "previous": "default"}, mesh.views)
    argv = ["tag", "set", "prod", "--revision", T, "--overwrite", "--skip-confirmation", "--istioNamespace", "istio-system"]
    assert calls == [("edge", argv, "istioctl tag set prod")]
    assert run.events[0]["changed"] and run.events[0]["tag"] == "prod"


@pytest.mark.parametrize(
    ("tags", "deployments", "message"),
    [
        (
            {"default": "default", "prod": "default", "next": T},
            [],
            "cluster west: revision tag(s) prod still point at revision default, which is not removed while they do: "
            f"move them (istioctl tag set TAG --revision {T} --overwrite) or remove them (istioctl tag remove TAG), then run the upgrade again",
        ),
        ({"default": T}, [PINNED], "cluster west: gateway Deployment(s) pin an old revision in their pod template, so a restart keeps them on it: "),
    ],
)
def test_an_old_revision_held_by_a_tag_or_a_pinned_gateway_is_not_removed(monkeypatch, tags, deployments, message):
    mesh = Mesh("gateways")
    mesh.views["west"]["tags"] = tags
    mesh.apis["west"] = GatewayApi("west", mesh.writes, deployments)
    run = runner(mesh, Hook(), monkeypatch, "old_revision")
    monkeypatch.setattr(run, "_istioctl", lambda *_args: pytest.fail("nothing is uninstalled"))
    with pytest.raises(_upgrade.UpgradeError) as error:
        run.execute({"stage": "old_revision", "cluster": "west", "action": "uninstall", "revision": "default"}, mesh.views)
    assert str(error.value).startswith(message)


def test_check_mode_lists_the_gateway_batches_and_the_pinned_gateways(monkeypatch):
    mesh, gateways = Mesh("workloads"), Hook()
    for name in CLUSTERS:
        mesh.apis[name] = GatewayApi(name, mesh.writes, [PINNED] if name == "west" else [])
        mesh.apis[name].namespaces = {ns: {"metadata": {"name": ns, "annotations": {MARKER: TOKEN}}} for ns in ("pay", "shop")}
    run = runner(mesh, Hook(), monkeypatch, "old_revision")
    run.options.restart_gateways = gateways
    result = run.run(check_mode=True)
    assert gateways.calls == [(name, ["pay", "shop"], TOKEN, True, None) for name in ("east", "edge", "west")] and mesh.writes == []
    lines = result["plan"]["5. east-west gateways on the target revision"]
    assert lines["east"][2:] == ["batch 1: Deployment pay/api, Deployment shop/web"]
    assert lines["west"][2:] == ["no gateway to restart", "not moved, pins revision default: Deployment edge-gw/ingress (istio.io/rev=default)"]
