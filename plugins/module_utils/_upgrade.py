# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: a canary-revision upgrade of a multi-cluster mesh, as pure functions.

What each cluster runs (its revisions, tags, the revision each namespace injects from, the east-west gateway's revision),
read from the API reads of _upgrade_run; how far the upgrade to a target revision is, per cluster and mesh-wide; what
is refused before anything is written; what the next actions are. The order is Istio's for one cluster, stretched over
the mesh, each stage finished in every cluster before the next starts:

1. primaries: the target's control plane on every primary (and, on a primary with remotes, istiod-<target> exposed
   through its east-west gateway), Ready;
2. remotes: the target's control plane on every remote (profile remote: Service istiod-<target> at the primary's
   gateway, injector istio-sidecar-injector-<target>);
3. namespaces: every namespace that injects from another revision is moved to istio.io/rev=<target>; a namespace on a
   revision tag of the user's (istio.io/rev=<tag>, not default) keeps its label: the tag is moved to the target instead;
4. workloads: while an old revision is installed, the workloads of every injecting namespace restarted in bounded
   batches (the restart itself is _workloads', run through the runner's hook), each namespace then marked with the
   restart's token, so that the old proxies are gone before the old revision is removed;
5. gateways: the east-west gateway reinstalled on the target revision; then, while an old revision is installed, the
   workloads of the injecting namespaces that Istio injects as gateways (pod template inject.istio.io/templates with
   gateway; the workloads stage leaves them out) restarted the same way, each namespace then annotated
   meshfed.istio/gateways-restarted-for;
6. old_revision: the default tag moved to the target, then every other revision uninstalled - remotes before
   primaries, and only in a cluster where no injected pod still runs a proxy of it.
"""

from __future__ import annotations

import json
import re

from ansible_collections.meshfed.istio.plugins.module_utils import _istio
from ansible_collections.meshfed.istio.plugins.module_utils._cluster_state import INJECTED_POD_SELECTOR
from ansible_collections.meshfed.istio.plugins.module_utils._workloads import RESTARTED_FOR
from ansible_collections.meshfed.istio.plugins.module_utils._workloads import gateway_injected as _workloads_gateway

STAGES = ("primaries", "remotes", "namespaces", "workloads", "gateways", "old_revision")
STAGE_TITLES = {
    "primaries": "1. the target control plane on every primary, Ready",
    "remotes": "2. the target control plane on every remote",
    "namespaces": "3. namespaces moved to the target revision",
    "workloads": "4. workloads of the injecting namespaces restarted, in batches",
    "gateways": "5. east-west gateways on the target revision",
    "old_revision": "6. the old revision removed, remotes first",
}
INJECTOR = "istio-sidecar-injector"
TAG_WEBHOOK_PREFIX = "istio-revision-tag-"
DEFAULT_TAG = "default"
# On a namespace: the token of the restart of its gateway-injected workloads in the gateways stage (done there).
GATEWAYS_RESTARTED_FOR = "meshfed.istio/gateways-restarted-for"
_VERSION = re.compile(r"\A(\d+)\.(\d+)(?:[.-].*)?\Z")
_SAFE_TAG = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")  # an image tag (OCI), short: printed as it is
_PATCH = re.compile(r"\A\d+\.\d+\.(\d+)(?:(-(?:alpha|beta|rc)(?![a-z]))|(?![0-9]))")
# istioctl x precheck -o json: a list of analysis messages (code IST0nnn, level Error/Warning/Info, message, origin)
PRECHECK_CODE = re.compile(r"\AIST\d{4}\Z")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
PRECHECK_TEXT_MAX = 300


class UpgradeError(Exception):
    """The upgrade refuses to start, or a stage cannot finish."""


def minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of 1.31.0, 1.31-dev, 1.30.1-distroless; None when it is no Istio version."""
    match = _VERSION.match(version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def patch(version: str) -> tuple[int, int] | None:
    """(patch, 1 for a release or 0 for its alpha, beta or rc) of 1.31.2, 1.31.2-rc.0, 1.31.2-distroless; None without a
    patch (1.31-dev: only its minor compares)."""
    match = _PATCH.match(version or "")
    return (int(match.group(1)), 0 if match.group(2) else 1) if match else None


def older(target_version: str, installed: str) -> bool:
    """The target is an older release than an installed istiod: a lower minor, or the same minor and a lower patch
    (a proxy must never be served by an istiod older than itself; rolled back by a patch it would be)."""
    wanted, have = minor(target_version), minor(installed)
    if wanted is None or have is None or wanted != have:
        return wanted is not None and have is not None and wanted < have
    wanted_patch, have_patch = patch(target_version), patch(installed)
    return wanted_patch is not None and have_patch is not None and wanted_patch < have_patch


def _labels(item: dict) -> dict:
    return (item.get("metadata") or {}).get("labels") or {}


def _name(item: dict) -> str:
    return (item.get("metadata") or {}).get("name") or ""


def _ready(deployment: dict) -> bool:
    """A Deployment whose current generation has every wanted replica (at least one) ready."""
    meta, spec, status = deployment.get("metadata") or {}, deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = spec.get("replicas", 1) or 1
    current = (status.get("observedGeneration") or 0) >= (meta.get("generation") or 0)
    return current and (status.get("readyReplicas") or 0) >= wanted and (status.get("updatedReplicas") or 0) >= wanted


def _revision_of(item: dict) -> str:
    return _labels(item).get(_istio.REVISION_LABEL) or _istio.DEFAULT_REVISION


def observe(raw: dict) -> dict:
    """One cluster's revisions, from the reads of _upgrade_run.fetch (untrusted data: only names and labels are kept).

    revisions: revision -> istiod (a Deployment), ready, version (its image tag), multiroot (the rotation flag in its
    env), owner (the IstioOperator it was installed from), owners (that of each of its istiod, Service and injector),
    injector (its webhook), service (its istiod Service), record (this collection installed its control plane).
    tags: tag -> revision. namespaces: namespace -> the revision its pods are injected from (tags resolved), for the
    namespaces that inject. restarted: namespace -> the token of the last workload restart of an upgrade finished
    there (the namespace annotation meshfed.istio/restarted-for; '' for none), for the same namespaces. gateway: the
    east-west gateway's revision ('' without one). pods: revision -> injected pods still carrying it (a sample).
    cacerts: the plugged-in CA is complete.
    """
    revisions: dict[str, dict] = {}

    def revision(name: str) -> dict:
        return revisions.setdefault(name, new_revision())

    for item in raw.get("deployments") or []:
        if _labels(item).get("app") == "istiod":
            facts = revision(_revision_of(item))
            containers = (((item.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
            env = {entry.get("name"): entry.get("value") for entry in containers[0].get("env") or [] if isinstance(entry, dict)}
            version = _istio.image_version(containers[0].get("image", ""))
            multiroot = _istio.flag_on(env.get(_istio.MULTIROOT_ENV))
            facts.update(istiod=True, ready=_ready(item), version=version, multiroot=multiroot, owner=_labels(item).get(_istio.OWNER_LABEL, ""))
            facts["owners"].append(facts["owner"])
    tags: dict[str, str] = {}
    for item in raw.get("webhooks") or []:
        labels = _labels(item)
        if labels.get(_istio.TAG_LABEL):
            tags[labels[_istio.TAG_LABEL]] = _revision_of(item)
        elif _name(item) == _istio.suffixed(INJECTOR, _revision_of(item)):
            revision(_revision_of(item))["injector"] = True
            revision(_revision_of(item))["owners"].append(labels.get(_istio.OWNER_LABEL, ""))
    for item in raw.get("services") or []:
        labels = _labels(item)
        if _istio.TAG_LABEL not in labels and _istio.REVISION_LABEL in labels and _name(item) == _istio.suffixed("istiod", _revision_of(item)):
            revision(_revision_of(item))["service"] = True
            revision(_revision_of(item))["owners"].append(labels.get(_istio.OWNER_LABEL, ""))
    records = set(raw.get("records") or [])
    for rev, facts in revisions.items():
        facts["record"] = _istio.control_plane_name(rev) in records
    namespaces, restarted = {}, {}
    gateways_restarted: dict[str, str] = {}
    tagged: dict[str, str] = {}
    for item in raw.get("namespaces") or []:
        rev = injects_from(_labels(item), tags)
        if rev:
            namespaces[_name(item)] = rev
            restarted[_name(item)] = str(((item.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_FOR) or "")
            gateways_restarted[_name(item)] = str(((item.get("metadata") or {}).get("annotations") or {}).get(GATEWAYS_RESTARTED_FOR) or "")
            tag = user_tag(_labels(item), tags)
            if tag:
                tagged[_name(item)] = tag
    gateway = next((item for item in raw.get("deployments") or [] if _name(item) == _istio.EASTWEST_GATEWAY), None)
    pods: dict[str, int] = {}
    for item in raw.get("pods") or []:
        rev = _labels(item).get(_istio.REVISION_LABEL)
        if rev:
            pods[rev] = pods.get(rev, 0) + 1
    cacerts = raw.get("cacerts")
    return {
        "revisions": revisions,
        "tags": tags,
        "namespaces": namespaces,
        "restarted": restarted,
        "gateways_restarted": gateways_restarted,
        "tagged": tagged,
        "gateway": _revision_of(gateway) if gateway is not None else "",
        "gateway_ready": gateway is not None and _ready(gateway),
        "pods": pods,
        "cacerts": cacerts is not None and all(key in cacerts for key in _istio.BUNDLE_KEYS),
        "gateway_addresses": _istio.gateway_address_problem(raw.get("gateway_service"))[0],
        "routes": {_name(item): route_destination(item) for item in raw.get("routes") or []},
    }


# A Kubernetes label value: what a revision read from a cluster must be before it goes into a label selector
_LABEL_VALUE = re.compile(r"\A(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)\Z")


def revision_pods_selector(revision: str) -> str:
    """The label selector of the injected pods whose proxies a revision's istiod serves (Istio's injector labels each
    pod istio.io/rev=<revision>). A revision that is no label value (it comes from the cluster) is refused."""
    if not _LABEL_VALUE.match(revision or ""):
        raise UpgradeError(f"a revision read from the cluster is no Kubernetes label value ({describe(revision)}); it is not removed")
    return f"{INJECTED_POD_SELECTOR},{_istio.REVISION_LABEL}={revision}"


def describe(text: object, limit: int = 64) -> str:
    """Untrusted text from a cluster as a bounded printable description (never copied raw into a message)."""
    line = _UNPRINTABLE.sub("?", str(text or ""))
    return repr(line if len(line) <= limit else line[: limit - 3] + "...") + (f" ({len(str(text))} characters)" if len(str(text or "")) > limit else "")


def route_destination(virtual_service: dict) -> str:
    """The host a VirtualService's first TLS route sends to ('' for none)."""
    for route in (virtual_service.get("spec") or {}).get("tls") or []:
        for destination in route.get("route") or []:
            return ((destination or {}).get("destination") or {}).get("host") or ""
    return ""


def new_revision() -> dict:
    return {"istiod": False, "ready": False, "version": "", "multiroot": False, "injector": False, "service": False, "record": False, "owner": "", "owners": []}


def injects_from(labels: dict, tags: dict[str, str]) -> str:
    """The revision a namespace's new pods are injected from ('' for none): istio-injection=enabled (which wins) is the
    default tag's, istio.io/rev a revision or a tag."""
    injection = labels.get(_istio.INJECTION_LABEL)
    if injection is not None:
        return tags.get(DEFAULT_TAG, _istio.DEFAULT_REVISION) if injection == "enabled" else ""
    rev = labels.get(_istio.REVISION_LABEL)
    return tags.get(rev, rev) if rev else ""


def user_tag(labels: dict, tags: dict[str, str]) -> str:
    """The revision tag of the user's (not default) a namespace injects through: istio.io/rev=<tag> without
    istio-injection ('' for none)."""
    rev = labels.get(_istio.REVISION_LABEL)
    if labels.get(_istio.INJECTION_LABEL) is not None or not rev or rev == DEFAULT_TAG or rev not in tags:
        return ""
    return rev


def tags_to_move(view: dict, target: str) -> list[str]:
    """The user's tags the namespaces stage moves to the target in one cluster: those a namespace injects through that
    point elsewhere (Istio's tag-based canary: the tag moves, the namespaces keep their labels)."""
    return sorted({tag for tag in view.get("tagged", {}).values() if view["tags"].get(tag) != target})


def tags_holding(view: dict, revision: str) -> list[str]:
    """The revision tags other than default that still point at a revision (it must not be removed while they do)."""
    return sorted(tag for tag, rev in view["tags"].items() if tag != DEFAULT_TAG and rev == revision)


def gateways_due(view: dict, target: str, restart: bool = True) -> list[str]:
    """The namespaces whose gateway-injected workloads the gateways stage restarts in one cluster: as restart_due, but
    marked with GATEWAYS_RESTARTED_FOR."""
    if not restart or not old_revisions(view, target):
        return []
    token = restart_token(target)
    marks = view.get("gateways_restarted", {})
    return sorted(namespace for namespace in view["namespaces"] if namespace not in _istio.INJECTION_IGNORED_NAMESPACES and marks.get(namespace) != token)


def pinned_gateways(deployments: list[dict], view: dict, target: str) -> list[dict]:
    """Gateway-injected Deployments a restart cannot move: in a namespace without injection labels, their pod template
    names an old revision (istio.io/rev=<revision>, or a tag pointing at one), so the injector of that revision keeps
    injecting them (a namespace's label wins over the pod's: Istio's injector webhooks). Each: workload (Kind
    namespace/name), revision (what the template names), resolved (the revision)."""
    old = set(old_revisions(view, target))
    found = []
    for item in deployments:
        meta = item.get("metadata") or {}
        namespace = meta.get("namespace") or ""
        template = ((item.get("spec") or {}).get("template") or {}).get("metadata") or {}
        pin = (template.get("labels") or {}).get(_istio.REVISION_LABEL)
        # istioctl's own gateways (the east-west one) carry their IstioOperator's label: reinstalled or uninstalled with it
        if namespace in view["namespaces"] or not pin or not _workloads_gateway(item) or _istio.OWNER_LABEL in (meta.get("labels") or {}):
            continue
        resolved = pin if pin in old else view["tags"].get(pin, pin)
        if resolved in old:
            found.append({"workload": f"Deployment {namespace}/{meta.get('name') or ''}", "revision": pin, "resolved": resolved})
    return sorted(found, key=lambda entry: entry["workload"])


def pinned_message(cluster: str, pinned: list[dict], target: str) -> str:
    """Why an old revision stays, and how to move the pinned gateways (Istio's gateway canary upgrade)."""
    names = ", ".join(f"{entry['workload']} (istio.io/rev={entry['revision']})" for entry in pinned)
    return (
        f"cluster {cluster}: gateway Deployment(s) pin an old revision in their pod template, so a restart keeps them on it: {names}. "
        f"Move each to the target yourself: set the pod template label istio.io/rev={target} (or deploy a second gateway on {target}, "
        "shift the traffic, delete the old one), then run the upgrade again; the old revision stays until then"
    )


def moved_labels(labels: dict, target: str) -> dict:
    """A namespace's labels once it injects from the target: istio.io/rev=<target>, istio-injection gone."""
    moved = {key: value for key, value in labels.items() if key != _istio.INJECTION_LABEL}
    moved[_istio.REVISION_LABEL] = target
    return moved


def control_plane_done(view: dict, role: str, target: str, exposes_istiod: bool) -> bool:
    """The target's control plane is installed (a primary: its istiod Ready; a remote: its Service and injector)."""
    facts = view["revisions"].get(target)
    if facts is None:
        return False
    if role == "remote":
        return facts["service"] and facts["injector"]
    return facts["istiod"] and facts["ready"] and (not exposes_istiod or route_name(target) in view["routes"])


def route_name(target: str) -> str:
    return f"{_istio.ISTIOD_VIRTUAL_SERVICE}-{target}"


def old_revisions(view: dict, target: str) -> list[str]:
    return sorted(rev for rev in view["revisions"] if rev != target)


def restart_token(target: str) -> str:
    """The token of the workload restart of an upgrade to target (the marker on the workloads and namespaces)."""
    return f"upgrade/{target}"


def restart_due(view: dict, target: str, restart: bool = True) -> list[str]:
    """The namespaces whose workloads the workloads stage restarts in one cluster ([] - none): while an old revision is
    installed there, every injecting namespace (kube-system and kube-public aside, where Istio does not inject) not yet
    marked with the restart's token. Without restart (the user's opt-out) none."""
    if not restart or not old_revisions(view, target):
        return []
    token = restart_token(target)
    return sorted(
        namespace for namespace in view["namespaces"] if namespace not in _istio.INJECTION_IGNORED_NAMESPACES and view["restarted"].get(namespace) != token
    )


def progress(view: dict, cluster: dict, target: str, restart: bool = True) -> dict:
    """Which stages are finished in one cluster (cluster: the mesh plan's cluster - role, remotes)."""
    control_plane = control_plane_done(view, cluster["role"], target, bool(cluster.get("remotes")))
    return {
        "primaries": cluster["role"] != "primary" or control_plane,
        "remotes": cluster["role"] != "remote" or control_plane,
        "namespaces": all(rev == target for rev in view["namespaces"].values()),
        "workloads": not restart_due(view, target, restart),
        "gateways": view["gateway"] in ("", target) and not gateways_due(view, target, restart),
        "old_revision": not old_revisions(view, target)
        and view["tags"].get(DEFAULT_TAG, target) == target
        and (not cluster.get("remotes") or catch_all_on(view, target)),
    }


def catch_all_on(view: dict, target: str) -> bool:
    """The east-west gateway's istiod route for every other SNI (istiod-vs) goes to the target's istiod."""
    return view["routes"].get(_istio.ISTIOD_VIRTUAL_SERVICE, "").startswith(f"{_istio.suffixed('istiod', target)}.")


def mesh_stage(progresses: dict[str, dict]) -> str:
    """The first stage not finished in every cluster ('done' when none is left)."""
    return next((stage for stage in STAGES if not all(item[stage] for item in progresses.values())), "done")


def refusals(views: dict[str, dict], clusters: dict[str, dict], target: str, target_version: str, max_minor_ahead: int = 1) -> list[str]:
    """Why the upgrade must not start (nothing has been written yet). views and clusters by cluster name."""
    found = []
    if not target or target == _istio.DEFAULT_REVISION:
        found.append("set meshfed_istio_target_revision to the new revision's name (for example 1-31-0; 'default' is the revision without a name)")
    wanted = minor(target_version)
    if wanted is None:
        found.append(f"the target istioctl reports {target_version!r}, not an Istio version: set meshfed_istio_target_istioctl to the target's istioctl")
    for name, view in sorted(views.items()):
        if not view["cacerts"]:
            found.append(f"cluster {name}: cacerts is missing or incomplete, so the new istiod would start on a self-signed root; run the site playbook first")
        if not view["revisions"]:
            found.append(f"cluster {name}: no Istio control plane is installed; run the site playbook first")
        for rev, facts in sorted(view["revisions"].items()):
            if rev != target and not facts["record"]:
                found.append(
                    f"cluster {name}: revision {rev} was not installed by meshfed.istio (no install record), so this upgrade would not remove it; "
                    f"remove it with istioctl uninstall --revision {rev}, or install it with the site playbook"
                )
            if not facts["istiod"] or wanted is None:
                continue
            have = minor(facts["version"])
            # the image tag is the cluster's: described, never copied (a tag of 10,000 characters, escapes)
            tag = facts["version"] if _SAFE_TAG.match(facts["version"] or "") else describe(facts["version"])
            if have is None:
                found.append(f"cluster {name}: the istiod of revision {rev} runs image tag {tag}, no Istio version; the skew cannot be checked")
            elif older(target_version, facts["version"]):
                found.append(f"cluster {name}: revision {rev} runs Istio {tag}, newer than the target {target_version} (no downgrades)")
            elif wanted[0] != have[0] or wanted[1] - have[1] > max_minor_ahead:
                ahead = f"more than {max_minor_ahead} minor ahead of {rev} (Istio {tag})"
                found.append(f"cluster {name}: the target {target_version} is {ahead}; upgrade in steps")
        # the target's istiod, Service or injector from another IstioOperator (an install of ours that failed has no
        # record, but our name): on a remote, a planted Service and injector would pass for its control plane
        mine = view["revisions"].get(target)
        if mine is not None and any(owner != _istio.control_plane_name(target) for owner in mine["owners"]):
            found.append(f"cluster {name}: revision {target} is installed already, but not by meshfed.istio; choose another meshfed_istio_target_revision")
    return found


def precheck_due(view: dict, cluster: dict, target: str) -> bool:
    """istioctl x precheck applies to a cluster until the target's control plane is installed there."""
    return not control_plane_done(view, cluster["role"], target, bool(cluster.get("remotes")))


def _printable(text: object) -> str:
    """Text of the precheck's output (it names the cluster's objects: untrusted) as one bounded printable line."""
    line = _UNPRINTABLE.sub("?", str(text or ""))
    return line if len(line) <= PRECHECK_TEXT_MAX else line[: PRECHECK_TEXT_MAX - 3] + "..."


def precheck_result(returncode: int, stdout: str, stderr: str) -> dict:
    """What the target's istioctl x precheck -o json found in one cluster: errors (they refuse the upgrade) and warnings,
    each one line "IST0156 (CustomResourceDefinition gateways...): message". istioctl exits non-zero on any warning and
    prints nothing on stdout when it found nothing; a non-zero exit without messages is the precheck failing (an error)."""
    try:
        messages = json.loads(stdout) if (stdout or "").strip() else []
    except ValueError:
        messages = None
    if not isinstance(messages, list):
        return {"errors": [f"istioctl x precheck gave no readable result: {_printable((stderr or stdout or '').strip()[-PRECHECK_TEXT_MAX:])}"], "warnings": []}
    found: dict[str, list[str]] = {"errors": [], "warnings": []}
    for item in messages:
        if not isinstance(item, dict):
            continue
        code = str(item.get("code") or "")
        code = code if PRECHECK_CODE.match(code) else "IST????"
        origin = f" ({_printable(item['origin'])})" if item.get("origin") else ""
        line = f"{code}{origin}: {_printable(item.get('message'))}"
        level = str(item.get("level") or "")
        if level == "Error":
            found["errors"].append(line)
        elif level == "Warning":
            found["warnings"].append(line)
    if returncode != 0 and not found["errors"] and not found["warnings"]:
        found["errors"].append(f"istioctl x precheck failed: {_printable((stderr or '').strip()[-PRECHECK_TEXT_MAX:])}")
    return found


def precheck_refusals(results: dict[str, dict]) -> list[str]:
    """The precheck errors by cluster name, as refusals that name the cluster and the check, then how to go on."""
    found = [f"cluster {name}: istioctl x precheck of the target: {error}" for name, result in sorted(results.items()) for error in result["errors"]]
    if found:
        found.append("fix what the precheck found (https://istio.io/latest/docs/reference/config/analysis/), or skip it with upgrade_precheck=false")
    return found


def gate(stage: str, progresses: dict[str, dict]) -> list[str]:
    """What keeps a stage from starting: every earlier stage must be finished in every cluster."""
    waiting = []
    for earlier in STAGES[: STAGES.index(stage)]:
        behind = sorted(name for name, item in progresses.items() if not item[earlier])
        if behind:
            waiting.append(f"stage {earlier} is not finished in {', '.join(behind)}")
    return waiting


def _order(clusters: dict[str, dict], role: str) -> list[str]:
    return sorted(name for name, cluster in clusters.items() if cluster["role"] == role)


def actions(stage: str, views: dict[str, dict], clusters: dict[str, dict], target: str, restart: bool = True) -> list[dict]:
    """The writes of one stage, in order, from the views (by cluster name); [] when the stage is finished."""
    planned: list[dict] = []

    def add(name: str, action: str, **detail) -> None:
        planned.append({"stage": stage, "cluster": name, "action": action, **detail})

    if stage in ("primaries", "remotes"):
        role = "primary" if stage == "primaries" else "remote"
        for name in _order(clusters, role):
            if progress(views[name], clusters[name], target)[stage]:
                continue
            add(name, "install_control_plane", revision=target)
            if role == "primary" and clusters[name].get("remotes") and route_name(target) not in views[name]["routes"]:
                add(name, "expose_istiod", revision=target)
            if role == "primary":
                add(name, "wait_ready", revision=target)
    elif stage == "namespaces":
        for name in sorted(clusters):
            for tag in tags_to_move(views[name], target):
                add(name, "move_tag", tag=tag, revision=target, previous=views[name]["tags"].get(tag, ""))
            for namespace, rev in sorted(views[name]["namespaces"].items()):
                if rev != target and namespace not in views[name].get("tagged", {}):
                    add(name, "move_namespace", namespace=namespace, revision=target, previous=rev)
    elif stage == "workloads":
        for name in sorted(clusters):
            due = restart_due(views[name], target, restart)
            if due:
                add(name, "restart_workloads", revision=target, namespaces=due, token=restart_token(target))
    elif stage == "gateways":
        for name in sorted(clusters):
            if views[name]["gateway"] not in ("", target):
                add(name, "install_gateway", revision=target, previous=views[name]["gateway"])
        for name in sorted(clusters):
            due = gateways_due(views[name], target, restart)
            if due:
                add(name, "restart_gateways", revision=target, namespaces=due, token=restart_token(target))
    elif stage == "old_revision":
        for name in _order(clusters, "remote") + _order(clusters, "primary"):
            view = views[name]
            if view["tags"].get(DEFAULT_TAG, target) != target:
                add(name, "move_default_tag", revision=target, previous=view["tags"][DEFAULT_TAG])
            for rev in old_revisions(view, target):
                add(name, "uninstall", revision=rev)
            if clusters[name]["role"] == "primary" and clusters[name].get("remotes") and not catch_all_on(view, target):
                add(name, "expose_istiod_catch_all", revision=target)
    return planned


def plan(views: dict[str, dict], clusters: dict[str, dict], target: str, last_stage: str = STAGES[-1], restart: bool = True) -> list[dict]:
    """Every remaining write up to last_stage, in order, as if each stage finishes (check mode's plan)."""
    planned = []
    for index, stage in enumerate(STAGES[: STAGES.index(last_stage) + 1]):
        planned += actions(stage, views if index == 0 else projected_views(views, clusters, target, stage), clusters, target, restart)
    return planned


def projected_views(views: dict[str, dict], clusters: dict[str, dict], target: str, stage: str) -> dict[str, dict]:
    """The views once every stage before this one has finished."""
    return {name: project(view, clusters[name], target, upto=STAGES[STAGES.index(stage) - 1]) for name, view in views.items()}


def project(view: dict, cluster: dict, target: str, upto: str) -> dict:
    """A view as it will be once the stages up to `upto` (a stage name; '' for none) have finished."""
    if not upto:
        return view
    done = STAGES[: STAGES.index(upto) + 1]
    projected = {**view, "revisions": {rev: dict(facts) for rev, facts in view["revisions"].items()}, "routes": dict(view["routes"])}
    if ("primaries" in done and cluster["role"] == "primary") or ("remotes" in done and cluster["role"] == "remote"):
        facts = projected["revisions"].setdefault(target, new_revision())
        facts.update(record=True, injector=True, service=True, istiod=cluster["role"] == "primary", ready=cluster["role"] == "primary")
        if cluster.get("remotes"):
            projected["routes"].setdefault(route_name(target), "")
    if "namespaces" in done:
        projected["namespaces"] = {namespace: target for namespace in view["namespaces"]}
        projected["tags"] = {**view["tags"], **dict.fromkeys(tags_to_move(view, target), target)}
    if "workloads" in done:
        projected["restarted"] = dict.fromkeys(view["namespaces"], restart_token(target))
    if "gateways" in done and view["gateway"]:
        projected["gateway"] = target
    if "gateways" in done:
        projected["gateways_restarted"] = dict.fromkeys(view["namespaces"], restart_token(target))
    return projected


def summary(plan_actions: list[dict]) -> dict[str, dict[str, list[str]]]:
    """The plan per stage and cluster, as lines a person reads (check mode's output)."""
    lines: dict[str, dict[str, list[str]]] = {}
    for item in plan_actions:
        if item["action"] == "restart_workloads":
            lines.setdefault(STAGE_TITLES[item["stage"]], {}).setdefault(item["cluster"], []).extend(restart_lines(item))
            continue
        if item["action"] in ("restart_gateways", "pinned_gateways"):
            lines.setdefault(STAGE_TITLES[item["stage"]], {}).setdefault(item["cluster"], []).extend(gateway_lines(item))
            continue
        detail = {
            "install_control_plane": f"install control plane {_istio.control_plane_name(item['revision'])} (istioctl)",
            "expose_istiod": f"route SNI istiod-{item['revision']} through the east-west gateway ({route_name(item['revision'])})",
            "wait_ready": f"wait until istiod-{item['revision']} is Ready",
            "move_namespace": f"namespace {item.get('namespace')}: {item.get('previous')} -> istio.io/rev={item['revision']}",
            "move_tag": f"move the revision tag {item.get('tag')} to {item['revision']} (from {item.get('previous')}); its namespaces keep their labels",
            "install_gateway": f"reinstall the east-west gateway on revision {item['revision']} (from {item.get('previous')})",
            "move_default_tag": f"move the default tag to {item['revision']} (from {item.get('previous')})",
            "uninstall": f"uninstall revision {item['revision']} ({_istio.control_plane_name(item['revision'])})",
            "expose_istiod_catch_all": f"route every other SNI to istiod-{item['revision']} ({_istio.ISTIOD_VIRTUAL_SERVICE})",
        }[item["action"]]
        lines.setdefault(STAGE_TITLES[item["stage"]], {}).setdefault(item["cluster"], []).append(detail)
    return lines


def _batch_lines(item: dict, what: str) -> list[str]:
    """The batches of a restart once the runner has listed them (check mode), what resumes, what cannot restart."""
    if "batches" not in item:
        return []
    lines = [f"batch {index}: {', '.join(batch)}" for index, batch in enumerate(item["batches"], 1)] or [f"no {what} to restart"]
    lines += [f"resume (in flight): {ref}" for ref in item.get("resumed") or []]
    return lines + [f"not restartable: {entry['workload']} ({entry['reason']})" for entry in item.get("skipped") or []]


def restart_lines(item: dict) -> list[str]:
    """A restart of the workloads stage as lines: the namespaces, then, once the runner has listed them, the batches."""
    head = f"restart the workloads of {', '.join(item['namespaces'])} in batches, marked {RESTARTED_FOR}={item['token']}"
    return [head, *_batch_lines(item, "workload")]


def gateway_lines(item: dict) -> list[str]:
    """The gateways stage's restart of the gateway-injected workloads, and the gateways pinned to an old revision."""
    if item["action"] == "pinned_gateways":
        return [f"not moved, pins revision {entry['resolved']}: {entry['workload']} (istio.io/rev={entry['revision']})" for entry in item["pinned"]]
    head = f"restart the gateways (injected) of {', '.join(item['namespaces'])} in batches, marked {GATEWAYS_RESTARTED_FOR}={item['token']}"
    return [head, *_batch_lines(item, "gateway")]
