#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_plan
short_description: Read the inventory as one mesh and refuse an inconsistent one
version_added: 0.1.0
description:
  - Reads the variables of every cluster host of the inventory on the controller and returns the
    topology the roles follow, or fails listing every problem, each naming the host and the variable to set.
  - Checks that cluster names are unique DNS-1123 labels and not Istio's default C(Kubernetes), that all
    clusters share one C(meshfed_mesh_id), that every cluster has a DNS-1123 C(meshfed_network), that the
    inventory has a primary, and that every remote names a primary of the inventory in C(meshfed_primary).
  - 'Per-cluster host variables: C(meshfed_cluster_name) (default: the inventory hostname), C(meshfed_network),
    C(meshfed_primary) (remotes only), C(meshfed_kubeconfig), C(meshfed_context), C(meshfed_api_server) (the API
    server address other clusters use, for remote secrets), C(meshfed_eastwest_external_ips).'
  - 'Mesh-wide variables, which every host must agree on: C(meshfed_mesh_id) (required), C(meshfed_istioctl)
    (default C(istioctl)), C(meshfed_istio_version) (default empty: no version check), C(meshfed_revision) (default
    empty), C(meshfed_namespace) (default C(istio-system)), C(meshfed_pki_dir) (default C(<inventory_dir>/meshfed-pki)),
    C(meshfed_allow_migration) (default false; accept clusters whose istiod runs on its own self-signed CA and migrate them).'
  - Hosts in O(remote_group) are remotes, all others primaries.
  - Every primary watches every other primary and its own remotes (RV(watches)); those are the remote secrets to create.
author:
  - meshfed.istio developers (@meshfed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: none
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
options:
  hosts:
    description: The cluster hosts; default all hosts of O(primary_group) and O(remote_group).
    type: list
    elements: str
  primary_group:
    description: Inventory group of the primary clusters.
    type: str
    default: istio_primary
  remote_group:
    description: Inventory group of the remote clusters.
    type: str
    default: istio_remote
"""

EXAMPLES = r"""
- name: Read the inventory as one mesh
  meshfed.istio.mesh_plan:
  run_once: true
  register: mesh
"""

RETURN = r"""
settings:
  description: The mesh-wide settings (istioctl, istio_version, revision, namespace, pki_dir, allow_migration).
  returned: success
  type: dict
clusters:
  description:
    - Per host, its settings (name, role, network, mesh_id, primary, kubeconfig, context, api_server,
      eastwest_external_ips), and for remotes C(primary_host) and C(primary_name), for primaries C(remotes).
    - C(auth) holds the cluster's C(kubeconfig) and C(context) when set, ready for C(module_defaults) of
      C(group/meshfed.istio.k8s) and C(group/kubernetes.core.k8s).
  returned: success
  type: dict
primaries:
  description: Hosts of the primary clusters.
  returned: success
  type: list
  elements: str
remotes:
  description: Hosts of the remote clusters.
  returned: success
  type: list
  elements: str
networks:
  description: The networks of the mesh.
  returned: success
  type: list
  elements: str
mesh_id:
  description: The mesh ID.
  returned: success
  type: str
watches:
  description: Every (watcher, watched) pair of hosts; the watcher needs a remote secret for the watched cluster.
  returned: success
  type: list
  elements: dict
  sample: [{"watcher": "east", "watched": "west"}]
watched_by:
  description: Per host, the hosts it watches.
  returned: success
  type: dict
problems:
  description: Every reason the inventory is not one consistent mesh.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="list", elements="str"),
            primary_group=dict(type="str", default="istio_primary"),
            remote_group=dict(type="str", default="istio_remote"),
        ),
        supports_check_mode=True,
    )
    module.fail_json(msg="meshfed.istio.mesh_plan runs on the controller through its action plugin")


if __name__ == "__main__":
    main()
