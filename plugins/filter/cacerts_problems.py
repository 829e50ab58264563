# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter cacerts_problems; documented in cacerts_problems.yml."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _trust


def _as_bytes(value):
    return value.encode() if isinstance(value, str) else value


def cacerts_problems(files, mesh_root=None):
    """Why istiod would refuse this cacerts bundle (key -> PEM), or why it is not on mesh_root; [] when it is usable."""
    if not isinstance(files, dict):
        raise AnsibleFilterError(f"cacerts_problems takes a dict of cacerts keys to PEM text, got {type(files).__name__}")
    report, facts = _pki.check_bundle({name: _as_bytes(value) for name, value in files.items() if value is not None})
    problems = list(report.problems)
    if mesh_root:
        roots = _trust.fingerprints(_as_bytes(mesh_root))
        if facts["chain_root"] is not None and facts["chain_root"] not in roots:
            problems.append("ca-cert.pem does not chain to the mesh root (root-cert.pem of the PKI directory)")
    return problems


class FilterModule:
    def filters(self):
        return {"cacerts_problems": cacerts_problems}
