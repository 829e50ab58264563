# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the canary-revision upgrade against the clusters (the decisions are _upgrade's).

Run once on the control node: read every cluster, refuse before any write, then stage by stage - each stage's writes in
every cluster, then a bounded wait until the clusters show it finished, read back - before the next stage starts. Every
write is recorded with its time, so the order can be checked afterwards. The workloads stage restarts through a hook
(UpgradeOptions.restart, restarter() below: _workloads' bounded rolling restart), so that it can be replaced in tests.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _istioctl, _k8s, _render, _upgrade, _workloads
from ansible_collections.meshfed.istio.plugins.module_utils._cluster_state import INJECTED_POD_SELECTOR


@dataclass
class UpgradeTarget:
    """One cluster: its mesh plan entry (name, role, remotes, primary_host...) and its API."""

    host: str
    cluster: dict
    api: _k8s.Cluster

    @property
    def name(self) -> str:
        return self.cluster["name"]


@dataclass
class UpgradeOptions:
    target: str
    istioctl: str
    settings: dict
    last_stage: str = _upgrade.STAGES[-1]
    readiness_timeout: int = 300
    settle_timeout: int = 300
    control_plane_overlay: dict = field(default_factory=dict)
    eastwest_overlay: dict = field(default_factory=dict)
    max_minor_ahead: int = 1
    pod_sample: int = 500
    # The workloads stage's restart: callable(cluster name, namespaces, token, check_mode, deadline) -> the result of
    # _workloads.restart there (restarter() below), or None - the user's opt-out: no workload is restarted.
    restart: object = None
    restart_timeout: float = 600.0  # the whole workloads stage, every cluster
    precheck: bool = True  # the target's istioctl x precheck in every cluster its control plane is still to be installed in
    # The gateways stage's restart of the gateway-injected workloads (same signature as restart; restarter(only=
    # "gateways")), with its own restart_timeout from its first call. None: none is restarted or listed (the namespaces
    # are still marked when restart is set).
    restart_gateways: object = None

    @property
    def namespace(self) -> str:
        return self.settings.get("namespace") or _istio.DEFAULT_NAMESPACE

    @property
    def restarting(self) -> bool:
        return self.restart is not None


def restarter(members: list[UpgradeTarget], batch_size: int, timeout: float, sleep=time.sleep, clock=time.monotonic, only: str = ""):
    """The restart of UpgradeOptions.restart, on the members' own API clients (timeout: only when no deadline is given; the
    deadline is one of clock's, the Runner's). only: _workloads.Settings.only (workloads, gateways; '' both)."""
    clusters = {member.name: member.api for member in members}

    def restart(name: str, namespaces: list[str], token: str, check_mode: bool, deadline: float | None) -> dict:
        settings = _workloads.Settings(tuple(namespaces), batch_size, timeout, only)
        return _workloads.restart(clusters[name], token, settings, check_mode, deadline=deadline, sleep=sleep, clock=clock)

    return restart


def fetch(api: _k8s.Cluster, namespace: str, pod_sample: int) -> dict:
    """The reads behind one cluster's view (about nine list calls); cacerts is reduced to its key names at once."""
    cacerts = api.secret_data(namespace, _istio.CACERTS_SECRET)
    services = api.items(f"listing services in {namespace}", _k8s.namespaced(namespace, "services"))
    return {
        "deployments": api.items(f"listing deployments in {namespace}", _k8s.namespaced(namespace, "deployments", group="apps")),
        "services": services,
        "gateway_service": next((item for item in services if item["metadata"]["name"] == _istio.EASTWEST_GATEWAY), None),
        "webhooks": api.items(
            "listing mutating webhooks", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", labelSelector="app=sidecar-injector"
        ),
        "namespaces": api.items("listing namespaces", "/api/v1/namespaces"),
        "cacerts": None if cacerts is None else sorted(cacerts),
        "records": [
            item["metadata"]["name"][len(_istioctl.STATE_PREFIX) :]
            for item in api.items(
                f"listing install records in {namespace}",
                _k8s.namespaced(namespace, "configmaps"),
                labelSelector=f"{_istio.MANAGED_BY_LABEL}={_istio.MANAGED_BY}",
            )
            if item["metadata"]["name"].startswith(_istioctl.STATE_PREFIX)
        ],
        "pods": api.items("listing injected pods", "/api/v1/pods", labelSelector=INJECTED_POD_SELECTOR, limit=pod_sample),
        "routes": api.items(
            f"listing virtualservices in {namespace}", _k8s.namespaced(namespace, "virtualservices", group="networking.istio.io"), missing_ok=True
        ),
    }


def gateway_deployments(api: _k8s.Cluster) -> list[dict]:
    """Every Deployment of the cluster whose pod template asks for gateway injection (paged, bounded)."""
    items = _workloads._all_items(api, "listing deployments", "/apis/apps/v1/deployments")
    return [item for item in items if _workloads.gateway_injected(item)]


def revision_pods(api: _k8s.Cluster, revision: str) -> int:
    """The injected pods of a revision, every page of them (bounded: past _workloads' page limit, at least that many).
    A page's continue token is no sign of more pods: with a label selector the API server pages through every pod."""
    selector, count, cont = _upgrade.revision_pods_selector(revision), 0, ""
    for _page in range(_workloads.MAX_PAGES):
        query = {"labelSelector": selector, "limit": _workloads.PAGE, **({"continue": cont} if cont else {})}
        answer = api.get(f"listing the injected pods of revision {revision}", "/api/v1/pods", **query) or {}
        count += len(answer.get("items") or [])
        cont = (answer.get("metadata") or {}).get("continue") or ""
        if not cont:
            break
    return count


def observe_all(members: list[UpgradeTarget], options: UpgradeOptions) -> dict[str, dict]:
    return {member.name: _upgrade.observe(fetch(member.api, options.namespace, options.pod_sample)) for member in members}


def _apply(api: _k8s.Cluster, obj: dict, plural: str) -> bool:
    """Create the object, or replace its spec when it differs; whether anything was written."""
    meta = obj["metadata"]
    group, version = obj["apiVersion"].split("/") if "/" in obj["apiVersion"] else ("", obj["apiVersion"])
    path = _k8s.namespaced(meta["namespace"], plural, meta["name"], group=group, version=version)
    current = api.get(f"reading {plural} {meta['name']}", path, missing_ok=True)
    if current is None:
        api.request(f"creating {plural} {meta['name']}", "POST", _k8s.namespaced(meta["namespace"], plural, group=group, version=version), body=obj)
        return True
    if current.get("spec") == obj["spec"]:
        return False
    body = {**obj, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
    api.request(f"replacing {plural} {meta['name']}", "PUT", path, body=body)
    return True


class Runner:
    def __init__(self, options: UpgradeOptions, members: list[UpgradeTarget], sleep=time.sleep, clock=time.monotonic, now=time.time) -> None:
        self.options, self.members = options, members
        self.by_name = {member.name: member for member in members}
        self.clusters = {member.name: member.cluster for member in members}
        self.sleep, self.clock, self.now = sleep, clock, now
        self.events: list[dict] = []
        self.restart_deadline: float | None = None
        self.gateway_deadline: float | None = None

    def observe(self) -> dict[str, dict]:
        return observe_all(self.members, self.options)

    def progresses(self, views: dict[str, dict]) -> dict[str, dict]:
        return {name: _upgrade.progress(view, self.clusters[name], self.options.target, self.options.restarting) for name, view in views.items()}

    def record(self, action: dict, changed: bool, **extra) -> None:
        self.events.append({**action, "changed": changed, "at": round(self.now(), 3), **extra})

    def _istioctl(self, member: UpgradeTarget, argv: list[str], what: str) -> None:
        auth = member.cluster.get("auth") or {}
        with _istioctl.KubeconfigFile(auth.get("kubeconfig")) as path:
            result = _istioctl.run([self.options.istioctl, *argv, *_istioctl.connection_args(path, auth.get("context"))], self.options.readiness_timeout + 120)
        if result.returncode != 0:
            raise _upgrade.UpgradeError(f"cluster {member.name}: {what} failed: {(result.stderr or result.stdout).strip()[-2000:]}")

    def precheck(self, views: dict[str, dict]) -> dict[str, dict]:
        """The target's istioctl x precheck, per cluster where it applies (_upgrade.precheck_due), read only."""
        found = {}
        for member in self.members:
            if not _upgrade.precheck_due(views[member.name], member.cluster, self.options.target):
                continue
            auth = member.cluster.get("auth") or {}
            argv = [self.options.istioctl, "x", "precheck", "-o", "json", "--istioNamespace", self.options.namespace]
            with _istioctl.KubeconfigFile(auth.get("kubeconfig")) as path:
                result = _istioctl.run([*argv, *_istioctl.connection_args(path, auth.get("context"))], self.options.readiness_timeout)
            found[member.name] = _upgrade.precheck_result(result.returncode, result.stdout, result.stderr)
        return found

    def _install(self, member: UpgradeTarget, operator: dict) -> bool:
        auth = member.cluster.get("auth") or {}
        try:
            result = _istioctl.ensure(
                self.options.istioctl, operator, member.api, auth.get("kubeconfig"), auth.get("context"), self.options.readiness_timeout, False
            )
        except _istioctl.IstioctlError as exc:
            raise _upgrade.UpgradeError(f"cluster {member.name}: {exc}; the old revision keeps serving, no namespace was moved") from exc
        return result["changed"]

    def _settings(self) -> dict:
        return {**self.options.settings, "revision": self.options.target}

    def execute(self, action: dict, views: dict[str, dict]) -> None:
        member, target, namespace = self.by_name[action["cluster"]], self.options.target, self.options.namespace
        view = views[member.name]
        kind = action["action"]
        if kind == "install_control_plane":
            pilot = ""
            if member.cluster["role"] == "remote":
                primary = member.cluster["primary_name"]
                pilot = (views[primary]["gateway_addresses"] or [""])[0]
                if not pilot:
                    raise _upgrade.UpgradeError(f"cluster {member.name}: its primary {primary} has no east-west gateway address; run the site playbook")
            multiroot = any(facts["multiroot"] for facts in view["revisions"].values())
            operator = _render.control_plane(member.cluster, self._settings(), pilot, self.options.control_plane_overlay or None, multiroot)
            self.record(action, self._install(member, operator))
        elif kind == "expose_istiod":
            self.record(action, _apply(member.api, _istio.istiod_revision_route(namespace, target), "virtualservices"))
        elif kind == "expose_istiod_catch_all":
            changed = False
            for obj in _render.eastwest_objects(member.cluster, self._settings()):
                changed = _apply(member.api, obj, "gateways" if obj["kind"] == "Gateway" else "virtualservices") or changed
            self.record(action, changed)
        elif kind == "wait_ready":
            self.wait(
                lambda: _upgrade.observe(fetch(member.api, namespace, self.options.pod_sample))["revisions"].get(target, {}).get("ready"),
                f"cluster {member.name}: istiod-{target} did not become Ready within {self.options.settle_timeout} s; the old revision keeps serving",
            )
            self.record(action, False)
        elif kind == "move_namespace":
            self.record(action, self._move_namespace(member, action["namespace"]))
        elif kind == "restart_workloads":
            self._restart(member, action)
        elif kind == "restart_gateways":
            self._restart_gateways(member, action, view)
        elif kind == "move_tag":
            argv = ["tag", "set", action["tag"], "--revision", target, "--overwrite", "--skip-confirmation", "--istioNamespace", namespace]
            self._istioctl(member, argv, f"istioctl tag set {action['tag']}")
            self.record(action, True)
        elif kind == "install_gateway":
            operator = _render.eastwest_operator(member.cluster, self._settings(), self.options.eastwest_overlay or None)
            self.record(action, self._install(member, operator))
        elif kind == "move_default_tag":
            argv = ["tag", "set", _upgrade.DEFAULT_TAG, "--revision", target, "--overwrite", "--istioNamespace", namespace]
            self._istioctl(member, argv, "istioctl tag set default")
            self.record(action, True)
        elif kind == "uninstall":
            self._uninstall(member, action, view)

    def _move_namespace(self, member: UpgradeTarget, name: str) -> bool:
        path = _k8s.cluster_scoped("namespaces", name)
        current = member.api.get(f"reading namespace {name}", path)
        labels = (current.get("metadata") or {}).get("labels") or {}
        moved = _upgrade.moved_labels(labels, self.options.target)
        if moved == labels:
            return False
        current["metadata"]["labels"] = moved
        member.api.request(f"relabelling namespace {name}", "PUT", path, body=current)
        return True

    def _restart(self, member: UpgradeTarget, action: dict) -> None:
        """The workloads of the action's namespaces restarted (or resumed) within the stage's one deadline, then each
        namespace marked with the token: the mark is what tells a rerun that this cluster's restart finished."""
        try:
            done = self.options.restart(member.name, action["namespaces"], action["token"], False, self.restart_deadline)
        except (_workloads.RestartError, _k8s.K8sError) as exc:
            raise _upgrade.UpgradeError(
                f"cluster {member.name}: restarting the workloads of {', '.join(action['namespaces'])}: {exc}. The upgrade stops "
                "before the gateways stage: the old revision keeps serving; a rerun resumes the restart"
            ) from exc
        marked = [namespace for namespace in action["namespaces"] if self._mark(member, namespace, action["token"])]
        detail = {key: done.get(key) or [] for key in ("batches", "resumed", "skipped")}
        self.record(action, bool(done.get("changed")) or bool(marked), **detail, marked=marked)

    def _restart_gateways(self, member: UpgradeTarget, action: dict, view: dict) -> None:
        """The gateway-injected workloads of the action's namespaces restarted (the east-west gateway is on the target
        by now), within the gateways stage's own deadline; each namespace then marked GATEWAYS_RESTARTED_FOR. Gateways
        pinned to an old revision elsewhere are recorded (pinned_gateways): the old revision's removal refuses them."""
        if self.gateway_deadline is None:
            self.gateway_deadline = self.clock() + self.options.restart_timeout
        hook = self.options.restart_gateways or (lambda *_args: {})
        try:
            done = hook(member.name, action["namespaces"], action["token"], False, self.gateway_deadline)
        except (_workloads.RestartError, _k8s.K8sError) as exc:
            raise _upgrade.UpgradeError(
                f"cluster {member.name}: restarting the gateways of {', '.join(action['namespaces'])}: {exc}. The upgrade stops "
                "before the old revision is removed: it keeps serving; a rerun resumes the restart"
            ) from exc
        marked = [namespace for namespace in action["namespaces"] if self._mark(member, namespace, action["token"], _upgrade.GATEWAYS_RESTARTED_FOR)]
        detail = {key: done.get(key) or [] for key in ("batches", "resumed", "skipped")}
        self.record(action, bool(done.get("changed")) or bool(marked), **detail, marked=marked)
        pinned = _upgrade.pinned_gateways(gateway_deployments(member.api), view, self.options.target)
        if pinned:
            self.record({"stage": action["stage"], "cluster": member.name, "action": "pinned_gateways"}, False, pinned=pinned)

    def _mark(self, member: UpgradeTarget, name: str, token: str, annotation: str = _workloads.RESTARTED_FOR) -> bool:
        path = _k8s.cluster_scoped("namespaces", name)
        current = member.api.get(f"reading namespace {name}", path, missing_ok=True)
        if current is None or ((current.get("metadata") or {}).get("annotations") or {}).get(annotation) == token:
            return False
        body = {"metadata": {"annotations": {annotation: token}}}
        member.api.request(f"marking namespace {name} restarted", "PATCH", path, body=body, content_type=_workloads.MERGE_PATCH, missing_ok=True)
        return True

    def list_restarts(self, planned: list[dict]) -> None:
        """Check mode: each planned restart with the batches it would run, listed from the clusters (reads only)."""
        for action in planned:
            if action["action"] != "restart_workloads":
                continue
            try:
                found = self.options.restart(action["cluster"], action["namespaces"], action["token"], True, None)
            except (_workloads.RestartError, _k8s.K8sError) as exc:
                raise _upgrade.UpgradeError(f"cluster {action['cluster']}: listing the workloads to restart: {exc}") from exc
            action.update({key: found.get(key) or [] for key in ("batches", "resumed", "skipped")})

    def list_gateway_restarts(self, planned: list[dict], views: dict[str, dict]) -> None:
        """Check mode: each planned gateway restart with its batches, and the gateways pinned to an old revision in each
        cluster that has one (an action pinned_gateways, listed only)."""
        if self.options.restart_gateways is None:
            return
        for action in [item for item in planned if item["action"] == "restart_gateways"]:
            try:
                found = self.options.restart_gateways(action["cluster"], action["namespaces"], action["token"], True, None)
            except (_workloads.RestartError, _k8s.K8sError) as exc:
                raise _upgrade.UpgradeError(f"cluster {action['cluster']}: listing the gateways to restart: {exc}") from exc
            action.update({key: found.get(key) or [] for key in ("batches", "resumed", "skipped")})
        for name in sorted(views):
            if not _upgrade.old_revisions(views[name], self.options.target):
                continue
            pinned = _upgrade.pinned_gateways(gateway_deployments(self.by_name[name].api), views[name], self.options.target)
            if pinned:
                planned.append({"stage": "gateways", "cluster": name, "action": "pinned_gateways", "pinned": pinned})

    def _refuse_held(self, member: UpgradeTarget, revision: str, view: dict) -> None:
        """The old revision stays while a tag of the user's or a pinned gateway still needs it."""
        tags = _upgrade.tags_holding(view, revision)
        if tags:
            raise _upgrade.UpgradeError(
                f"cluster {member.name}: revision tag(s) {', '.join(tags)} still point at revision {revision}, which is not removed while they do: "
                f"move them (istioctl tag set TAG --revision {self.options.target} --overwrite) or remove them (istioctl tag remove TAG), "
                "then run the upgrade again"
            )
        pinned = [entry for entry in _upgrade.pinned_gateways(gateway_deployments(member.api), view, self.options.target) if entry["resolved"] == revision]
        if pinned:
            raise _upgrade.UpgradeError(_upgrade.pinned_message(member.name, pinned, self.options.target))

    def _uninstall(self, member: UpgradeTarget, action: dict, view: dict) -> None:
        revision, namespace = action["revision"], self.options.namespace
        # every pod of the revision, not the view's sample (one page of pod_sample): a pod past it would lose its istiod
        users = revision_pods(member.api, revision)
        # a primary's istiod also serves its remotes' proxies (through the east-west gateway), even where the remote's
        # own objects of the revision are gone already (removed by hand, or never there): their pods count too
        for remote in [name for name in member.cluster.get("remotes") or [] if name in self.by_name]:
            left = revision_pods(self.by_name[remote].api, revision)
            if left:
                raise _upgrade.UpgradeError(
                    f"cluster {member.name}: {left} injected pod(s) of its remote {remote} still run proxies of revision {revision}, "
                    f"which the istiod of {member.name} serves; restart or delete them and run the upgrade again"
                )
        if users:
            restarted = "the workloads stage did not restart them (pods without a Deployment, StatefulSet or DaemonSet, paused or OnDelete workloads)"
            raise _upgrade.UpgradeError(
                f"cluster {member.name}: {users} injected pod(s) still run proxies of revision {revision}; "
                f"{restarted if self.options.restarting else 'workload restarts are off'}: restart or delete them "
                f"(their namespaces inject from {self.options.target} now) and run the upgrade again"
            )
        self._refuse_held(member, revision, view)
        name = _istio.control_plane_name(revision)
        # only what istioctl installed from this IstioOperator: istioctl selects on its owning-resource label
        handle, path = tempfile.mkstemp(prefix="meshfed-uninstall-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump({"apiVersion": _istio.OPERATOR_API, "kind": "IstioOperator", "metadata": {"name": name, "namespace": namespace}}, stream)
            self._istioctl(member, ["uninstall", "-y", "-f", path], f"istioctl uninstall of {name}")
        finally:
            os.unlink(path)
        member.api.request(
            f"deleting install record {_istioctl.STATE_PREFIX}{name}",
            "DELETE",
            _k8s.namespaced(namespace, "configmaps", _istioctl.STATE_PREFIX + name),
            missing_ok=True,
        )
        self.record(action, True)

    def wait(self, done, message: str) -> None:
        deadline = self.clock() + self.options.settle_timeout
        while not done():
            if self.clock() >= deadline:
                raise _upgrade.UpgradeError(message)
            self.sleep(2)

    def settle(self, stage: str) -> dict[str, dict]:
        """Read every cluster until the stage shows finished everywhere (bounded); the last views."""
        views: dict[str, dict] = {}

        def behind() -> list[str]:
            views.update(self.observe())
            return sorted(name for name, item in self.progresses(views).items() if not item[stage])

        deadline = self.clock() + self.options.settle_timeout
        while left := behind():
            if self.clock() >= deadline:
                raise _upgrade.UpgradeError(f"stage {stage} is not finished in {', '.join(left)} after {self.options.settle_timeout} s")
            self.sleep(2)
        return views

    def run(self, check_mode: bool) -> dict:
        options = self.options
        target_version = _istioctl.version(options.istioctl)
        views = self.observe()
        problems = _upgrade.refusals(views, self.clusters, options.target, target_version, options.max_minor_ahead)
        prechecked = self.precheck(views) if options.precheck and not problems else {}
        problems += _upgrade.precheck_refusals(prechecked)
        if problems:
            raise _upgrade.UpgradeError("the upgrade does not start: " + "; ".join(problems))
        planned = _upgrade.plan(views, self.clusters, options.target, options.last_stage, options.restarting)
        if check_mode:
            self.list_restarts(planned)
            self.list_gateway_restarts(planned, views)
        result = {
            "target": options.target,
            "target_version": target_version,
            "plan": _upgrade.summary(planned),
            "actions": planned,
            "stage_before": _upgrade.mesh_stage(self.progresses(views)),
            "precheck": prechecked,
        }
        if check_mode:
            return {**result, "changed": bool(planned), "events": [], "done": {}, "stage": result["stage_before"], "clusters": self.progresses(views)}
        for stage in _upgrade.STAGES[: _upgrade.STAGES.index(options.last_stage) + 1]:
            progresses = self.progresses(views)
            if all(item[stage] for item in progresses.values()):
                continue
            waiting = _upgrade.gate(stage, progresses)
            if waiting:
                raise _upgrade.UpgradeError(f"stage {stage} cannot start: {'; '.join(waiting)}")
            if stage == "workloads":
                self.restart_deadline = self.clock() + options.restart_timeout
            for action in _upgrade.actions(stage, views, self.clusters, options.target, options.restarting):
                self.execute(action, views)
            views = self.settle(stage)
            self.events.append({"stage": stage, "cluster": "", "action": "stage_finished", "changed": False, "at": round(self.now(), 3)})
        progresses = self.progresses(views)
        return {
            **result,
            "changed": any(event["changed"] for event in self.events),
            "events": self.events,
            "done": _upgrade.summary([event for event in self.events if event["changed"]]),
            "stage": _upgrade.mesh_stage(progresses),
            "clusters": progresses,
        }
