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
  - Runs on the control node over the plan of the inventory (M(meshfed.istio.mesh_plan)) and the state of every cluster
    (M(meshfed.istio.cluster_state_info)); makes no API call of its own.
  - "Trust: one root everywhere (the mesh PKI's root when O(pki_dir) is given, else the most common one); every
    intermediate chains to a root every other cluster trusts; cacerts as istiod checks it (four keys, chain, key match,
    CA bit, no SHA-1); C(istio-ca-root-cert) equal to cacerts in every sampled namespace; no C(istio-ca-secret) (self-signed
    CA, or its leftover beside cacerts); roots and intermediates expired (error) or expiring within O(expiry_warning_days)
    (warning)."
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
  - "Reachability (O(check_reachability)): a TCP connection from the control node to each east-west gateway address on
    port 15443, with a bounded timeout."
  - Each finding has an id, a severity (error, warning, info), the cluster(s), the evidence and the fix.
  - With O(report_dir), writes C(findings.json), C(report.md) (findings by severity, the fix for each, a table of the
    clusters), C(mesh.dot) and, when Graphviz is installed, C(mesh.svg), the picture the report embeds.
author:
  - meshfed.istio developers (@meshfed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
    details: The report files are not written; RV(changed) says whether they would change.
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
      - The mesh PKI directory of M(meshfed.istio.cacerts); its C(root-cert.pem) is the root every cluster must trust.
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
  check_reachability:
    description: Try a TCP connection to every east-west gateway address on port 15443.
    type: bool
    default: false
  reachability_timeout:
    description: Seconds to wait for one TCP connection.
    type: float
    default: 2.0
  report_dir:
    description: Directory for findings.json, report.md, mesh.dot and mesh.svg; empty writes nothing.
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
report:
  description: Paths of the written files (empty without O(report_dir)); C(svg) is empty when Graphviz is missing.
  returned: always
  type: dict
"""

import json
import os
import shutil
import socket
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.meshfed.istio.plugins.module_utils import _doctor, _doctor_report, _trust
from ansible_collections.meshfed.istio.plugins.module_utils._pki_store import read_optional, write_atomic

DOT_TIMEOUT = 30


def expected_roots(pki_dir: str) -> list[str]:
    return _trust.fingerprints(read_optional(os.path.join(pki_dir, "root-cert.pem"))) if pki_dir else []


def reachability(plan: dict, states: dict, timeout: float) -> dict:
    results: dict = {}
    for host in plan["clusters"]:
        for address in ((states.get(host) or {}).get("gateway") or {}).get("addresses") or []:
            try:
                with socket.create_connection((address, 15443), timeout=timeout):
                    error = ""
            except OSError as exc:
                error = type(exc).__name__ if not exc.strerror else exc.strerror
            results.setdefault(host, {})[address] = error
    return results


def render_svg(dot_binary: str, source: str) -> tuple[bytes | None, str]:
    path = shutil.which(dot_binary)
    if not path:
        return None, f"Graphviz {dot_binary!r} not found: mesh.svg not rendered (install graphviz)"
    try:
        result = subprocess.run([path, "-Tsvg"], input=source.encode(), capture_output=True, timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"{path} took longer than {DOT_TIMEOUT} s"
    if result.returncode != 0:
        return None, f"{path} failed: {result.stderr.decode(errors='replace').strip()}"
    return result.stdout, ""


def write_report(module: AnsibleModule, plan: dict, states: dict, findings: list[dict]) -> tuple[bool, dict]:
    report_dir = module.params["report_dir"]
    source = _doctor_report.dot(plan, states, findings)
    svg, warning = render_svg(module.params["dot"], source)
    if warning:
        module.warn(warning)
    files = {
        "json": ("findings.json", json.dumps({"summary": _doctor.summary(findings), "findings": findings}, indent=2, sort_keys=True) + "\n"),
        "dot": ("mesh.dot", source),
        "markdown": ("report.md", _doctor_report.markdown(plan, states, findings, "mesh.svg" if svg else None, source)),
    }
    contents = {key: (name, text.encode()) for key, (name, text) in files.items()}
    if svg is not None:
        contents["svg"] = ("mesh.svg", svg)
    changed = any(read_optional(os.path.join(report_dir, name)) != data for name, data in contents.values())
    if changed and not module.check_mode:
        os.makedirs(report_dir, mode=0o755, exist_ok=True)
        for name, data in contents.values():
            write_atomic(os.path.join(report_dir, name), data, 0o644)
    paths = {key: os.path.join(report_dir, name) for key, (name, _) in contents.items()}
    paths.setdefault("svg", "")
    return changed, paths


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            plan=dict(type="dict", required=True),
            states=dict(type="dict", required=True),
            pki_dir=dict(type="path", default=""),
            expiry_warning_days=dict(type="int", default=30),
            allow_loopback=dict(type="bool", default=False),
            check_reachability=dict(type="bool", default=False),
            reachability_timeout=dict(type="float", default=2.0),
            report_dir=dict(type="path", default=""),
            dot=dict(type="str", default="dot"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    plan, states = params["plan"], params["states"]
    unknown = sorted(set(states) - set(plan.get("clusters") or {}))
    if not plan.get("clusters") or unknown:
        module.fail_json(msg=f"states and plan disagree: hosts {', '.join(unknown) or 'none'} are not in the plan; "
                             "pass the result of meshfed.istio.mesh_plan for the same hosts")
    findings = _doctor.diagnose(plan, states, expected_roots=expected_roots(params["pki_dir"]),
                                expiry_days=params["expiry_warning_days"], allow_loopback=params["allow_loopback"])
    if params["check_reachability"]:
        findings += _doctor.reachability_findings(plan, states, reachability(plan, states, params["reachability_timeout"]))
    changed, paths = (False, {})
    if params["report_dir"]:
        changed, paths = write_report(module, plan, states, findings)
    summary = _doctor.summary(findings)
    module.exit_json(changed=changed, findings=findings, summary=summary, healthy=summary["error"] == 0, report=paths)


if __name__ == "__main__":
    main()
