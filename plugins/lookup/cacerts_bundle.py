# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: cacerts_bundle
short_description: A cluster's cacerts bundle from the mesh PKI directory, checked as istiod checks it
version_added: 0.1.0
author: meshfed.istio developers (@meshfed)
description:
  - Reads C(ca-cert.pem), C(ca-key.pem), C(root-cert.pem) and C(cert-chain.pem) of one cluster from the PKI directory
    on the control node (the layout M(meshfed.istio.pki) writes), once, and checks them as istiod does before it
    signs - complete, the key matches the certificate, a CA certificate, no SHA-1, the chain verifies - and that the
    intermediate chains to the PKI directory's own C(root-cert.pem). A directory with a write of
    M(meshfed.istio.pki) not yet moved into place (a C(.commit-*) journal a crash left; its files may be half old, half
    new) is a problem too, until the pki role runs again and finishes it.
  - Returns C(data), the Secret's data (base64), and C(problems); C(data) is empty when there is a problem, so a bundle
    istiod would refuse is never pushed. The result holds the intermediate's private key - use it under C(no_log).
options:
  _terms:
    description: The cluster's name (its directory under O(pki_dir)).
    required: true
    type: list
    elements: str
  pki_dir:
    description: The mesh PKI directory.
    required: true
    type: path
"""

EXAMPLES = r"""
- name: The cluster's bundle, read and checked once
  ansible.builtin.set_fact:
    bundle: "{{ lookup('meshfed.istio.cacerts_bundle', 'east', pki_dir=playbook_dir ~ '/pki') }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One dict per cluster - C(data) (key to base64 value, empty with a problem) and C(problems).
  type: list
  elements: dict
"""

import base64

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _trust


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        pki_dir = kwargs.get("pki_dir")
        if not pki_dir or not isinstance(pki_dir, str):
            raise AnsibleLookupError("cacerts_bundle: pki_dir (the mesh PKI directory) is required")
        results = []
        for cluster in terms:
            try:
                files, problems = _trust.bundle_for_push(pki_dir, cluster)
            except _pki.PkiError as exc:
                raise AnsibleLookupError(f"cacerts_bundle: {exc}") from exc
            data = {} if problems else {name: base64.b64encode(value).decode() for name, value in files.items()}
            results.append({"data": data, "problems": problems})
        return results
