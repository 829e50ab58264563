# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: passphrase encryption of private keys at rest (PKCS#8, RFC 8018 PBES2).

cryptography's BestAvailableEncryption writes PKCS#8 with PBKDF2 at 2048 iterations, and its
encryption builder (where the count can be set) takes only the OpenSSH and PKCS#12 formats.
So the envelope is built here from cryptography's primitives: PBES2 with PBKDF2-HMAC-SHA256 at
KDF_ITERATIONS and AES-256-CBC, the scheme `openssl pkcs8 -topk8 -v2 aes-256-cbc -iter N` writes,
which every OpenSSL 1.1+/3.x and cryptography read.
"""

from __future__ import annotations

import base64
import os
from typing import NamedTuple

try:
    from cryptography.hazmat.primitives import hashes, padding, serialization
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
except ImportError:  # pragma: no cover - reported by the module through missing_required_lib
    pass

# OWASP's 2023 figure for PBKDF2-HMAC-SHA256; about 0.1 s per key load on one core.
KDF_ITERATIONS = 600_000
KDF_NAME = f"PBES2 (PBKDF2-HMAC-SHA256, {KDF_ITERATIONS} iterations, AES-256-CBC)"
MAX_PASSPHRASE_BYTES = 1023  # what OpenSSL's PEM password callback reads

_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_HMAC_SHA256 = "1.2.840.113549.2.9"
_AES256_CBC = "2.16.840.1.101.3.4.1.42"
_BEGIN = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_END = b"-----END ENCRYPTED PRIVATE KEY-----"


class Protection(NamedTuple):
    """How a PEM private key is protected at rest."""

    encrypted: bool
    strong: bool
    description: str


def _tlv(tag: int, value: bytes) -> bytes:
    size = len(value)
    if size < 0x80:
        return bytes([tag, size]) + value
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + value


def _sequence(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytes([40 * first + second])
    for arc in rest:
        chunk, value = [arc & 0x7F], arc >> 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, body)


def _integer(number: int) -> bytes:
    return _tlv(0x02, number.to_bytes(number.bit_length() // 8 + 1, "big"))


def _read(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """One DER element at offset: (tag, value, offset after it); ValueError when truncated."""
    tag, size = data[offset], data[offset + 1]
    offset += 2
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + size > len(data):
        raise ValueError("truncated DER")
    return tag, data[offset : offset + size], offset + size


def _children(value: bytes) -> list[tuple[int, bytes]]:
    items, offset = [], 0
    while offset < len(value):
        tag, item, offset = _read(value, offset)
        items.append((tag, item))
    return items


def encrypt(key, passphrase: str, iterations: int | None = None) -> bytes:
    """PEM of the key's PKCS#8 form, encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC)."""
    iterations = iterations or KDF_ITERATIONS
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    salt, iv = os.urandom(16), os.urandom(16)
    secret = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations).derive(passphrase.encode())
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    kdf = _sequence(_oid(_PBKDF2), _sequence(_tlv(0x04, salt), _integer(iterations), _sequence(_oid(_HMAC_SHA256), b"\x05\x00")))
    scheme = _sequence(_oid(_PBES2), _sequence(kdf, _sequence(_oid(_AES256_CBC), _tlv(0x04, iv))))
    body = base64.b64encode(_sequence(scheme, _tlv(0x04, sealed)))
    lines = [body[start : start + 64] for start in range(0, len(body), 64)]
    return b"\n".join([_BEGIN, *lines, _END]) + b"\n"


def _oid_of(encoded: bytes) -> str:
    return {_oid(name)[2:]: name for name in (_PBES2, _PBKDF2, _SCRYPT)}.get(encoded, "other")


def protection(pem: bytes) -> Protection:
    """How the key in pem is encrypted: PBES2 with at least KDF_ITERATIONS (or scrypt) is strong."""
    if b"Proc-Type: 4,ENCRYPTED" in pem:
        return Protection(True, False, "legacy PEM encryption (one MD5 round)")
    if _BEGIN not in pem:
        return Protection(False, False, "not encrypted")
    try:
        body = pem.split(_BEGIN, 1)[1].split(_END, 1)[0]
        info = _read(base64.b64decode(b"".join(body.split())))[1]
        algorithm = _children(_children(info)[0][1])
        if _oid_of(algorithm[0][1]) != _PBES2:
            return Protection(True, False, "PKCS#5 v1 / PKCS#12 encryption")
        kdf = _children(_children(algorithm[1][1])[0][1])
        if _oid_of(kdf[0][1]) == _SCRYPT:
            return Protection(True, True, "PBES2 (scrypt)")
        iterations = int.from_bytes(_children(kdf[1][1])[1][1], "big")
    except (ValueError, IndexError):
        return Protection(True, False, "unrecognised encryption")
    return Protection(True, iterations >= KDF_ITERATIONS, f"PBES2 (PBKDF2, {iterations} iterations)")
