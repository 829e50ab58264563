#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restart_workloads
short_description: Restart the workloads of injected namespaces in bounded batches, once per token
version_added: 0.1.0
description:
  - Restarts the Deployments, StatefulSets and DaemonSets of every namespace with sidecar injection (label
    C(istio-injection=enabled), or C(istio.io/rev) unless C(istio-injection=disabled)) or of O(namespaces), so that their
    proxies start again with certificates of the CA now in place - after a CA migration or rotation.
  - A restart is what C(kubectl rollout restart) does - the pod template annotation C(kubectl.kubernetes.io/restartedAt),
    one timestamp per batch - plus the annotation C(meshfed.istio/restarted-for=<token>).
  - O(batch_size) workloads at a time; each batch rolled out (as C(kubectl rollout status) reads the status - the
    controller saw the change, every replica updated, ready and available, no old replica left) before the next starts.
    The whole restart is bounded by O(timeout); when it passes, the module fails naming the workloads that did not roll
    out and those not restarted yet, and starts no further batch.
  - A workload whose pod template carries the token was restarted for it and is not restarted again, so a rerun writes
    nothing (C(changed=false)) and an interrupted restart resumes - the batch it left in flight is waited for first.
  - A paused Deployment, and a StatefulSet or DaemonSet with C(updateStrategy OnDelete), would not roll out on a template
    change; they are left alone and listed in RV(skipped).
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - kubernetes >= 24.2.0 (Python client)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
  - kubernetes.core.k8s_auth_options
  - meshfed.istio.request_timeout
attributes:
  check_mode:
    support: full
    details: Lists the workloads that would restart, in their batches; writes nothing.
  diff_mode:
    support: full
    details: The restart marker of each workload that restarts, before and after.
options:
  token:
    description:
      - What this restart is for, for example C(rotate_ca/2026-q4). Workloads already restarted for it are skipped; a new
        restart needs a new token.
    type: str
    required: true
  namespaces:
    description: Restart the workloads of these namespaces; empty - of every namespace with sidecar injection.
    type: list
    elements: str
    default: []
  batch_size:
    description: How many workloads restart at once.
    type: int
    default: 2
  timeout:
    description: Seconds the whole restart may take, every batch's rollout included.
    type: int
    default: 600
seealso:
  - module: meshfed.istio.rotate_ca
"""

EXAMPLES = r"""
- name: Restart the injected workloads after a CA migration, two at a time
  meshfed.istio.restart_workloads:
    context: east
    token: cacerts-migration-2026-11
    batch_size: 2
    timeout: 600

- name: The workloads of one namespace, one at a time
  meshfed.istio.restart_workloads:
    context: east
    token: "rotate_ca/2026-q4"
    namespaces: [shop]
    batch_size: 1
"""

RETURN = r"""
restarted:
  description: The workloads restarted (in check mode - that would restart), C(<Kind> <namespace>/<name>), in order.
  returned: success
  type: list
  elements: str
batches:
  description: RV(restarted) in its batches.
  returned: success
  type: list
  elements: list
resumed:
  description: Workloads an interrupted run had restarted for the token whose rollout this run waited for.
  returned: success
  type: list
  elements: str
already:
  description: Workloads restarted for the token before this run, rolled out.
  returned: success
  type: list
  elements: str
skipped:
  description: Workloads left alone - C(workload) and C(reason) (paused, C(updateStrategy OnDelete)).
  returned: success
  type: list
  elements: dict
namespaces:
  description: The namespaces whose workloads were considered.
  returned: success
  type: list
  elements: str
waited:
  description: Seconds the restart took, rollouts included.
  returned: success
  type: float
api_calls:
  description: How many API requests the run took.
  returned: success
  type: int
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _k8s, _workloads


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        token=dict(type="str", required=True, no_log=False),
        namespaces=dict(type="list", elements="str", default=[]),
        batch_size=dict(type="int", default=2),
        timeout=dict(type="int", default=600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    params = module.params
    if params["batch_size"] < 1 or params["timeout"] < 1:
        module.fail_json(msg="batch_size and timeout must be at least 1")
    settings = _workloads.Settings(tuple(params["namespaces"]), params["batch_size"], params["timeout"])
    try:
        cluster = _k8s.Cluster(params)
        result = _workloads.restart(cluster, params["token"], settings, module.check_mode)
    except (_workloads.RestartError, _k8s.K8sError) as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(api_calls=cluster.calls, **result)


if __name__ == "__main__":
    main()
