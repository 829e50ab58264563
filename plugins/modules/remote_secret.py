#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: remote_secret
short_description: Reader credentials in a watched cluster, and the remote secret a primary needs for it
version_added: 0.1.0
description:
  - What C(istioctl create-remote-secret) does, without istioctl. Connects to the WATCHED cluster and ensures there the
    ServiceAccount O(service_account) in O(namespace), the ClusterRole and ClusterRoleBinding C(istio-reader-clusterrole-<namespace>)
    (created only when missing; Istio's own install manages them) and a long-lived token (a C(kubernetes.io/service-account-token)
    Secret C(<service_account>-istio-remote-secret-token)), waiting (bounded) for the token controller to fill it.
  - Returns, in RV(secret), the Secret for the WATCHING primary - C(istio-remote-secret-<cluster_name>), labelled
    C(istio/multiCluster=true), annotated C(networking.istio.io/cluster=<cluster_name>), with one data key, the cluster name,
    holding a kubeconfig (server, CA data, token). Apply it to the watcher with M(kubernetes.core.k8s).
  - Idempotent - an existing token is reused and the returned secret is the same, byte for byte, on every run.
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
    details: Reports what would be created; RV(secret) is null when the token does not exist yet.
  diff_mode:
    support: none
options:
  cluster_name:
    description: Istio cluster name of the watched cluster (its clusterName); the secret's data key.
    type: str
    required: true
  namespace:
    description: Istio's namespace in the watched cluster (and of the returned secret).
    type: str
    default: istio-system
  service_account:
    description: The reader ServiceAccount.
    type: str
    default: istio-reader-service-account
  server:
    description:
      - API server address written into the kubeconfig, as the watching istiod reaches it.
      - Default - the server this module connected to.
    type: str
  allow_loopback_server:
    description:
      - Accept a loopback server (C(127.0.0.0/8), C(::1), C(localhost)). A remote istiod cannot use one (the kind pitfall),
        so it is refused unless this is set, for single-host test beds.
    type: bool
    default: false
  token_wait_timeout:
    description: Seconds to wait for the token controller to fill a new token secret.
    type: int
    default: 60
notes:
  - The returned secret holds a bearer token for the watched cluster. Register it only on tasks with C(no_log=true).
seealso:
  - name: istioctl create-remote-secret
    description: The command this module stands in for.
    link: https://istio.io/latest/docs/reference/commands/istioctl/#istioctl-create-remote-secret
"""

EXAMPLES = r"""
- name: Reader credentials in west
  meshfed.istio.remote_secret:
    context: west
    cluster_name: west
    server: https://west-api.example.com:6443
  register: west_secret
  no_log: true

- name: East watches west
  kubernetes.core.k8s:
    context: east
    definition: "{{ west_secret.secret }}"
  no_log: true
"""

RETURN = r"""
secret:
  description:
    - The remote secret for the watching primary. Contains a bearer token; keep the task that registers it C(no_log).
    - Null in check mode when the token does not exist yet.
  returned: always
  type: dict
created:
  description: Objects created (or, in check mode, to be created) in the watched cluster.
  returned: always
  type: list
  elements: str
  sample: ["secret istio-system/istio-reader-service-account-istio-remote-secret-token"]
server:
  description: The API server address written into the kubeconfig.
  returned: always
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _k8s, _names, _remote_secret


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        cluster_name=dict(type="str", required=True),
        namespace=dict(type="str", default="istio-system"),
        service_account=dict(type="str", default=_remote_secret.READER_SA),
        server=dict(type="str"),
        allow_loopback_server=dict(type="bool", default=False),
        token_wait_timeout=dict(type="int", default=60),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    params = module.params
    name = params["cluster_name"]
    if not _names.is_dns1123_label(name):
        module.fail_json(msg=f"cluster_name {name!r} is not a DNS-1123 label")
    try:
        cluster = _k8s.Cluster(params)
        server = params["server"] or cluster.host
        if _remote_secret.is_loopback(server) and not params["allow_loopback_server"]:
            module.fail_json(
                msg=f"cluster {name}: the API server address {server} is loopback, which the watching istiod cannot reach; "
                "set server (meshfed_api_server) to an address other clusters reach, or allow_loopback_server for a single-host test bed"
            )
        created = _remote_secret.ensure_reader(cluster, params["namespace"], params["service_account"], module.check_mode)
        secret = None
        if not (module.check_mode and created):
            token, ca_data = _remote_secret.read_token(cluster, params["namespace"], params["service_account"], params["token_wait_timeout"])
            secret = _remote_secret.remote_secret(name, params["namespace"], _remote_secret.kubeconfig(name, server, ca_data, token))
    except (_k8s.K8sError, _remote_secret.RemoteSecretError) as exc:
        module.fail_json(msg=f"cluster {name}: {exc}", error_type=type(exc).__name__)
    module.exit_json(changed=bool(created), created=created, server=server, secret=secret)


if __name__ == "__main__":
    main()
