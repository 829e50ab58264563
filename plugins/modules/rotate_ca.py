#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rotate_ca
short_description: Rotate the mesh root or the intermediates across every cluster, phase by phase, resumably
version_added: 0.1.0
description:
  - Runs once on the control node for the whole mesh (O(plan) names every cluster and how to reach it), because every
    phase must be finished in every cluster before the next one begins.
  - "O(mode=root): three phases, each written to every cluster, then read back - C(cacerts) and every sampled
    C(istio-ca-root-cert) ConfigMap hold the phase's bundle - before the next: (1) old and new root trusted (the new
    root's bytes appended to C(root-cert.pem)), old intermediates; (2) intermediates issued by the new root, the bundle
    with the new root appended once more (the changed bytes make istiod push, so workloads re-issue at once); (3) the new
    root alone. Then the old root, its key and the old intermediates are archived in
    C(<pki_dir>/rotations/<rotation_id>/old/) and the new ones put in their place in O(pki_dir), in one write."
  - The new root is generated like the old one (key algorithm, names, lifetime) or imported (O(new_root_cert_src)), on the
    control node; its key never leaves it. It is staged in C(<pki_dir>/rotations/<rotation_id>/new/) with a
    C(state.json) that records the rotation.
  - "O(mode=intermediate): new intermediates under the same root for every cluster or O(clusters_subset), issued like the
    current ones; C(root-cert.pem) stays byte-identical and istiod reloads the intermediate without a restart. The old
    intermediates are archived in C(<pki_dir>/rotations/<rotation_id>/old/)."
  - Each cluster's C(cacerts) is written in one update, on the resourceVersion just read (a concurrent change is refused).
    Before every write, the safety invariant is checked (every cluster's signing root is in every cluster's trust bundle,
    C(cacerts) and C(istio-ca-root-cert)); a write that would break it is refused, naming the clusters.
  - Where the rotation stands is read from the clusters and the PKI directory, so a run interrupted anywhere resumes, and a
    run after the rotation finished writes nothing (C(changed=false)). A PKI directory that disagrees with the clusters
    is refused before anything is written. A new rotation needs a new O(rotation_id).
  - "With O(restart_workloads), the workloads of the injected namespaces restart in bounded batches
    (M(meshfed.istio.restart_workloads), token C(rotate_ca/<rotation_id>)): in a root rotation in every cluster after
    phase 2 has settled and before phase 3 is written, so that they hold certificates under the new root before the old
    one is dropped; in an intermediate rotation after the writes, in the rotated clusters and the remotes their istiods
    serve. A restart that does not finish within O(restart_timeout) stops the rotation there (before phase 3), naming the
    workloads; a rerun resumes it. A rotation that finished does not restart again."
  - A root rotation needs C(ISTIO_MULTIROOT_MESH=true) on every primary's istiod and C(PROXY_CONFIG_XDS_AGENT=true) in its
    mesh config (the control_plane role's default); without them it is refused with the fix.
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - cryptography >= 42.0
  - kubernetes >= 24.2.0 (Python client), unless every cluster is reached with a kubeconfig the collection reads itself
attributes:
  check_mode:
    support: full
    details: Reads the clusters and the PKI directory; returns each phase and each cluster's write without making it.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  plan:
    description:
      - The mesh as M(meshfed.istio.mesh_plan) returns it; every cluster of it (primaries and remotes) is rotated, each
        reached with its C(auth) (the kubernetes.core authentication options the plan derives from the inventory).
    type: dict
    required: true
  pki_dir:
    description: The mesh PKI directory on the control node (made by M(meshfed.istio.pki)); default the plan's C(pki_dir).
    type: path
  rotation_id:
    description:
      - Names this rotation (lower-case letters, digits, C(.), C(_), C(-); for example C(2026-q4)). Its state lives in
        C(<pki_dir>/rotations/<rotation_id>/). Run again with the same id to resume or confirm; a new rotation needs a new id.
    type: str
    required: true
  mode:
    description: Rotate the C(root) (three phases) or only the C(intermediate)s.
    type: str
    choices: [root, intermediate]
    default: root
  clusters_subset:
    description: With O(mode=intermediate), the clusters (inventory hosts or cluster names) whose intermediates are rotated;
      empty - all.
    type: list
    elements: str
    default: []
  phase:
    description: With O(mode=root), stop once every cluster has finished this phase (C(1), C(2) or C(3)). A later run
      with a higher phase goes on from there.
    type: int
    default: 3
  new_root_cert_src:
    description: Import the new root from this PEM file instead of generating one (read on the first run of the rotation).
    type: path
  new_root_key_src:
    description: The new root's private key, with O(new_root_cert_src). It is copied into the PKI directory as it is.
    type: path
  root_key_passphrase:
    description:
      - Passphrase of the root keys (the one the pki role was given, C(pki_root_key_passphrase)). A generated new root
        key is encrypted with it.
    type: str
  settle_timeout:
    description: Seconds to wait, after a phase's writes, for every C(istio-ca-root-cert) to hold the new bundle.
    type: int
    default: 120
  workload_wait:
    description: Seconds to wait after each phase once it has settled, for workloads to get certificates (0 - none).
    type: int
    default: 0
  restart_workloads:
    description: Restart the workloads of the injected namespaces in bounded batches (see above).
    type: bool
    default: false
  restart_namespaces:
    description: With O(restart_workloads), restart the workloads of these namespaces instead of every injected one.
    type: list
    elements: str
    default: []
  restart_batch_size:
    description: With O(restart_workloads), how many workloads of a cluster restart at once.
    type: int
    default: 2
  restart_timeout:
    description: With O(restart_workloads), seconds the whole restart (every cluster, every rollout) may take.
    type: int
    default: 600
  check_flags:
    description: Refuse a root rotation when a primary lacks the rotation flags. C(false) only for meshes that restart
      istiod and every workload between phases themselves.
    type: bool
    default: true
  root_cert_sample:
    description: At most this many C(istio-ca-root-cert) ConfigMaps are read back per cluster.
    type: int
    default: 200
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.request_timeout
seealso:
  - module: meshfed.istio.pki
  - module: meshfed.istio.mesh_plan
  - module: meshfed.istio.restart_workloads
"""

EXAMPLES = r"""
- name: Rotate the mesh root, all three phases
  meshfed.istio.rotate_ca:
    plan: "{{ mesh }}"   # registered from meshfed.istio.mesh_plan
    rotation_id: 2026-q4
  delegate_to: localhost
  run_once: true

- name: New intermediates for one cluster
  meshfed.istio.rotate_ca:
    plan: "{{ mesh }}"
    rotation_id: 2026-11-east-incident
    mode: intermediate
    clusters_subset: [east]
"""

RETURN = r"""
phase:
  description: The phase every cluster is at after the run (0 for an intermediate rotation).
  returned: success
  type: int
done:
  description: Whether the rotation is finished (a root rotation - phase 3 in every cluster and the PKI directory promoted).
  returned: success
  type: bool
phases:
  description: The phases this run wrote (or would write, in check mode), in order.
  returned: success
  type: list
  elements: int
writes:
  description: Each cluster write, in order - C(cluster), C(phase), C(keys) (the cacerts keys changed), C(new_intermediate).
  returned: success
  type: list
  elements: dict
pki_writes:
  description: What was written to the PKI directory (or would be, in check mode); never key material.
  returned: success
  type: list
  elements: str
clusters:
  description: Each cluster's phase after the run.
  returned: success
  type: dict
waited:
  description: Seconds spent waiting for istio-ca-root-cert to settle, for O(workload_wait) and for the workload restart.
  returned: success
  type: float
restarts:
  description:
    - With O(restart_workloads), when this run restarted (or, in check mode, would restart) - cluster name to the result of
      M(meshfed.istio.restart_workloads) there (C(restarted), C(batches), C(resumed), C(already), C(skipped), C(namespaces)).
  returned: when a restart step ran
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s, _pki, _rotate_ca, _workloads


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            plan=dict(type="dict", required=True),
            pki_dir=dict(type="path"),
            rotation_id=dict(type="str", required=True),
            mode=dict(type="str", choices=["root", "intermediate"], default="root"),
            clusters_subset=dict(type="list", elements="str", default=[]),
            phase=dict(type="int", default=3),
            new_root_cert_src=dict(type="path"),
            new_root_key_src=dict(type="path", no_log=False),
            root_key_passphrase=dict(type="str", no_log=True),
            settle_timeout=dict(type="int", default=120),
            workload_wait=dict(type="int", default=0),
            check_flags=dict(type="bool", default=True),
            restart_workloads=dict(type="bool", default=False),
            restart_namespaces=dict(type="list", elements="str", default=[]),
            restart_batch_size=dict(type="int", default=2),
            restart_timeout=dict(type="int", default=600),
            root_cert_sample=dict(type="int", default=200),
            **_k8s.REQUEST_TIMEOUT_SPEC,
        ),
        required_together=[("new_root_cert_src", "new_root_key_src")],
        supports_check_mode=True,
    )
    if not _pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=traceback.format_exc())
    params = module.params
    settings = params["plan"].get("settings") or {}
    namespace = settings.get("namespace") or _istio.DEFAULT_NAMESPACE
    options = _rotate_ca.Options(
        pki_dir=params["pki_dir"] or settings.get("pki_dir") or "",
        rotation_id=params["rotation_id"],
        mode=params["mode"],
        namespace=namespace,
        subset=tuple(((params["plan"].get("clusters") or {}).get(item) or {}).get("name") or item for item in params["clusters_subset"]),
        target_phase=params["phase"],
        new_root_cert_src=params["new_root_cert_src"],
        new_root_key_src=params["new_root_key_src"],
        root_key_passphrase=params["root_key_passphrase"],
        settle_timeout=params["settle_timeout"],
        workload_wait=params["workload_wait"],
        check_flags=params["check_flags"],
    )
    try:
        if not options.pki_dir:
            raise _rotate_ca.RotateError("the plan names no pki_dir: pass the result of meshfed.istio.mesh_plan, or set pki_dir")
        members = [
            _rotate_ca.RotationTarget(
                name=item["name"],
                host=host,
                primary=item.get("primary_name") or "",
                api=_rotate_ca.ClusterApi(
                    _k8s.Cluster({**(item.get("auth") or {}), "request_timeout": params["request_timeout"]}), namespace, params["root_cert_sample"]
                ),
            )
            for host, item in sorted((params["plan"].get("clusters") or {}).items())
        ]
        if not members:
            raise _rotate_ca.RotateError("the plan holds no cluster: pass the result of meshfed.istio.mesh_plan")
        if params["restart_workloads"]:
            if params["restart_batch_size"] < 1 or params["restart_timeout"] < 1:
                raise _rotate_ca.RotateError("restart_batch_size and restart_timeout must be at least 1")
            settings = _workloads.Settings(tuple(params["restart_namespaces"]), params["restart_batch_size"], params["restart_timeout"])
            options.restart = _rotate_ca.restarter(members, settings)
        result = _rotate_ca.run(options, members, module.check_mode)
    except (_rotate_ca.RotateError, _k8s.K8sError, KeyError, TypeError) as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
