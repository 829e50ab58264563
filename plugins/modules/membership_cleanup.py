#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: membership_cleanup
short_description: Delete what meshfed.istio created for a cluster's mesh membership, and nothing else
version_added: 0.1.0
description:
  - The module of the C(meshfed.istio.leave) playbook. In one cluster, deletes objects this collection created, recognised
    by kind, name and the label C(app.kubernetes.io/managed-by=meshfed.istio) together; an object of the same kind or name
    without the label (Istio's own reader ServiceAccount and ClusterRole, a remote secret made by hand or by istioctl) is
    never deleted.
  - Each deletion carries the object's uid as a precondition, so an object recreated since it was read is left alone.
  - Missing objects are not an error - a leave interrupted half way is finished by running it again.
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - kubernetes >= 24.2.0 (Python client), unless the kubeconfig is read directly (see the collection's README)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubernetes.core.k8s_auth_options
  - meshfed.istio.request_timeout
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
    details: RV(deleted) lists what would be deleted; nothing is.
  diff_mode:
    support: none
options:
  namespace:
    description: Istio's namespace in this cluster.
    type: str
    default: istio-system
  remote_secrets_of:
    description:
      - Delete the remote secrets of this collection (labelled C(istio/multiCluster=true) and managed-by) that hold any of
        these clusters (by data key or C(networking.istio.io/cluster) annotation).
    type: list
    elements: str
    default: []
  all_remote_secrets:
    description: Delete every remote secret of this collection in this cluster (a leaving primary holds the others' tokens).
    type: bool
    default: false
  reader:
    description:
      - Delete the reader identity this collection created here - its token Secrets, and the ServiceAccount O(service_account),
        the ClusterRole and ClusterRoleBinding C(istio-reader-clusterrole-<namespace>) when they carry the label.
    type: bool
    default: false
  service_account:
    description: The reader ServiceAccount.
    type: str
    default: istio-reader-service-account
  uninstall_istio:
    description:
      - Run C(istioctl uninstall --purge -y) for this cluster (O(kubeconfig) and O(context) only) when this collection
        installed Istio here (its install records, ConfigMaps C(meshfed-install-*) with the label, exist), then delete those
        records, so that a later join installs Istio again, and the C(cacerts) Secret this collection wrote (the cluster's
        intermediate CA key; with istiod gone nothing there may keep signing for the mesh). Without records nothing is
        uninstalled.
    type: bool
    default: false
  istioctl:
    description: istioctl on the control node (for O(uninstall_istio)).
    type: str
    default: istioctl
  uninstall_timeout:
    description: Seconds C(istioctl uninstall) may take.
    type: int
    default: 300
notes:
  - Tokens are never read or returned; RV(deleted) names objects only.
seealso:
  - module: meshfed.istio.remote_secret
"""

EXAMPLES = r"""
- name: East forgets edge, which leaves the mesh
  meshfed.istio.membership_cleanup:
    context: east
    remote_secrets_of: [edge]

- name: Edge drops the reader identity the collection made, and Istio
  meshfed.istio.membership_cleanup:
    context: edge
    all_remote_secrets: true
    reader: true
    uninstall_istio: true
"""

RETURN = r"""
deleted:
  description: Objects deleted (or, in check mode, to be deleted), as C(<kind> [<namespace>/]<name>).
  returned: always
  type: list
  elements: str
  sample: ["secret istio-system/istio-remote-secret-edge"]
uninstalled:
  description: Whether istioctl uninstall ran (or, in check mode, would run).
  returned: always
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _istioctl, _k8s, _membership


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        namespace=dict(type="str", default=_istio.DEFAULT_NAMESPACE),
        remote_secrets_of=dict(type="list", elements="str", default=[], no_log=False),
        all_remote_secrets=dict(type="bool", default=False),
        reader=dict(type="bool", default=False),
        service_account=dict(type="str", default=_istio.READER_SERVICE_ACCOUNT),
        uninstall_istio=dict(type="bool", default=False),
        istioctl=dict(type="str", default="istioctl"),
        uninstall_timeout=dict(type="int", default=300),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    params = module.params
    refusal = _istioctl.auth_refusal(params, "uninstall_istio") if params["uninstall_istio"] else ""
    if refusal:
        module.fail_json(msg=refusal)
    deleted, uninstalled = [], False
    try:
        cluster = _k8s.Cluster(params)
        deleted += _membership.cleanup(
            cluster,
            params["namespace"],
            remote_secrets_of=params["remote_secrets_of"],
            all_remote_secrets=params["all_remote_secrets"],
            reader=False,
            install_records=False,
            service_account=params["service_account"],
            check_mode=module.check_mode,
        )
        records = (
            _membership.install_records_to_delete(cluster.items("listing configmaps", _k8s.namespaced(params["namespace"], "configmaps")))
            if params["uninstall_istio"]
            else []
        )
        if records:
            uninstalled = True
            if not module.check_mode:
                with _istioctl.KubeconfigFile(params["kubeconfig"]) as path:
                    _istioctl.uninstall(params["istioctl"], path, params["context"], params["uninstall_timeout"])
        deleted += _membership.cleanup(
            cluster,
            params["namespace"],
            remote_secrets_of=None,
            all_remote_secrets=False,
            reader=params["reader"],
            install_records=params["uninstall_istio"],
            service_account=params["service_account"],
            check_mode=module.check_mode,
        )
    except (_k8s.K8sError, _istioctl.IstioctlError) as exc:
        module.fail_json(msg=f"context {params.get('context') or '(default)'}: {exc}", deleted=deleted, error_type=type(exc).__name__)
    module.exit_json(changed=bool(deleted) or uninstalled, deleted=deleted, uninstalled=uninstalled)


if __name__ == "__main__":
    main()
