#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_doctor
short_description: Istio's multicluster troubleshooting checks over every cluster of the mesh, with a report
version_added: 0.1.0
description:
  - Runs on the controller (an action plugin; the module is its fallback) over the plan of the inventory
    (M(meshfed.istio.mesh_plan)) and the state of every cluster (M(meshfed.istio.cluster_state_info)); makes no API call of its own.
  - "Trust: one root everywhere (the mesh PKI's root when O(pki_dir) is given, else the most common one); every
    intermediate chains to a root every other cluster trusts; cacerts as istiod checks it (four keys, chain, key match,
    CA bit, no SHA-1); C(istio-ca-root-cert) equal to cacerts in every sampled namespace; no C(istio-ca-secret) (self-signed
    CA, or its leftover beside cacerts); roots and intermediates expired (error) or expiring within O(expiry_warning_days)
    (warning)."
  - "Root rotation in progress: when the clusters' bundles and signing roots fit the phases of M(meshfed.istio.rotate_ca)
    (the unfinished rotation recorded in O(pki_dir), else the two roots the bundles show) and every cluster's signing root
    is trusted by every cluster (C(cacerts) and C(istio-ca-root-cert)), one warning C(rotation_in_progress) names each
    cluster's phase and the run that finishes it, instead of root mismatches; when that trust is broken, an error
    C(untrusted_intermediate) names the clusters that would reject each other."
  - "Remote secrets: every expected (watcher, watched) pair has a secret labelled C(istio/multiCluster=true) whose data key
    is the watched cluster's name; its credential works against that cluster; its server is not loopback unless
    O(allow_loopback); no cluster ID held twice; no secret for the watcher itself; none for clusters it should not watch."
  - "Primary-remote: a remote runs no istiod of its own, its istiod Service and its injection webhook point at its
    primary's east-west gateway."
  - "Networks: C(topology.istio.io/network) on the Istio namespace and on the east-west gateway; the gateway has an
    address (pending, hostname-only and NodePort named as such); the cross-network Gateway (15443, AUTO_PASSTHROUGH);
    injected pods carry C(ISTIO_META_NETWORK) of their cluster's network."
  - "Install identity: one meshID; clusterName as in the inventory, unique, and not C(Kubernetes); control planes
    within one minor version."
  - "Root rotation: every primary's istiod has C(ISTIO_MULTIROOT_MESH=true) and its mesh config
    C(defaultConfig.proxyMetadata.PROXY_CONFIG_XDS_AGENT=true) (a remote takes both from its primary), and every sampled
    injected pod there and in its remotes carries C(PROXY_CONFIG_XDS_AGENT=true); a warning, or a note when
    O(expect_rotation_flags=false)."
  - "Reachability (O(check_reachability)): a TCP connection from the control node to each east-west gateway address on
    port 15443, with a bounded timeout."
  - Each finding has an id, a severity (error, warning, info), the cluster(s), the evidence and the fix.
  - With O(report_dir), writes C(findings.json), C(report.md) (findings by severity, the fix for each, a table of the
    clusters), C(mesh.dot) and, when Graphviz is installed, C(mesh.svg), the picture the report embeds.
author:
  - meshfed.istio developers (@meshfed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
attributes:
  check_mode:
    support: full
    details: The report files are not written; C(changed) says whether they would change.
  diff_mode:
    support: none
options:
  plan:
    description: The result of M(meshfed.istio.mesh_plan) for the inventory.
    type: dict
    required: true
  states:
    description:
      - Inventory host to the RV(meshfed.istio.cluster_state_info#module:state) of its cluster, or to
        C({error, error_type}) when the cluster could not be read (reported as C(api_unreachable)).
    type: dict
    required: true
  pki_dir:
    description:
      - The mesh PKI directory of M(meshfed.istio.pki); its C(root-cert.pem) is the root every cluster must trust.
      - Empty - the most common root across the clusters is taken as the mesh's.
    type: path
    default: ""
  expiry_warning_days:
    description: A root or intermediate expiring within this many days is a warning.
    type: int
    default: 30
  allow_loopback:
    description: Remote secrets may point at loopback API servers (single-host test beds only).
    type: bool
    default: false
  expect_rotation_flags:
    description:
      - Missing flags of root rotation without restarts are a warning (C(rotation_flags)); C(false) makes them a note
        (severity info), for meshes installed with C(control_plane_multiroot=false).
    type: bool
    default: true
  check_reachability:
    description: Try a TCP connection to every east-west gateway address on port 15443.
    type: bool
    default: false
  reachability_timeout:
    description: Seconds to wait for one TCP connection.
    type: float
    default: 2.0
  report_dir:
    description:
      - Directory for findings.json, report.md, mesh.dot and mesh.svg.
      - Empty - C(<pki_dir>-report), beside the mesh PKI (nothing when O(pki_dir) is empty too); C(none) writes nothing.
    type: path
    default: ""
  dot:
    description: The Graphviz C(dot) binary that renders mesh.svg; when it is not found the report links mesh.dot instead.
    type: str
    default: dot
"""

EXAMPLES = r"""
- name: Read every cluster
  meshfed.istio.cluster_state_info:
    context: "{{ inventory_hostname }}"
  register: cluster_state

- name: Diagnose the mesh
  meshfed.istio.mesh_doctor:
    plan: "{{ mesh }}"
    states: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, ['cluster_state', 'state']))) }}"
    pki_dir: /etc/meshfed/pki
    report_dir: /var/tmp/mesh-report
  run_once: true
  delegate_to: localhost
  register: doctor
"""

RETURN = r"""
findings:
  description: Every finding, errors first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The check, for example C(root_mismatch) or C(remote_secret_missing).
      type: str
    severity:
      description: error, warning or info.
      type: str
    clusters:
      description: The cluster(s) where the problem is.
      type: list
      elements: str
    peers:
      description: Other clusters involved (the watched cluster of a remote-secret finding).
      type: list
      elements: str
    title:
      description: What the check means.
      type: str
    evidence:
      description: What was found.
      type: str
    fix:
      description: What to do.
      type: str
summary:
  description: Number of findings per severity.
  returned: always
  type: dict
  sample: {error: 0, warning: 1, info: 0}
healthy:
  description: No error-level finding.
  returned: always
  type: bool
shared_root:
  description: The root fingerprints (joined with C(, )) that every readable cluster's C(cacerts) holds, when they all hold the same; empty otherwise.
  returned: always
  type: str
summary_text:
  description: The summary the verify role prints - counts, the shared root, one line per finding, then the paths of the report and the picture.
  returned: always
  type: str
roots:
  description: SHA-256 fingerprints of the roots in each readable cluster's C(cacerts), by cluster name; an empty list where there is no C(cacerts).
  returned: always
  type: dict
  sample: {cluster1: ["AB:CD:..."], cluster2: ["AB:CD:..."]}
report:
  description: Paths of the written files (empty without O(report_dir)); C(svg) is empty when Graphviz is missing.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.meshfed.istio.plugins.module_utils import _doctor_run


def main() -> None:
    module = AnsibleModule(argument_spec=_doctor_run.ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result, warnings = _doctor_run.run(module.params, module.check_mode)
    except _doctor_run.DoctorInputError as exc:
        module.fail_json(msg=str(exc))
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
