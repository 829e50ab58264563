from __future__ import annotations

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _membership

MANAGED = {"app.kubernetes.io/managed-by": "meshfed.istio"}


def plan():
    """a, b primaries; c a remote of a (cluster name cee)."""
    return {
        "clusters": {"a": {"name": "a", "remotes": ["c"]}, "b": {"name": "b", "remotes": []}, "c": {"name": "cee", "remotes": []}},
        "primaries": ["a", "b"],
    }


@pytest.mark.parametrize(
    ("leaving", "hosts", "watchers", "problem"),
    [
        (["b"], ["b"], ["a"], None),
        ("b", ["b"], ["a"], None),
        (["cee"], ["c"], ["a", "b"], None),
        (["c", "cee"], ["c"], ["a", "b"], None),
        (["a", "c"], ["a", "c"], ["b"], None),
        (["a"], ["a"], [], "a is the primary of c, which stay"),
        (["nope"], [], [], "'nope' is not a cluster of this inventory"),
        ([], [], [], "no cluster to leave"),
        ("", [], [], "no cluster to leave"),
        ("b, cee", ["b", "c"], ["a"], None),
    ],
)
def test_leave_plan(leaving, hosts, watchers, problem):
    result = _membership.leave_plan(plan(), leaving)
    assert result["leaving"] == hosts
    assert result["watchers"] == watchers
    if problem:
        assert len(result["problems"]) == 1 and problem in result["problems"][0]
    else:
        assert result["problems"] == []


REMOTE = {"istiods": [], "injector": {"remote_pilot_address": "198.51.100.1"}}
PRIMARY = {"istiods": [{"name": "istiod"}], "injector": {"remote_pilot_address": ""}}
FRESH = {"istiods": [], "injector": {"remote_pilot_address": ""}}


@pytest.mark.parametrize(
    ("role", "state", "problem"),
    [
        ("primary", PRIMARY, None),
        ("remote", REMOTE, None),
        ("primary", FRESH, None),
        ("remote", FRESH, None),
        ("primary", REMOTE, "installed as a remote (no istiod; its injector calls 198.51.100.1) but the inventory makes it a primary"),
        ("remote", PRIMARY, "runs istiod (istiod) but the inventory makes it a remote"),
    ],
)
def test_installed_role_problem(role, state, problem):
    found = _membership.installed_role_problem(role, state, "x")
    assert (found is None) if problem is None else (problem in found and "meshfed.istio.leave" in found)


def remote(name, key, labels=None, annotation=None):
    return {
        "metadata": {
            "name": name,
            "labels": {"istio/multiCluster": "true", **(labels or {})},
            "annotations": {"networking.istio.io/cluster": annotation or key},
        },
        "data": {key: "Y29uZmln"},
    }


SECRETS = [
    remote("istio-remote-secret-c", "c", MANAGED),
    remote("istio-remote-secret-c-by-hand", "c"),  # a lookalike without the label
    remote("istio-remote-secret-b", "b", MANAGED),
    remote("renamed", "c2", MANAGED, annotation="c"),  # the annotation names c
    {"metadata": {"name": "not-remote", "labels": MANAGED}, "data": {"c": "eA=="}},  # ours, but no istio/multiCluster
]


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (["c"], ["istio-remote-secret-c", "renamed"]),
        (["b"], ["istio-remote-secret-b"]),
        (["z"], []),
        (None, ["istio-remote-secret-c", "istio-remote-secret-b", "renamed"]),
    ],
)
def test_remote_secrets_to_delete(names, chosen):
    assert [item["metadata"]["name"] for item in _membership.remote_secrets_to_delete(SECRETS, names)] == chosen


SA = "istio-reader-service-account"


def token(name, labels=None, account=SA, kind="kubernetes.io/service-account-token"):
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": {"kubernetes.io/service-account.name": account}}, "type": kind}


@pytest.mark.parametrize(
    ("items", "tokens", "chosen"),
    [
        # Istio's own reader objects (no label) survive; only our labelled token goes
        (
            {"serviceaccount": {"metadata": {"name": SA}}, "clusterrole": {"metadata": {"name": "r"}}, "clusterrolebinding": None},
            [token(f"{SA}-istio-remote-secret-token", MANAGED)],
            [("secret", f"{SA}-istio-remote-secret-token")],
        ),
        # all ours
        (
            {
                "serviceaccount": {"metadata": {"name": SA, "labels": MANAGED}},
                "clusterrole": {"metadata": {"name": "r", "labels": MANAGED}},
                "clusterrolebinding": {"metadata": {"name": "r", "labels": MANAGED}},
            },
            [token(f"{SA}-istio-remote-secret-token-20260101000000", MANAGED)],
            [("secret", f"{SA}-istio-remote-secret-token-20260101000000"), ("clusterrolebinding", "r"), ("clusterrole", "r"), ("serviceaccount", SA)],
        ),
        # lookalikes: our name without the label, a stamped name without the label, another account's, another type
        (
            {},
            [
                token(f"{SA}-istio-remote-secret-token"),
                token(f"{SA}-istio-remote-secret-token-x"),
                token(f"{SA}-istio-remote-secret-token-y", MANAGED, account="other"),
                token(f"{SA}-istio-remote-secret-token-z", MANAGED, kind="Opaque"),
            ],
            [],
        ),
    ],
)
def test_reader_objects_to_delete(items, tokens, chosen):
    assert [(kind, item["metadata"]["name"]) for kind, item in _membership.reader_objects_to_delete(items, tokens, SA)] == chosen


def test_install_records_to_delete():
    configmaps = [
        {"metadata": {"name": "meshfed-install-istio", "labels": MANAGED}},
        {"metadata": {"name": "meshfed-install-by-hand"}},
        {"metadata": {"name": "istio", "labels": MANAGED}},
    ]
    assert [item["metadata"]["name"] for item in _membership.install_records_to_delete(configmaps)] == ["meshfed-install-istio"]


def test_leave_plan_refuses_an_ambiguous_name():
    crossed = {"clusters": {"east": {"name": "west", "remotes": []}, "west": {"name": "east", "remotes": []}}, "primaries": ["east", "west"]}
    result = _membership.leave_plan(crossed, ["west"])
    assert result["problems"] == ["'west' is ambiguous: the inventory name of west and the cluster name of east; name the host instead"]
    assert result["leaving"] == [] and result["watchers"] == []
