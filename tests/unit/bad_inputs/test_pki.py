# -*- coding: utf-8 -*-
"""Bad inputs of the mesh PKI (meshfed.istio.pki): each is refused by the plan, naming the option and the fix.

A case's value holds the options it changes, and at most one of two set-ups: `root` imports a
root of that kind (built here, relative to NOW), `state` breaks an existing PKI directory first.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import stat

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _pki_store

from cases import Case

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    pytest.skip("cryptography is needed", allow_module_level=True)

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)

CASES: list[Case] = [
    Case("pki-cluster-dir-symlink", "dest", {"state": "cluster-symlink"}, "is a symbolic link", "accepted"),
    Case("pki-dest-empty", "dest", {"dest": ""}, "dest is empty: set dest", "unclear"),
    Case("pki-dest-group-writable", "dest", {"state": "dest-0770"}, "writable by group or others (mode 0770)", "accepted"),
    Case("pki-dest-world-writable", "dest", {"state": "dest-0777"}, "run chmod go-w", "accepted"),
    Case("pki-file-symlink", "dest", {"state": "file-symlink"}, "root-cert.pem is a symbolic link", "accepted"),
    Case(
        "pki-intermediate-common-name-too-long",
        "intermediate_common_name",
        {"intermediate_common_name": "x" * 200},
        "is 200 characters long: X.509 allows at most 64",
        "crash",
    ),
    Case("pki-intermediate-days-past-9999", "intermediate_days", {"intermediate_days": 10_000_000}, "set intermediate_days to at most", "crash"),
    Case(
        "pki-intermediate-organization-empty", "intermediate_organization", {"intermediate_organization": ""}, "intermediate_organization is empty", "accepted"
    ),
    Case("pki-key-file-open", "dest", {"state": "key-0644"}, "(mode 0644): if nobody else could read it, run chmod 0600", "accepted"),
    Case("pki-renew-covers-intermediate", "renew_before_days", {"renew_before_days": 730}, "must be less than intermediate_days (730)", "accepted"),
    Case("pki-renew-covers-root", "renew_before_days", {"root_days": 20}, "must be less than root_days (20)", "accepted"),
    Case("pki-root-common-name-empty", "root_common_name", {"root_common_name": ""}, "root_common_name is empty", "crash"),
    Case("pki-root-common-name-too-long", "root_common_name", {"root_common_name": "x" * 200}, "shorten root_common_name", "crash"),
    Case("pki-root-days-past-9999", "root_days", {"root_days": 10_000_000}, "set root_days to at most", "crash"),
    Case("pki-root-expired-in-dest", "force_root", {"state": "root-expired"}, "expired on 2026-04-27", "crash"),
    Case("pki-root-import-ed25519", "root_cert_src", {"root": "ed25519"}, "has an Ed25519 key; istiod signs only with RSA or ECDSA", "unclear"),
    Case("pki-root-import-expired", "root_cert_src", {"root": "expired"}, "(root_cert_src) expired on", "crash"),
    Case("pki-root-import-expiring", "root_cert_src", {"root": "expiring"}, "within renew_before_days (30): every intermediate", "accepted"),
    Case("pki-root-import-no-keycertsign", "root_cert_src", {"root": "no-keycertsign"}, "keyUsage without keyCertSign", "accepted"),
    Case("pki-root-import-not-yet-valid", "root_cert_src", {"root": "not-yet-valid"}, "is not valid before 2026-06-11", "accepted"),
    Case("pki-root-import-pathlen-0", "root_cert_src", {"root": "pathlen-0"}, "has pathlen:0", "accepted"),
    Case("pki-root-import-rsa-1024", "root_cert_src", {"root": "rsa-1024"}, "RSA key of 1024 bits", "accepted"),
    Case(
        "pki-root-key-passphrase-too-long", "root_key_passphrase", {"root_key_passphrase": "p" * 1024}, "1024 bytes long: OpenSSL reads at most 1023", "crash"
    ),
    Case("pki-root-organization-empty", "root_organization", {"root_organization": ""}, "root_organization is empty", "accepted"),
]


def _root(kind: str) -> tuple[bytes, bytes]:
    """A root certificate and its key (PEM), broken in the way kind names."""
    key = {"ed25519": ed25519.Ed25519PrivateKey.generate, "rsa-1024": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024)}.get(
        kind, lambda: ec.generate_private_key(ec.SECP256R1())
    )()
    start = {"expired": NOW - 400 * DAY, "expiring": NOW - 355 * DAY, "not-yet-valid": NOW + 10 * DAY}.get(kind, NOW - DAY)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp"), x509.NameAttribute(NameOID.COMMON_NAME, "Corp Root")])
    usage = dict(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=kind != "no-keycertsign",
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0 if kind == "pathlen-0" else None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .sign(key, None if kind == "ed25519" else hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _options(dest, **changes) -> _pki_store.PkiOptions:
    values = dict(dest=str(dest), clusters=("east", "west"), key_algorithm="ecdsa-p256")
    values.update(changes)
    return _pki_store.PkiOptions(**values)


def _break(dest, state: str) -> None:
    """An existing PKI directory, then one thing wrong with it."""
    when = NOW - 400 * DAY if state == "root-expired" else NOW
    _pki_store.apply(_pki_store.decide(_options(dest, root_days=365 if state == "root-expired" else 3650), when))
    if state.startswith("dest-"):
        os.chmod(dest, int(state.removeprefix("dest-"), 8))
    elif state == "key-0644":
        os.chmod(dest / "east" / "ca-key.pem", 0o644)
    elif state == "cluster-symlink":
        os.rename(dest / "east", dest.parent / "elsewhere")
        os.symlink(dest.parent / "elsewhere", dest / "east")
    elif state == "file-symlink":
        os.rename(dest / "root-cert.pem", dest.parent / "root-cert.pem")
        os.symlink(dest.parent / "root-cert.pem", dest / "root-cert.pem")


def prepare(case: Case, tmp_path) -> _pki_store.PkiOptions:
    """The options of a case, with its files in place under tmp_path."""
    changes = dict(case.value)
    dest = tmp_path / "pki"
    if "root" in changes:
        cert_pem, key_pem = _root(changes.pop("root"))
        (tmp_path / "root.pem").write_bytes(cert_pem)
        (tmp_path / "root.key").write_bytes(key_pem)
        changes.update(root_cert_src=str(tmp_path / "root.pem"), root_key_src=str(tmp_path / "root.key"))
    if "state" in changes:
        _break(dest, changes.pop("state"))
    return _options(changes.pop("dest", dest), **changes)


def snapshot(top) -> dict:
    tree = {}
    for root, dirs, files in os.walk(top):
        for name in files + dirs:
            path = os.path.join(root, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            else:
                content = None if stat.S_ISDIR(info.st_mode) else pathlib.Path(path).read_bytes()
            tree[os.path.relpath(path, top)] = (stat.S_IMODE(info.st_mode), content)
    return tree


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_naming_the_option_and_nothing_is_written(case, tmp_path, monkeypatch):
    options = prepare(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(_pki.PkiError) as info:
        _pki_store.decide(options, NOW)
    message = str(info.value)
    assert case.refusal in message
    assert case.option in message or (case.option == "dest" and options.dest in message)
    assert "PRIVATE KEY" not in message and (options.root_key_passphrase or "\0") not in message
    assert snapshot(tmp_path) == before
