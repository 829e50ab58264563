#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: upgrade
short_description: Upgrade the mesh to a canary revision, stage by stage in every cluster, resumably
version_added: 0.1.0
description:
  - Runs once on the control node for the whole mesh (O(plan) names every cluster and how to reach it), because every
    stage must be finished in every cluster before the next one begins.
  - "Stages, each written to every cluster, then read back (bounded by O(settle_timeout)) before the next:
    (1) C(primaries) - the target revision's control plane (IstioOperator C(control-plane-<revision>), rendered as the
    site playbook renders it with C(meshfed_revision=<revision>)) installed with istioctl on every primary, and on a
    primary with remotes the VirtualService C(istiod-vs-<revision>) that routes SNI C(istiod-<revision>.<namespace>.svc)
    through the east-west gateway; istiod-<revision> Ready;
    (2) C(remotes) - the same revision on every remote (C(profile=remote); Service C(istiod-<revision>) at the primary's
    gateway address, injector C(istio-sidecar-injector-<revision>));
    (3) C(namespaces) - every namespace that injects from another revision (C(istio-injection=enabled) or C(istio.io/rev),
    tags resolved) relabelled C(istio.io/rev=<revision>), C(istio-injection) removed; except a namespace on a revision tag
    of the user's (C(istio.io/rev=<tag>), not C(default)): that tag is moved instead, in that cluster
    (C(istioctl tag set <tag> --revision <revision> --overwrite)), and the namespace keeps its label;
    (4) C(workloads) - while an old revision is installed in a cluster, the workloads (Deployments, StatefulSets,
    DaemonSets) of its injecting namespaces restarted in batches of O(restart_batch_size), each batch rolled out before
    the next, as M(meshfed.istio.restart_workloads) does with token C(upgrade/<revision>) (the pod template annotations
    C(kubectl.kubernetes.io/restartedAt) and C(meshfed.istio/restarted-for)); then each namespace annotated
    C(meshfed.istio/restarted-for=upgrade/<revision>), which tells a rerun that its restart finished;
    (5) C(gateways) - the east-west gateway (IstioOperator C(eastwest)) reinstalled on the revision; then, in every
    cluster, the workloads of the injecting namespaces that Istio injects as gateways (pod template annotation
    C(inject.istio.io/templates) naming C(gateway), Istio's gateway injection; stage C(workloads) leaves them out)
    restarted the same way, and each namespace annotated C(meshfed.istio/gateways-restarted-for=upgrade/<revision>);
    (6) C(old_revision) - remotes first, then primaries - the default tag moved to the revision
    (C(istioctl tag set default --overwrite)), then every other revision's control plane uninstalled
    (C(istioctl uninstall -f) of its IstioOperator name - only what that install created) and its install record deleted;
    on a primary with remotes the catch-all route C(istiod-vs) is pointed at istiod-<revision>."
  - Refused before any write - a cluster without a complete C(cacerts) (the new istiod would start on a self-signed root),
    without Istio, or running a revision this collection did not install; an istiod older than the target by more than
    O(max_minor_ahead) minor versions, or newer than it.
  - The workload restart is bounded by O(restart_timeout) for the whole stage, every cluster; past it the run stops
    before the gateways stage, naming the workloads that did not roll out and those not restarted yet, with the old
    revision still serving. A rerun resumes it - workloads already carrying the token are not restarted again, a batch
    left in flight is waited for first. With O(restart_workloads=false) nothing is restarted (the stage is skipped).
  - An old revision is not removed from a cluster while a revision tag other than C(default) points at it (a tag no
    namespace uses is not moved), nor while a gateway Deployment in a namespace without injection labels pins it in its
    pod template (C(istio.io/rev)) - such a gateway stays on it through any restart, so the user moves it (Istio's
    gateway canary upgrade); check mode lists those gateways.
  - An old revision is not removed from a cluster while injected pods (C(security.istio.io/tlsMode=istio)) still carry
    its C(istio.io/rev) label (all of them are counted, not a sample; on a primary, its remotes' pods too) - pods the
    restart cannot reach (no Deployment, StatefulSet or DaemonSet; paused or C(OnDelete) workloads); the run fails
    naming the count.
  - With O(precheck), before any write of the run, the target's own C(istioctl x precheck) runs in every cluster where the
    target's control plane is not installed yet (Kubernetes version, permission to create what an install creates,
    Gateway API CRD versions, alpha annotations); an error-level message refuses the upgrade naming the cluster and the
    check (C(IST0nnn)), warnings are returned in RV(precheck) and shown.
  - The rotation flag C(ISTIO_MULTIROOT_MESH) is carried into the new revision from the old one on each primary.
  - Where the upgrade stands is read from the clusters, so a run interrupted anywhere resumes, and a run after the
    upgrade finished writes nothing (C(changed=false)). A failed install (the new istiod not Ready within
    O(readiness_timeout)) stops the run - the old revision keeps serving and no namespace has moved.
  - Check mode returns the plan per stage and cluster, the restart batches listed from the clusters, and writes nothing.
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - istioctl of the target release on the control node
  - kubernetes >= 24.2.0 (Python client), unless every cluster is reached with a kubeconfig the collection reads itself
attributes:
  check_mode:
    support: full
    details: Reads every cluster and returns the plan per stage and cluster without writing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  plan:
    description: The result of M(meshfed.istio.mesh_plan) (every cluster, its role and auth; the mesh settings).
    type: dict
    required: true
  target_revision:
    description: The new revision (a DNS label, not C(default)), for example C(1-31-0).
    type: str
    required: true
  istioctl:
    description: The target release's istioctl (a name on PATH or a path). Its version is the target version.
    type: str
    default: istioctl
  stage:
    description: Stop once every cluster has finished this stage; a later run goes on from there.
    type: str
    choices: [primaries, remotes, namespaces, workloads, gateways, old_revision]
    default: old_revision
  readiness_timeout:
    description: Seconds istioctl waits for what it installs to become ready.
    type: int
    default: 300
  settle_timeout:
    description: Seconds to wait, after a stage's writes, until every cluster shows the stage finished.
    type: int
    default: 300
  control_plane_overlay:
    description: Merged into the new control plane's IstioOperator C(spec), as the control_plane role's overlay (use the same).
    type: dict
    default: {}
  eastwest_overlay:
    description: Merged into the east-west gateway's IstioOperator C(spec), as the eastwest_gateway role's overlay (use the same).
    type: dict
    default: {}
  max_minor_ahead:
    description: How many minor versions the target may be ahead of every installed istiod.
    type: int
    default: 1
  pod_sample:
    description: At most this many injected pods are read per cluster into its view (a sample; the removal of an old
      revision counts every pod of it with its own list call).
    type: int
    default: 500
  restart_workloads:
    description:
      - Restart the workloads of the injecting namespaces after they moved (stage C(workloads)), and their gateways by
        injection after the east-west gateway (stage C(gateways)). Without it the old revision stays wherever an old
        proxy still runs, until the workloads are restarted by hand.
    type: bool
    default: true
  restart_batch_size:
    description: How many workloads of a cluster restart at once (at least 1).
    type: int
    default: 2
  restart_timeout:
    description: Seconds the whole workload restart (every cluster, every rollout) may take (at least 1); the gateways
      stage's restart has as long again.
    type: int
    default: 600
  precheck:
    description: Run the target istioctl's C(x precheck) in every cluster its control plane is still to be installed in.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.request_timeout
seealso:
  - module: meshfed.istio.mesh_plan
  - module: meshfed.istio.istioctl_install
  - module: meshfed.istio.restart_workloads
  - name: Istio canary upgrades
    description: The single-cluster procedure this stretches over the mesh.
    link: https://istio.io/latest/docs/setup/upgrade/canary/
"""

EXAMPLES = r"""
- name: Upgrade the mesh to revision 1-31-0, all stages
  meshfed.istio.upgrade:
    plan: "{{ mesh }}"   # registered from meshfed.istio.mesh_plan
    target_revision: 1-31-0
    istioctl: /opt/istio-1.31.0/bin/istioctl
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
target_version:
  description: What the target istioctl reports.
  returned: success
  type: str
stage_before:
  description: The first stage not finished in every cluster before the run (C(done) when none).
  returned: success
  type: str
stage:
  description: The same after the run.
  returned: success
  type: str
precheck:
  description: Per cluster where it ran, what C(istioctl x precheck) found - C(errors) and C(warnings), one line each
    (the check's code, the object, the message); empty when it did not apply.
  returned: success
  type: dict
plan:
  description: The writes left before the run, per stage title and cluster, as text.
  returned: success
  type: dict
actions:
  description: The same as records - C(stage), C(cluster), C(action), C(revision) and details (a C(restart_workloads)
    action - C(namespaces), C(token), and in check mode the C(batches) of workload references, C(resumed), C(skipped);
    a C(restart_gateways) action the same; a C(move_tag) action - C(tag), C(previous); in check mode a
    C(pinned_gateways) entry per cluster with gateways pinned to an old revision - C(pinned), each C(workload),
    C(revision), C(resolved)).
  returned: success
  type: list
  elements: dict
events:
  description: What the run did, in order, each with C(at) (seconds since the epoch) and C(changed); C(stage_finished)
    marks the moment every cluster was read back finished with a stage. Also returned when the run fails.
  returned: always
  type: list
  elements: dict
done:
  description: The writes this run made (nothing in check mode), per stage title and cluster, as text.
  returned: success
  type: dict
clusters:
  description: Per cluster name, which stages are finished after the run.
  returned: success
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _istioctl, _k8s, _render, _upgrade, _upgrade_run


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            plan=dict(type="dict", required=True),
            target_revision=dict(type="str", required=True),
            istioctl=dict(type="str", default="istioctl"),
            stage=dict(type="str", choices=list(_upgrade.STAGES), default=_upgrade.STAGES[-1]),
            readiness_timeout=dict(type="int", default=300),
            settle_timeout=dict(type="int", default=300),
            control_plane_overlay=dict(type="dict", default={}),
            eastwest_overlay=dict(type="dict", default={}),
            max_minor_ahead=dict(type="int", default=1),
            pod_sample=dict(type="int", default=500),
            restart_workloads=dict(type="bool", default=True),
            restart_batch_size=dict(type="int", default=2),
            restart_timeout=dict(type="int", default=600),
            precheck=dict(type="bool", default=True),
            **_k8s.REQUEST_TIMEOUT_SPEC,
        ),
        supports_check_mode=True,
    )
    if not _k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=traceback.format_exc())
    params = module.params
    plan = params["plan"]
    options = _upgrade_run.UpgradeOptions(
        target=params["target_revision"],
        istioctl=params["istioctl"],
        settings=plan.get("settings") or {},
        last_stage=params["stage"],
        readiness_timeout=params["readiness_timeout"],
        settle_timeout=params["settle_timeout"],
        control_plane_overlay=params["control_plane_overlay"],
        eastwest_overlay=params["eastwest_overlay"],
        max_minor_ahead=params["max_minor_ahead"],
        pod_sample=params["pod_sample"],
        restart_timeout=params["restart_timeout"],
        precheck=params["precheck"],
    )
    runner = None
    try:
        members = [
            _upgrade_run.UpgradeTarget(host=host, cluster=item, api=_k8s.Cluster({**(item.get("auth") or {}), "request_timeout": params["request_timeout"]}))
            for host, item in sorted((plan.get("clusters") or {}).items())
        ]
        if not members:
            raise _upgrade.UpgradeError("the plan holds no cluster: pass the result of meshfed.istio.mesh_plan")
        if params["restart_workloads"]:
            if params["restart_batch_size"] < 1 or params["restart_timeout"] < 1:
                raise _upgrade.UpgradeError("restart_batch_size and restart_timeout must be at least 1")
            options.restart = _upgrade_run.restarter(members, params["restart_batch_size"], params["restart_timeout"], only="workloads")
            options.restart_gateways = _upgrade_run.restarter(members, params["restart_batch_size"], params["restart_timeout"], only="gateways")
        for member in members:
            refusal = _istioctl.auth_refusal(member.cluster.get("auth") or {}, f"the upgrade of {member.name}")
            if refusal:
                raise _upgrade.UpgradeError(refusal)
        runner = _upgrade_run.Runner(options, members)
        result = runner.run(module.check_mode)
    except (_upgrade.UpgradeError, _istioctl.IstioctlError, _k8s.K8sError, _render.RenderError, _istio.OverlayError, KeyError, TypeError) as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__, events=runner.events if runner else [])
    for name, found in sorted(result["precheck"].items()):
        for warning in found["warnings"]:
            module.warn(f"cluster {name}: istioctl x precheck of the target: {warning}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
