#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cacerts_info
short_description: Fingerprint facts about one cluster's Istio trust material
version_added: 0.1.0
description:
  - Reads the C(cacerts) secret of a cluster through the Kubernetes API, or a cluster directory made
    by M(meshfed.istio.pki) on the control node (O(src)), and reports what istiod would trust and sign with.
  - For the bundle, the checks istiod makes before it uses a plugged-in CA (all four keys present, chain
    verifies, key matches, CA bit, no SHA-1) and the SHA-256 fingerprint, subject and validity of every
    root in C(root-cert.pem) and of the intermediate.
  - Through the API, also whether C(istio-ca-secret) exists (istiod started without cacerts and runs its
    own self-signed CA) and the roots in the C(istio-ca-root-cert) ConfigMap of the given namespaces, which
    is what workloads actually trust.
  - Missing objects are reported as facts. An unreachable API server and a denied request are distinct errors.
    Key material is never returned.
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - cryptography >= 42.0
  - kubernetes >= 24.2.0 (Python client), when reading through the API
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
  - meshfed.istio.attributes.info_module
  - kubernetes.core.k8s_auth_options
  - meshfed.istio.request_timeout
options:
  src:
    description:
      - Read this cluster directory on the control node instead of the API (C(ca-cert.pem), C(ca-key.pem),
        C(root-cert.pem), C(cert-chain.pem)). The authentication options are then ignored.
    type: path
  namespace:
    description: Namespace of the C(cacerts) and C(istio-ca-secret) secrets.
    type: str
    default: istio-system
  secret_name:
    description: Name of the plugged-in CA secret.
    type: str
    default: cacerts
  root_cert_namespaces:
    description: Namespaces whose C(istio-ca-root-cert) ConfigMap is read.
    type: list
    elements: str
    default: [istio-system]
seealso:
  - module: meshfed.istio.pki
"""

EXAMPLES = r"""
- name: Trust facts of the cluster behind a kubeconfig context
  meshfed.istio.cacerts_info:
    kubeconfig: ~/.kube/config
    context: east
    root_cert_namespaces: [istio-system, sample]
  register: trust

- name: Refuse to go on when istiod signs with a root other than the mesh root
  ansible.builtin.assert:
    that:
      - trust.cacerts.usable
      - trust.root_fingerprints == [mesh_root_fingerprint]
      - not trust.istio_ca_secret.present
    fail_msg: "{{ trust.cacerts.problems | join('; ') }}"

- name: Check a cluster directory on the control node before it is installed
  meshfed.istio.cacerts_info:
    src: /srv/mesh-pki/east
  delegate_to: localhost
"""

RETURN = r"""
source:
  description: Where the facts were read, C(api) or C(directory).
  returned: always
  type: str
root_fingerprints:
  description: SHA-256 fingerprints of the roots in the bundle's C(root-cert.pem), in bundle order.
  returned: always
  type: list
  elements: str
cacerts:
  description: The plugged-in CA bundle.
  returned: always
  type: dict
  contains:
    present:
      description: Whether the secret (or directory) exists.
      type: bool
    usable:
      description: Whether istiod would accept the bundle (no problems).
      type: bool
    complete:
      description: Whether all four keys are present.
      type: bool
    missing_keys:
      description: Keys of the bundle that are missing.
      type: list
      elements: str
    chain_valid:
      description: Whether C(ca-cert.pem) chains (through C(cert-chain.pem)) to a root in C(root-cert.pem) and every link is valid now.
      type: bool
    key_matches:
      description: Whether C(ca-key.pem) is the key of C(ca-cert.pem).
      type: bool
    intermediate_is_ca:
      description: Whether C(ca-cert.pem) has basicConstraints CA:TRUE.
      type: bool
    sha1_signatures:
      description: Whether a certificate of the bundle (other than a self-signed root) is signed with SHA-1.
      type: bool
    istio_generated_marker:
      description: Whether the key C(istio-generated) is present (a self-signed istiod CA copied into cacerts).
      type: bool
    problems:
      description: Every reason istiod would refuse the bundle, as sentences.
      type: list
      elements: str
    roots:
      description: Every root in C(root-cert.pem).
      type: list
      elements: dict
      contains:
        fingerprint_sha256:
          description: SHA-256 fingerprint, colon-separated upper-case hex.
          type: str
        subject:
          description: Subject, RFC 4514.
          type: str
        issuer:
          description: Issuer, RFC 4514.
          type: str
        serial_number:
          description: Serial number in hex.
          type: str
        not_before:
          description: Start of validity, ISO 8601 UTC.
          type: str
        not_after:
          description: End of validity, ISO 8601 UTC.
          type: str
        is_ca:
          description: Whether basicConstraints CA:TRUE is set.
          type: bool
        key_algorithm:
          description: Key algorithm, for example C(rsa4096) or C(ecdsa-p256).
          type: str
    intermediate:
      description: The intermediate (C(ca-cert.pem)), with the same keys as an entry of RV(cacerts.roots); null when absent.
      type: dict
istio_ca_secret:
  description: istiod's own self-signed CA. Its presence means istiod started without cacerts.
  returned: when reading through the API
  type: dict
  contains:
    present:
      description: Whether C(istio-ca-secret) exists.
      type: bool
    root_fingerprints:
      description: Fingerprint of its self-signed root.
      type: list
      elements: str
root_cert_configmaps:
  description: Per namespace, the C(istio-ca-root-cert) ConfigMap written by istiod.
  returned: when reading through the API
  type: dict
  sample: {"istio-system": {"present": true, "root_fingerprints": ["3A:5F:..."]}}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s, _pki, _trust


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        src=dict(type="path"),
        namespace=dict(type="str", default=_istio.DEFAULT_NAMESPACE),
        secret_name=dict(type="str", default="cacerts"),
        root_cert_namespaces=dict(type="list", elements="str", default=[_istio.DEFAULT_NAMESPACE]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=traceback.format_exc())
    params = module.params
    try:
        if params["src"]:
            facts = dict(source="directory", **_trust.from_directory(params["src"]))
        else:
            if not _k8s.HAS_KUBERNETES:
                module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
            cluster = _k8s.Cluster(params)
            facts = dict(
                source="api",
                **_trust.from_cluster(cluster, params["namespace"], params["secret_name"], params["root_cert_namespaces"]),
            )
    except (_k8s.K8sError, _pki.PkiError) as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__)
    module.exit_json(changed=False, root_fingerprints=_trust.root_fingerprints(facts["cacerts"]), **facts)


if __name__ == "__main__":
    main()
