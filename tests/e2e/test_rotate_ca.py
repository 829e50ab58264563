"""CA rotation on the test bed with the real istiod: two primaries (each running pilot-discovery) and a remote of the first.

At each phase boundary workload certificates requested from each primary's istiod complete mutual TLS with the other's,
old-signed against new-signed included; istiod is never restarted; no istio-ca-secret appears; a rerun writes nothing.
Tests run in order and share one bed.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

import pytest
from test_istiod import NS, Workload, has_secret, istiod, istiod_pid, mutual_tls, wait_for

from conftest import ENV, Bed, in_bed, kubectl_json

sys.path.insert(0, ENV["ANSIBLE_COLLECTIONS_PATH"])
from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _rotate_ca, _rotation  # noqa: E402

TIMES: dict = {}


def cacerts(bed: Bed, cluster: str) -> dict:
    secret = bed.secret(cluster, NS, "cacerts")
    assert secret is not None, cluster
    return secret


def published(cluster: str, namespace: str = NS) -> bytes | None:
    result = in_bed(
        "kubectl", "--request-timeout=5s", "--context", cluster, "-n", namespace, "get", "configmap", "istio-ca-root-cert", "-o", "json", check=False
    )
    return json.loads(result.stdout)["data"]["root-cert.pem"].encode() if result.returncode == 0 else None


def source_of(bed: Bed, cluster: str) -> str:
    return "cluster1" if bed.remote and cluster == bed.names[-1] else cluster


def invariant(bed: Bed) -> dict:
    """Independently of the collection's code paths: each cluster's signing root (ca-cert.pem's issuer among the roots) is in
    every cluster's cacerts root-cert.pem and istio-ca-root-cert. Returns {cluster: (roots, signer)}."""
    facts = {}
    for cluster in bed.names:
        data = cacerts(bed, cluster)
        roots = _pki.load_certs(data["root-cert.pem"], "root-cert.pem")
        ca = _pki.load_cert(data["ca-cert.pem"], "ca-cert.pem")
        signer = [_pki.fingerprint(root) for root in roots if _pki.signed_by(ca, root)]
        assert signer, f"{cluster}: ca-cert.pem chains to no root of its bundle"
        workload = _pki.load_certs(published(cluster) or b"", "istio-ca-root-cert")
        facts[cluster] = ({_pki.fingerprint(r) for r in roots}, signer[0], {_pki.fingerprint(r) for r in workload})
    for signing, (_roots, signer, _workload) in facts.items():
        for holder, (roots, _signer, workload) in facts.items():
            assert signer in roots, f"{holder}'s cacerts does not trust {signing}'s signing root"
            assert signer in workload, f"{holder}'s istio-ca-root-cert does not trust {signing}'s signing root"
    return facts


def settled(bed: Bed) -> bool:
    """istio-ca-root-cert in istio-system and default of every cluster is a byte copy of the cacerts that istiod reads."""
    return all(published(c, ns) == cacerts(bed, source_of(bed, c))["root-cert.pem"] for c in bed.names for ns in (NS, "default"))


def mtls_ok(a: Workload, b: Workload) -> None:
    for client, server in ((a, b), (b, a)):
        outcome = mutual_tls(client, server)
        assert outcome.get("reply") == b"ok", (client.cluster, server.cluster, outcome)


def writes(bed: Bed) -> dict:
    """resourceVersions of the secrets in the Istio namespace (what a rotation writes)."""
    return {key: value for key, value in bed.written_state().items() if key[1] == "Secret"}


def signing_root(workload: Workload) -> str:
    """The root that signed the intermediate of the workload's chain, among the roots istiod sent with it (every entry of
    the chain as istiod answered it: leaf, cert-chain.pem, root-cert.pem)."""
    with open(os.path.join(workload.dir, "chain.pem"), "rb") as handle:
        certs = _pki.load_certs(handle.read(), "chain.pem")
    found = {_pki.fingerprint(cert) for cert in certs[2:] if _pki.signed_by(certs[1], cert)}
    assert len(found) == 1, found
    return found.pop()


def new_signed(bed: Bed, cluster: str, root: str) -> Workload | None:
    workload = Workload(bed, cluster, f"shop-{cluster}", f"-n{time.monotonic_ns()}")
    return workload if signing_root(workload) == root else None


def rotate(bed: Bed, *extra: str, check: bool = False, env: dict | None = None):
    args = [arg for pair in (("-e", item) for item in extra) for arg in pair] + (["--check"] if check else [])
    started = time.monotonic()
    result = bed.playbook("rotate_ca", *args, env=env)
    result.seconds = round(time.monotonic() - started, 1)
    return result


@pytest.fixture(scope="module")
def bed():
    bed = Bed(3, True)
    bed.up()
    site = bed.playbook("site")
    assert site.rc == 0, site.output[-4000:]
    for name in bed.primaries:
        istiod("start", name)
    wait_for("istio-ca-root-cert everywhere, remotes included", lambda: settled(bed), timeout=120)
    bed.pids = {name: istiod_pid(name) for name in bed.primaries}
    with open(os.path.join(bed.work, "pki", "root-cert.pem"), "rb") as handle:
        bed.old_root = handle.read()
    yield bed
    print(f"\nrotation timings (s): {TIMES}")
    bed.down()


def test_intermediate_rotation_of_one_cluster_without_restart_and_a_rerun_changes_nothing(bed):
    before = cacerts(bed, "cluster1")
    old = Workload(bed, "cluster1", "shop-a", "-i0").chain["fingerprints"][1]
    plan = rotate(bed, "rotate_ca_id=i1", "rotate_ca_mode=intermediate", '{"rotate_ca_clusters": ["cluster1"]}', check=True)
    assert plan.rc == 0, plan.output[-4000:]
    assert cacerts(bed, "cluster1")["ca-cert.pem"] == before["ca-cert.pem"]
    run = rotate(bed, "rotate_ca_id=i1", "rotate_ca_mode=intermediate", '{"rotate_ca_clusters": ["cluster1"]}')
    assert run.rc == 0, run.output[-4000:]
    TIMES["intermediate"] = run.seconds
    after = cacerts(bed, "cluster1")
    assert after["root-cert.pem"] == before["root-cert.pem"]  # byte-identical
    assert after["ca-cert.pem"] != before["ca-cert.pem"] and cacerts(bed, "cluster2")["ca-cert.pem"] != after["ca-cert.pem"]
    new = _pki.fingerprint(_pki.load_cert(after["ca-cert.pem"], "ca-cert.pem"))
    chains = []
    wait_for(
        "cluster1's istiod signs with the new intermediate",
        lambda: chains.append(Workload(bed, "cluster1", "shop-a", f"-i{len(chains) + 1}")) or chains[-1].chain["fingerprints"][1] == new,
    )
    assert old != new
    mtls_ok(chains[-1], Workload(bed, "cluster2", "shop-b", "-i"))
    assert {name: istiod_pid(name) for name in bed.primaries} == bed.pids
    state = writes(bed)
    again = rotate(bed, "rotate_ca_id=i1", "rotate_ca_mode=intermediate", '{"rotate_ca_clusters": ["cluster1"]}')
    assert again.rc == 0 and set(again.changed.values()) == {0}, again.output[-4000:]
    assert writes(bed) == state
    TIMES["intermediate_rerun"] = again.seconds


def test_root_rotation_phase_by_phase_keeps_mtls_between_clusters(bed):
    old = _pki.fingerprint(_pki.load_cert(bed.old_root, "root"))
    plan = rotate(bed, "rotate_ca_id=r1", check=True)
    assert plan.rc == 0, plan.output[-4000:]
    assert not os.path.exists(os.path.join(bed.work, "pki", "rotations", "r1"))
    w0 = {c: Workload(bed, c, f"shop-{c}", "-r0") for c in bed.primaries}

    # phase 1 only: an interruption after a phase; both roots trusted everywhere, old intermediates
    run = rotate(bed, "rotate_ca_id=r1", "rotate_ca_phase=1")
    assert run.rc == 0, run.output[-4000:]
    TIMES["phase1"] = run.seconds
    facts = invariant(bed)
    new = next(iter(facts["cluster1"][0] - {old}))
    assert all(f[0] == {old, new} and f[1] == old and f[2] == {old, new} for f in facts.values()), facts
    assert published("cluster3") == cacerts(bed, "cluster1")["root-cert.pem"]  # the remote, written by cluster1's istiod
    in_bed("kubectl", "--context", "cluster2", "create", "namespace", "fresh1")
    wait_for("a fresh namespace gets the phase-1 bundle", lambda: published("cluster2", "fresh1") == cacerts(bed, "cluster2")["root-cert.pem"])
    w1 = {c: Workload(bed, c, f"shop-{c}", "-r1") for c in bed.primaries}
    assert all(signing_root(w) == old for w in w1.values())
    mtls_ok(w1["cluster1"], w0["cluster2"])
    mtls_ok(w0["cluster1"], w1["cluster2"])

    # phase 2: intermediates under the new root
    run = rotate(bed, "rotate_ca_id=r1", "rotate_ca_phase=2")
    assert run.rc == 0, run.output[-4000:]
    TIMES["phase2"] = run.seconds
    facts = invariant(bed)
    assert all(f[1] == new for f in facts.values()), facts
    w2 = {c: wait_for(f"{c}'s istiod signs under the new root", lambda c=c: new_signed(bed, c, new)) for c in bed.primaries}
    mtls_ok(w2["cluster1"], w2["cluster2"])
    mtls_ok(w2["cluster1"], w1["cluster2"])  # new-signed against old-signed, both directions
    mtls_ok(w1["cluster1"], w2["cluster2"])

    # phase 3 (and the PKI directory promoted)
    run = rotate(bed, "rotate_ca_id=r1")
    assert run.rc == 0, run.output[-4000:]
    TIMES["phase3"] = run.seconds
    facts = invariant(bed)
    assert all(f[0] == {new} and f[2] == {new} for f in facts.values()), facts
    assert settled(bed)
    w3 = {c: Workload(bed, c, f"shop-{c}", "-r3") for c in bed.primaries}
    assert all(signing_root(w) == new for w in w3.values())
    mtls_ok(w3["cluster1"], w3["cluster2"])
    mtls_ok(w3["cluster1"], w2["cluster2"])
    mtls_ok(w2["cluster1"], w3["cluster2"])
    assert {name: istiod_pid(name) for name in bed.primaries} == bed.pids  # never restarted
    assert not any(has_secret(c, "istio-ca-secret") for c in bed.names)
    pki = os.path.join(bed.work, "pki")
    with open(os.path.join(pki, "rotations", "r1", "old", "root-cert.pem"), "rb") as handle:
        assert handle.read() == bed.old_root
    assert os.path.exists(os.path.join(pki, "rotations", "r1", "old", "root-key.pem"))
    with open(os.path.join(pki, "root-cert.pem"), "rb") as handle:
        assert _pki.fingerprint(_pki.load_cert(handle.read(), "root")) == new
    assert _rotation.fingerprints(published("cluster3")) == [new]

    state = writes(bed)
    again = rotate(bed, "rotate_ca_id=r1")
    assert again.rc == 0 and set(again.changed.values()) == {0}, again.output[-4000:]
    assert writes(bed) == state
    TIMES["rerun"] = again.seconds
    # the PKI directory and the clusters agree: the site playbook has nothing to push
    site = bed.playbook("site", "--tags", "pki,cacerts")
    assert site.rc == 0 and set(site.changed.values()) == {0}, site.output[-4000:]
    assert writes(bed) == state
    assert kubectl_json("cluster1", "-n", NS, "get", "secret", "cacerts")["data"]


def test_a_direct_switch_to_another_root_breaks_mtls_and_is_refused(bed):
    """What the phases prevent: cluster2 switched from A to C in one write."""
    original = cacerts(bed, "cluster2")
    key = _pki.generate_key("ecdsa-p256")
    root = _pki.build_root(key, _pki.CaSpec("Istio", "Root CA C", 30, "ecdsa-p256"), _pki.utcnow())
    ikey = _pki.generate_key("ecdsa-p256")
    inter = _pki.build_intermediate(ikey, _pki.CaSpec("Istio", "Intermediate CA", 20, "ecdsa-p256", "cluster2"), root, key, _pki.utcnow())
    switched = {
        "ca-cert.pem": _pki.cert_pem(inter),
        "ca-key.pem": _pki.key_pem(ikey),
        "root-cert.pem": _pki.cert_pem(root),
        "cert-chain.pem": _pki.cert_pem(inter) + _pki.cert_pem(root),
    }
    patch = {"data": {k: base64.b64encode(v).decode() for k, v in switched.items()}}
    a = Workload(bed, "cluster1", "shop-a", "-x")
    try:
        in_bed("kubectl", "--context", "cluster2", "-n", NS, "patch", "secret", "cacerts", "-p", json.dumps(patch))
        time.sleep(5)  # the sync loop mirrors it within a second; istiod reacts to the file change
        # istiod refuses a root-cert.pem that neither contains the old bundle nor is contained by it
        assert published("cluster2") == original["root-cert.pem"]
        b = Workload(bed, "cluster2", "shop-b", "-x")
        if signing_root(b) == _pki.fingerprint(root):  # istiod signs with the switched intermediate: trust is split
            for client, server in ((a, b), (b, a)):
                outcome = mutual_tls(client, server)
                assert "reply" not in outcome, outcome
        state = writes(bed)
        refused = rotate(bed, "rotate_ca_id=bad")
        assert refused.rc != 0 and "cluster2" in refused.output and "disagree with the PKI directory" in refused.output
        assert writes(bed) == state
        assert not os.path.exists(os.path.join(bed.work, "pki", "rotations", "bad"))
    finally:
        patch = {"data": {k: base64.b64encode(v).decode() for k, v in original.items() if k in _pki.BUNDLE_KEYS}}
        in_bed("kubectl", "--context", "cluster2", "-n", NS, "patch", "secret", "cacerts", "-p", json.dumps(patch))
    mesh_root = _rotation.fingerprints(original["root-cert.pem"])[-1]
    wait_for("cluster2's istiod signs under the mesh root again", lambda: new_signed(bed, "cluster2", mesh_root))


def doctor(bed: Bed) -> tuple[int, dict, str]:
    """The verify playbook as a user runs it (it fails on an error finding): its rc, findings.json and report.md."""
    report_dir = os.path.join(bed.work, "report")
    run = bed.playbook("verify", "-e", f"verify_report_dir={report_dir}")
    with open(os.path.join(report_dir, "findings.json"), encoding="utf-8") as handle:
        findings = json.load(handle)
    with open(os.path.join(report_dir, "report.md"), encoding="utf-8") as handle:
        return run.rc, findings, handle.read()


def test_a_run_killed_after_one_clusters_write_leaves_trust_whole_the_doctor_sees_the_phases_and_a_rerun_finishes(bed):
    """Mid-phase interruption on the real clusters: rotation r2 (from the root r1 left) is killed by the test-only hook
    right after its 4th cacerts write - phase 1 in all three clusters, then phase 2 in cluster1 alone."""
    wait_for("the mesh settled after the previous test", lambda: settled(bed), timeout=120)
    with open(os.path.join(bed.work, "pki", "root-cert.pem"), "rb") as handle:
        old = _pki.fingerprint(_pki.load_cert(handle.read(), "root"))
    killed = rotate(bed, "rotate_ca_id=r2", env={_rotate_ca.KILL_AFTER_WRITES: "4"})
    assert killed.rc != 0, killed.output[-4000:]
    TIMES["killed_run"] = killed.seconds

    facts = invariant(bed)  # read from the secrets, independently of the collection's code
    new = next(iter(facts["cluster1"][0] - {old}))
    assert facts["cluster1"][:2] == ({old, new}, new), facts  # phase 2: intermediate under the new root
    assert all(facts[c][:2] == ({old, new}, old) for c in ("cluster2", "cluster3")), facts  # still phase 1
    assert len(_rotation.fingerprints(cacerts(bed, "cluster1")["root-cert.pem"])) == 3  # A+B+B
    wait_for("istiod copied the written bundles into istio-ca-root-cert", lambda: settled(bed), timeout=120)
    invariant(bed)

    rc, findings, report = doctor(bed)
    assert rc == 0 and [f for f in findings["findings"] if f["severity"] == "error"] == [], findings
    [rotation] = [f for f in findings["findings"] if f["id"] == "rotation_in_progress"]
    assert (rotation["severity"], rotation["clusters"]) == ("warning", bed.names), rotation
    assert "cluster1 at phase 2 (" in rotation["evidence"]
    assert "cluster2 at phase 1 (old and new root trusted, old intermediates), behind" in rotation["evidence"]
    assert "-e rotate_ca_id=r2" in rotation["fix"]
    assert "**mid root rotation**, not broken: root rotation r2 from" in report

    resumed = rotate(bed, "rotate_ca_id=r2")
    assert resumed.rc == 0, resumed.output[-4000:]
    TIMES["resumed"] = resumed.seconds
    facts = invariant(bed)
    assert all(f[0] == {new} and f[1] == new and f[2] == {new} for f in facts.values()), facts
    state = writes(bed)
    again = rotate(bed, "rotate_ca_id=r2")
    assert again.rc == 0 and set(again.changed.values()) == {0}, again.output[-4000:]
    assert writes(bed) == state
    rc, findings, _report = doctor(bed)
    assert rc == 0 and not [f for f in findings["findings"] if f["id"] in ("rotation_in_progress", "root_mismatch")], findings
