#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_state_info
short_description: Everything the mesh doctor checks in one cluster, read in batches
version_added: 0.1.0
description:
  - Reads, with one list call per kind, the Istio namespace and its labels, the secrets of the Istio namespace (C(cacerts),
    C(istio-ca-secret), remote secrets), its ConfigMaps (mesh config, sidecar injector values), Services, Deployments,
    the istiod EndpointSlices, Istio Gateways, the sidecar injector webhooks, and across namespaces the
    C(istio-ca-root-cert) ConfigMaps and injected pods (samples of bounded size).
  - Returns facts only - fingerprints, subjects, names, addresses, labels - never a key or a token.
  - The credential of every remote secret (a primary's secret for a cluster it watches) is tried from here against the
    server it names, by listing Services and EndpointSlices, as istiod does; the token never leaves the module.
  - A remote secret is untrusted input - anyone who can write a Secret in the Istio namespace can plant one. Only its
    inline data is taken (server, C(certificate-authority-data), C(token) or C(client-certificate-data) and
    C(client-key-data)); a kubeconfig with anything else - C(exec), C(auth-provider), a file name (C(tokenFile),
    C(client-certificate), C(client-key), C(certificate-authority)), C(proxy-url), C(insecure-skip-tls-verify),
    basic authentication, impersonation, a token that an HTTP header cannot carry, a server that is not an https URL -
    is reported under C(unsafe) and never run, opened or tried. No problem quotes a value.
  - Input to M(meshfed.istio.mesh_doctor), which turns the states of all clusters into findings.
author:
  - meshfed.istio developers (@meshfed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubernetes.core.k8s_auth_options
  - meshfed.istio.request_timeout
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
    details: Reads only.
  diff_mode:
    support: none
options:
  namespace:
    description: The Istio namespace.
    type: str
    default: istio-system
  check_credentials:
    description: Try the credential of every remote secret against the cluster it names.
    type: bool
    default: true
  sample_size:
    description:
      - At most this many injected pods and C(istio-ca-root-cert) ConfigMaps are read across namespaces.
    type: int
    default: 200
  objects:
    description:
      - Also return, under C(state.objects), the objects the roles of this collection write - the Istio namespace, its
        C(cacerts) and remote secrets (label C(istio/multiCluster=true)), Services, Istio Gateways and VirtualServices -
        as labels, annotations (without C(kubectl.kubernetes.io/last-applied-configuration)) and spec, a Secret as its
        type and the SHA-256 digest of each value (never the value). One or two more list calls.
      - The preflight role reads them once, so later roles can skip a write that would change nothing
        (filter P(meshfed.istio.k8s_unchanged#filter)).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Read the mesh state of this cluster
  meshfed.istio.cluster_state_info:
    kubeconfig: ~/.kube/config
    context: east
  register: east_state

- name: Root fingerprints of its cacerts
  ansible.builtin.debug:
    msg: "{{ east_state.state.cacerts.roots | map(attribute='fingerprint_sha256') }}"
"""

RETURN = r"""
state:
  description:
    - The cluster's mesh state. Keys - C(namespace) (present, labels, annotations), C(cacerts) (the facts of
      M(meshfed.istio.cacerts_info) plus C(chain_root), the fingerprint of the root the intermediate chains to, validity
      ignored), C(istio_ca_secret), C(root_cert_configmaps) (namespace to root fingerprints), C(istiods) (per istiod
      Deployment - name, revision, version, cluster_id, network, ready_replicas), C(istiod_service) (endpoint addresses),
      C(injector) and C(mesh_config) (meshID, clusterName, network, remotePilotAddress as installed),
      C(injection_webhooks), C(gateway) (the east-west gateway - addresses, problem, type, labels), C(gateway_crd),
      C(cross_network_gateways), C(remote_secrets) (per secret - name, cluster annotation, data keys, per key the
      server, whether it is loopback, C(unsafe) (why it was not tried, field names only) and the credential test result;
      per secret C(unsafe) again, each problem prefixed with the secret and key), C(injected_pods) (namespace, name, network), and
      with O(objects) C(objects) (key C(group/Kind/namespace/name), value labels, annotations and spec, or type and value
      digests of a Secret).
  returned: success
  type: dict
api_calls:
  description: How many API requests the read took (list calls, plus two per remote-secret credential tried).
  returned: success
  type: int
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _cluster_state, _k8s, _pki


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        namespace=dict(type="str", default="istio-system"),
        check_credentials=dict(type="bool", default=True),
        sample_size=dict(type="int", default=200),
        objects=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=traceback.format_exc())
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    try:
        cluster = _k8s.Cluster(module.params)
        state = _cluster_state.read(
            cluster, module.params["namespace"], check_credentials=module.params["check_credentials"],
            pod_sample=module.params["sample_size"], configmap_sample=module.params["sample_size"], objects=module.params["objects"],
        )
    except _k8s.K8sError as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__)
    credential_calls = sum(
        (entry["credential"] or {}).get("calls", 0) for secret in state["remote_secrets"] for entry in secret["entries"]
    )
    module.exit_json(changed=False, state=state, api_calls=cluster.calls + credential_calls)


if __name__ == "__main__":
    main()
