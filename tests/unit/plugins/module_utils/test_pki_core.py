from __future__ import annotations

import datetime
import os
import subprocess
import tempfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from ansible_collections.meshfed.istio.plugins.module_utils import _pki

from pki_helpers import NOW, intermediate_spec

DAY = datetime.timedelta(days=1)
CORRUPT_CERT = (
    "invalid: ca-cert.pem is not valid PEM certificate data: Unable to load PEM file. "
    "See https://cryptography.io/en/latest/faq/#why-can-t-i-import-my-pem-file for more details. MalformedFraming"
)


@pytest.mark.parametrize("algorithm", _pki.KEY_ALGORITHMS)
def test_key_algorithm_round_trip(algorithm):
    key = _pki.generate_key(algorithm)
    assert _pki.key_algorithm_of(key.public_key()) == algorithm


def test_unknown_key_algorithm_is_refused():
    with pytest.raises(_pki.PkiError, match="unknown key_algorithm 'dsa'"):
        _pki.generate_key("dsa")


def test_intermediate_has_what_istiod_and_the_issue_require(ca):
    cert = ca.cert
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "east"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert _pki.lifetime_days(cert) == 730


def test_intermediate_never_outlives_its_root(ca):
    spec = intermediate_spec(days=5000)
    key = _pki.generate_key("ecdsa-p256")
    cert = _pki.build_intermediate(key, spec, ca.root, ca.root_key, NOW)
    assert cert.not_valid_after_utc == ca.root.not_valid_after_utc
    assert _pki.spec_differences(cert, spec, issuer=ca.root) == []


def test_fingerprint_is_openssl_format(ca):
    value = _pki.fingerprint(ca.root)
    assert len(value) == 32 * 3 - 1 and value == value.upper() and value.count(":") == 31


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda ca, f: f, []),
        (lambda ca, f: {**f, "ca-key.pem": None}, ["missing ca-key.pem"]),
        (lambda ca, f: {**f, "ca-cert.pem": None, "ca-key.pem": None}, ["missing ca-cert.pem, ca-key.pem"]),
        (lambda ca, f: {**f, "ca-cert.pem": b"garbage"}, [CORRUPT_CERT]),
        (lambda ca, f: {**f, "ca-key.pem": _pki.key_pem(_pki.generate_key("ecdsa-p256"))}, ["invalid: ca-key.pem does not match ca-cert.pem"]),
    ],
    ids=["fresh", "key-missing", "both-missing", "corrupt-cert", "foreign-key"],
)
def test_intermediate_reasons_files(ca, mutate, expected):
    files = mutate(ca, ca.files())
    assert _pki.intermediate_reasons(files, ca.spec, ca.root, NOW, 30) == expected


def test_intermediate_signed_by_another_root_is_reissued(ca, other_ca):
    reasons = _pki.intermediate_reasons(other_ca.files(), ca.spec, ca.root, NOW, 30)
    assert reasons == ["root changed: ca-cert.pem is not signed by the current root"]


@pytest.mark.parametrize(
    ("days_later", "renew_before", "expiring"),
    [(0, 30, False), (699, 30, False), (700, 30, True), (729, 30, True), (100, 700, True), (100, 0, False)],
)
def test_renewal_window(ca, days_later, renew_before, expiring):
    reasons = _pki.intermediate_reasons(ca.files(), ca.spec, ca.root, NOW + days_later * DAY, renew_before)
    assert any(reason.startswith("expiring") for reason in reasons) is expiring


@pytest.mark.parametrize(
    ("changes", "difference"),
    [
        ({"organization": "Corp"}, "organization"),
        ({"common_name": "Mesh Intermediate"}, "common_name"),
        ({"locality": "west"}, "locality"),
        ({"key_algorithm": "rsa2048"}, "key_algorithm"),
        ({"days": 365}, "days"),
    ],
)
def test_changed_parameters_reissue(ca, changes, difference):
    spec = intermediate_spec(**changes)
    assert _pki.intermediate_reasons(ca.files(), spec, ca.root, NOW, 30) == [f"parameters changed: {difference}"]


def _sha1_intermediate(ca):
    """cryptography refuses to sign with SHA-1, so the openssl CLI makes the bad certificate."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: os.path.join(tmp, name) for name in ("root.pem", "root.key", "ca.key", "ext.cnf", "out.pem")}
        for name, data in (
            ("root.pem", _pki.cert_pem(ca.root)),
            ("root.key", _pki.key_pem(ca.root_key)),
            ("ca.key", _pki.key_pem(ca.key)),
            ("ext.cnf", b"basicConstraints=critical,CA:true,pathlen:0\n"),
        ):
            with open(paths[name], "wb") as handle:
                handle.write(data)
        csr = subprocess.run(
            ["openssl", "req", "-new", "-key", paths["ca.key"], "-subj", "/O=Istio/CN=Intermediate CA"], check=True, capture_output=True
        ).stdout
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-sha1",
                "-CA",
                paths["root.pem"],
                "-CAkey",
                paths["root.key"],
                "-set_serial",
                "1",
                "-days",
                "30",
                "-extfile",
                paths["ext.cnf"],
                "-out",
                paths["out.pem"],
            ],
            input=csr,
            check=True,
            capture_output=True,
        )
        with open(paths["out.pem"], "rb") as handle:
            return x509.load_pem_x509_certificate(handle.read())


def _leaf(ca):
    key = _pki.generate_key("ecdsa-p256")
    return _pki.build_workload(key, "spiffe://cluster.local/ns/a/sa/b", ca.cert, ca.key, NOW), key


def test_check_bundle_accepts_a_good_bundle(ca):
    report, facts = _pki.check_bundle(ca.files(), NOW)
    assert report.problems == []
    assert report.usable and report.complete and report.chain_valid and report.key_matches
    assert facts["roots"][0]["fingerprint_sha256"] == _pki.fingerprint(ca.root)
    assert facts["intermediate"]["issuer"] == "CN=Root CA,O=Istio"


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda ca, o, f: {k: v for k, v in f.items() if k != "cert-chain.pem"}, "incomplete bundle: missing cert-chain.pem"),
        (lambda ca, o, f: {**f, "root-cert.pem": _pki.cert_pem(o.root)}, "does not chain to any root"),
        (lambda ca, o, f: {**f, "ca-key.pem": _pki.key_pem(o.key)}, "ca-key.pem does not match ca-cert.pem"),
        (lambda ca, o, f: {**f, "cert-chain.pem": _pki.cert_pem(o.cert)}, "cert-chain.pem does not start with ca-cert.pem"),
        (lambda ca, o, f: {**f, "istio-generated": b""}, "istio-generated marks a self-signed"),
        (lambda ca, o, f: {**f, "root-cert.pem": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "root-cert.pem is not valid PEM"),
        (lambda ca, o, f: {**f, "ca-cert.pem": _pki.cert_pem(_sha1_intermediate(ca))}, "signed with SHA-1"),
        (lambda ca, o, f: {**f, "ca-cert.pem": _pki.cert_pem(_leaf(ca)[0])}, "not a CA certificate"),
    ],
    ids=["incomplete", "other-root", "foreign-key", "chain-order", "marker", "corrupt-root", "sha1", "not-ca"],
)
def test_check_bundle_refuses_what_istiod_refuses(ca, other_ca, mutate, problem):
    report = _pki.check_bundle(mutate(ca, other_ca, ca.files()), _pki.utcnow())[0]
    assert not report.usable
    assert any(problem in text for text in report.problems), report.problems


def test_check_bundle_expired_intermediate(ca):
    report = _pki.check_bundle(ca.files(), NOW + 800 * DAY)[0]
    assert not report.chain_valid


def test_check_bundle_multi_root_bundle_trusts_either(ca, other_ca):
    files = {**ca.files(), "root-cert.pem": _pki.cert_pem(other_ca.root) + _pki.cert_pem(ca.root)}
    report, facts = _pki.check_bundle(files, NOW)
    assert report.usable
    assert [root["fingerprint_sha256"] for root in facts["roots"]] == [_pki.fingerprint(other_ca.root), _pki.fingerprint(ca.root)]


@pytest.mark.parametrize(
    ("passphrase_written", "passphrase_given", "message"),
    [
        ("secret", None, "is encrypted: set root_key_passphrase"),
        ("secret", "wrong", "cannot be decrypted: wrong root_key_passphrase"),
        (None, "secret", "is not encrypted"),
    ],
)
def test_load_key_errors_name_the_option(ca, passphrase_written, passphrase_given, message):
    pem = _pki.key_pem(ca.root_key, passphrase_written)
    with pytest.raises(_pki.PkiError, match=message):
        _pki.load_key(pem, "root key", passphrase_given)


def test_load_key_with_passphrase(ca):
    key = _pki.load_key(_pki.key_pem(ca.root_key, "secret"), "root key", "secret")
    assert _pki.key_matches(ca.root, key)


@pytest.mark.parametrize("data", [b"", b"not pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_load_key_corrupt(data):
    with pytest.raises(_pki.PkiError, match="not a valid PEM private key"):
        _pki.load_key(data, "root key")
