# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: one run of the mesh doctor (checks, optional reachability, report files).

Shared by the action plugin (runs in the controller, no module process) and the module.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

from ansible_collections.meshfed.istio.plugins.module_utils import _doctor, _doctor_report, _istio, _trust
from ansible_collections.meshfed.istio.plugins.module_utils._io import write_atomic
from ansible_collections.meshfed.istio.plugins.module_utils._pki_store import read_optional

DOT_TIMEOUT = 30
GATEWAY_PORT = 15443
ARGUMENT_SPEC = dict(
    plan=dict(type="dict", required=True),
    states=dict(type="dict", required=True),
    pki_dir=dict(type="path", default=""),
    expiry_warning_days=dict(type="int", default=30),
    allow_loopback=dict(type="bool", default=False),
    expect_rotation_flags=dict(type="bool", default=True),
    check_reachability=dict(type="bool", default=False),
    reachability_timeout=dict(type="float", default=2.0),
    report_dir=dict(type="path", default=""),
    dot=dict(type="str", default="dot"),
)


class DoctorInputError(Exception):
    pass


def report_dir(option: str, pki_dir: str) -> str:
    """Where the report goes: the option; empty means beside the PKI (<pki_dir>-report), none means nowhere."""
    if option == "none":
        return ""
    return option or (pki_dir.rstrip("/") + "-report" if pki_dir else "")


def expected_roots(pki_dir: str) -> list[str]:
    return _trust.fingerprints(read_optional(os.path.join(pki_dir, _istio.ROOT_CERT))) if pki_dir else []


def reachability(plan: dict, states: dict, timeout: float) -> dict:
    results: dict = {}
    for host in plan["clusters"]:
        for address in ((states.get(host) or {}).get("gateway") or {}).get("addresses") or []:
            try:
                with socket.create_connection((address, GATEWAY_PORT), timeout=timeout):
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


def write_report(directory: str, params: dict, check_mode: bool, plan: dict, states: dict, findings: list[dict], warnings: list) -> tuple[bool, dict]:
    source = _doctor_report.dot(plan, states, findings)
    svg, warning = render_svg(params["dot"], source)
    if warning:
        warnings.append(warning)
    files = {
        "json": ("findings.json", json.dumps({"summary": _doctor.summary(findings), "findings": findings}, indent=2, sort_keys=True) + "\n"),
        "dot": ("mesh.dot", source),
        "markdown": ("report.md", _doctor_report.markdown(plan, states, findings, "mesh.svg" if svg else None, source)),
    }
    contents = {key: (name, text.encode()) for key, (name, text) in files.items()}
    if svg is not None:
        contents["svg"] = ("mesh.svg", svg)
    changed = any(read_optional(os.path.join(directory, name)) != data for name, data in contents.values())
    if changed and not check_mode:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        for name, data in contents.values():
            write_atomic(os.path.join(directory, name), data, 0o644)
    paths = {key: os.path.join(directory, item[0]) for key, item in contents.items()}
    paths.setdefault("svg", "")
    return changed, paths


def run(params: dict, check_mode: bool) -> tuple[dict, list[str]]:
    """The doctor's result (findings, summary, healthy, report, changed) and warnings for the user."""
    plan, states = params["plan"], params["states"]
    unknown = sorted(set(states) - set(plan.get("clusters") or {}))
    if not plan.get("clusters") or unknown:
        raise DoctorInputError(
            f"states and plan disagree: hosts {', '.join(unknown) or 'none'} are not in the plan; pass the result of meshfed.istio.mesh_plan for the same hosts"
        )
    findings = _doctor.diagnose(
        plan,
        states,
        expected_roots=expected_roots(params["pki_dir"]),
        expiry_days=params["expiry_warning_days"],
        allow_loopback=params["allow_loopback"],
        expect_rotation_flags=params["expect_rotation_flags"],
        rotations=_trust.root_rotations_in_progress(params["pki_dir"]) if params["pki_dir"] else [],
    )
    if params["check_reachability"]:
        findings += _doctor.reachability_findings(plan, states, reachability(plan, states, params["reachability_timeout"]))
    warnings: list[str] = []
    changed, paths = False, {}
    directory = report_dir(params["report_dir"], params["pki_dir"])
    if directory:
        changed, paths = write_report(directory, params, check_mode, plan, states, findings, warnings)
    summary = _doctor.summary(findings)
    roots = _doctor.roots_by_cluster(plan, states)
    result = {
        "changed": changed,
        "findings": findings,
        "summary": summary,
        "healthy": summary["error"] == 0,
        "report": paths,
        "roots": roots,
        "shared_root": _doctor.shared_root(roots),
    }
    result["summary_text"] = _doctor_report.summary_text(len(plan["clusters"]), result)
    return result, warnings
