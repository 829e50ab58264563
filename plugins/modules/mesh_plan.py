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
  - Every value is checked for its type and shape before anything is compared; a value of the wrong type
    (a list, mapping or number where a string belongs) is named with the host and the variable, never a crash.
    An unset variable, C(null) or the empty string, takes its default.
  - 'Per cluster: C(meshfed_cluster_name) (default: the inventory hostname) is a DNS-1123 label, unique, and not
    Istio''s default C(Kubernetes). C(meshfed_network) is required, a DNS-1123 label; several clusters may share a
    network. C(meshfed_primary) is set on remotes only and names exactly one host of O(primary_group), by inventory
    hostname or cluster name; a name that is one host''s inventory hostname and another''s cluster name is refused
    as ambiguous. C(meshfed_kubeconfig) and C(meshfed_context) are strings, and no two hosts may have the same pair
    (they would reach the same cluster). C(meshfed_api_server) (the API server address other clusters use, for
    remote secrets) is an C(https://host[:port]) URL with no credentials, query or fragment; a plain path is
    accepted for API proxies. C(meshfed_eastwest_external_ips) is a list of distinct IPv4/IPv6 addresses, none
    unspecified, loopback or link-local (Kubernetes refuses those as external IPs).'
  - 'Mesh-wide, every host must agree: C(meshfed_mesh_id) (required; a Kubernetes label value: letters, digits,
    C(-), C(_), C(.), at most 63 characters), C(meshfed_istioctl) (default C(istioctl)), C(meshfed_istio_version)
    (default empty: no version check; otherwise as C(istioctl version --short) prints it, such as C(1.30.1) or
    C(1.31-dev), quoted in YAML), C(meshfed_revision) (default empty; a DNS-1123 label of at most 56 characters,
    so that C(istiod-<revision>) is a Service name), C(meshfed_namespace) (default C(istio-system); a DNS-1123
    label), C(meshfed_pki_dir) (default C(<inventory_dir>/meshfed-pki); an absolute path, since a relative one
    would depend on where ansible-playbook runs and could create a second root CA), C(meshfed_allow_migration)
    (default false; accept clusters whose istiod runs on its own self-signed CA and migrate them).'
  - C(meshfed_allow_migration) is read as Ansible reads a C(bool) option, so C(-e meshfed_allow_migration=false)
    means false; true/false and the strings C(yes), C(no), C(on), C(off), C(true), C(false), C(1), C(0) (any case),
    C(y), C(n), C(t), C(f) are accepted, anything else is refused.
  - A variable whose name is within two letters of one of these (C(meshfed_allow_migrations)) is refused as a
    likely misspelling; a variable whose template fails is named with the template error.
  - A host in both O(primary_group) and O(remote_group) is refused.
  - Hosts in O(remote_group) are remotes, all others primaries.
  - Every primary watches every other cluster of the mesh, the remotes of other primaries included (RV(watches)) - an
    istiod serves endpoints only of the clusters it watches. Those are the remote secrets to create; a remote watches
    nothing, and its namespace names the primary that manages it.
author:
  - meshfed.istio developers (@meshfed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
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
names:
  description:
    - Istio's names the roles write or select, so that no role spells them out (their one home is the collection's
      Python).
  returned: success
  type: dict
  contains:
    cacerts_secret:
      description: The Secret of a plugged-in CA.
      type: str
      sample: cacerts
    istio_ca_secret:
      description: The Secret of istiod's own self-signed CA.
      type: str
      sample: istio-ca-secret
    istiod_selector:
      description: The label selector of every revision's istiod Deployment.
      type: str
      sample: app=istiod
    eastwest_gateway:
      description: The east-west gateway's Service (and Deployment).
      type: str
      sample: istio-eastwestgateway
    managed_by_labels:
      description: The labels this collection puts on what it creates.
      type: dict
      sample: {"app.kubernetes.io/managed-by": "meshfed.istio"}
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
