"""The cacerts_problems filter: what the cacerts role checks on the exact text it is about to push."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.filter.cacerts_problems import FilterModule
from ansible_collections.meshfed.istio.plugins.module_utils import _pki

cacerts_problems = FilterModule().filters()["cacerts_problems"]
NOW = _pki.utcnow()


class Ca:
    """A root and one intermediate under it, with the bundle the cacerts role would push."""

    def __init__(self):
        self.root_key = _pki.generate_key("ecdsa-p256")
        self.root = _pki.build_root(self.root_key, _pki.CaSpec("Istio", "Root CA", 3650, "ecdsa-p256"), NOW)
        key = _pki.generate_key("ecdsa-p256")
        cert = _pki.build_intermediate(key, _pki.CaSpec("Istio", "Intermediate CA", 730, "ecdsa-p256", "east"),
                                       self.root, self.root_key, NOW)
        ca_pem, root_pem = _pki.cert_pem(cert), _pki.cert_pem(self.root)
        self.bundle = {"ca-cert.pem": ca_pem, "ca-key.pem": _pki.key_pem(key), "root-cert.pem": root_pem,
                       "cert-chain.pem": ca_pem + root_pem}

    def files(self) -> dict:
        return dict(self.bundle)


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca()


@pytest.fixture(scope="module")
def other_ca() -> Ca:
    return Ca()


def _text(files: dict) -> dict:
    return {name: data.decode() for name, data in files.items()}


def test_a_good_bundle_has_no_problem(ca):
    files = _text(ca.files())
    assert cacerts_problems(files) == []
    assert cacerts_problems(files, files["root-cert.pem"]) == []


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda files, other: files.update({"ca-key.pem": other.files()["ca-key.pem"].decode()}), "ca-key.pem does not match ca-cert.pem"),
        (lambda files, other: files.update({"root-cert.pem": other.files()["root-cert.pem"].decode()}),
         "ca-cert.pem does not chain to any root in root-cert.pem"),
        (lambda files, other: files.pop("cert-chain.pem"), "incomplete bundle: missing cert-chain.pem"),
        (lambda files, other: files.update({"ca-cert.pem": "garbage"}), "ca-cert.pem is not valid PEM certificate data"),
    ],
    ids=["key-mismatch", "chain-broken", "incomplete", "corrupt"],
)
def test_a_broken_bundle_is_named(ca, other_ca, mutate, problem):
    files = _text(ca.files())
    mutate(files, other_ca)
    problems = cacerts_problems(files)
    assert any(problem in found for found in problems), problems
    assert not any("PRIVATE KEY" in found for found in problems)


def test_a_bundle_on_another_root_than_the_mesh_root(ca, other_ca):
    problems = cacerts_problems(_text(ca.files()), _pki.cert_pem(other_ca.root).decode())
    assert problems == ["ca-cert.pem does not chain to the mesh root (root-cert.pem of the PKI directory)"]


def test_not_a_dict_is_refused():
    with pytest.raises(AnsibleFilterError, match="takes a dict"):
        cacerts_problems("pem")
