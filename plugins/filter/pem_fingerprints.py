# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter pem_fingerprints; documented in pem_fingerprints.yml."""

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


class FilterModule:
    def filters(self):
        return {"pem_fingerprints": pem_fingerprints}
