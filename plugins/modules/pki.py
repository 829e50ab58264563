#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pki
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
  - All or nothing, also across a crash. Every new file is first written (and fsynced) into
    C(<dest>/.staging-<id>/), checked (each cluster's bundle as istiod checks it, chained to the root),
    committed by renaming that directory to C(.commit-<id>), and only then moved file by file into place.
    The next run (check mode included, which reports it) finishes a committed change that a crash interrupted and
    removes an uncommitted one and stray C(.tmp-*) files, so the directory never stays half written. RV(recovery) says
    what was done. Keys are mode C(0600), directories C(0700).
  - Refused, naming the fix, before anything is written - a O(dest) or cluster directory writable by group or others,
    a cluster directory or PKI file that is a symbolic link, a key file open to group or others (a key that others
    could read may have been copied - check, then C(chmod 0600) it or replace it).
  - The root key C(<dest>/root-key.pem) is unencrypted unless O(root_key_passphrase) is set, and the module warns on
    every run while it is. With a passphrase it is PKCS#8 with PBES2 (PBKDF2-HMAC-SHA256, 600000 iterations, AES-256-CBC),
    which C(openssl pkey -passin) reads; an existing unencrypted or weakly encrypted key (for example PBKDF2 with 2048
    iterations, what earlier versions wrote) is encrypted again when a passphrase is given.
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - cryptography >= 42.0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows subjects, SHA-256 fingerprints and expiry dates, never key material.
options:
  dest:
    description:
      - Directory of the mesh PKI on the control node. Created (mode C(0700)) when missing.
      - Must not be empty, nor writable by group or others.
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
    description: Organization (O) of a generated root; 1 to 64 characters.
    type: str
    default: Istio
  root_common_name:
    description: Common name (CN) of a generated root; 1 to 64 characters.
    type: str
    default: Root CA
  root_days:
    description:
      - Lifetime of a generated root, in days. More than O(renew_before_days); the root may not end after 9999-12-31.
    type: int
    default: 3650
  intermediate_organization:
    description: Organization (O) of the intermediates; 1 to 64 characters.
    type: str
    default: Istio
  intermediate_common_name:
    description: Common name (CN) of the intermediates, 1 to 64 characters; the locality (L) is the cluster name.
    type: str
    default: Intermediate CA
  intermediate_days:
    description:
      - Lifetime of an intermediate in days; never beyond the root's expiry. More than O(renew_before_days).
    type: int
    default: 730
  renew_before_days:
    description:
      - An intermediate that expires within this many days is issued again.
      - Must be less than O(intermediate_days) (and O(root_days) for a generated root), or every run would issue the
        intermediates again. A root that itself expires within this window is refused for the same reason (an
        intermediate ends with its root) - rotate the root, or lower this value to keep using it until then.
    type: int
    default: 30
  root_cert_src:
    description:
      - Import this existing root certificate (PEM) instead of generating one. Needs O(root_key_src).
      - Refused unless it can sign the intermediates and OpenSSL and istiod verify the chain - a CA, without
        C(pathlen:0), with keyCertSign when it has a keyUsage, valid now and beyond O(renew_before_days), with an
        RSA key of 2048 bits or more or an ECDSA P-256, P-384 or P-521 key.
      - The certificate is copied to C(<dest>/root-cert.pem); the key is read in place and not copied.
    type: path
  root_key_src:
    description:
      - Private key (PEM) of O(root_cert_src). Read in place, never modified; the module warns when it is not encrypted,
        or encrypted with a weak key derivation, and names the C(openssl pkcs8) command that fixes it.
    type: path
  root_key_passphrase:
    description:
      - Passphrase of the root key. Decrypts O(root_key_src), or encrypts and decrypts C(<dest>/root-key.pem)
        of a generated root (PBES2, PBKDF2-HMAC-SHA256 with 600000 iterations, AES-256-CBC).
      - Setting it for an existing unencrypted, or weakly encrypted, C(<dest>/root-key.pem) encrypts that key again
        (reported as a change of the root; the certificate stays byte-identical).
      - At most 1023 bytes (UTF-8), the longest passphrase OpenSSL reads.
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
  meshfed.istio.pki:
    dest: "{{ playbook_dir }}/pki"
    clusters: "{{ groups['istio_primary'] + groups['istio_remote'] | default([]) }}"
  delegate_to: localhost
  run_once: true

- name: Import the company root, ECDSA intermediates valid one year
  meshfed.istio.pki:
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
      description: Whether the root was generated, imported or replaced, or its key encrypted again, by this run.
      type: bool
    reason:
      description: What happened to the root.
      type: str
      sample: existing root kept
recovery:
  description:
    - What an interrupted earlier run had left in O(dest), and what this run did (in check mode, would do) about it.
    - Empty when the directory was consistent.
  returned: always
  type: list
  elements: str
  sample: ["finished an interrupted write: moved 3 file(s) of .commit-00000001767225600000000000-4242 into place"]
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
    try:
        plan = _pki_store.decide(_pki_store.PkiOptions(**params))
        if plan.changed and not module.check_mode:
            _pki_store.apply(plan)
    except _pki.PkiError as exc:
        module.fail_json(msg=str(exc))
    for warning in plan.warnings:
        module.warn(warning)
    result = dict(changed=plan.changed, dest=params["dest"], root=plan.root, clusters=plan.clusters, recovery=plan.recovery)
    if module._diff:
        result["diff"] = dict(before=plan.before, after=plan.after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
