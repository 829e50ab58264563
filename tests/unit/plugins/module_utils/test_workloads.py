"""The bounded rolling restart: which namespaces and workloads, when a rollout is finished, the batches, and the run against
an in-memory API whose controllers roll a changed workload out a few reads later (or never)."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _workloads


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"istio-injection": "enabled"}, True),
        ({"istio.io/rev": "1-24"}, True),
        ({"istio.io/rev": "default", "istio-injection": "enabled"}, True),
        ({"istio.io/rev": "1-24", "istio-injection": "disabled"}, False),
        ({"istio-injection": "disabled"}, False),
        ({"istio-injection": "true"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_injected_namespaces(labels, expected):
    assert _workloads.injected(labels) is expected


def deployment(replicas=2, generation=3, observed=3, updated=2, ready=2, available=2, total=2, **extra) -> dict:
    obj = {
        "metadata": {"namespace": "shop", "name": "web", "generation": generation},
        "spec": {"replicas": replicas, "template": {"metadata": {}}},
        "status": {"observedGeneration": observed, "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available, "replicas": total},
    }
    obj["spec"].update(extra)
    return obj


def statefulset(replicas=2, observed=3, updated=2, ready=2, current="a", update="a", partition=None) -> dict:
    spec = {"replicas": replicas, "template": {"metadata": {}}, "updateStrategy": {"type": "RollingUpdate"}}
    if partition is not None:
        spec["updateStrategy"]["rollingUpdate"] = {"partition": partition}
    status = {"observedGeneration": observed, "updatedReplicas": updated, "readyReplicas": ready, "currentRevision": current, "updateRevision": update}
    return {"metadata": {"namespace": "db", "name": "pg", "generation": 3}, "spec": spec, "status": status}


def daemonset(desired=3, observed=3, updated=3, available=3) -> dict:
    status = {"observedGeneration": observed, "desiredNumberScheduled": desired, "updatedNumberScheduled": updated, "numberAvailable": available}
    return {"metadata": {"namespace": "node", "name": "agent", "generation": 3}, "spec": {"template": {}}, "status": status}


@pytest.mark.parametrize(
    ("kind", "obj", "reason"),
    [
        ("Deployment", deployment(), ""),
        ("Deployment", deployment(observed=2), "its controller has not seen the change yet"),
        ("Deployment", deployment(updated=1), "1 of 2 replicas updated"),
        ("Deployment", deployment(total=3), "1 old replicas still terminating"),
        ("Deployment", deployment(available=1), "1 of 2 updated replicas available"),
        ("Deployment", deployment(ready=1), "2 of 2 updated replicas available"),
        ("Deployment", deployment(replicas=0, updated=0, ready=0, available=0, total=0), ""),
        ("Deployment", {"metadata": {"generation": 1}, "spec": {}, "status": {"observedGeneration": 1}}, "0 of 1 replicas updated"),
        (
            "Deployment",
            {
                **deployment(updated=1),
                "status": {**deployment(updated=1)["status"], "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]},
            },
            "its progress deadline was exceeded",
        ),
        ("StatefulSet", statefulset(), ""),
        ("StatefulSet", statefulset(observed=2), "its controller has not seen the change yet"),
        ("StatefulSet", statefulset(ready=1), "1 of 2 replicas ready"),
        ("StatefulSet", statefulset(update="b"), "2 of 2 replicas updated"),
        ("StatefulSet", statefulset(updated=1, update="b"), "1 of 2 replicas updated"),
        ("StatefulSet", statefulset(updated=1, update="b", partition=1), ""),
        ("StatefulSet", statefulset(updated=0, update="b", partition=1), "0 of 1 replicas updated"),
        ("DaemonSet", daemonset(), ""),
        ("DaemonSet", daemonset(observed=1), "its controller has not seen the change yet"),
        ("DaemonSet", daemonset(updated=2), "2 of 3 pods updated"),
        ("DaemonSet", daemonset(available=2), "2 of 3 updated pods available"),
    ],
)
def test_rollout_is_read_from_the_status(kind, obj, reason):
    assert _workloads.rollout(kind, obj) == reason


@pytest.mark.parametrize(
    ("kind", "spec", "skipped"),
    [
        ("Deployment", {}, False),
        ("Deployment", {"paused": True}, True),
        ("StatefulSet", {"updateStrategy": {"type": "OnDelete"}}, True),
        ("DaemonSet", {"updateStrategy": {"type": "OnDelete"}}, True),
        ("DaemonSet", {"updateStrategy": {"type": "RollingUpdate"}}, False),
    ],
)
def test_workloads_a_template_change_does_not_restart_are_skipped(kind, spec, skipped):
    assert bool(_workloads.not_restartable(kind, {"spec": spec})) is skipped


def test_the_plan_sorts_waits_for_a_batch_in_flight_and_skips_what_carries_the_token():
    W = _workloads.Workload
    found = [
        W("StatefulSet", "a", "s"),
        W("Deployment", "b", "x", marker="t1"),
        W("Deployment", "a", "z", marker="t0"),
        W("Deployment", "a", "y", marker="t1", progress="1 of 2 replicas updated"),
        W("DaemonSet", "a", "d", skip="updateStrategy OnDelete"),
        W("Deployment", "a", "p", skip="paused", marker="t1"),
    ]
    plan = _workloads.restart_plan(found, "t1")
    assert [w.ref for w in plan.restart] == ["Deployment a/z", "StatefulSet a/s"]
    assert [w.ref for w in plan.waiting] == ["Deployment a/y"]
    assert [w.ref for w in plan.done] == ["Deployment a/p", "Deployment b/x"]
    assert [w.ref for w in plan.skipped] == ["DaemonSet a/d"]


@pytest.mark.parametrize(("size", "expected"), [(2, [[1, 2], [3, 4], [5]]), (5, [[1, 2, 3, 4, 5]]), (0, [[1], [2], [3], [4], [5]])])
def test_batches(size, expected):
    assert _workloads.batches([1, 2, 3, 4, 5], size) == expected


def test_the_stamp_is_rfc3339_utc():
    at = datetime.datetime(2026, 11, 30, 7, 1, 2, 345678, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert _workloads.stamp(at) == "2026-11-30T06:01:02.345678Z"


class FakeCluster:
    """Namespaces and Deployments; a patched Deployment's controller catches up `lag` reads later, unless it is stuck."""

    name = "context 'east'"

    def __init__(self, namespaces: dict, deployments: list[str], stuck=(), lag=2):
        self.namespaces = namespaces
        self.objects = {
            name: deployment() | {"metadata": {"namespace": name.split("/")[0], "name": name.split("/")[1], "generation": 1}} for name in deployments
        }
        for obj in self.objects.values():
            obj["status"]["observedGeneration"] = 1
        self.stuck, self.lag, self.patches, self.calls, self.reads = set(stuck), lag, [], 0, {}

    def get(self, what, path, missing_ok=False, **query):
        self.calls += 1
        parts = path.strip("/").split("/")
        if parts[-1] == "namespaces":
            selector = query["labelSelector"]
            key = selector.split("=")[0]
            return {"items": [{"metadata": {"name": n, "labels": labels}} for n, labels in self.namespaces.items() if key in labels]}
        if parts[-1] in ("deployments", "statefulsets", "daemonsets"):
            namespace = parts[-2]
            items = [] if parts[-1] != "deployments" else [copy.deepcopy(o) for k, o in sorted(self.objects.items()) if k.startswith(namespace + "/")]
            return {"items": items}
        key = f"{parts[-3]}/{parts[-1]}"
        obj = self.objects[key]
        self.reads[key] = self.reads.get(key, 0) + 1
        if self.reads[key] >= self.lag and key not in self.stuck:
            obj["status"] = {**obj["status"], "observedGeneration": obj["metadata"]["generation"]}
        return copy.deepcopy(obj)

    def request(self, what, method, path, body=None, content_type="", missing_ok=False, query=None):
        self.calls += 1
        assert method == "PATCH" and content_type == "application/merge-patch+json"
        parts = path.strip("/").split("/")
        key = f"{parts[-3]}/{parts[-1]}"
        obj = self.objects[key]
        obj["spec"]["template"]["metadata"].setdefault("annotations", {}).update(body["spec"]["template"]["metadata"]["annotations"])
        obj["metadata"]["generation"] += 1
        self.reads[key] = 0
        self.patches.append((key, body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]))
        return copy.deepcopy(obj)


NAMESPACES = {"shop": {"istio-injection": "enabled"}, "pay": {"istio.io/rev": "1-24"}, "off": {"istio.io/rev": "1-24", "istio-injection": "disabled"}}
DEPLOYMENTS = ["shop/a", "shop/b", "shop/c", "pay/d", "off/e"]


def run(cluster, check=False, timeout=60, size=2, **settings):
    clock = iter(range(0, 10**6))
    stamps = iter(range(1, 10**6))

    def now():
        return datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=next(stamps))

    return _workloads.restart(
        cluster,
        "rotate_ca/r1",
        _workloads.Settings(batch_size=size, timeout=timeout, **settings),
        check,
        sleep=lambda _s: None,
        clock=lambda: next(clock),
        now=now,
    )


def test_a_restart_goes_batch_by_batch_and_a_rerun_writes_nothing():
    cluster = FakeCluster(NAMESPACES, DEPLOYMENTS)
    plan = run(cluster, check=True)
    assert plan["changed"] and cluster.patches == []
    assert plan["namespaces"] == ["pay", "shop"]
    assert plan["batches"] == [["Deployment pay/d", "Deployment shop/a"], ["Deployment shop/b", "Deployment shop/c"]]
    result = run(cluster)
    assert result["batches"] == plan["batches"] and result["changed"]
    # one stamp per batch, and batch 2 patched only after batch 1 rolled out
    assert [stamp for _key, stamp in cluster.patches] == [cluster.patches[0][1]] * 2 + [cluster.patches[2][1]] * 2
    assert cluster.patches[0][1] != cluster.patches[2][1]
    assert all(_workloads.rollout("Deployment", cluster.objects[k]) == "" for k in ("pay/d", "shop/a", "shop/b", "shop/c"))
    assert "annotations" not in cluster.objects["off/e"]["spec"]["template"]["metadata"]
    patches = len(cluster.patches)
    for check in (True, False):
        again = run(cluster, check=check)
        assert not again["changed"] and again["restarted"] == [] and len(again["already"]) == 4
    assert len(cluster.patches) == patches


def test_a_workload_that_never_rolls_out_stops_the_restart_within_the_bound_naming_it():
    cluster = FakeCluster(NAMESPACES, DEPLOYMENTS, stuck={"shop/a"})
    with pytest.raises(_workloads.RestartError) as error:
        run(cluster, timeout=30)
    message = str(error.value)
    assert "Deployment shop/a (its controller has not seen the change yet)" in message
    assert "within 30 s" in message and "not restarted: Deployment shop/b, Deployment shop/c" in message
    assert [key for key, _stamp in cluster.patches] == ["pay/d", "shop/a"]  # no further batch
    # a rerun waits for the stuck batch first: still stuck, still nothing more patched
    with pytest.raises(_workloads.RestartError, match="shop/a"):
        run(cluster, timeout=30)
    assert len(cluster.patches) == 2
    cluster.stuck.clear()  # fixed: the rerun resumes with the rest
    result = run(cluster)
    assert result["resumed"] == ["Deployment shop/a"] and result["restarted"] == ["Deployment shop/b", "Deployment shop/c"]
    assert result["already"] == ["Deployment pay/d"]
    assert [key for key, _stamp in cluster.patches] == ["pay/d", "shop/a", "shop/b", "shop/c"]


def test_explicit_namespaces_and_clusters_share_one_bound():
    one, two = FakeCluster(NAMESPACES, DEPLOYMENTS), FakeCluster(NAMESPACES, DEPLOYMENTS, stuck={"off/e"})
    results = _workloads.restart_clusters(
        {"east": one}, "t", _workloads.Settings(("off",), 1, 10), False, sleep=lambda _s: None, clock=iter(range(99)).__next__
    )
    assert results["east"]["restarted"] == ["Deployment off/e"] and "diff" not in results["east"]
    clock = iter(range(0, 10**6, 4))
    with pytest.raises(_workloads.RestartError, match="within 10 s"):
        _workloads.restart_clusters({"east": one, "west": two}, "t2", _workloads.Settings(("off",), 1, 10), False, sleep=lambda _s: None, clock=clock.__next__)


def test_namespaces_istio_never_injects_are_not_restarted_whatever_their_labels():
    namespaces = {**NAMESPACES, "kube-system": {"istio-injection": "enabled"}, "kube-public": {"istio.io/rev": "1-31"}}
    cluster = FakeCluster(namespaces, DEPLOYMENTS + ["kube-system/coredns"])
    assert run(cluster, check=True)["namespaces"] == ["pay", "shop"]


def gateway_template(obj: dict, templates: str = "gateway") -> dict:
    obj["spec"]["template"]["metadata"]["annotations"] = {"inject.istio.io/templates": templates}
    return obj


@pytest.mark.parametrize(
    ("templates", "gateway"),
    [("gateway", True), ("sidecar, gateway", True), ("gateways", False), ("sidecar", False), ("", False)],
)
def test_a_gateway_is_a_workload_asking_for_the_gateway_injection_template(templates, gateway):
    assert _workloads.gateway_injected(gateway_template(deployment(), templates)) is gateway
    assert _workloads.gateway_injected(deployment()) is False


@pytest.mark.parametrize(
    ("only", "restarted"),
    [
        ("", ["Deployment pay/d", "Deployment shop/a", "Deployment shop/b", "Deployment shop/c"]),
        ("gateways", ["Deployment shop/b"]),
        ("workloads", ["Deployment pay/d", "Deployment shop/a", "Deployment shop/c"]),
    ],
)
def test_a_restart_covers_the_gateways_the_other_workloads_or_both(only, restarted):
    cluster = FakeCluster(NAMESPACES, DEPLOYMENTS)
    gateway_template(cluster.objects["shop/b"])
    result = run(cluster, only=only)
    assert result["restarted"] == restarted
    assert sorted(key for key, _stamp in cluster.patches) == sorted(ref.split(" ")[1] for ref in restarted)
