#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: eastwest_gateway_info
short_description: Addresses of a cluster's east-west gateway, and why it has none
version_added: 0.1.0
description:
  - Reads the Service C(istio-eastwestgateway) and returns the addresses other networks and remote istiods use to reach
    the cluster (C(spec.externalIPs), then the IPs of C(status.loadBalancer.ingress)).
  - When there is none, RV(problem) names the case and its fix - a LoadBalancer still pending (no load balancer
    implementation; set external IPs), one with only a hostname (istiod needs an IP), a NodePort or ClusterIP Service,
    or no Service at all.
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
    description: Namespace of the gateway Service.
    type: str
    default: istio-system
  name:
    description: Name of the gateway Service.
    type: str
    default: istio-eastwestgateway
"""

EXAMPLES = r"""
- name: Wait (bounded) for the east-west gateway to get an address
  meshfed.istio.eastwest_gateway_info:
    context: east
  register: gateway
  until: gateway.addresses | length > 0
  retries: 30
  delay: 2
"""

RETURN = r"""
addresses:
  description: Addresses of the gateway, external IPs first.
  returned: always
  type: list
  elements: str
problem:
  description: Why the gateway has no usable address, with the fix; null when it has one.
  returned: always
  type: str
service_type:
  description: The Service type, null when the Service does not exist.
  returned: always
  type: str
labels:
  description: Labels of the Service (the network label among them).
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(namespace=dict(type="str", default=_istio.DEFAULT_NAMESPACE), name=dict(type="str", default=_istio.EASTWEST_GATEWAY))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    try:
        service = _k8s.Cluster(module.params).service(module.params["namespace"], module.params["name"])
    except _k8s.K8sError as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__)
    addresses, problem = _istio.gateway_address_problem(service)
    module.exit_json(
        changed=False,
        addresses=addresses,
        problem=problem,
        service_type=(service or {}).get("spec", {}).get("type"),
        labels=(service or {}).get("metadata", {}).get("labels") or {},
    )


if __name__ == "__main__":
    main()
