# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the trust material of one cluster, as facts without key material."""

from __future__ import annotations

import os
from dataclasses import asdict

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _pki
from ansible_collections.meshfed.istio.plugins.module_utils._pki_store import read_optional


def fingerprints(pem: bytes | str | None) -> list[str]:
    if pem is None:
        return []
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return [_pki.fingerprint(cert) for cert in _pki.load_certs(data, "root bundle")]
    except _pki.PkiError:
        return []


def bundle_facts(files: dict | None) -> dict:
    """Facts about a cacerts bundle (secret data or a cluster directory); never the key."""
    if files is None:
        return {"present": False, "complete": False, "usable": False, "roots": [], "intermediate": None, "problems": ["absent"]}
    report, facts = _pki.check_bundle(files)
    return {"present": True, "usable": report.usable, **asdict(report), **facts}


def self_signed_facts(data: dict | None) -> dict:
    """Facts about istiod's own self-signed CA (secret istio-ca-secret, decoded): present, and its root's fingerprint."""
    return {"present": data is not None, "root_fingerprints": fingerprints((data or {}).get(_istio.CA_CERT))}


def root_cert_configmap_facts(data: dict | None) -> dict:
    """Facts about an istio-ca-root-cert ConfigMap's data (what workloads trust): present, and its roots' fingerprints."""
    return {"present": data is not None, "root_fingerprints": fingerprints((data or {}).get(_istio.ROOT_CERT))}


def root_fingerprints(facts: dict) -> list[str]:
    return [root["fingerprint_sha256"] for root in facts.get("roots", [])]


def from_directory(path: str) -> dict:
    if not os.path.isdir(path):
        return {"cacerts": bundle_facts(None)}
    files = {name: read_optional(os.path.join(path, name)) for name in _pki.BUNDLE_KEYS}
    if all(value is None for value in files.values()):
        files = None
    return {"cacerts": bundle_facts(files)}


def from_cluster(cluster, namespace: str, secret_name: str, configmap_namespaces: list[str]) -> dict:
    """Read cacerts, istio-ca-secret and istio-ca-root-cert ConfigMaps through the API."""
    return {
        "cacerts": bundle_facts(cluster.secret_data(namespace, secret_name)),
        "istio_ca_secret": self_signed_facts(cluster.secret_data(namespace, _istio.ISTIO_CA_SECRET)),
        "root_cert_configmaps": {
            configmap_namespace: root_cert_configmap_facts(cluster.configmap_data(configmap_namespace, _istio.ROOT_CERT_CONFIGMAP))
            for configmap_namespace in configmap_namespaces
        },
    }
