#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cacerts
short_description: Generate or load the mesh PKI (one root CA, one intermediate CA per cluster)
version_added: 0.1.0
description:
  - Keeps a directory on the control node with the mesh root CA and, for every cluster, an
    intermediate CA in the layout of Istio's C(cacerts) secret
    (C(ca-cert.pem), C(ca-key.pem), C(root-cert.pem), C(cert-chain.pem)).
  - The root is generated, or imported from an existing certificate and key. Its key never
    leaves the control node; cluster directories hold only the intermediate key.
  - Intermediates are C(CA:true, pathlen:0) (critical), keyCertSign and cRLSign, SHA-256 (SHA-384
    for P-384 keys), subject C(O=<intermediate_organization>, L=<cluster>, CN=<intermediate_common_name>),
    SAN C(DNS:istiod.istio-system.svc), and pass every check istiod makes when it loads cacerts.
  - Idempotent. An intermediate is issued again only when it is missing, invalid, not signed by the
    current root, inside the renewal window, or its parameters changed; C(root-cert.pem) then stays
    byte-identical. An existing root is never replaced unless O(force_root=true).
  - Everything is read and decided before anything is written; a refusal leaves the directory as it was.
    Files are written to a temporary file and renamed into place; keys are mode C(0600).
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - cryptography >= 42.0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows subjects, SHA-256 fingerprints and expiry dates, never key material.
options:
  dest:
    description: Directory of the mesh PKI on the control node. Created (mode C(0700)) when missing.
    type: path
    required: true
  clusters:
    description:
      - Cluster names (DNS-1123 labels, unique) that each get an intermediate CA in C(<dest>/<cluster>/).
      - Directories of clusters not listed are left alone.
    type: list
    elements: str
    default: []
  key_algorithm:
    description: Key algorithm of a new root and of every intermediate. Changing it re-issues the intermediates.
    type: str
    choices: [rsa2048, rsa3072, rsa4096, ecdsa-p256, ecdsa-p384]
    default: rsa4096
  root_organization:
    description: Organization (O) of a generated root.
    type: str
    default: Istio
  root_common_name:
    description: Common name (CN) of a generated root.
    type: str
    default: Root CA
  root_days:
    description: Lifetime of a generated root, in days.
    type: int
    default: 3650
  intermediate_organization:
    description: Organization (O) of the intermediates.
    type: str
    default: Istio
  intermediate_common_name:
    description: Common name (CN) of the intermediates; the locality (L) is the cluster name.
    type: str
    default: Intermediate CA
  intermediate_days:
    description: Lifetime of an intermediate in days; never beyond the root's expiry.
    type: int
    default: 730
  renew_before_days:
    description: An intermediate that expires within this many days is issued again.
    type: int
    default: 30
  root_cert_src:
    description:
      - Import this existing root certificate (PEM) instead of generating one. Needs O(root_key_src).
      - The certificate is copied to C(<dest>/root-cert.pem); the key is read in place and not copied.
    type: path
  root_key_src:
    description: Private key (PEM) of O(root_cert_src).
    type: path
  root_key_passphrase:
    description:
      - Passphrase of the root key. Decrypts O(root_key_src), or encrypts and decrypts C(<dest>/root-key.pem)
        of a generated root.
    type: str
  force_root:
    description:
      - Replace the existing root (generate a new one, or import a different one). Every intermediate is
        then issued again, so every cluster must be rotated.
      - Destructive, and not idempotent with a generated root (a new root on every run). In a running mesh a root
        change needs overlapping trust (both roots in every cluster's C(root-cert.pem) before any intermediate
        changes), which this option does not do.
    type: bool
    default: false
notes:
  - The layout matches Istio's C(tools/certs) Makefile, so the per-cluster directory can be turned
    into the C(cacerts) secret as it is.
seealso:
  - module: meshfed.istio.cacerts_info
  - name: Plug in CA certificates (Istio documentation)
    description: How istiod uses the cacerts secret.
    link: https://istio.io/latest/docs/tasks/security/cert-management/plugin-ca-cert/
"""

EXAMPLES = r"""
- name: Mesh PKI for every cluster of the inventory, on the control node
  meshfed.istio.cacerts:
    dest: "{{ playbook_dir }}/pki"
    clusters: "{{ groups['istio_primary'] + groups['istio_remote'] | default([]) }}"
  delegate_to: localhost
  run_once: true

- name: Import the company root, ECDSA intermediates valid one year
  meshfed.istio.cacerts:
    dest: /srv/mesh-pki
    clusters: [east, west]
    root_cert_src: /secure/root-cert.pem
    root_key_src: /secure/root-key.pem
    root_key_passphrase: "{{ vault_root_passphrase }}"
    key_algorithm: ecdsa-p256
    intermediate_days: 365
"""

RETURN = r"""
dest:
  description: The PKI directory.
  returned: always
  type: str
root:
  description: The root that signs the intermediates.
  returned: always
  type: dict
  contains:
    fingerprint_sha256:
      description: SHA-256 fingerprint, colon-separated upper-case hex, as C(openssl x509 -fingerprint -sha256) prints it.
      type: str
      sample: "3A:5F:...:9C"
    subject:
      description: Subject in RFC 4514 form.
      type: str
      sample: CN=Root CA,O=Istio
    not_after:
      description: Expiry, ISO 8601 UTC.
      type: str
    key_algorithm:
      description: Key algorithm of the root.
      type: str
    changed:
      description: Whether the root was generated, imported or replaced by this run.
      type: bool
    reason:
      description: What happened to the root.
      type: str
      sample: existing root kept
clusters:
  description: Per cluster name, its intermediate CA.
  returned: always
  type: dict
  contains:
    fingerprint_sha256:
      description: SHA-256 fingerprint of the intermediate.
      type: str
    subject:
      description: Subject of the intermediate.
      type: str
    not_after:
      description: Expiry, ISO 8601 UTC.
      type: str
    key_algorithm:
      description: Key algorithm of the intermediate.
      type: str
    changed:
      description: Whether any file of the cluster directory was (or, in check mode, would be) written.
      type: bool
    reasons:
      description: Why the intermediate was issued again or files rewritten; empty when nothing changed.
      type: list
      elements: str
      sample: ["expiring: not after 2027-01-01T00:00:00+00:00 is within 30 days"]
    path:
      description: The cluster directory, the source of its cacerts secret.
      type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _pki_store

ARGUMENT_SPEC = dict(
    dest=dict(type="path", required=True),
    clusters=dict(type="list", elements="str", default=[]),
    key_algorithm=dict(type="str", choices=list(_pki.KEY_ALGORITHMS), default="rsa4096"),
    root_organization=dict(type="str", default="Istio"),
    root_common_name=dict(type="str", default="Root CA"),
    root_days=dict(type="int", default=3650),
    intermediate_organization=dict(type="str", default="Istio"),
    intermediate_common_name=dict(type="str", default="Intermediate CA"),
    intermediate_days=dict(type="int", default=730),
    renew_before_days=dict(type="int", default=30),
    root_cert_src=dict(type="path"),
    root_key_src=dict(type="path"),
    root_key_passphrase=dict(type="str", no_log=True),
    force_root=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_together=[("root_cert_src", "root_key_src")],
        supports_check_mode=True,
    )
    if not _pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=traceback.format_exc())
    params = dict(module.params)
    params["clusters"] = tuple(params["clusters"])
    for name in ("root_days", "intermediate_days"):
        if params[name] < 1:
            module.fail_json(msg=f"{name} must be at least 1, got {params[name]}")
    if params["renew_before_days"] < 0:
        module.fail_json(msg=f"renew_before_days must not be negative, got {params['renew_before_days']}")
    try:
        plan = _pki_store.plan(_pki_store.PkiOptions(**params))
        if plan.changed and not module.check_mode:
            _pki_store.apply(plan)
    except _pki.PkiError as exc:
        module.fail_json(msg=str(exc))
    for warning in plan.warnings:
        module.warn(warning)
    result = dict(changed=plan.changed, dest=params["dest"], root=plan.root, clusters=plan.clusters)
    if module._diff:
        result["diff"] = dict(before=plan.before, after=plan.after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
