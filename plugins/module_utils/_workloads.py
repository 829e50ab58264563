# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: a bounded rolling restart of the workloads (Deployments, StatefulSets, DaemonSets) of a
cluster's injected namespaces, so that their proxies start again with certificates of the CA now in place.

Pure decisions first (which namespaces and workloads, the batches, whether a rollout finished, read from the object's
status as `kubectl rollout status` reads it), then the I/O on _k8s.Cluster. A restart is what `kubectl rollout
restart` does - the pod template annotation kubectl.kubernetes.io/restartedAt - plus a marker, meshfed.istio/restarted-for,
holding the token of the restart (for example the rotation's id). A workload whose template carries the token was
restarted for it and is skipped: a rerun writes nothing, and an interrupted restart resumes (the batch it left in
flight is waited for first).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass, field

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RESTARTED_FOR = "meshfed.istio/restarted-for"
RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
MERGE_PATCH = "application/merge-patch+json"
PAGE, MAX_PAGES = 500, 40
POLL = 2.0


class RestartError(Exception):
    """A restart that did not finish within its bound, or could not be listed; the message names the workloads."""


@dataclass(frozen=True)
class Workload:
    """One workload as listed: where it stands before anything is written."""

    kind: str
    namespace: str
    name: str
    marker: str = ""  # the token its pod template carries ("" - none)
    progress: str = ""  # why its rollout has not finished ("" - it has)
    skip: str = ""  # why it cannot be restarted by a template change ("" - it can)
    gateway: bool = False  # its pod template asks for Istio's gateway injection template

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: the namespaces with sidecar injection
    batch_size: int = 2
    timeout: float = 600.0
    only: str = ""  # "" every workload; "gateways" those injected as gateways; "workloads" the others


@dataclass
class RestartPlan:
    waiting: list[Workload] = field(default_factory=list)  # carry the token, rollout not finished (a run was interrupted)
    restart: list[Workload] = field(default_factory=list)
    done: list[Workload] = field(default_factory=list)  # carry the token, rolled out
    skipped: list[Workload] = field(default_factory=list)


# Pure decisions


def injected(labels: dict | None) -> bool:
    """Istio injects the sidecar into this namespace's pods: istio-injection=enabled, or a revision label (which
    istio-injection=disabled overrides)."""
    labels = labels or {}
    injection = labels.get(_istio.INJECTION_LABEL)
    return injection == "enabled" or (_istio.REVISION_LABEL in labels and injection != "disabled")


def _count(status: dict, key: str) -> int:
    value = status.get(key)
    return value if isinstance(value, int) else 0


def rollout(kind: str, obj: dict) -> str:
    """Why the workload's rollout has not finished, from its status ("" when it has): what `kubectl rollout status` checks."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if _count(status, "observedGeneration") < _count(meta, "generation"):
        return "its controller has not seen the change yet"
    if kind == "DaemonSet":
        desired = _count(status, "desiredNumberScheduled")
        if _count(status, "updatedNumberScheduled") < desired:
            return f"{_count(status, 'updatedNumberScheduled')} of {desired} pods updated"
        if _count(status, "numberAvailable") < desired:
            return f"{_count(status, 'numberAvailable')} of {desired} updated pods available"
        return ""
    replicas = spec.get("replicas", 1) if isinstance(spec.get("replicas", 1), int) else 1
    updated, ready = _count(status, "updatedReplicas"), _count(status, "readyReplicas")
    if kind == "StatefulSet":
        if ready < replicas:
            return f"{ready} of {replicas} replicas ready"
        partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition") or 0
        if partition:
            return "" if updated >= replicas - partition else f"{updated} of {replicas - partition} replicas updated"
        if updated < replicas or status.get("updateRevision") != status.get("currentRevision"):
            return f"{updated} of {replicas} replicas updated"
        return ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "its progress deadline was exceeded"
    if updated < replicas:
        return f"{updated} of {replicas} replicas updated"
    if _count(status, "replicas") > updated:
        return f"{_count(status, 'replicas') - updated} old replicas still terminating"
    if ready < updated or _count(status, "availableReplicas") < updated:
        return f"{_count(status, 'availableReplicas')} of {updated} updated replicas available"
    return ""


def not_restartable(kind: str, obj: dict) -> str:
    """Why a changed pod template would not restart this workload ("" when it would)."""
    spec = obj.get("spec") or {}
    if kind == "Deployment" and spec.get("paused"):
        return "paused: a paused Deployment does not roll out (kubectl rollout resume)"
    if kind != "Deployment" and (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return "updateStrategy OnDelete: its pods change only when they are deleted"
    return ""


def workload_of(kind: str, obj: dict) -> Workload:
    meta = obj.get("metadata") or {}
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    marker = (template.get("annotations") or {}).get(RESTARTED_FOR) or ""
    workload = Workload(kind, meta.get("namespace") or "", meta.get("name") or "", str(marker), rollout(kind, obj), not_restartable(kind, obj))
    return dataclasses.replace(workload, gateway=gateway_injected(obj))


def gateway_injected(obj: dict) -> bool:
    """The workload's pod template asks for Istio's gateway injection template (inject.istio.io/templates)."""
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    templates = (template.get("annotations") or {}).get(_istio.INJECT_TEMPLATES_ANNOTATION)
    return isinstance(templates, str) and _istio.GATEWAY_TEMPLATE in (name.strip() for name in templates.split(","))


def selected(workloads: list[Workload], only: str) -> list[Workload]:
    """The workloads a restart of that kind covers (Settings.only)."""
    if only == "gateways":
        return [workload for workload in workloads if workload.gateway]
    if only == "workloads":
        return [workload for workload in workloads if not workload.gateway]
    return list(workloads)


def restart_plan(workloads: list[Workload], token: str) -> RestartPlan:
    """What a restart for token does, in a stable order (namespace, kind, name)."""
    result = RestartPlan()
    for workload in sorted(workloads, key=lambda w: (w.namespace, list(RESOURCES).index(w.kind), w.name)):
        if workload.marker == token:
            (result.waiting if workload.progress else result.done).append(workload)
        elif workload.skip:
            result.skipped.append(workload)
        else:
            result.restart.append(workload)
    return result


def batches(items: list, size: int) -> list[list]:
    size = max(1, size)
    return [items[start : start + size] for start in range(0, len(items), size)]


def patch_body(token: str, at: str) -> dict:
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at, RESTARTED_FOR: token}}}}}


def stamp(now: datetime.datetime) -> str:
    """RFC 3339 in UTC, to the microsecond: the workloads of one batch share it, batches differ."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# I/O


def _all_items(cluster: _k8s.Cluster, what: str, path: str, **query) -> list[dict]:
    items: list[dict] = []
    cont = ""
    for _page in range(MAX_PAGES):
        answer = cluster.get(what, path, **query, **{"limit": PAGE, **({"continue": cont} if cont else {})}) or {}
        items += answer.get("items") or []
        cont = (answer.get("metadata") or {}).get("continue") or ""
        if not cont:
            return items
    raise RestartError(f"{what} on {cluster.name}: more than {PAGE * MAX_PAGES} objects; name the namespaces to restart instead")


def namespaces_of(cluster: _k8s.Cluster, settings: Settings) -> list[str]:
    if settings.namespaces:
        return sorted(set(settings.namespaces))
    found = set()
    for selector in (f"{_istio.INJECTION_LABEL}=enabled", _istio.REVISION_LABEL):
        for item in _all_items(cluster, f"listing namespaces ({selector})", "/api/v1/namespaces", labelSelector=selector):
            meta = item.get("metadata") or {}
            # a label there is no injection (Istio ignores those namespaces) and restarting them is not ours to do
            if injected(meta.get("labels")) and meta.get("name") and meta["name"] not in _istio.INJECTION_IGNORED_NAMESPACES:
                found.add(meta["name"])
    return sorted(found)


def _path(workload: Workload) -> str:
    return _k8s.namespaced(workload.namespace, RESOURCES[workload.kind], workload.name, group="apps")


def list_workloads(cluster: _k8s.Cluster, namespaces: list[str]) -> list[Workload]:
    found = []
    for namespace in namespaces:
        for kind, resource in RESOURCES.items():
            for item in _all_items(cluster, f"listing {resource} in {namespace}", _k8s.namespaced(namespace, resource, group="apps")):
                found.append(workload_of(kind, item))
    return found


def _wait(cluster: _k8s.Cluster, batch: list[Workload], deadline: float, timeout: float, left: list[Workload], sleep, clock) -> None:
    """Until every workload of the batch has rolled out (one gone counts as done); past the deadline, RestartError."""
    pending = {workload.ref: workload for workload in batch}
    reasons: dict[str, str] = {}
    while True:
        for ref, workload in list(pending.items()):
            obj = cluster.get(f"reading {workload.kind} {workload.namespace}/{workload.name}", _path(workload), missing_ok=True)
            reason = "" if obj is None else rollout(workload.kind, obj)
            if reason:
                reasons[ref] = reason
            else:
                del pending[ref]
        if not pending:
            return
        remaining = deadline - clock()
        if remaining <= 0:
            stuck = "; ".join(
                f"{ref} ({reasons[ref]}{', and before the restart: ' + pending[ref].progress if pending[ref].progress else ''})" for ref in pending
            )
            rest = f"; not restarted: {', '.join(w.ref for w in left)}" if left else ""
            raise RestartError(
                f"{cluster.name}: the restart did not finish within {timeout:g} s: {stuck}{rest}. No further batch was started: "
                "make those workloads roll out (or scale them down), then run again - the restart resumes"
            )
        sleep(min(POLL, remaining))


def restart(
    cluster: _k8s.Cluster,
    token: str,
    settings: Settings,
    check_mode: bool,
    deadline: float | None = None,
    sleep=time.sleep,
    clock=time.monotonic,
    now=None,
) -> dict:
    """Restart, batch by batch, each workload not yet restarted for token; each batch rolled out before the next starts,
    the whole bounded by settings.timeout (or deadline). Returns what was (or, in check mode, would be) done."""
    started = clock()
    deadline = started + settings.timeout if deadline is None else deadline
    now = now or (lambda: datetime.datetime.now(datetime.UTC))
    namespaces = namespaces_of(cluster, settings)
    decided = restart_plan(selected(list_workloads(cluster, namespaces), settings.only), token)
    planned = batches(decided.restart, settings.batch_size)
    result = {
        "changed": bool(decided.restart),
        "namespaces": namespaces,
        "batches": [[w.ref for w in batch] for batch in planned],
        "restarted": [w.ref for w in decided.restart],
        "resumed": [w.ref for w in decided.waiting],
        "already": [w.ref for w in decided.done],
        "skipped": [{"workload": w.ref, "reason": w.skip} for w in decided.skipped],
        "diff": {"before": {w.ref: w.marker for w in decided.restart}, "after": dict.fromkeys((w.ref for w in decided.restart), token)},
        "waited": 0.0,
    }
    if check_mode:
        return result
    if decided.waiting:
        _wait(cluster, decided.waiting, deadline, settings.timeout, decided.restart, sleep, clock)
    for index, batch in enumerate(planned):
        left = [w for later in planned[index + 1 :] for w in later]
        if clock() >= deadline:
            raise RestartError(
                f"{cluster.name}: the restart did not finish within {settings.timeout:g} s; not restarted: "
                f"{', '.join(w.ref for w in batch + left)}. Run again: the restart resumes"
            )
        body = patch_body(token, stamp(now()))
        for workload in batch:
            cluster.request(f"restarting {workload.ref}", "PATCH", _path(workload), body=body, content_type=MERGE_PATCH, missing_ok=True)
        _wait(cluster, batch, deadline, settings.timeout, left, sleep, clock)
    result["waited"] = round(clock() - started, 1)
    return result


def restart_clusters(clusters: dict[str, _k8s.Cluster], token: str, settings: Settings, check_mode: bool, sleep=time.sleep, clock=time.monotonic) -> dict:
    """restart() in each cluster in turn, one bound for them all. Returns cluster name -> result (without its diff)."""
    deadline = clock() + settings.timeout
    results = {}
    for name, cluster in clusters.items():
        results[name] = restart(cluster, token, settings, check_mode, deadline=deadline, sleep=sleep, clock=clock)
        del results[name]["diff"]
    return results
