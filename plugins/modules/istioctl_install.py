#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: istioctl_install
short_description: Install an IstioOperator with istioctl, only when it is not installed already
version_added: 0.1.0
description:
  - Runs C(istioctl install -y -f <operator>) against one cluster (the in-cluster IstioOperator controller is gone since
    Istio 1.24; IstioOperator documents are input to istioctl only).
  - After a successful install it records a digest of the operator document and of the istioctl version in the ConfigMap
    C(meshfed-install-<operator name>) of the operator's namespace. When the recorded digest equals the one this run
    would install, istioctl is not run and nothing changes. A new istioctl version (an upgrade) or any change of the
    document installs again.
  - Check mode compares the digests and runs nothing.
  - Takes the shared Kubernetes auth options, so C(module_defaults) of the action group C(group/meshfed.istio.k8s)
    apply. istioctl is given O(kubeconfig) (a path, or a dict written to a private temporary file for the run) and
    O(context) only; the module refuses the options istioctl has no flag for (O(host), O(api_key), client
    certificates, proxies, impersonation...).
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - istioctl on the control node
  - kubernetes >= 24.2.0 (Python client)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
  - kubernetes.core.k8s_auth_options
  - meshfed.istio.request_timeout
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The digests before and after.
options:
  operator:
    description: The IstioOperator document (C(metadata.name) required; C(metadata.namespace) defaults to C(istio-system)).
    type: dict
    required: true
  istioctl:
    description: istioctl binary (a name on PATH or a path).
    type: str
    default: istioctl
  readiness_timeout:
    description: Seconds istioctl waits for the installed components to become ready.
    type: int
    default: 300
seealso:
  - name: istioctl install
    description: The command this module runs.
    link: https://istio.io/latest/docs/reference/commands/istioctl/#istioctl-install
"""

EXAMPLES = r"""
- name: Control plane of a primary
  meshfed.istio.istioctl_install:
    kubeconfig: ~/.kube/config
    context: east
    operator:
      apiVersion: install.istio.io/v1alpha1
      kind: IstioOperator
      metadata: {name: control-plane, namespace: istio-system}
      spec:
        values:
          global:
            meshID: mesh1
            multiCluster: {clusterName: east}
            network: network1
"""

RETURN = r"""
digest:
  description: SHA-256 of the operator document and the istioctl version.
  returned: always
  type: str
previous_digest:
  description: The digest recorded by the last install, null when there was none.
  returned: always
  type: str
istioctl_version:
  description: What C(istioctl version --remote=false --short) reported.
  returned: always
  type: str
stdout_lines:
  description: istioctl's output, when it ran.
  returned: changed and not check mode
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _istioctl, _k8s


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        operator=dict(type="dict", required=True),
        istioctl=dict(type="str", default="istioctl"),
        readiness_timeout=dict(type="int", default=300),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    params = module.params
    refusal = _istioctl.auth_refusal(params, "istioctl_install")
    if refusal:
        module.fail_json(msg=refusal)
    operator = params["operator"]
    if not (operator.get("metadata") or {}).get("name"):
        module.fail_json(msg="operator.metadata.name is required: it names the install and its record")
    operator.setdefault("metadata", {}).setdefault("namespace", _istio.DEFAULT_NAMESPACE)
    try:
        cluster = _k8s.Cluster(params)
        result = _istioctl.ensure(
            params["istioctl"], operator, cluster, params["kubeconfig"], params["context"], params["readiness_timeout"], module.check_mode
        )
    except (_istioctl.IstioctlError, _k8s.K8sError) as exc:
        module.fail_json(msg=f"{cluster_label(params)}: {exc}")
    if module._diff:
        result["diff"] = dict(before={"digest": result["previous_digest"]}, after={"digest": result["digest"]})
    module.exit_json(**result)


def cluster_label(params: dict) -> str:
    return f"context {params['context']}" if params.get("context") else "the default context"


if __name__ == "__main__":
    main()
