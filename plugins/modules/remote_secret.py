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
  - Everything it creates carries the label C(app.kubernetes.io/managed-by=meshfed.istio), the returned secret too; the
    C(meshfed.istio.leave) playbook deletes exactly what carries it.
  - "Token rotation (C(istioctl) cannot do it, istio#56358): with O(rotate_token_older_than_days), a new token Secret
    C(<service_account>-istio-remote-secret-token-<UTC stamp>) is created when the newest one is at least that old, and
    RV(secret) carries the new token. The older token Secrets stay until a later run with O(retire_old_tokens=true), made
    after every watcher got the new secret - so no watcher is ever left with a deleted token."
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
  revision:
    description:
      - The Istio revision installed in the watched cluster (empty - the default revision). Istio's install names its
        reader ClusterRole after it (C(istio-reader-clusterrole-<revision>-<namespace>)); the reader role is created
        only when that one is missing.
    type: str
    default: ""
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
  rotate_token_older_than_days:
    description:
      - Create a new reader token when the newest token Secret is at least this many days old (V(0) - now). Unset - never.
    type: int
  retire_old_tokens:
    description:
      - Delete every reader token Secret of this collection but the newest, after checking from the control node that the
        newest token authenticates at the API server this module reached and may read services and the Istio namespace.
        A deleted token Secret's token is rejected by the API server from then on.
      - Run it only once every watcher holds the remote secret with the newest token (the remote_secrets role does).
    type: bool
    default: false
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
rotated:
  description: Whether a new token Secret was (or, in check mode, would be) created by O(rotate_token_older_than_days).
  returned: always
  type: bool
old_tokens:
  description: Older reader token Secrets of this collection, still there (to retire once every watcher has the new secret).
  returned: always
  type: list
  elements: str
retired:
  description: Token Secrets deleted (or, in check mode, to be deleted) by O(retire_old_tokens).
  returned: always
  type: list
  elements: str
"""

import datetime
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s, _names, _remote_secret


def main() -> None:
    argument_spec = _k8s.auth_argument_spec()
    argument_spec.update(
        cluster_name=dict(type="str", required=True),
        namespace=dict(type="str", default=_istio.DEFAULT_NAMESPACE),
        revision=dict(type="str", default=""),
        service_account=dict(type="str", default=_istio.READER_SERVICE_ACCOUNT),
        server=dict(type="str"),
        allow_loopback_server=dict(type="bool", default=False),
        token_wait_timeout=dict(type="int", default=60),
        rotate_token_older_than_days=dict(type="int", no_log=False),
        retire_old_tokens=dict(type="bool", default=False),
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
        namespace, account = params["namespace"], params["service_account"]
        created = _remote_secret.ensure_reader(cluster, namespace, account, module.check_mode, params["revision"])
        tokens = _remote_secret.token_secrets(cluster, namespace, account)
        now = datetime.datetime.now(datetime.UTC)
        rotated = not created and _remote_secret.rotation_due(tokens, params["rotate_token_older_than_days"], now)
        if rotated:
            created.append(_remote_secret.create_token(cluster, namespace, account, _remote_secret.rotated_name(account, now), module.check_mode))
        secret, retired = None, []
        if not (module.check_mode and created):
            if rotated:
                tokens = _remote_secret.token_secrets(cluster, namespace, account)
            token, ca_data = _remote_secret.read_token(cluster, namespace, tokens[0]["metadata"]["name"], params["token_wait_timeout"])
            secret = _remote_secret.remote_secret(name, namespace, _remote_secret.kubeconfig(name, server, ca_data, token))
            if params["retire_old_tokens"] and len(tokens) > 1:
                _remote_secret.check_token(cluster, namespace, token, ca_data)
                retired = _remote_secret.retire(cluster, namespace, account, module.check_mode)
        old_tokens = [f"secret {namespace}/{item['metadata']['name']}" for item in tokens[1:]]
    except (_k8s.K8sError, _remote_secret.RemoteSecretError) as exc:
        module.fail_json(msg=f"cluster {name}: {exc}", error_type=type(exc).__name__)
    module.exit_json(
        changed=bool(created or retired),
        created=created,
        server=server,
        secret=secret,
        rotated=rotated,
        old_tokens=[] if retired else old_tokens,
        retired=retired,
    )


if __name__ == "__main__":
    main()
