from __future__ import annotations

import datetime

from ansible_collections.meshfed.istio.plugins.module_utils import _pki

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
ROOT_SPEC = _pki.CaSpec("Istio", "Root CA", 3650, "ecdsa-p256")


def intermediate_spec(cluster: str = "east", **changes) -> _pki.CaSpec:
    values = dict(organization="Istio", common_name="Intermediate CA", days=730, key_algorithm="ecdsa-p256", locality=cluster)
    values.update(changes)
    return _pki.CaSpec(**values)


class Ca:
    """A root and one intermediate, with the bundle istiod would load."""

    def __init__(self, now=NOW, spec=None):
        self.root_key = _pki.generate_key("ecdsa-p256")
        self.root = _pki.build_root(self.root_key, ROOT_SPEC, now)
        self.key = _pki.generate_key("ecdsa-p256")
        self.spec = spec or intermediate_spec()
        self.cert = _pki.build_intermediate(self.key, self.spec, self.root, self.root_key, now)

    def files(self) -> dict:
        ca_pem = _pki.cert_pem(self.cert)
        root_pem = _pki.cert_pem(self.root)
        return {
            "ca-cert.pem": ca_pem,
            "ca-key.pem": _pki.key_pem(self.key),
            "root-cert.pem": root_pem,
            "cert-chain.pem": ca_pem + root_pem,
        }
