from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import stat
import tempfile

import pytest
from cryptography.hazmat.primitives import serialization

from ansible_collections.meshfed.istio.plugins.module_utils import _pkcs8, _pki, _pki_store

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def options(dest, **changes):
    values = dict(dest=str(dest), clusters=("east", "west"), key_algorithm="ecdsa-p256")
    values.update(changes)
    return _pki_store.PkiOptions(**values)


def sync(opts, now=NOW):
    plan = _pki_store.decide(opts, now)
    _pki_store.apply(plan)
    return plan


def snapshot(directory) -> dict:
    tree = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                tree[os.path.relpath(path, directory)] = (handle.read(), stat.S_IMODE(os.stat(path).st_mode))
    return tree


def test_first_run_writes_the_istio_layout_with_private_keys(tmp_path):
    plan = sync(options(tmp_path / "pki"))
    assert plan.changed and plan.root["reason"] == "generated"
    tree = snapshot(tmp_path / "pki")
    expected = {"root-cert.pem", "root-key.pem"} | {f"{cluster}/{name}" for cluster in ("east", "west") for name in _pki.BUNDLE_KEYS}
    assert set(tree) == expected
    assert {path: entry[1] for path, entry in tree.items() if path.endswith("key.pem")} == {
        "root-key.pem": 0o600,
        "east/ca-key.pem": 0o600,
        "west/ca-key.pem": 0o600,
    }
    assert tree["east/root-cert.pem"][0] == tree["root-cert.pem"][0]
    assert tree["east/cert-chain.pem"][0] == tree["east/ca-cert.pem"][0] + tree["root-cert.pem"][0]
    assert stat.S_IMODE(os.stat(tmp_path / "pki" / "east").st_mode) == 0o700


def test_second_run_changes_nothing(tmp_path):
    sync(options(tmp_path / "pki"))
    before = snapshot(tmp_path / "pki")
    plan = _pki_store.decide(options(tmp_path / "pki"), NOW + datetime.timedelta(days=1))
    assert not plan.changed
    assert plan.root["changed"] is False
    assert all(not cluster["changed"] and cluster["reasons"] == [] for cluster in plan.clusters.values())
    assert plan.before == plan.after
    assert snapshot(tmp_path / "pki") == before


def test_new_cluster_gets_an_intermediate_others_untouched(tmp_path):
    sync(options(tmp_path / "pki"))
    before = snapshot(tmp_path / "pki")
    plan = sync(options(tmp_path / "pki", clusters=("east", "west", "north")))
    assert [name for name, c in plan.clusters.items() if c["changed"]] == ["north"]
    after = snapshot(tmp_path / "pki")
    assert {k: v for k, v in after.items() if not k.startswith("north/")} == before


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(intermediate_days=365), "parameters changed: days"),
        (dict(key_algorithm="rsa2048"), "parameters changed: key_algorithm"),
        (dict(intermediate_organization="Corp"), "parameters changed: organization"),
    ],
)
def test_changed_parameters_reissue_and_keep_the_root_bytes(tmp_path, change, reason):
    sync(options(tmp_path / "pki"))
    root_before = (tmp_path / "pki" / "root-cert.pem").read_bytes()
    plan = sync(options(tmp_path / "pki", **change))
    assert plan.clusters["east"]["reasons"] == [reason]
    assert (tmp_path / "pki" / "root-cert.pem").read_bytes() == root_before
    assert (tmp_path / "pki" / "east" / "root-cert.pem").read_bytes() == root_before


def test_renewal_window_reissues(tmp_path):
    sync(options(tmp_path / "pki"))
    plan = _pki_store.decide(options(tmp_path / "pki"), NOW + datetime.timedelta(days=710))
    assert plan.clusters["east"]["reasons"][0].startswith("expiring")


def test_lost_cluster_file_is_restored_without_reissuing(tmp_path):
    sync(options(tmp_path / "pki"))
    cert = (tmp_path / "pki" / "east" / "ca-cert.pem").read_bytes()
    (tmp_path / "pki" / "east" / "cert-chain.pem").unlink()
    plan = sync(options(tmp_path / "pki"))
    assert plan.clusters["east"]["reasons"] == ["bundle out of date: cert-chain.pem"]
    assert (tmp_path / "pki" / "east" / "ca-cert.pem").read_bytes() == cert


def test_check_mode_plan_writes_nothing(tmp_path):
    plan = _pki_store.decide(options(tmp_path / "pki"), NOW)
    assert plan.changed and not (tmp_path / "pki").exists()


def test_force_root_replaces_root_and_every_intermediate(tmp_path):
    first = sync(options(tmp_path / "pki"))
    plan = sync(options(tmp_path / "pki", force_root=True))
    assert plan.root["reason"] == "replaced (force_root)"
    assert plan.root["fingerprint_sha256"] != first.root["fingerprint_sha256"]
    assert all(c["reasons"] == ["root changed: ca-cert.pem is not signed by the current root"] for c in plan.clusters.values())


def test_passphrase_protects_the_generated_root_key(tmp_path):
    sync(options(tmp_path / "pki", root_key_passphrase="s3cret"))
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "pki" / "root-key.pem").read_bytes()
    assert not _pki_store.decide(options(tmp_path / "pki", root_key_passphrase="s3cret"), NOW).changed


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture()
def company_root(tmp_path):
    key = _pki.generate_key("ecdsa-p384")
    cert = _pki.build_root(key, _pki.CaSpec("Corp", "Corp Root", 3650, "ecdsa-p384"), NOW)
    _write(tmp_path / "src" / "root.pem", _pki.cert_pem(cert))
    _write(tmp_path / "src" / "root.key", _pki.key_pem(key, "pw"))
    return cert


def import_options(tmp_path, **changes):
    values = dict(root_cert_src=str(tmp_path / "src" / "root.pem"), root_key_src=str(tmp_path / "src" / "root.key"), root_key_passphrase="pw")
    values.update(changes)
    return options(tmp_path / "pki", **values)


def test_import_root_is_idempotent_and_key_not_copied(tmp_path, company_root):
    plan = sync(import_options(tmp_path))
    assert plan.root["reason"] == "imported"
    assert plan.root["fingerprint_sha256"] == _pki.fingerprint(company_root)
    assert not (tmp_path / "pki" / "root-key.pem").exists()
    again = _pki_store.decide(import_options(tmp_path), NOW)
    assert not again.changed and again.root["reason"] == "imported root already in place"


def test_import_over_a_different_root_needs_force_root(tmp_path, company_root):
    sync(options(tmp_path / "pki"))
    before = snapshot(tmp_path / "pki")
    with pytest.raises(_pki.PkiError, match="holds a different root .* set force_root=true"):
        _pki_store.decide(import_options(tmp_path), NOW)
    assert snapshot(tmp_path / "pki") == before
    plan = sync(import_options(tmp_path, force_root=True))
    assert plan.root["reason"] == "replaced by import (force_root)"


def _not_ca_root(tmp_path):
    key = _pki.generate_key("ecdsa-p256")
    issuer = _pki.build_root(key, _pki.CaSpec("X", "X", 10, "ecdsa-p256"), NOW)
    leaf = _pki.build_workload(key, "spiffe://x/ns/a/sa/b", issuer, key, NOW)
    _write(tmp_path / "src" / "root.pem", _pki.cert_pem(leaf))
    _write(tmp_path / "src" / "root.key", _pki.key_pem(key, "pw"))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda tmp: _write(tmp / "pki" / "root-cert.pem", b"-----BEGIN CERTIFICATE-----\nZZZ\n-----END CERTIFICATE-----\n"),
            "is not valid PEM certificate data",
        ),
        (lambda tmp: (tmp / "pki" / "root-key.pem").unlink(), "root-cert.pem exists but .*root-key.pem does not.*force_root=true"),
        (lambda tmp: _write(tmp / "pki" / "root-key.pem", _pki.key_pem(_pki.generate_key("ecdsa-p256"))), "does not match the root certificate"),
    ],
    ids=["corrupt-root", "root-key-lost", "foreign-root-key"],
)
def test_broken_root_is_refused_and_nothing_changes(tmp_path, breakage, message):
    sync(options(tmp_path / "pki"))
    (tmp_path / "pki" / "east" / "ca-key.pem").unlink()
    breakage(tmp_path)
    before = snapshot(tmp_path / "pki")
    with pytest.raises(_pki.PkiError, match=message):
        _pki_store.decide(options(tmp_path / "pki", clusters=("east", "west", "north")), NOW)
    assert snapshot(tmp_path / "pki") == before


@pytest.mark.parametrize(
    ("prepare", "changes", "message"),
    [
        (lambda tmp: None, dict(root_key_passphrase="wrong"), "cannot be decrypted: wrong root_key_passphrase"),
        (lambda tmp: _write(tmp / "src" / "root.key", _pki.key_pem(_pki.generate_key("ecdsa-p256"), "pw")), {}, "does not match the root certificate"),
        (_not_ca_root, {}, "is not a CA"),
        (lambda tmp: _write(tmp / "src" / "root.pem", b"garbage"), {}, "not valid PEM certificate data"),
        (lambda tmp: (tmp / "src" / "root.key").unlink(), {}, "root.key does not exist"),
    ],
    ids=["wrong-passphrase", "foreign-key", "root-not-ca", "corrupt-pem", "key-missing"],
)
def test_bad_import_is_refused_before_anything_is_written(tmp_path, company_root, prepare, changes, message):
    prepare(tmp_path)
    with pytest.raises(_pki.PkiError, match=message):
        _pki_store.decide(import_options(tmp_path, **changes), NOW)
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize(
    ("clusters", "message"),
    [(("east", "east"), "appears more than once"), (("East",), "not a DNS-1123 label"), (("a.b",), "not a DNS-1123 label")],
)
def test_bad_cluster_names_are_refused(tmp_path, clusters, message):
    with pytest.raises(_pki.PkiError, match=message):
        _pki_store.decide(options(tmp_path / "pki", clusters=clusters), NOW)
    assert not (tmp_path / "pki").exists()


def _as_nobody(function) -> str:
    """Run function in a child process without root's override of file permissions; its error text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_end)
        message = b"no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            function()
        except _pki.PkiError as exc:
            message = str(exc).encode()
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            message = repr(exc).encode()
        os.write(write_end, message)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        message = handle.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unwritable_dest_is_refused_before_any_write():
    base = pathlib.Path(tempfile.mkdtemp(prefix="meshfed-unwritable-"))
    base.chmod(0o755)
    parent = base / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.geteuid() == 0:
            message = _as_nobody(lambda: _pki_store.decide(options(parent / "pki"), NOW))
        else:
            with pytest.raises(_pki.PkiError) as info:
                _pki_store.decide(options(parent / "pki"), NOW)
            message = str(info.value)
        assert message == f"dest {parent / 'pki'} is not writable ({parent} denies write access to this user)"
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o700)
        shutil.rmtree(base)


def test_dest_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "pki").write_text("x")
    with pytest.raises(_pki.PkiError, match="is not a directory"):
        _pki_store.decide(options(tmp_path / "pki"), NOW)


def test_an_unencrypted_root_key_is_warned_about_on_every_run(tmp_path):
    first = sync(options(tmp_path / "pki"))
    again = _pki_store.decide(options(tmp_path / "pki"), NOW)
    for plan in (first, again):
        assert [w for w in plan.warnings if "is not encrypted" in w] == [
            f"the root key {tmp_path / 'pki' / 'root-key.pem'} is not encrypted: whoever can read it can sign for every cluster "
            "of the mesh; set root_key_passphrase (pki_root_key_passphrase in the pki role; keep it in Ansible Vault) and run again "
            "to encrypt it"
        ]
    assert not sync(options(tmp_path / "pki", root_key_passphrase="pw")).warnings


def _weakly_encrypted(key, passphrase):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(passphrase.encode()))


@pytest.mark.parametrize(
    ("old_key", "reason"),
    [
        (_pki.key_pem, "existing root kept, its key re-encrypted (not encrypted -> PBES2"),
        (lambda key: _weakly_encrypted(key, "pw"), "existing root kept, its key re-encrypted (PBES2 (PBKDF2, 2048 iterations) -> "),
    ],
    ids=["unencrypted", "pbkdf2-2048"],
)
def test_a_passphrase_encrypts_an_existing_root_key_strongly_and_keeps_the_root(tmp_path, old_key, reason):
    sync(options(tmp_path / "pki"))
    key_path = tmp_path / "pki" / "root-key.pem"
    key = _pki.load_key(key_path.read_bytes(), "root key")
    key_path.write_bytes(old_key(key))
    before = snapshot(tmp_path / "pki")
    plan = sync(options(tmp_path / "pki", root_key_passphrase="pw"))
    assert plan.changed and plan.root["changed"] and plan.root["reason"].startswith(reason)
    assert list(plan.writes) == [str(key_path)]
    after = snapshot(tmp_path / "pki")
    assert {k: v for k, v in after.items() if k != "root-key.pem"} == {k: v for k, v in before.items() if k != "root-key.pem"}
    assert _pkcs8.protection(key_path.read_bytes()).strong and after["root-key.pem"][1] == 0o600
    assert _pki.key_matches(_pki.load_cert((tmp_path / "pki" / "root-cert.pem").read_bytes(), "root"), _pki.load_key(key_path.read_bytes(), "root key", "pw"))
    assert not _pki_store.decide(options(tmp_path / "pki", root_key_passphrase="pw"), NOW).changed


def test_an_imported_weak_key_is_warned_about_and_left_alone(tmp_path, company_root):
    key = _pki.load_key((tmp_path / "src" / "root.key").read_bytes(), "key", "pw")
    (tmp_path / "src" / "root.key").write_bytes(_weakly_encrypted(key, "pw"))
    source = (tmp_path / "src" / "root.key").read_bytes()
    plan = sync(import_options(tmp_path))
    assert any("(root_key_src) is protected only by PBES2 (PBKDF2, 2048 iterations)" in w and "-iter 600000" in w for w in plan.warnings)
    assert (tmp_path / "src" / "root.key").read_bytes() == source


def test_imported_key_without_passphrase_is_warned_about(tmp_path, company_root):
    key = _pki.load_key((tmp_path / "src" / "root.key").read_bytes(), "key", "pw")
    (tmp_path / "src" / "root.key").write_bytes(_pki.key_pem(key))
    plan = sync(import_options(tmp_path, root_key_passphrase=None))
    assert any(w.startswith(f"the root key {tmp_path / 'src' / 'root.key'} is not encrypted") and "openssl pkcs8 -topk8" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda pki: os.chmod(pki / "root-key.pem", 0o640), "root-key.pem is open to group or others \\(mode 0640\\).*force_root=true"),
        (lambda pki: os.chmod(pki / "east" / "ca-cert.pem", 0o666), "ca-cert.pem is writable by group or others .*chmod go-w"),
        (lambda pki: os.chmod(pki / "west", 0o777), "cluster directory of west .* is writable by group or others"),
        (lambda pki: (pki / "east" / "ca-key.pem").unlink() or os.symlink("/etc/passwd", pki / "east" / "ca-key.pem"), "ca-key.pem is a symbolic link"),
    ],
    ids=["root-key-0640", "cert-0666", "cluster-dir-0777", "key-symlink"],
)
def test_directory_hygiene_is_refused_with_the_fix(tmp_path, breakage, message):
    sync(options(tmp_path / "pki"))
    breakage(tmp_path / "pki")
    before = snapshot(tmp_path / "pki")
    with pytest.raises(_pki.PkiError, match=message):
        _pki_store.decide(options(tmp_path / "pki"), NOW)
    assert snapshot(tmp_path / "pki") == before


def test_a_root_expiring_later_than_the_window_keeps_capped_intermediates(tmp_path):
    sync(options(tmp_path / "pki", root_days=100), NOW - 40 * _pki.DAY)
    plan = _pki_store.decide(options(tmp_path / "pki", root_days=100), NOW)
    assert not plan.changed  # intermediates end with the root, 60 days out: outside the 30-day window
    with pytest.raises(_pki.PkiError, match="within renew_before_days \\(30\\).*lower renew_before_days below 15"):
        _pki_store.decide(options(tmp_path / "pki", root_days=100), NOW + 45 * _pki.DAY)
    assert not _pki_store.decide(options(tmp_path / "pki", root_days=100, renew_before_days=14), NOW + 45 * _pki.DAY).changed
