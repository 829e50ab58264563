# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over certificates; documented in pem_fingerprints.yml and cacerts_problems.yml."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.module_utils import _pki


def pem_fingerprints(pem):
    """SHA-256 fingerprints (colon-separated hex) of every certificate in a PEM bundle; [] for an empty one."""
    if not pem:
        return []
    if not isinstance(pem, (str, bytes)):
        raise AnsibleFilterError(f"pem_fingerprints takes PEM text, got {type(pem).__name__}")
    try:
        return [_pki.fingerprint(cert) for cert in _pki.load_certs(pem.encode() if isinstance(pem, str) else pem, "PEM bundle")]
    except _pki.PkiError as exc:
        raise AnsibleFilterError(f"pem_fingerprints: {exc}") from exc


def _as_bytes(value):
    return value.encode() if isinstance(value, str) else value


def cacerts_problems(files, mesh_root=None):
    """Why istiod would refuse this cacerts bundle (key -> PEM), or why it is not on mesh_root; [] when it is usable."""
    if not isinstance(files, dict):
        raise AnsibleFilterError(f"cacerts_problems takes a dict of cacerts keys to PEM text, got {type(files).__name__}")
    report, facts = _pki.check_bundle({name: _as_bytes(value) for name, value in files.items() if value is not None})
    problems = list(report.problems)
    if mesh_root:
        roots = pem_fingerprints(mesh_root)
        if facts["chain_root"] is not None and facts["chain_root"] not in roots:
            problems.append("ca-cert.pem does not chain to the mesh root (root-cert.pem of the PKI directory)")
    return problems


class FilterModule:
    def filters(self):
        return {"pem_fingerprints": pem_fingerprints, "cacerts_problems": cacerts_problems}
