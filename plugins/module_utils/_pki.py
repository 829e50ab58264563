# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the mesh PKI as pure functions over the cryptography library.

Builds the root and intermediate CAs the way Istio's own cert tools lay them out, and checks
a cacerts bundle the way istiod does when it loads one. No file or network I/O here.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _pkcs8

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover - reported by the module through missing_required_lib
    HAS_CRYPTOGRAPHY = False
else:
    HAS_CRYPTOGRAPHY = True

KEY_ALGORITHMS = ("rsa2048", "rsa3072", "rsa4096", "ecdsa-p256", "ecdsa-p384")
BUNDLE_KEYS = _istio.BUNDLE_KEYS
ISTIOD_SAN = "istiod.istio-system.svc"
BACKDATE = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
LAST_DATE = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)  # GeneralizedTime's end
NAME_MAX = 64  # ub-common-name and ub-organization-name (RFC 5280)
MIN_RSA_BITS = 2048
SIGNING_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class PkiError(Exception):
    """Key material that cannot be used as asked; the message says why and what to set."""


@dataclass(frozen=True)
class CaSpec:
    """What a CA certificate should look like; compared against what exists on disk."""

    organization: str
    common_name: str
    days: int
    key_algorithm: str = "rsa4096"
    locality: str | None = None


@dataclass
class BundleReport:
    """The checks istiod makes on a plugged-in CA bundle, as facts."""

    complete: bool = False
    missing_keys: list[str] = field(default_factory=list)
    chain_valid: bool = False
    key_matches: bool = False
    intermediate_is_ca: bool = False
    sha1_signatures: bool = False
    istio_generated_marker: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def generate_key(algorithm: str):
    if algorithm.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[3:]))
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise PkiError(f"unknown key_algorithm {algorithm!r}; choose one of {', '.join(KEY_ALGORITHMS)}")


def key_algorithm_of(public_key) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(public_key.curve.name, f"ecdsa-{public_key.curve.name}")
    return type(public_key).__name__


def _signing_hash(key):
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _name(organization: str, common_name: str, locality: str | None = None):
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if locality:
        attributes.append(x509.NameAttribute(NameOID.LOCALITY_NAME, locality))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _ca_key_usage():
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def build_root(key, spec: CaSpec, now: datetime.datetime):
    subject = _name(spec.organization, spec.common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + spec.days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _signing_hash(key))
    )


def build_intermediate(key, spec: CaSpec, root_cert, root_key, now: datetime.datetime):
    not_after = min(now + spec.days * DAY, root_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(spec.organization, spec.common_name, spec.locality))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(ISTIOD_SAN)]), critical=False)
        .sign(root_key, _signing_hash(root_key))
    )


def build_workload(key, spiffe_id: str, issuer_cert, issuer_key, now: datetime.datetime, hours: int = 24):
    """A workload certificate as istiod issues one: SPIFFE URI SAN, client and server auth."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .sign(issuer_key, _signing_hash(issuer_key))
    )


def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, passphrase: str | None = None) -> bytes:
    """PKCS#8 PEM; with a passphrase, encrypted with a strong KDF (see _pkcs8)."""
    if passphrase:
        return _pkcs8.encrypt(key, passphrase)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_certs(pem: bytes, what: str) -> list:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise PkiError(f"{what} is not valid PEM certificate data: {exc}") from exc
    if not certs:
        raise PkiError(f"{what} holds no certificate")
    return certs


def load_cert(pem: bytes, what: str):
    return load_certs(pem, what)[0]


def load_key(pem: bytes, what: str, passphrase: str | None = None):
    password = passphrase.encode() if passphrase else None
    try:
        # RSA's full consistency check costs 0.25 s per 4096-bit key; key_matches() instead proves
        # the key by a signature that the certificate's public key verifies.
        return serialization.load_pem_private_key(pem, password=password, unsafe_skip_rsa_key_validation=True)
    except TypeError as exc:
        if password is None:
            raise PkiError(f"{what} is encrypted: set root_key_passphrase") from exc
        raise PkiError(f"{what} is not encrypted, but a passphrase was given: remove root_key_passphrase") from exc
    except ValueError as exc:
        if password is not None:
            raise PkiError(f"{what} cannot be decrypted: wrong root_key_passphrase, or not a private key") from exc
        raise PkiError(f"{what} is not a valid PEM private key") from exc
    except UnsupportedAlgorithm as exc:
        raise PkiError(f"{what} uses an unsupported key algorithm: {exc}") from exc


def fingerprint(cert) -> str:
    """SHA-256 fingerprint in the form the openssl CLI prints: AB:CD:..."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def public_bytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert, private_key) -> bool:
    """The key belongs to the certificate and really signs: a probe signature verifies."""
    public_key = cert.public_key()
    if public_bytes(public_key) != public_bytes(private_key.public_key()):
        return False
    probe = b"meshfed.istio key probe"
    try:
        if isinstance(private_key, rsa.RSAPrivateKey):
            public_key.verify(private_key.sign(probe, padding.PKCS1v15(), hashes.SHA256()), probe, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(private_key, ec.EllipticCurvePrivateKey):
            public_key.verify(private_key.sign(probe, ec.ECDSA(hashes.SHA256())), probe, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def is_ca(cert) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def path_length(cert) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return None


def signing_key_problem(public_key) -> str | None:
    """Why istiod and OpenSSL would not take this key for a CA; None when they would."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            return f"has an RSA key of {public_key.key_size} bits; OpenSSL and istiod need at least {MIN_RSA_BITS}"
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name in SIGNING_CURVES:
            return None
        return f"has an ECDSA key on {public_key.curve.name}; istiod takes only {', '.join(SIGNING_CURVES.values())}"
    kind = type(public_key).__name__.removesuffix("PublicKey").removeprefix("_")
    return f"has an {kind} key; istiod signs only with RSA or ECDSA (P-256, P-384) CA keys"


def root_problems(cert, now: datetime.datetime) -> list[str]:
    """Why a certificate cannot be the root that signs the intermediates; empty when it can."""
    problems = []
    key_problem = signing_key_problem(cert.public_key())
    if key_problem:
        problems.append(key_problem)
    if not is_ca(cert):
        problems.append("is not a CA (basicConstraints CA:TRUE missing)")
    elif path_length(cert) == 0:
        problems.append("has pathlen:0, so it may not sign CA certificates: every intermediate would fail verification")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        problems.append("has a keyUsage without keyCertSign, so it may not sign certificates")
    if cert.not_valid_before_utc > now:
        problems.append(f"is not valid before {cert.not_valid_before_utc.isoformat()}")
    if cert.not_valid_after_utc <= now:
        problems.append(f"expired on {cert.not_valid_after_utc.isoformat()}")
    return problems


def signed_by(cert, issuer) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def uses_sha1(cert) -> bool:
    algorithm = cert.signature_hash_algorithm
    return isinstance(algorithm, hashes.SHA1)


def _attribute(name, oid) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return values[0].value if values else None


def describe(cert) -> dict:
    """Public facts about a certificate: never key material."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "fingerprint_sha256": fingerprint(cert),
        "serial_number": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "is_ca": is_ca(cert),
        "key_algorithm": key_algorithm_of(cert.public_key()),
    }


def lifetime_days(cert) -> int:
    return round((cert.not_valid_after_utc - cert.not_valid_before_utc - BACKDATE) / DAY)


def spec_differences(cert, spec: CaSpec, issuer=None) -> list[str]:
    """Which parameters of spec this CA certificate does not have (empty when it matches)."""
    differences = []
    if _attribute(cert.subject, NameOID.ORGANIZATION_NAME) != spec.organization:
        differences.append("organization")
    if _attribute(cert.subject, NameOID.COMMON_NAME) != spec.common_name:
        differences.append("common_name")
    if _attribute(cert.subject, NameOID.LOCALITY_NAME) != spec.locality:
        differences.append("locality")
    if key_algorithm_of(cert.public_key()) != spec.key_algorithm:
        differences.append("key_algorithm")
    capped = issuer is not None and cert.not_valid_after_utc == issuer.not_valid_after_utc
    if lifetime_days(cert) != spec.days and not capped:
        differences.append("days")
    return differences


def intermediate_reasons(files: dict, spec: CaSpec, root_cert, now: datetime.datetime, renew_before_days: int) -> list[str]:
    """Why a cluster's intermediate must be issued again; an empty list keeps it.

    files maps the bundle keys to their bytes (None when missing); the root is the one that
    signs intermediates now.
    """
    missing = [name for name in (_istio.CA_CERT, _istio.CA_KEY) if files.get(name) is None]
    if missing:
        return [f"missing {', '.join(missing)}"]
    try:
        cert = load_cert(files[_istio.CA_CERT], _istio.CA_CERT)
        key = load_key(files[_istio.CA_KEY], _istio.CA_KEY)
    except PkiError as exc:
        return [f"invalid: {exc}"]
    reasons = []
    if not key_matches(cert, key):
        reasons.append("invalid: ca-key.pem does not match ca-cert.pem")
    if not is_ca(cert) or path_length(cert) != 0:
        reasons.append("invalid: ca-cert.pem is not a CA with pathlen 0")
    if not signed_by(cert, root_cert):
        reasons.append("root changed: ca-cert.pem is not signed by the current root")
    if uses_sha1(cert):
        reasons.append("invalid: ca-cert.pem is signed with SHA-1")
    if cert.not_valid_after_utc <= now + renew_before_days * DAY:
        reasons.append(f"expiring: not after {cert.not_valid_after_utc.isoformat()} is within {renew_before_days} days")
    differences = spec_differences(cert, spec, issuer=root_cert)
    if differences:
        reasons.append(f"parameters changed: {', '.join(differences)}")
    return reasons


def check_bundle(files: dict, now: datetime.datetime | None = None) -> tuple[BundleReport, dict]:
    """Check a cacerts bundle as istiod does before it signs with it.

    Returns the report and the public facts (roots, intermediate); never raises on bad data.
    """
    now = now or utcnow()
    report = BundleReport()
    facts: dict = {"roots": [], "intermediate": None, "chain_root": None}
    report.istio_generated_marker = _istio.SELF_SIGNED_MARKER in files
    report.missing_keys = [name for name in BUNDLE_KEYS if files.get(name) is None]
    report.complete = not report.missing_keys
    if report.missing_keys:
        report.problems.append(f"incomplete bundle: missing {', '.join(report.missing_keys)}")
    if report.istio_generated_marker:
        report.problems.append("the key istio-generated marks a self-signed istiod CA, not a plugged-in one")

    roots = []
    if files.get(_istio.ROOT_CERT) is not None:
        try:
            roots = load_certs(files[_istio.ROOT_CERT], _istio.ROOT_CERT)
        except PkiError as exc:
            report.problems.append(str(exc))
    facts["roots"] = [describe(root) for root in roots]

    cert = None
    if files.get(_istio.CA_CERT) is not None:
        try:
            cert = load_cert(files[_istio.CA_CERT], _istio.CA_CERT)
        except PkiError as exc:
            report.problems.append(str(exc))
    if cert is None:
        return report, facts
    facts["intermediate"] = describe(cert)

    report.intermediate_is_ca = is_ca(cert)
    if not report.intermediate_is_ca:
        report.problems.append("ca-cert.pem is not a CA certificate (basicConstraints CA:TRUE missing)")
    chain = [cert]
    if files.get(_istio.CERT_CHAIN) is not None:
        try:
            chain = load_certs(files[_istio.CERT_CHAIN], _istio.CERT_CHAIN)
        except PkiError as exc:
            report.problems.append(str(exc))
        else:
            if fingerprint(chain[0]) != fingerprint(cert):
                report.problems.append("cert-chain.pem does not start with ca-cert.pem")
    report.sha1_signatures = any(uses_sha1(c) for c in [cert, *chain[1:], *roots] if not _self_signed(c))
    if report.sha1_signatures:
        report.problems.append("a certificate in the bundle is signed with SHA-1, which istiod refuses")
    report.chain_valid = _chains_to(cert, chain[1:], roots, now)
    signer = chain_root(cert, chain[1:], roots)
    facts["chain_root"] = fingerprint(signer) if signer is not None else None
    if roots and not report.chain_valid:
        report.problems.append("ca-cert.pem does not chain to any root in root-cert.pem (or a certificate is expired)")

    if files.get(_istio.CA_KEY) is not None:
        try:
            key = load_key(files[_istio.CA_KEY], _istio.CA_KEY)
        except PkiError as exc:
            report.problems.append(str(exc))
        else:
            report.key_matches = key_matches(cert, key)
            if not report.key_matches:
                report.problems.append("ca-key.pem does not match ca-cert.pem")
    return report, facts


def _self_signed(cert) -> bool:
    return cert.subject == cert.issuer and signed_by(cert, cert)


def _valid_at(cert, now) -> bool:
    """Whether cert is valid at now; None means any time (signatures only)."""
    return now is None or cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def chain_root(cert, intermediates: list, roots: list):
    """The root in roots that cert chains to through intermediates, ignoring validity periods; or None."""
    for root in roots:
        if _chains_to(cert, intermediates, [root], None):
            return root
    return None


def _chains_to(cert, intermediates: list, roots: list, now, depth: int = 0) -> bool:
    if depth > 8 or not _valid_at(cert, now):
        return False
    if any(signed_by(cert, root) and _valid_at(root, now) for root in roots):
        return True
    return any(
        signed_by(cert, issuer) and _chains_to(issuer, [c for c in intermediates if c is not issuer], roots, now, depth + 1)
        for issuer in intermediates
        if is_ca(issuer)
    )
