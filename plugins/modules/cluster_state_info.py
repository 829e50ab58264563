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
    is reported under C(unsafe) and never run, opened or tried. No problem quotes a value. The server is shown without
    credentials, query or fragment; the credential test of an untrusted server is bounded by O(request_timeout) for
    the whole request and 1 MiB per answer, and an HTTP reason phrase is reduced to letters, digits and C( ._-).
  - Input to M(meshfed.istio.mesh_doctor), which turns the states of all clusters into findings.
author:
  - meshfed.istio developers (@meshfed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
  - meshfed.istio.attributes.info_module
  - kubernetes.core.k8s_auth_options
  - meshfed.istio.request_timeout
options:
  namespace:
    description: The Istio namespace.
    type: str
    default: istio-system
  check_credentials:
    description: Try the credential of every remote secret against the cluster it names.
    type: bool
    default: true
  allow_loopback:
    description:
      - Try the credential of a remote secret whose server names this host (a loopback, unspecified or IPv4-mapped
        loopback address, C(localhost)). Off by default - a planted remote secret must not make the control node call
        its own services; on for single-host test beds, where every API server listens on loopback.
    type: bool
    default: false
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
  description: The cluster's mesh state, facts only.
  returned: success
  type: dict
  contains:
    api_ca_fingerprints:
      description: The cluster's own API server CA (ConfigMap C(kube-root-ca.crt) of the Istio namespace), which a remote
        secret for this cluster must pin.
      type: list
      elements: str
    namespace:
      description: The Istio namespace - C(present), C(labels), C(annotations).
      type: dict
    cacerts:
      description:
        - The facts of M(meshfed.istio.cacerts_info) about secret C(cacerts) (present, complete, usable, roots,
          intermediate, key_matches, problems...) plus C(chain_root), the fingerprint of the root the intermediate chains
          to, validity ignored.
      type: dict
    istio_ca_secret:
      description: istiod's own self-signed CA - C(present), C(root_fingerprints).
      type: dict
    root_cert_configmaps:
      description: Per namespace, the C(istio-ca-root-cert) ConfigMap (what workloads trust) - C(present), C(root_fingerprints).
      type: dict
    istiods:
      description:
        - Per istiod Deployment - C(name), C(revision), C(version), C(cluster_id), C(network), C(multiroot) (its
          C(ISTIO_MULTIROOT_MESH), as text), C(ready_replicas).
      type: list
      elements: dict
    istiod_service:
      description: The C(istiod) Service - C(present), C(selector), C(endpoint_addresses).
      type: dict
    injector:
      description: meshID, clusterName, network and remotePilotAddress as installed (the sidecar injector's values).
      type: dict
    mesh_config:
      description:
        - The mesh config - C(present), C(mesh_id), C(trust_domain), C(xds_agent) (its
          C(defaultConfig.proxyMetadata.PROXY_CONFIG_XDS_AGENT) as text, empty when unset).
      type: dict
    installs:
      description:
        - The installs M(meshfed.istio.istioctl_install) recorded in the namespace (its C(meshfed-install-<name>)
          ConfigMaps that carry the collection's managed-by label) - operator name to the recorded digest.
        - Input of the filter P(meshfed.istio.istio_installed#filter).
      type: dict
    injection_webhooks:
      description: The sidecar injector webhooks and where each sends its requests (C(url), or C(service) and C(path)).
      type: list
      elements: dict
    gateway:
      description: The east-west gateway Service - C(present), C(name), C(addresses), C(problem), C(type), C(labels).
      type: dict
    gateway_crd:
      description: Whether Istio's Gateway kind is served.
      type: bool
    cross_network_gateways:
      description: Gateways exposing C(*.local) on 15443 with C(AUTO_PASSTHROUGH) - C(name), C(hosts), C(selector).
      type: list
      elements: dict
    remote_secrets:
      description:
        - Per secret labelled C(istio/multiCluster=true) - C(name), C(cluster_annotation), C(data_keys), C(unsafe) (each
          problem prefixed with the secret and key), and C(entries), per data key - C(key), C(server), C(parsed),
          C(loopback), C(ca_fingerprints) (of its C(certificate-authority-data)), C(unsafe) (why it was not tried,
          field names only) and C(credential) (the test result - C(ok), C(error), C(error_type), C(calls) - or null when
          not tried).
        - Never a token or a key.
      type: list
      elements: dict
    injected_pods:
      description:
        - A sample of injected pods - C(namespace), C(name), and from the C(istio-proxy) container (a sidecar or a native
          sidecar) C(network) (its C(ISTIO_META_NETWORK)) and C(xds_agent) (its C(PROXY_CONFIG_XDS_AGENT)).
      type: list
      elements: dict
    objects:
      description:
        - With O(objects) only. Key C(group/Kind/namespace/name); value labels, annotations and spec, or the type and the
          SHA-256 digest of each value of a Secret.
      type: dict
      returned: when O(objects=true)
api_calls:
  description: How many API requests the read took (list calls, plus two per remote-secret credential tried).
  returned: success
  type: int
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _cluster_state, _istio, _k8s, _pki


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        namespace=dict(type="str", default=_istio.DEFAULT_NAMESPACE),
        check_credentials=dict(type="bool", default=True),
        sample_size=dict(type="int", default=200),
        objects=dict(type="bool", default=False),
        allow_loopback=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=traceback.format_exc())
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    try:
        cluster = _k8s.Cluster(module.params)
        state = _cluster_state.read(
            cluster,
            module.params["namespace"],
            check_credentials=module.params["check_credentials"],
            pod_sample=module.params["sample_size"],
            configmap_sample=module.params["sample_size"],
            objects=module.params["objects"],
            allow_loopback=module.params["allow_loopback"],
        )
    except _k8s.K8sError as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__)
    credential_calls = sum((entry["credential"] or {}).get("calls", 0) for secret in state["remote_secrets"] for entry in secret["entries"])
    module.exit_json(changed=False, state=state, api_calls=cluster.calls + credential_calls)


if __name__ == "__main__":
    main()
