"""Mesh membership on Day 2 (issue 13): a cluster joins a converged mesh, reader tokens rotate under the real
istiod, a promotion or demotion in place is refused, a cluster leaves and only what the collection made goes.

One bed of three kwok clusters, all primaries; the first inventory file names two of them, the second all three.
The tests run in order and share the bed.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time

import pytest
import yaml
from test_istiod import clusterz, istiod, wait_for

from conftest import ENV, Bed, in_bed, kubectl_json

NS = "istio-system"
MANAGED = "app.kubernetes.io/managed-by=meshfed.istio"
SA = "istio-reader-service-account"


class MembershipBed(Bed):
    def inventories(self) -> None:
        with open(os.path.join(ENV["MESHFED_RUN"], "inventory.yml"), encoding="utf-8") as handle:
            full = yaml.safe_load(handle)
        two = json.loads(json.dumps(full))
        del two["all"]["children"]["istio_primary"]["hosts"]["cluster3"]
        self.full, self.two = (os.path.join(self.work, name) for name in ("inventory-3.yml", "inventory-2.yml"))
        for path, content in ((self.full, full), (self.two, two)):
            with open(path, "w", encoding="utf-8") as handle:
                yaml.safe_dump(content, handle)
        self.timings = {}

    def run(self, name: str, inventory: str, *args):
        self.inventory = inventory
        started = time.monotonic()
        result = self.playbook(name, *args)
        self.timings.setdefault(name, []).append(round(time.monotonic() - started, 1))
        return result


@pytest.fixture(scope="module")
def bed():
    bed = MembershipBed(3, False)
    bed.up()
    bed.inventories()
    yield bed
    istiod("stop-all", check=False)
    print(f"\nmembership timings (s): {bed.timings}")
    bed.down()


def names(context: str, kind: str, *selector: str) -> set[str]:
    return {item["metadata"]["name"] for item in kubectl_json(context, "-n", NS, "get", kind, *selector)["items"]}


def test_join_writes_only_what_the_new_member_needs(bed):
    converge = bed.run("site", bed.two)
    assert converge.rc == 0, converge.output[-6000:]
    assert set(converge.recap) == {"cluster1", "cluster2"}
    before = bed.written_state()
    join = bed.run("site", bed.full)
    assert join.rc == 0, join.output[-6000:]
    after = bed.written_state()
    others = ("cluster1", "cluster2")
    changed = {key for key in before if key[0] in others and after.get(key) != before[key]}
    added = {key for key in after if key[0] in others and key not in before}
    assert changed == set(), f"a join rewrote objects of the other clusters: {sorted(changed)}"
    # documented: each primary that stays gets the new member's remote secret, nothing else
    assert added == {(name, "Secret", NS, "istio-remote-secret-cluster3") for name in others}
    assert names("cluster3", "secrets", "-l", "istio/multiCluster=true") == {"istio-remote-secret-cluster1", "istio-remote-secret-cluster2"}
    again = bed.run("site", bed.full)
    assert again.rc == 0 and again.changed == {name: 0 for name in bed.names}, again.output[-4000:]


def token_secrets(context: str) -> dict[str, bytes]:
    found = {}
    for item in kubectl_json(context, "-n", NS, "get", "secrets", "--field-selector", "type=kubernetes.io/service-account-token")["items"]:
        if item["metadata"]["name"].startswith(f"{SA}-istio-remote-secret-token"):
            found[item["metadata"]["name"]] = base64.b64decode(item["data"]["token"])
    return found


def remote_token(watcher: str, cluster: str) -> str:
    secret = kubectl_json(watcher, "-n", NS, "get", "secret", f"istio-remote-secret-{cluster}")
    return yaml.safe_load(base64.b64decode(secret["data"][cluster]))["users"][0]["user"]["token"]


def test_reader_tokens_rotate_under_the_real_istiod(bed):
    for name in bed.names:
        istiod("start", name)
    for name in bed.names:
        others = {other: "synced" for other in bed.names if other != name}
        wait_for(f"{name}'s istiod synced with {sorted(others)}", lambda: others.items() <= clusterz(name).items())
    old = {name: token_secrets(name) for name in bed.names}
    assert all(len(tokens) == 1 for tokens in old.values()), old.keys()
    old_kubeconfig = base64.b64decode(kubectl_json("cluster1", "-n", NS, "get", "secret", "istio-remote-secret-cluster2")["data"]["cluster2"])

    seen, stop = [], threading.Event()

    def watch():
        while not stop.wait(2):
            seen.append({name: clusterz(name) for name in bed.names})

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rotation = bed.run("site", bed.full, "-vvvv", "-e", "remote_secrets_rotate_tokens_older_than_days=0", "-e", "remote_secrets_rotation_wait_seconds=10")
    finally:
        stop.set()
        watcher.join(10)
    assert rotation.rc == 0, rotation.output[-6000:]
    new = {name: token_secrets(name) for name in bed.names}
    for name in bed.names:
        ((old_name, old_token),) = old[name].items()
        ((new_name, new_token),) = new[name].items()
        assert new_name != old_name and new_name.startswith(f"{SA}-istio-remote-secret-token-") and new_token != old_token
        for token in (old_token, new_token):
            assert token.decode() not in rotation.output, f"a reader token of {name} is in the -vvvv output"
        for watcher_name in bed.names:
            if watcher_name != name:
                assert remote_token(watcher_name, name) == new_token.decode()
    for name in bed.names:
        others = {other: "synced" for other in bed.names if other != name}
        wait_for(f"{name}'s istiod synced with {sorted(others)} after rotation", lambda: others.items() <= clusterz(name).items())
    assert not any(status == "timeout" for sample in seen for state in sample.values() for status in state.values()), seen
    # the old token is rejected by the API server now
    path = os.path.join(bed.work, "old-kubeconfig")
    with open(path, "wb") as handle:
        handle.write(old_kubeconfig)
    denied = in_bed("kubectl", "--request-timeout=10s", "--kubeconfig", path, "get", "services", check=False)
    assert denied.returncode != 0 and "Unauthorized" in denied.stderr, denied.stderr
    again = bed.run("site", bed.full)
    assert again.rc == 0 and again.changed == {name: 0 for name in bed.names}, again.output[-4000:]
    istiod("stop-all", check=False)


def test_demotion_in_place_is_refused_before_any_write(bed):
    with open(bed.full, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    hosts = inventory["all"]["children"]["istio_primary"]["hosts"]
    inventory["all"]["children"]["istio_remote"] = {"hosts": {"cluster2": {**hosts.pop("cluster2"), "meshfed_primary": "cluster1"}}}
    demoted = os.path.join(bed.work, "inventory-demoted.yml")
    with open(demoted, "w", encoding="utf-8") as handle:
        yaml.safe_dump(inventory, handle)
    before = bed.written_state()
    refused = bed.run("site", demoted)
    assert refused.rc != 0
    assert "cluster cluster2 runs istiod" in refused.output and "Demoting a primary in place is not supported" in refused.output
    assert bed.written_state() == before


def test_leave_refusals(bed):
    for value, message in (("nope", "'nope' is not a cluster of this inventory"), ("", "no cluster to leave")):
        refused = bed.run("leave", bed.full, "-e", f"leave_clusters={value}")
        assert refused.rc != 0 and message in refused.output, refused.output[-3000:]


def test_leave_deletes_only_what_the_collection_made(bed):
    lookalike_remote = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "istio-remote-secret-cluster3-by-hand",
            "namespace": NS,
            "labels": {"istio/multiCluster": "true"},
            "annotations": {"networking.istio.io/cluster": "cluster3"},
        },
        "data": {"cluster3": base64.b64encode(b"by hand").decode()},
    }
    lookalike_token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": f"{SA}-istio-remote-secret-token-by-hand", "namespace": NS, "annotations": {"kubernetes.io/service-account.name": SA}},
    }
    in_bed("kubectl", "--context", "cluster1", "apply", "-f", "-", input=json.dumps(lookalike_remote))
    in_bed("kubectl", "--context", "cluster3", "apply", "-f", "-", input=json.dumps(lookalike_token))

    check = bed.run("leave", bed.full, "--check", "-e", "leave_clusters=cluster3")
    assert check.rc == 0, check.output[-4000:]
    assert "cluster1: secret istio-system/istio-remote-secret-cluster3" in check.output
    assert "istio-remote-secret-cluster3" in names("cluster1", "secrets")

    leave = bed.run("leave", bed.full, "-e", "leave_clusters=cluster3")
    assert leave.rc == 0, leave.output[-6000:]
    for name in ("cluster1", "cluster2"):
        assert "istio-remote-secret-cluster3" not in names(name, "secrets")
    assert "istio-remote-secret-cluster3-by-hand" in names("cluster1", "secrets")
    # without uninstall only the collection's cacerts stays labelled; Istio's own reader and the lookalike token survive
    assert names("cluster3", "secrets", "-l", MANAGED) == {"cacerts"}
    assert f"{SA}-istio-remote-secret-token-by-hand" in names("cluster3", "secrets")
    assert SA in names("cluster3", "serviceaccounts")
    assert "istiod" in names("cluster3", "deployments")

    rerun = bed.run("leave", bed.full, "-e", "leave_clusters=cluster3")
    assert rerun.rc == 0 and rerun.changed == {name: 0 for name in bed.names}, rerun.output[-4000:]

    uninstall = bed.run("leave", bed.full, "-e", "leave_clusters=cluster3", "-e", "leave_uninstall_istio=true")
    assert uninstall.rc == 0, uninstall.output[-6000:]
    assert uninstall.changed == {"cluster1": 0, "cluster2": 0, "cluster3": 1}, uninstall.changed
    # a Deployment's deletion completes asynchronously (garbage collection of its dependents): wait for it, bounded
    wait_for("istiod's Deployment gone from cluster3", lambda: "istiod" not in names("cluster3", "deployments"))
    assert names("cluster3", "secrets", "-l", MANAGED) == set()
    assert names("cluster3", "configmaps", "-l", MANAGED) == set()

    in_bed("kubectl", "--context", "cluster1", "-n", NS, "delete", "secret", "istio-remote-secret-cluster3-by-hand")
    bed.names = ["cluster1", "cluster2"]
    verify = bed.run("verify", bed.two)
    assert verify.rc == 0, verify.output[-4000:]
    assert "remote_secret_unexpected" not in verify.output and "remote_secret_missing" not in verify.output
