"""The root key at rest: a strong PBES2 envelope that the openssl CLI reads, and the weak ones recognised."""

from __future__ import annotations

import re
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

from ansible_collections.meshfed.istio.plugins.module_utils import _pkcs8, _pki


def _written_by_cryptography(key, private_format, passphrase):
    encryption = serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, private_format, encryption)


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda key: _pkcs8.encrypt(key, "pw"), (True, True, f"PBES2 (PBKDF2, {_pkcs8.KDF_ITERATIONS} iterations)")),
        (lambda key: _pkcs8.encrypt(key, "pw", 10_000), (True, False, "PBES2 (PBKDF2, 10000 iterations)")),
        (lambda key: _written_by_cryptography(key, serialization.PrivateFormat.PKCS8, "pw"), (True, False, "PBES2 (PBKDF2, 2048 iterations)")),
        (
            lambda key: _written_by_cryptography(key, serialization.PrivateFormat.TraditionalOpenSSL, "pw"),
            (True, False, "legacy PEM encryption (one MD5 round)"),
        ),
        (lambda key: _written_by_cryptography(key, serialization.PrivateFormat.PKCS8, None), (False, False, "not encrypted")),
        (lambda key: b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n", (True, False, "unrecognised encryption")),
    ],
    ids=["ours", "ours-weak-count", "cryptography-best-available", "legacy-pem", "plain", "garbage"],
)
def test_protection(ca, write, expected):
    assert tuple(_pkcs8.protection(write(ca.root_key))) == expected


def test_scrypt_counts_as_strong(tmp_path):
    plain = tmp_path / "plain.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(plain)], check=True, capture_output=True)
    sealed = subprocess.run(["openssl", "pkcs8", "-topk8", "-scrypt", "-passout", "pass:pw", "-in", str(plain)], check=True, capture_output=True).stdout
    assert _pkcs8.protection(sealed) == (True, True, "PBES2 (scrypt)")


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa2048"])
def test_openssl_cli_reads_the_envelope_and_only_with_the_passphrase(tmp_path, algorithm):
    key = _pki.generate_key(algorithm)
    path = tmp_path / "root-key.pem"
    path.write_bytes(_pki.key_pem(key, "cörrect horse"))
    opened = subprocess.run(["openssl", "pkey", "-passin", "pass:cörrect horse", "-in", str(path), "-pubout"], capture_output=True, check=False)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout == key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    wrong = subprocess.run(["openssl", "pkey", "-passin", "pass:wrong", "-in", str(path), "-noout"], capture_output=True, check=False)
    assert wrong.returncode != 0
    parsed = subprocess.run(["openssl", "asn1parse", "-in", str(path)], capture_output=True, text=True, check=True).stdout
    assert ":PBKDF2" in parsed and ":hmacWithSHA256" in parsed and ":aes-256-cbc" in parsed
    iterations = re.search(r"prim: INTEGER +:([0-9A-F]+)", parsed)[1]  # the first INTEGER is PBKDF2's count
    assert int(iterations, 16) == _pkcs8.KDF_ITERATIONS == 600_000


def test_old_weak_keys_still_load(ca):
    for private_format in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        pem = _written_by_cryptography(ca.root_key, private_format, "pw")
        assert _pki.key_matches(ca.root, _pki.load_key(pem, "root key", "pw"))
