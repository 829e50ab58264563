"""The cacerts_bundle lookup: what the cacerts role checks on the exact bytes it is about to push, read once."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.meshfed.istio.plugins.lookup.cacerts_bundle import LookupModule
from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _trust


def test_a_good_bundle_has_no_problem(ca):
    assert _trust.bundle_problems(ca.files(), ca.files()["root-cert.pem"]) == []


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda files, other: files.update({"ca-key.pem": other.files()["ca-key.pem"]}), "ca-key.pem does not match ca-cert.pem"),
        (lambda files, other: files.update({"root-cert.pem": other.files()["root-cert.pem"]}), "ca-cert.pem does not chain to any root in root-cert.pem"),
        (lambda files, other: files.pop("cert-chain.pem"), "missing cert-chain.pem"),
        (lambda files, other: files.update({"ca-cert.pem": b"garbage"}), "ca-cert.pem is not valid PEM certificate data"),
    ],
    ids=["key-mismatch", "chain-broken", "incomplete", "corrupt"],
)
def test_a_broken_bundle_is_named(ca, other_ca, mutate, problem):
    files = ca.files()
    mutate(files, other_ca)
    problems = _trust.bundle_problems(files, ca.files()["root-cert.pem"])
    assert any(problem in found for found in problems), problems
    assert not any("PRIVATE KEY" in found for found in problems)


def test_a_bundle_on_another_root_than_the_mesh_root(ca, other_ca):
    problems = _trust.bundle_problems(ca.files(), _pki.cert_pem(other_ca.root))
    assert problems == ["ca-cert.pem does not chain to the mesh root (root-cert.pem of the PKI directory)"]


def _write(pki_dir, ca, cluster: str = "east", root: bool = True) -> None:
    (pki_dir / cluster).mkdir(parents=True)
    for name, data in ca.files().items():
        (pki_dir / cluster / name).write_bytes(data)
    if root:
        (pki_dir / "root-cert.pem").write_bytes(ca.files()["root-cert.pem"])


def test_lookup_returns_exactly_the_bytes_it_checked(ca, tmp_path):
    _write(tmp_path, ca)
    [result] = LookupModule().run(["east"], {}, pki_dir=str(tmp_path))
    assert result["problems"] == []
    assert {name: base64.b64decode(value) for name, value in result["data"].items()} == ca.files()


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda path, ca: None, "missing ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem"),
        (lambda path, ca: _write(path, ca, root=False), "the PKI directory has no root-cert.pem"),
        (lambda path, ca: (_write(path, ca), (path / "east" / "ca-key.pem").unlink()), "missing ca-key.pem"),
    ],
    ids=["no-pki-output", "no-mesh-root", "no-key"],
)
def test_lookup_refuses_to_hand_over_a_bundle_with_a_problem(ca, tmp_path, setup, problem):
    setup(tmp_path, ca)
    [result] = LookupModule().run(["east"], {}, pki_dir=str(tmp_path))
    assert result == {"data": {}, "problems": [problem]}


def test_lookup_refuses_while_a_pki_write_is_still_being_moved_into_place(ca, other_ca, tmp_path):
    """A crash after the pki module's commit leaves the live files half old, half new until the next pki run."""
    _write(tmp_path, ca)
    journal = tmp_path / ".commit-00000000000000000001-1" / "east"
    journal.mkdir(parents=True)
    (journal / "ca-cert.pem").write_bytes(other_ca.files()["ca-cert.pem"])
    [result] = LookupModule().run(["east"], {}, pki_dir=str(tmp_path))
    assert result["data"] == {}
    assert result["problems"] == [
        f"the PKI directory holds a write of the pki module that is not finished ({journal.parent}): its files may be half "
        "old, half new; run the pki role (the site playbook, or --tags pki) to finish it"
    ]
    (tmp_path / ".staging-00000000000000000002-1").mkdir()  # never committed: the live files are whole
    journal.parent.rename(tmp_path / "done")
    assert LookupModule().run(["east"], {}, pki_dir=str(tmp_path))[0]["problems"] == []
