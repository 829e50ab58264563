# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the mesh doctor's report (Markdown) and picture (Graphviz), as pure functions."""

from __future__ import annotations

import hashlib

from ansible_collections.meshfed.istio.plugins.module_utils._doctor import SEVERITIES, summary

ROTATION = "rotation_in_progress"
ICONS = {"error": "ERROR", "warning": "WARNING", "info": "INFO"}
EDGE_COLORS = {"ok": "#2e7d32", "warning": "#ef6c00", "error": "#c62828"}
ROOT_PALETTE = ("#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#558b2f")
# Findings that say a watch edge (watcher -> watched) is broken.
EDGE_CHECKS = (
    "remote_secret_missing",
    "remote_secret_data_key",
    "remote_secret_credential",
    "remote_secret_unparsable",
    "remote_secret_unsafe",
    "remote_secret_loopback",
    "remote_secret_duplicate",
)


def _plain(text: str) -> str:
    """Evidence as Markdown shows it literally: parts of it come from clusters (names, servers, a server's words), so no
    control character, markup or link survives."""
    printable = "".join(char if char.isprintable() else " " for char in str(text))
    return "".join(f"\\{char}" if char in "\\`*_{}[]<>()#+!|" else char for char in printable)


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _roots_of(state: dict) -> list[str]:
    """The distinct roots of a cluster's cacerts, in bundle order (two mid-rotation)."""
    return list(dict.fromkeys(root["fingerprint_sha256"] for root in (state.get("cacerts") or {}).get("roots") or []))


def _color(fingerprint: str) -> str:
    index = int(hashlib.sha256(fingerprint.encode()).hexdigest(), 16) % len(ROOT_PALETTE)
    return ROOT_PALETTE[index]


def edge_state(findings: list[dict], watcher: str, watched: str) -> str:
    severities = {f["severity"] for f in findings if f["id"] in EDGE_CHECKS and f["clusters"] == [watcher] and watched in f["peers"]}
    for severity in ("error", "warning"):
        if severity in severities:
            return severity
    return "ok"


def cluster_severity(findings: list[dict], name: str) -> str:
    severities = {f["severity"] for f in findings if name in f["clusters"]}
    return next((s for s in ("error", "warning") if s in severities), "ok")


def dot(plan: dict, states: dict, findings: list[dict]) -> str:
    """The mesh as a Graphviz digraph: networks as boxes, clusters in them, roots, remote-secret edges by state."""
    lines = [
        "digraph mesh {",
        '  graph [rankdir=LR, fontname="Helvetica", label=' + _quote(f"mesh {plan.get('mesh_id', '')}") + "];",
        '  node [fontname="Helvetica", shape=box, style="rounded,filled", fillcolor="#ffffff"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    clusters = plan["clusters"]
    roots: dict[str, list[str]] = {}
    for index, network in enumerate(sorted({c["network"] for c in clusters.values()})):
        lines.append(f"  subgraph cluster_net{index} {{")
        lines.append(f"    label={_quote('network ' + network)}; style=dashed;")
        for host, cluster in clusters.items():
            if cluster["network"] != network:
                continue
            state = states.get(host) or {}
            gateway = (state.get("gateway") or {}).get("addresses") or []
            label = [cluster["name"], cluster["role"]]
            if "error" in state:
                label.append("unreachable")
            else:
                label.append("gateway " + (", ".join(gateway) or "none"))
            for root in _roots_of(state):
                roots.setdefault(root, []).append(cluster["name"])
            border = EDGE_COLORS[{"ok": "ok", "warning": "warning", "error": "error"}[cluster_severity(findings, cluster["name"])]]
            lines.append(f"    {_quote(cluster['name'])} [label={_quote(chr(10).join(label))}, color={_quote(border)}, penwidth=2];")
        lines.append("  }")
    for root, names in sorted(roots.items()):
        node = f"root {root[:11]}"
        lines.append(f'  {_quote(node)} [shape=ellipse, fillcolor={_quote(_color(root))}, fontcolor="#ffffff"];')
        for name in names:
            lines.append(f"  {_quote(name)} -> {_quote(node)} [style=dotted, arrowhead=none, color={_quote(_color(root))}];")
    for edge in plan.get("watches") or []:
        watcher, watched = clusters[edge["watcher"]]["name"], clusters[edge["watched"]]["name"]
        state = edge_state(findings, watcher, watched)
        lines.append(f"  {_quote(watcher)} -> {_quote(watched)} [color={_quote(EDGE_COLORS[state])}, label={_quote('watches: ' + state)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def markdown(plan: dict, states: dict, findings: list[dict], picture: str | None = None, dot_source: str = "") -> str:
    counts = summary(findings)
    out = [f"# Mesh doctor: {plan.get('mesh_id', '')}", ""]
    verdict = "healthy" if not counts["error"] else "broken"
    out.append(
        f"**{verdict}**: {counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s) across {len(plan['clusters'])} cluster(s)."
    )
    rotation = next((f for f in findings if f["id"] == ROTATION), None)
    if rotation:
        out += ["", f"**mid root rotation**, not broken: {_plain(rotation['evidence'])}.", "", f"Fix: {rotation['fix']}."]
    out += ["", "## Clusters", "", "| cluster | role | network | roots (SHA-256) | east-west gateway | istiod |", "|---|---|---|---|---|---|"]
    for host, cluster in plan["clusters"].items():
        state = states.get(host) or {}
        if "error" in state:
            out.append(f"| {cluster['name']} | {cluster['role']} | {cluster['network']} | unreachable | | |")
            continue
        istiod = ", ".join(f"{i['name']} {i['version']}" for i in state.get("istiods") or []) or "-"
        gateway = ", ".join(state["gateway"]["addresses"]) or (state["gateway"]["problem"] or "none")
        roots = ", ".join(f"`{root[:23]}`" for root in _roots_of(state)) or "`none`"
        out.append(f"| {cluster['name']} | {cluster['role']} | {cluster['network']} | {roots} | {gateway} | {istiod} |")
    out += ["", "## Findings", ""]
    if not findings:
        out.append("None: every check passed.")
    for severity in SEVERITIES:
        selected = [f for f in findings if f["severity"] == severity]
        if not selected:
            continue
        out += [f"### {ICONS[severity]} ({len(selected)})", ""]
        for finding in selected:
            out.append(f"- **{finding['id']}** in {', '.join(finding['clusters'])}: {finding['title']}")
            out.append(f"  - evidence: {_plain(finding['evidence'])}")
            out.append(f"  - fix: {finding['fix']}")
        out.append("")
    out += ["", "## Picture", ""]
    out.append("Clusters by network, their trust root, and who watches whom (green: remote secret works; red: broken).")
    out.append("")
    if picture:
        out.append(f"![mesh]({picture})")
    else:
        out.append("Graphviz `dot` was not found: render mesh.dot with `dot -Tsvg mesh.dot -o mesh.svg`.")
    if dot_source:
        out += ["", "<details><summary>Graphviz source</summary>", "", "```dot", dot_source.rstrip(), "```", "", "</details>"]
    return "\n".join(out) + "\n"


def summary_text(clusters: int, result: dict) -> str:
    """What the verify role prints: counts, the root every cluster shares, each finding, then the report's and the picture's paths."""
    counts = result["summary"]
    report = result.get("report") or {}
    lines = [f"{clusters} clusters: {counts['error']} error(s), {counts['warning']} warning(s)"]
    if result.get("shared_root"):
        lines.append(f"{len(result['roots'])} clusters share root {result['shared_root']}")
    if any(f["id"] == ROTATION for f in result["findings"]):
        lines.append(f"mid root rotation, not broken: each cluster's phase and the fix are in the {ROTATION} line below")
    lines += [f"[{f['severity']}] {f['id']} in {', '.join(f['clusters'])}: {f['evidence']} -> {f['fix']}" for f in result["findings"]]
    if report.get("markdown"):
        lines.append(f"report: {report['markdown']}")
        lines.append(f"picture: {report['svg']}" if report.get("svg") else f"picture: {report.get('dot', '')} (Graphviz dot not found: no mesh.svg)")
    return "\n".join(lines)
