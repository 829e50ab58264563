"""Ask an istiod for a workload certificate the way istio-agent does (run inside the test bed's netns).

A service-account token (TokenRequest, audience istio-ca) authenticates the request; the CSR
carries the SPIFFE identity of that service account; the call is istio.v1.auth.
IstioCertificateService/CreateCertificate over istiod's TLS gRPC port (15012), whose serving
certificate must verify against the given root. The protobuf messages are small enough to
encode by hand: IstioCertificateRequest {string csr = 1; int64 validity_duration = 3;},
IstioCertificateResponse {repeated string cert_chain = 1;}.

Usage: csr_client.py --address 127.0.0.1:PORT --root ROOT.pem --token-file TOKEN --spiffe-id ID --out DIR
Writes DIR/key.pem and DIR/chain.pem (leaf first, as istiod returns it); prints the chain's subjects as JSON.
"""

from __future__ import annotations

import argparse
import json
import os

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
ISTIOD_NAME = "istiod.istio-system.svc"
TIMEOUT = 20


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_request(csr_pem: str, validity_seconds: int) -> bytes:
    csr = csr_pem.encode()
    return b"\x0a" + varint(len(csr)) + csr + b"\x18" + varint(validity_seconds)


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def decode_response(data: bytes) -> list[str]:
    """cert_chain (field 1, length-delimited, repeated); other fields are skipped."""
    chain, offset = [], 0
    while offset < len(data):
        key, offset = read_varint(data, offset)
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, offset = read_varint(data, offset)
            if field == 1:
                chain.append(data[offset : offset + length].decode())
            offset += length
        elif wire == 0:
            offset = read_varint(data, offset)[1]
        else:
            raise ValueError(f"unexpected wire type {wire} in the response")
    return chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--spiffe-id", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--validity", type=int, default=3600)
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(args.spiffe_id)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(args.root, "rb") as handle:
        credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
    with open(args.token_file, encoding="ascii") as handle:
        token = handle.read().strip()
    options = [("grpc.ssl_target_name_override", ISTIOD_NAME), ("grpc.default_authority", ISTIOD_NAME)]
    with grpc.secure_channel(args.address, credentials, options=options) as channel:
        call = channel.unary_unary(METHOD, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        response = call(
            encode_request(csr.public_bytes(serialization.Encoding.PEM).decode(), args.validity),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=TIMEOUT,
        )
    chain = decode_response(response)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "key.pem"), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(os.path.join(args.out, "chain.pem"), "w", encoding="ascii") as handle:
        handle.write("".join(pem if pem.endswith("\n") else pem + "\n" for pem in chain))
    certs = [x509.load_pem_x509_certificate(pem.encode()) for pem in chain]
    print(
        json.dumps(
            {
                "subjects": [cert.subject.rfc4514_string() for cert in certs],
                "issuers": [cert.issuer.rfc4514_string() for cert in certs],
                "fingerprints": [cert.fingerprint(hashes.SHA256()).hex(":").upper() for cert in certs],
            }
        )
    )


if __name__ == "__main__":
    main()
