"""Root rotation as tables: bundle bytes, phases, the safety invariant, the next step; and the byte rules with the openssl CLI."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _rotation

NOW = _pki.utcnow()
CLUSTERS = ("east", "west", "edge")  # two primaries and a remote: the rotation treats them alike


class Root:
    def __init__(self, name: str):
        self.key = _pki.generate_key("ecdsa-p256")
        self.cert = _pki.build_root(self.key, _pki.CaSpec("Istio", f"Root CA {name}", 3650, "ecdsa-p256"), NOW)
        self.pem = _pki.cert_pem(self.cert)
        self.fp = _pki.fingerprint(self.cert)

    def intermediate(self, cluster: str):
        key = _pki.generate_key("ecdsa-p256")
        spec = _pki.CaSpec("Istio", "Intermediate CA", 730, "ecdsa-p256", cluster)
        return _pki.build_intermediate(key, spec, self.cert, self.key, NOW), key


A, B, C = Root("A"), Root("B"), Root("C")
ROOTS = {"A": A, "B": B, "C": C}


def bundle(spec: str) -> bytes:
    """'A+B+B' -> the bytes the rotation writes for it: A's PEM, then B's appended, then B's again."""
    names = spec.split("+")
    data = ROOTS[names[0]].pem
    for name in names[1:]:
        data = _rotation.append_root(data, ROOTS[name].pem)
    return data


def trust(name: str, spec: str, signer: str, workload: str | None, primary: str = "") -> _rotation.ClusterTrust:
    """A cluster: its bundle ('A+B'), the root its intermediate chains to ('A'), its istio-ca-root-cert (a bundle spec,
    None when not read) and, for a remote, its primary."""
    roots = () if workload is None else (tuple(_rotation.fingerprints(bundle(workload))),)
    return _rotation.ClusterTrust(name, bundle(spec), ROOTS[signer].fp, roots, primary)


def mesh(*specs) -> list[_rotation.ClusterTrust]:
    """One (bundle, signer[, istio-ca-root-cert]) per cluster of CLUSTERS; edge is a remote of east. Without a third item
    istio-ca-root-cert is what istiod copies: a primary's own bundle, for edge east's bundle."""
    clusters = []
    for name, spec in zip(CLUSTERS, specs, strict=True):
        source = specs[0] if name == "edge" else spec
        workload = spec[2] if len(spec) > 2 else source[0]
        clusters.append(trust(name, spec[0], spec[1], workload, "east" if name == "edge" else ""))
    return clusters


PHASE = {0: ("A", "A"), 1: ("A+B", "A"), 2: ("A+B+B", "B"), 3: ("B", "B")}


# Bundle arithmetic


def _crlf(pem: bytes) -> bytes:
    return pem.replace(b"\n", b"\r\n")


def _rewrapped(pem: bytes) -> bytes:
    """The same certificate, base64 wrapped at 76 columns: equal as a certificate, different as bytes."""
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("old", "separator"),
    [
        (A.pem, b""),  # as cacerts writes it
        (A.pem.rstrip(b"\n"), b"\n"),  # no trailing newline: one is added, nothing else changes
        (A.pem + b"\n\n", b""),  # trailing blank lines kept
        (_crlf(A.pem), b""),  # CRLF kept
        (b"# the mesh root\n" + A.pem, b""),  # text before the block kept
        (A.pem + C.pem, b""),  # a bundle of several roots
    ],
)
def test_append_keeps_the_old_bytes_as_a_prefix(old, separator):
    new = _rotation.append_root(old, B.pem)
    assert new == old + separator + B.pem
    assert new.startswith(old) and _rotation.accepted_by_istiod(old, new)
    assert _rotation.fingerprints(new) == _rotation.fingerprints(old) + [B.fp]


def test_phase_bundles_contain_each_other_in_order():
    phase0, phase1, phase2, phase3 = bundle("A"), bundle("A+B"), bundle("A+B+B"), _rotation.only_root(bundle("A+B+B"), B.fp)
    assert phase3 == B.pem  # the cluster ends with the PKI's new root-cert.pem, byte for byte
    assert [_rotation.accepted_by_istiod(x, y) for x, y in [(phase0, phase1), (phase1, phase2), (phase2, phase3)]] == [True] * 3
    assert phase1 in phase2 and phase3 in phase2 and phase2 != phase1


@pytest.mark.parametrize(
    ("current", "new", "accepted"),
    [
        (A.pem, B.pem, False),  # A -> B directly: istiod refuses
        (A.pem, A.pem + B.pem, True),
        (A.pem + B.pem, B.pem, True),
        (A.pem + B.pem, B.pem + A.pem, False),  # same set, other bytes: 1.30+ would take it, 1.24-1.29 would not
        (A.pem, _rewrapped(A.pem) + B.pem, False),  # re-encoded: the old bytes are gone
        (b"", A.pem, False),
    ],
)
def test_accepted_by_istiod_is_byte_containment(current, new, accepted):
    assert _rotation.accepted_by_istiod(current, new) is accepted


def test_rewrapped_is_the_same_certificate():
    assert _rotation.fingerprints(_rewrapped(A.pem)) == [A.fp] and _rewrapped(A.pem) != A.pem


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (A.pem + B.pem, "exactly one certificate, this one holds 2"),
        (b"not a certificate\n", "exactly one certificate, this one holds 0"),
    ],
)
def test_a_root_is_one_certificate(pem, message):
    with pytest.raises(_rotation.RotationError, match=message):
        _rotation.append_root(A.pem, pem)


def test_only_root_names_a_missing_root():
    with pytest.raises(_rotation.RotationError, match="holds no root"):
        _rotation.only_root(A.pem, B.fp)


# Phases

PHASE_ROWS = {
    "not started": ((PHASE[0], PHASE[0], PHASE[0]), 0, True, ["at", "at", "at"]),
    "phase 1 written in east only (interrupted)": ((PHASE[1], PHASE[0], PHASE[0]), 1, False, ["at", "behind", "behind"]),
    "phase 1 everywhere, edge's istio-ca-root-cert not copied yet": ((PHASE[1], PHASE[1], (*PHASE[1], "A")), 1, False, ["at", "at", "at"]),
    "phase 1 done": ((PHASE[1], PHASE[1], PHASE[1]), 1, True, ["at", "at", "at"]),
    "phase 2 written in east and west, not in the remote": ((PHASE[2], PHASE[2], PHASE[1]), 2, False, ["at", "at", "behind"]),
    "phase 2 done": ((PHASE[2], PHASE[2], PHASE[2]), 2, True, ["at", "at", "at"]),
    "phase 3 in west only": ((PHASE[2], PHASE[3], PHASE[2]), 3, False, ["behind", "at", "behind"]),
    "done": ((PHASE[3], PHASE[3], PHASE[3]), 3, True, ["at", "at", "at"]),
    "A+B without the duplicate but under B is phase 2": ((("A+B", "B"), PHASE[2], PHASE[2]), 2, True, ["at", "at", "at"]),
    "the remote written first: its istio-ca-root-cert still follows east": ((PHASE[0], PHASE[0], PHASE[1]), 1, False, ["behind", "behind", "at"]),
    "istio-ca-root-cert not read": (((*PHASE[0], None), PHASE[0], PHASE[0]), 0, False, ["at", "at", "at"]),
}


@pytest.mark.parametrize("row", list(PHASE_ROWS))
def test_mesh_phase(row):
    specs, phase, complete, positions = PHASE_ROWS[row]
    result = _rotation.mesh_phase(mesh(*specs), A.fp, B.fp)
    assert (result.phase, result.complete, result.problems) == (phase, complete, [])
    assert [result.clusters[name].position for name in CLUSTERS] == positions
    assert result.done is (phase == 3 and complete)


@pytest.mark.parametrize(
    ("specs", "new", "problem"),
    [
        ((PHASE[2], PHASE[0], PHASE[1]), B, "west: at phase 0 (old root only) while another cluster is at phase 2: a phase was skipped"),
        ((PHASE[0], ("A+C", "A"), PHASE[0]), B, "west: cacerts trusts {c}, neither the old nor the new root"),
        ((PHASE[0], ("A", "B"), PHASE[0]), B, "west: the intermediate chains to {b} of its bundle"),
        ((PHASE[0], ("B", "A"), PHASE[0]), B, "west: the intermediate chains to {a} of its bundle"),
        ((PHASE[0], ("A+B", "A"), PHASE[0]), None, "west: cacerts trusts {b}, neither the old nor the new root"),
    ],
)
def test_states_that_are_no_phase_are_named(specs, new, problem):
    result = _rotation.mesh_phase(mesh(*specs), A.fp, new.fp if new else "")
    short = {"{a}": A.fp[:23], "{b}": B.fp[:23], "{c}": C.fp[:23]}
    for key, value in short.items():
        problem = problem.replace(key, value)
    assert result.problems == [problem] and not result.complete


def test_not_rotating_is_phase_0():
    result = _rotation.mesh_phase(mesh(PHASE[0], PHASE[0], PHASE[0]), A.fp, "")
    assert (result.phase, result.complete, result.done) == (0, True, False)


def _by_fingerprints(clusters: list[_rotation.ClusterTrust]) -> list[_rotation.ClusterTrust]:
    """The same clusters as a reader with fingerprints only (the doctor) sees them."""
    return [_rotation.ClusterTrust.of_fingerprints(t.name, t.roots, t.signer, t.workload, t.primary) for t in clusters]


@pytest.mark.parametrize("row", list(PHASE_ROWS))
def test_fingerprints_alone_give_the_same_phases_and_invariant(row):
    clusters = mesh(*PHASE_ROWS[row][0])
    assert _rotation.mesh_phase(_by_fingerprints(clusters), A.fp, B.fp) == _rotation.mesh_phase(clusters, A.fp, B.fp)
    assert _rotation.violations(_by_fingerprints(clusters)) == _rotation.violations(clusters)
    assert all(t.bundle == b"" for t in _by_fingerprints(clusters))


@pytest.mark.parametrize(
    ("specs", "roots"),
    [
        ((PHASE[0], PHASE[0], PHASE[0]), None),
        ((PHASE[3], PHASE[3], PHASE[3]), None),
        ((PHASE[1], PHASE[0], PHASE[0]), ("A", "B")),
        ((PHASE[2], PHASE[1], PHASE[1]), ("A", "B")),
        ((PHASE[3], PHASE[2], PHASE[2]), ("A", "B")),
        ((PHASE[0], PHASE[0], PHASE[3]), None),  # two roots, no bundle holding both: no rotation the bundles show
        ((("B+A", "B"), ("B", "B"), ("B", "B")), ("B", "A")),  # a rotation back to A: the appended root is the new one
        ((PHASE[1], ("A+C", "A"), PHASE[0]), None),  # three roots
    ],
)
def test_roots_of_rotation_reads_old_and_new_from_the_bundles(specs, roots):
    names = {A.fp: "A", B.fp: "B", C.fp: "C"}
    found = _rotation.roots_of_rotation(_by_fingerprints(mesh(*specs)))
    assert (tuple(names[fp] for fp in found) if found else None) == roots


# The safety invariant


def _writes(**bundles) -> dict:
    """cluster=('A+B', new_intermediate) -> Writes."""
    return {name: _rotation.Write(name, 0, bundle(spec), new_int) for name, (spec, new_int) in bundles.items()}


INVARIANT_ROWS = {
    "phase 0, nothing written": (mesh(PHASE[0], PHASE[0], PHASE[0]), {}, set()),
    "phase 1 everywhere": (mesh(PHASE[0], PHASE[0], PHASE[0]), _writes(east=("A+B", False), west=("A+B", False), edge=("A+B", False)), set()),
    "phase 2 everywhere after phase 1": (mesh(PHASE[1], PHASE[1], PHASE[1]), _writes(east=("A+B+B", True), west=("A+B+B", True), edge=("A+B+B", True)), set()),
    "phase 3 after phase 2": (mesh(PHASE[2], PHASE[2], PHASE[2]), _writes(east=("B", False), west=("B", False), edge=("B", False)), set()),
    "direct switch A -> B in east": (
        mesh(PHASE[0], PHASE[0], PHASE[0]),
        _writes(east=("B", True)),
        {
            ("east", "B", "east", "cacerts"),
            ("east", "B", "west", "cacerts"),
            ("east", "B", "edge", "cacerts"),
            ("east", "A", "east", "cacerts"),
            ("west", "A", "east", "cacerts"),
            ("edge", "A", "east", "cacerts"),
        },
    ),
    "phase 2 in east while edge is still at phase 0": (mesh(PHASE[1], PHASE[1], PHASE[0]), _writes(east=("A+B+B", True)), {("east", "B", "edge", "cacerts")}),
    "phase 2 in east before west's istio-ca-root-cert has B": (
        mesh(PHASE[1], (*PHASE[1], "A"), PHASE[1]),
        _writes(east=("A+B+B", True)),
        {("east", "B", "west", "istio-ca-root-cert")},
    ),
    "phase 3 in west while east still signs with A": (mesh(PHASE[1], PHASE[2], PHASE[2]), _writes(west=("B", False)), {("east", "A", "west", "cacerts")}),
    "half done, as read (no write)": (mesh(PHASE[2], PHASE[0], PHASE[0]), {}, {("east", "B", "west", "cacerts"), ("east", "B", "edge", "cacerts")}),
}


@pytest.mark.parametrize("row", list(INVARIANT_ROWS))
def test_invariant(row):
    clusters, writes, expected = INVARIANT_ROWS[row]
    names = {A.fp: "A", B.fp: "B"}
    found = {(v.signer, names[v.root], v.cluster, v.where) for v in _rotation.violations(clusters, writes, B.fp)}
    assert found == expected


def test_violation_names_both_clusters():
    [violation] = _rotation.violations(mesh(PHASE[1], PHASE[1], PHASE[0]), _writes(east=("A+B+B", True)), B.fp)
    assert str(violation) == f"edge would not trust east's signing root {B.fp[:23]} (cacerts)"


# The next step

STEP_ROWS = {
    "start": ((PHASE[0], PHASE[0], PHASE[0]), 3, 1, {"east": "A+B", "west": "A+B", "edge": "A+B"}, False, [], False),
    "resume phase 1 after east": ((PHASE[1], PHASE[0], PHASE[0]), 3, 1, {"west": "A+B", "edge": "A+B"}, False, [], False),
    "wait for east's istio-ca-root-cert": (((*PHASE[1], "A"), PHASE[0], PHASE[0]), 3, 1, {}, False, ["east"], False),
    "phase 2": ((PHASE[1], PHASE[1], PHASE[1]), 3, 2, {"east": "A+B+B", "west": "A+B+B", "edge": "A+B+B"}, True, [], False),
    "resume phase 2 in the remote": ((PHASE[2], PHASE[2], PHASE[1]), 3, 2, {"edge": "A+B+B"}, True, [], False),
    "phase 3": ((PHASE[2], PHASE[2], PHASE[2]), 3, 3, {"east": "B", "west": "B", "edge": "B"}, False, [], False),
    "done": ((PHASE[3], PHASE[3], PHASE[3]), 3, 3, {}, False, [], True),
    "stop after phase 1": ((PHASE[1], PHASE[1], PHASE[1]), 1, 1, {}, False, [], True),
    "not started, target 0": ((PHASE[0], PHASE[0], PHASE[0]), 0, 0, {}, False, [], True),
}


@pytest.mark.parametrize("row", list(STEP_ROWS))
def test_next_step(row):
    specs, target, phase, bundles, new_intermediate, waiting, done = STEP_ROWS[row]
    step = _rotation.next_step(mesh(*specs), A.fp, B.pem, target)
    assert (step.phase, step.waiting, step.done) == (phase, waiting, done)
    assert {name: write.bundle for name, write in step.writes.items()} == {name: bundle(spec) for name, spec in bundles.items()}
    assert {write.new_intermediate for write in step.writes.values()} <= {new_intermediate}


@pytest.mark.parametrize(
    ("specs", "new", "target", "message"),
    [
        ((PHASE[2], PHASE[2], PHASE[2]), B, 1, "the mesh is at phase 2 .*past the target 1: a rotation does not go back"),
        ((PHASE[2], PHASE[0], PHASE[0]), B, 3, "cannot tell where the rotation stands: west: at phase 0 .* a phase was skipped"),
        ((PHASE[0], ("A+C", "A"), PHASE[0]), B, 3, "cannot tell where the rotation stands: west: cacerts trusts"),
        ((PHASE[0], PHASE[0], PHASE[0]), A, 3, "the new root is the old root"),
        ((PHASE[0], PHASE[0], PHASE[0]), B, 4, "target must be one of the phases 0, 1, 2, 3"),
    ],
)
def test_next_step_refuses(specs, new, target, message):
    with pytest.raises(_rotation.RotationError, match=message):
        _rotation.next_step(mesh(*specs), A.fp, new.pem, target)


def test_next_step_waits_while_an_istio_ca_root_cert_lacks_the_new_root():
    # west's istio-ca-root-cert does not hold B yet: phase 2 would make west sign with a root west's own workloads do not
    # trust. mesh_phase sees it as unsettled, so the step waits instead of writing.
    clusters = mesh(PHASE[2], (*PHASE[1], "A"), PHASE[1])
    step = _rotation.next_step(clusters, A.fp, B.pem)
    assert (step.writes, step.waiting) == ({}, ["west"])


def test_next_step_refuses_a_write_that_breaks_the_invariant(monkeypatch):
    # the phases never produce one; the last check before returning writes is there for the day they would
    def direct_switch(item, phase, new_pem, new):
        return _rotation.Write(item.name, phase, new_pem, True)

    monkeypatch.setattr(_rotation, "_write", direct_switch)
    with pytest.raises(_rotation.RotationError, match="phase 1 would break trust between clusters: east would not trust east's"):
        _rotation.next_step(mesh(PHASE[0], PHASE[0], PHASE[0]), A.fp, B.pem)


def _apply(clusters, step, only=None, copied=True):
    """The clusters after the step's writes (or only some): bundle and signer; with copied, every istiod has copied its
    root-cert.pem into istio-ca-root-cert (a remote's comes from its primary)."""
    written = []
    for item in clusters:
        write = step.writes.get(item.name)
        if write is None or (only is not None and item.name not in only):
            written.append(item)
        else:
            signer = B.fp if write.new_intermediate else item.signer
            written.append(_rotation.ClusterTrust(item.name, write.bundle, signer, item.workload, item.primary))
    if not copied:
        return written
    by_name = {item.name: item for item in written}
    return [_rotation.ClusterTrust(item.name, item.bundle, item.signer, (tuple(by_name[item.primary or item.name].roots),), item.primary) for item in written]


def test_full_rotation_interrupted_in_every_phase_keeps_the_invariant_and_ends_on_b():
    clusters = mesh(PHASE[0], PHASE[0], PHASE[0])
    phases = []
    for _attempt in range(20):
        step = _rotation.next_step(clusters, A.fp, B.pem)
        if step.done:
            break
        assert _rotation.violations(clusters, step.writes, B.fp) == []
        # interrupted: the primary east written, istio-ca-root-cert not copied yet (east's and its remote edge's); then the rest
        first = ["east"]
        clusters = _apply(clusters, step, only=first, copied=False)
        assert _rotation.violations(clusters) == []
        assert _rotation.next_step(clusters, A.fp, B.pem).waiting == ["east", "edge"]
        clusters = _apply(clusters, step, only=first)
        phases.append(step.phase)
        resumed = _rotation.next_step(clusters, A.fp, B.pem)
        assert resumed.phase == step.phase and sorted(resumed.writes) == sorted(set(step.writes) - set(first))
        clusters = _apply(clusters, resumed)
        assert _rotation.violations(clusters) == []
    assert phases == [1, 2, 3]
    assert [item.bundle for item in clusters] == [B.pem] * 3
    again = _rotation.next_step(clusters, A.fp, B.pem)
    assert (again.done, again.writes) == (True, {})


def test_signer_of():
    cert, _key = B.intermediate("east")
    ca_pem = _pki.cert_pem(cert)
    assert _rotation.signer_of(ca_pem, bundle("A+B")) == B.fp
    assert _rotation.signer_of(ca_pem, bundle("A")) == ""
    assert _rotation.signer_of(b"junk", bundle("A")) == ""


# The byte rules with the openssl CLI

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _leaf(tmp_path, root: Root, cluster: str):
    cert, key = root.intermediate(cluster)
    leaf = _pki.build_workload(_pki.generate_key("ecdsa-p256"), f"spiffe://cluster.local/ns/default/sa/{cluster}", cert, key, NOW)
    (tmp_path / f"{cluster}-leaf.pem").write_bytes(_pki.cert_pem(leaf))
    (tmp_path / f"{cluster}-ca.pem").write_bytes(_pki.cert_pem(cert))
    return tmp_path / f"{cluster}-leaf.pem", tmp_path / f"{cluster}-ca.pem"


@needs_openssl
@pytest.mark.parametrize(
    ("signer", "trusted", "ok"),
    [
        ("B", "A+B", True),  # phase 2: a workload under the new intermediate, trusted by a phase-1 cluster
        ("A", "A+B+B", True),  # phase 2: a workload still under the old intermediate, trusted by a phase-2 cluster
        ("B", "A", False),  # the skipped phase: a cluster on the old bundle rejects it
        ("B", "B", True),  # phase 3
        ("A", "B", False),  # phase 3 before every workload re-issued: the old certificate is rejected
    ],
)
def test_openssl_verifies_leaves_against_phase_bundles(tmp_path, signer, trusted, ok):
    leaf, intermediate = _leaf(tmp_path, ROOTS[signer], "east")
    bundle_file = tmp_path / "root-cert.pem"
    bundle_file.write_bytes(bundle(trusted))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(bundle_file), "-untrusted", str(intermediate), str(leaf)], capture_output=True, text=True, check=False
    )
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    if not ok:
        assert "unable to get local issuer certificate" in result.stdout + result.stderr


@needs_openssl
def test_openssl_reads_every_root_of_an_appended_bundle(tmp_path):
    path = tmp_path / "bundle.pem"
    path.write_bytes(_rotation.append_root(A.pem.rstrip(b"\n"), B.pem))
    result = subprocess.run(["openssl", "storeutl", "-noout", "-certs", str(path)], capture_output=True, text=True, check=True)
    assert "Total found: 2" in result.stdout + result.stderr
