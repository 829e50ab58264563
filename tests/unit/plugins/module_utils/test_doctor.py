"""The doctor's checks as a table: a healthy mesh, then one mutation per row and the exact finding it must give."""

from __future__ import annotations

import copy
import datetime
import json
import re

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _cluster_state, _doctor, _doctor_report, _doctor_run, _mesh, _rotation, _trust

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
ROOT, OTHER_ROOT = "AA:" * 31 + "AA", "BB:" * 31 + "BB"
GATEWAYS = {"a": "192.0.2.1", "b": "192.0.2.2", "c": "192.0.2.3"}


def plan():
    clusters = [
        _mesh.InventoryCluster(host="a", name="a", role="primary", network="net1", mesh_id="mesh1"),
        _mesh.InventoryCluster(host="b", name="b", role="primary", network="net2", mesh_id="mesh1"),
        _mesh.InventoryCluster(host="c", name="c", role="remote", network="net1", mesh_id="mesh1", primary="a"),
    ]
    return _mesh.topology(clusters)


def cert(subject, days_left=300):
    return {"subject": subject, "fingerprint_sha256": "", "not_after": (NOW + datetime.timedelta(days=days_left)).isoformat()}


def entry(key, ok=True, server=None):
    return {
        "key": key,
        "server": server or f"https://{key}.example:6443",
        "parsed": True,
        "loopback": False,
        "credential": {"ok": ok, "error": "" if ok else "unauthorized", "error_type": "", "calls": 1},
    }


def secret(key, **kwargs):
    return {"name": f"istio-remote-secret-{key}", "cluster_annotation": key, "data_keys": [key], "entries": [entry(key, **kwargs)]}


def state(name, network, role, watched=()):
    root = {**cert("O=mesh,CN=root", 3000), "fingerprint_sha256": ROOT}
    istiods = (
        []
        if role == "remote"
        else [{"name": "istiod", "revision": "", "version": "1.31.0", "cluster_id": name, "network": "", "multiroot": "true", "ready_replicas": 1}]
    )
    return {
        "namespace": {"present": True, "labels": {"topology.istio.io/network": network}, "annotations": {}},
        "cacerts": {
            "present": True,
            "usable": True,
            "complete": True,
            "missing_keys": [],
            "chain_valid": True,
            "key_matches": True,
            "intermediate_is_ca": True,
            "sha1_signatures": False,
            "istio_generated_marker": False,
            "problems": [],
            "roots": [root],
            "intermediate": cert(f"O=mesh,CN=intermediate,L={name}"),
            "chain_root": ROOT,
        },
        "istio_ca_secret": {"present": False, "root_fingerprints": []},
        "root_cert_configmaps": {"istio-system": {"root_fingerprints": [ROOT]}},
        "istiods": istiods,
        "istiod_service": {"present": True, "selector": {}, "endpoint_addresses": [GATEWAYS["a"]] if role == "remote" else []},
        "injector": {"present": True, "mesh_id": "mesh1", "cluster_name": name, "network": network, "remote_pilot_address": ""},
        "mesh_config": {"present": role != "remote", "mesh_id": "mesh1", "trust_domain": "cluster.local", "xds_agent": "true"},
        "injection_webhooks": [
            {
                "name": "istio-sidecar-injector",
                "targets": [{"url": "", "service": "istio-system/istiod", "path": f"/inject/cluster/{name}/net/{network}" if role == "remote" else "/inject"}],
            }
        ],
        "gateway": {
            "present": True,
            "name": "istio-eastwestgateway",
            "addresses": [GATEWAYS[name]],
            "problem": None,
            "type": "LoadBalancer",
            "labels": {"topology.istio.io/network": network},
        },
        "gateway_crd": True,
        "cross_network_gateways": [{"name": "cross-network-gateway", "hosts": ["*.local"], "selector": {}}],
        "remote_secrets": [secret(key) for key in watched],
        "injected_pods": [{"namespace": "shop", "name": "cart-1", "network": network, "xds_agent": "true"}],
    }


def healthy():
    return {"a": state("a", "net1", "primary", ["b", "c"]), "b": state("b", "net2", "primary", ["a", "c"]), "c": state("c", "net1", "remote")}


def findings(states, **options):
    return sorted((f["severity"], f["id"], tuple(f["clusters"])) for f in _doctor.diagnose(plan(), states, now=NOW, **options))


def test_healthy_mesh_has_no_findings():
    assert findings(healthy()) == []
    assert findings(healthy(), expected_roots=[ROOT]) == []


def test_a_remote_injecting_through_a_revisions_istiod_service_is_healthy():
    states = healthy()
    hook = {"url": "", "service": "istio-system/istiod-1-31-0", "path": "/inject/cluster/c/net/net1"}
    states["c"]["injection_webhooks"] = [{"name": "istio-sidecar-injector-1-31-0", "targets": [hook]}]
    assert findings(states) == []


def _istiod(name: str, revision: str, version: str, cluster: str) -> dict:
    """An istiod Deployment as istioctl installs it (revision label, discovery container), read as cluster_state_info does."""
    env = [{"name": "CLUSTER_ID", "value": cluster}, {"name": "ISTIO_MULTIROOT_MESH", "value": "true"}]
    container = {"name": "discovery", "image": f"docker.io/istio/pilot:{version}", "env": env}
    labels = {"app": "istiod", "istio.io/rev": revision}
    deployment = {"metadata": {"name": name, "labels": labels}, "spec": {"template": {"spec": {"containers": [container]}}}}
    return _cluster_state.istiod_facts({**deployment, "status": {"readyReplicas": 1}})


def _injector(name: str, service: str, path: str) -> dict:
    configuration = {"webhooks": [{"clientConfig": {"service": {"namespace": "istio-system", "name": service, "path": path}}}]}
    return {"name": name, "targets": _cluster_state.webhook_targets(configuration)}


def two_revisions(tag: str = "default") -> dict:
    """The mesh mid-upgrade from the default revision (1.30) to 1-31-dev (1.31): both istiods on every primary, both
    injectors and the default tag (pointing at `tag`) on the remote, a namespace on istio.io/rev=1-31-dev whose restarted
    pods the new revision injected beside pods of the old one."""
    states = healthy()
    for host in ("a", "b"):
        states[host]["istiods"] = [_istiod("istiod", "default", "1.30-dev", host), _istiod("istiod-1-31-dev", "1-31-dev", "1.31-dev", host)]
    path = "/inject/cluster/c/net/net1"
    states["c"]["injection_webhooks"] = [
        _injector("istio-revision-tag-default", "istiod" if tag == "default" else f"istiod-{tag}", path),
        _injector("istio-sidecar-injector", "istiod", path),
        _injector("istio-sidecar-injector-1-31-dev", "istiod-1-31-dev", path),
    ]
    for host, network in (("a", "net1"), ("b", "net2"), ("c", "net1")):
        states[host]["injected_pods"].append({"namespace": "pay", "name": "api-2", "network": network, "xds_agent": "true"})
    return states


@pytest.mark.parametrize("tag", ["default", "1-31-dev"])
def test_a_mesh_with_two_revisions_mid_upgrade_is_healthy(tag):
    states = two_revisions(tag)
    assert [istiod["version"] for istiod in states["a"]["istiods"]] == ["1.30-dev", "1.31-dev"]
    assert findings(states) == []
    assert findings(states, expected_roots=[ROOT]) == []


def test_a_mesh_with_two_revisions_still_finds_a_revisions_broken_injector():
    states = two_revisions()
    states["c"]["injection_webhooks"][2] = _injector("istio-sidecar-injector-1-31-dev", "istiod-1-31-dev", "/inject")
    assert findings(states) == [("error", "remote_injection", ("c",))]


def test_a_mesh_with_two_revisions_flags_a_new_istiod_without_the_rotation_flag():
    states = two_revisions()
    states["b"]["istiods"][1]["multiroot"] = ""
    assert findings(states) == [("warning", "rotation_flags", ("b",))]


def test_roots_by_cluster_names_each_readable_clusters_roots():
    states = healthy()
    states["b"]["cacerts"] = {"present": False}
    states["c"] = {"error": "unreachable"}
    assert _doctor.roots_by_cluster(plan(), states) == {"a": [ROOT], "b": []}


def _set(path, value):
    def mutate(states):
        target = states
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return mutate


def _other_root(states):
    states["b"]["cacerts"]["roots"][0]["fingerprint_sha256"] = OTHER_ROOT
    states["b"]["cacerts"]["chain_root"] = OTHER_ROOT
    states["b"]["root_cert_configmaps"]["istio-system"]["root_fingerprints"] = [OTHER_ROOT]


def _rotation_half_done(states):
    # b trusts both roots and already signs with the new one; a and c still trust only the old root
    states["b"]["cacerts"]["roots"].append({**cert("O=mesh,CN=root2", 3000), "fingerprint_sha256": OTHER_ROOT})
    states["b"]["cacerts"]["chain_root"] = OTHER_ROOT
    states["b"]["root_cert_configmaps"]["istio-system"]["root_fingerprints"] = [ROOT, OTHER_ROOT]


def _duplicate(states):
    states["a"]["remote_secrets"].append({**secret("b"), "name": "old-secret-for-b"})


def _pinned(ca_of_b: list[str]):
    """b publishes API CA CA-B; a's remote secret for b pins ca_of_b."""

    def mutate(states):
        states["b"]["api_ca_fingerprints"] = ["CA-B"]
        next(s for s in states["a"]["remote_secrets"] if s["name"] == "istio-remote-secret-b")["entries"][0]["ca_fingerprints"] = ca_of_b

    return mutate


def _two_keys(states):
    states["a"]["remote_secrets"][0]["data_keys"] = ["wrong"]
    states["a"]["remote_secrets"][0]["entries"][0]["key"] = "wrong"


ROWS = {
    "unreachable": (lambda s: s.__setitem__("b", {"error": "unreachable", "error_type": "K8sUnreachable"}), [("error", "api_unreachable", ("b",))]),
    "cacerts missing": (_set(["b", "cacerts"], {"present": False}), [("error", "cacerts_missing", ("b",))]),
    "self-signed CA": (
        lambda s: (_set(["b", "cacerts"], {"present": False})(s), _set(["b", "istio_ca_secret"], {"present": True, "root_fingerprints": [OTHER_ROOT]})(s)),
        [("error", "self_signed_ca", ("b",))],
    ),
    "self-signed leftover": (
        _set(["a", "istio_ca_secret"], {"present": True, "root_fingerprints": [OTHER_ROOT]}),
        [("warning", "self_signed_leftover", ("a",))],
    ),
    "incomplete bundle": (_set(["a", "cacerts", "missing_keys"], ["cert-chain.pem"]), [("error", "cacerts_incomplete", ("a",))]),
    "not a CA": (_set(["a", "cacerts", "intermediate_is_ca"], False), [("error", "cacerts_not_ca", ("a",))]),
    "key mismatch": (_set(["a", "cacerts", "key_matches"], False), [("error", "cacerts_key_mismatch", ("a",))]),
    "sha1": (_set(["a", "cacerts", "sha1_signatures"], True), [("error", "cacerts_sha1", ("a",))]),
    "chain broken": (_set(["a", "cacerts", "chain_root"], None), [("error", "cacerts_chain", ("a",))]),
    "different root": (_other_root, [("error", "root_mismatch", ("b",))]),
    "rotation half done": (_rotation_half_done, [("error", "root_mismatch", ("b",)), ("error", "untrusted_intermediate", ("b",))]),
    "workload root": (_set(["c", "root_cert_configmaps", "shop"], {"root_fingerprints": [OTHER_ROOT]}), [("error", "workload_root_mismatch", ("c",))]),
    "intermediate expiring": (_set(["b", "cacerts", "intermediate"], cert("CN=i", 10)), [("warning", "intermediate_expiry", ("b",))]),
    "intermediate expired": (_set(["b", "cacerts", "intermediate"], cert("CN=i", -1)), [("error", "intermediate_expiry", ("b",))]),
    "root expiring": (_set(["a", "cacerts", "roots"], [{**cert("CN=r", 20), "fingerprint_sha256": ROOT}]), [("warning", "root_expiry", ("a",))]),
    "remote secret missing": (_set(["a", "remote_secrets"], lambda v: v[:1]), [("error", "remote_secret_missing", ("a",))]),
    "data key wrong": (_two_keys, [("error", "remote_secret_data_key", ("a",))]),
    "dead credential": (_set(["b", "remote_secrets"], [secret("a", ok=False), secret("c")]), [("error", "remote_secret_credential", ("b",))]),
    "loopback": (
        _set(["b", "remote_secrets"], [{**secret("a"), "entries": [{**entry("a", server="https://127.0.0.1:6443"), "loopback": True}]}, secret("c")]),
        [("error", "remote_secret_loopback", ("b",))],
    ),
    "planted exec in a primary": (
        _set(
            ["b", "remote_secrets"],
            [
                {
                    **secret("a"),
                    "entries": [{**entry("a"), "credential": None, "unsafe": ["users[0] (user) field exec: would run a command on the control node"]}],
                },
                secret("c"),
            ],
        ),
        [("error", "remote_secret_unsafe", ("b",))],
    ),
    "planted file in a remote": (
        lambda s: s["c"].__setitem__(
            "remote_secrets",
            [{**secret("z"), "entries": [{**entry("z"), "credential": None, "unsafe": ["users[0] (user) field tokenFile: names a file on the control node"]}]}],
        ),
        [("error", "remote_secret_unsafe", ("c",))],
    ),
    "duplicate": (_duplicate, [("error", "remote_secret_duplicate", ("a",))]),
    "secret pinning another CA": (_pinned(["CA-EVIL"]), [("error", "remote_secret_foreign_server", ("a",))]),
    "secret pinning no CA": (_pinned([]), [("error", "remote_secret_foreign_server", ("a",))]),
    "secret for itself": (lambda s: s["b"]["remote_secrets"].append(secret("b")), [("error", "remote_secret_self", ("b",))]),
    "unknown cluster": (lambda s: s["b"]["remote_secrets"].append(secret("z")), [("warning", "remote_secret_unexpected", ("b",))]),
    "unknown cluster, left without the leave playbook": (
        lambda s: s["b"]["remote_secrets"].append({**secret("z"), "managed": True}),
        [("error", "remote_secret_unexpected", ("b",))],
    ),
    "remote's istiod elsewhere": (_set(["c", "istiod_service", "endpoint_addresses"], ["198.51.100.9"]), [("error", "remote_pilot_address", ("c",))]),
    "remote runs istiod": (_set(["c", "istiods"], [{"name": "istiod", "version": "1.31.0", "cluster_id": "c"}]), [("error", "remote_local_istiod", ("c",))]),
    "remote injection path": (
        _set(["c", "injection_webhooks"], [{"name": "x", "targets": [{"url": "", "service": "istio-system/istiod", "path": "/inject"}]}]),
        [("error", "remote_injection", ("c",))],
    ),
    "namespace label": (_set(["b", "namespace", "labels"], {}), [("error", "namespace_network_label", ("b",))]),
    "namespace missing": (_set(["b", "namespace"], {"present": False, "labels": {}, "annotations": {}}), [("error", "namespace_missing", ("b",))]),
    "gateway pending": (_set(["b", "gateway", "addresses"], []), [("error", "gateway_address", ("b",))]),
    "gateway label": (_set(["b", "gateway", "labels"], {"topology.istio.io/network": "net1"}), [("error", "gateway_network_label", ("b",))]),
    "no gateway": (_set(["b", "gateway"], {"present": False}), [("error", "gateway_missing", ("b",))]),
    "no cross-network gateway": (_set(["b", "cross_network_gateways"], []), [("error", "cross_network_gateway", ("b",))]),
    "pod network": (
        _set(["b", "injected_pods"], [{"namespace": "shop", "name": "p", "network": "net1", "xds_agent": "true"}]),
        [("error", "pod_network", ("b",))],
    ),
    "mesh id": (_set(["b", "injector", "mesh_id"], "other"), [("error", "mesh_id_mismatch", ("b",))]),
    "clusterName Kubernetes": (_set(["b", "istiods", 0, "cluster_id"], "Kubernetes"), [("error", "cluster_name_default", ("b",))]),
    "clusterName elsewhere": (_set(["b", "istiods", 0, "cluster_id"], "west"), [("error", "cluster_name_mismatch", ("b",))]),
    "clusterName twice": (
        _set(["c", "injector", "cluster_name"], "b"),
        [("error", "cluster_name_duplicate", ("b", "c")), ("error", "cluster_name_mismatch", ("c",))],
    ),
    "versions two minors apart": (_set(["b", "istiods", 0, "version"], "1.29.2"), [("warning", "version_skew", ("b",))]),
    "istiod without multiroot": (_set(["a", "istiods", 0, "multiroot"], ""), [("warning", "rotation_flags", ("a", "c"))]),
    "istiod multiroot unparsable": (_set(["b", "istiods", 0, "multiroot"], "yes"), [("warning", "rotation_flags", ("b",))]),
    "mesh config without agent flag": (_set(["b", "mesh_config", "xds_agent"], ""), [("warning", "rotation_flags", ("b",))]),
    "pods injected before the flag": (_set(["c", "injected_pods", 0, "xds_agent"], ""), [("warning", "rotation_flags", ("c",))]),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_each_fault_gives_exactly_its_finding(row):
    mutate, expected = ROWS[row]
    states = copy.deepcopy(healthy())
    mutate(states)
    assert findings(states, expected_roots=[ROOT]) == expected


@pytest.mark.parametrize(("expect", "severity"), [(True, "warning"), (False, "info")])
def test_rotation_flags_opt_out_is_a_note(expect, severity):
    states = healthy()
    states["a"]["istiods"][0]["multiroot"] = ""
    states["a"]["mesh_config"]["xds_agent"] = "false"
    result = _doctor.diagnose(plan(), states, now=NOW, expect_rotation_flags=expect)
    assert [(f["severity"], f["id"], f["clusters"]) for f in result] == [(severity, "rotation_flags", ["a", "c"])]
    assert result[0]["evidence"] == (
        "istiod Deployment istiod has ISTIO_MULTIROOT_MESH=<unset>; the mesh config has "
        "defaultConfig.proxyMetadata.PROXY_CONFIG_XDS_AGENT=false (the proxies of its remotes c take both from it)"
    )
    assert result[0]["fix"].startswith("re-run the site playbook" if expect else "none needed (verify_expect_rotation_flags is false)")


def test_rotation_flags_missing_hide_stale_pods():
    # without the flag in the mesh config every pod lacks it: one finding for the cause, not one per cluster
    states = healthy()
    states["a"]["mesh_config"]["xds_agent"] = ""
    states["c"]["injected_pods"][0]["xds_agent"] = ""
    assert findings(states) == [("warning", "rotation_flags", ("a", "c"))]


def test_loopback_allowed_on_test_beds():
    states = healthy()
    ROWS["loopback"][0](states)
    assert findings(states, allow_loopback=True) == []


def test_mesh_root_is_the_most_common_without_a_pki():
    states = healthy()
    _other_root(states)
    assert findings(states) == [("error", "root_mismatch", ("b",))]


def test_every_check_has_a_row_or_a_test():
    covered = {finding[1] for row in ROWS.values() for finding in row[1]}
    covered |= {"cacerts_unreadable", "remote_secret_unparsable", "gateway_unreachable", "rotation_in_progress"}
    assert covered == set(_doctor.CHECKS)


def test_reachability_findings():
    result = _doctor.reachability_findings(plan(), healthy(), {"a": {"192.0.2.1": ""}, "b": {"192.0.2.2": "Connection refused"}})
    assert [(f["id"], f["clusters"], f["evidence"]) for f in result] == [("gateway_unreachable", ["b"], "192.0.2.2:15443 Connection refused")]


def test_unsafe_secret_evidence_names_fields_and_fix():
    states = healthy()
    ROWS["planted exec in a primary"][0](states)
    result = _doctor.diagnose(plan(), states, now=NOW)
    finding = next(f for f in result if f["id"] == "remote_secret_unsafe")
    assert finding["evidence"] == "secret istio-remote-secret-a key a: users[0] (user) field exec: would run a command on the control node"
    assert finding["fix"].startswith("delete it and find out who can write Secrets in istio-system")


def test_unparsable_and_unreadable():
    states = healthy()
    states["b"]["remote_secrets"][0]["entries"][0].update(parsed=False, server="")
    states["a"]["cacerts"]["problems"] = ["root-cert.pem: not a PEM certificate"]
    assert findings(states) == [("error", "cacerts_unreadable", ("a",)), ("error", "remote_secret_unparsable", ("b",))]


def test_report_and_picture_show_the_broken_edge():
    states = healthy()
    states["a"]["remote_secrets"] = states["a"]["remote_secrets"][:1]
    result = _doctor.diagnose(plan(), states, now=NOW)
    markdown = _doctor_report.markdown(plan(), states, result, "mesh.svg", "digraph {}")
    assert "**broken**: 1 error(s)" in markdown
    assert "- **remote_secret_missing** in a:" in markdown and "  - fix: run the remote_secrets role" in markdown
    dot = _doctor_report.dot(plan(), states, result)
    assert '"a" -> "c" [color="#c62828", label="watches: error"]' in dot
    assert '"a" -> "b" [color="#2e7d32", label="watches: ok"]' in dot
    assert dot.count("subgraph cluster_net") == 2


def test_readme_lists_every_check():
    import os

    readme = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "README.md")
    with open(readme, encoding="utf-8") as handle:
        text = handle.read()
    assert [check for check in _doctor.CHECKS if f"| `{check}` |" not in text] == []


@pytest.mark.parametrize(
    ("roots", "shared"),
    [
        ({"a": ["R"], "b": ["R"]}, "R"),
        ({"a": ["R", "S"], "b": ["R", "S"]}, "R, S"),
        ({"a": ["R"], "b": ["S"]}, ""),
        ({"a": [], "b": []}, ""),
        ({}, ""),
    ],
)
def test_shared_root(roots, shared):
    assert _doctor.shared_root(roots) == shared


def test_summary_text_is_what_verify_prints():
    states = healthy()
    states["a"]["remote_secrets"] = states["a"]["remote_secrets"][:1]
    result = _doctor.diagnose(plan(), states, now=NOW)
    roots = _doctor.roots_by_cluster(plan(), states)
    text = _doctor_report.summary_text(
        3,
        {
            "summary": _doctor.summary(result),
            "findings": result,
            "roots": roots,
            "shared_root": _doctor.shared_root(roots),
            "report": {"markdown": "/r/report.md"},
        },
    )
    lines = text.splitlines()
    assert lines[0] == "3 clusters: 1 error(s), 0 warning(s)"
    assert lines[1] == f"3 clusters share root {ROOT}"
    assert lines[2].startswith("[error] remote_secret_missing in a: no secret labelled istio/multiCluster=true holds cluster c -> ")


@pytest.mark.parametrize(
    ("option", "pki_dir", "directory"),
    [
        ("", "/m/pki", "/m/pki-report"),
        ("", "/m/pki/", "/m/pki-report"),
        ("", "", ""),
        ("none", "/m/pki", ""),
        ("/r", "/m/pki", "/r"),
    ],
)
def test_report_dir(option, pki_dir, directory):
    assert _doctor_run.report_dir(option, pki_dir) == directory


def test_a_secret_pinning_its_clusters_ca_and_address_is_fine_and_another_address_is_not():
    states = healthy()
    _pinned(["CA-B"])(states)
    mesh = plan()
    assert findings(states) == []
    mesh["clusters"]["b"]["api_server"] = "https://b.example:6443"
    assert [f["evidence"] for f in _doctor.diagnose(mesh, states, now=NOW)] == []
    mesh["clusters"]["b"]["api_server"] = "https://b-elsewhere.example:6443"
    result = _doctor.diagnose(mesh, states, now=NOW)
    assert [(f["id"], f["evidence"]) for f in result] == [
        (
            "remote_secret_foreign_server",
            "secret istio-remote-secret-b: its server https://b.example:6443 is not b's meshfed_api_server https://b-elsewhere.example:6443",
        )
    ]


def test_report_shows_cluster_text_literally():
    states = healthy()
    result = [
        {
            "id": "remote_secret_credential",
            "severity": "error",
            "clusters": ["a"],
            "title": "t",
            "fix": "f",
            "peers": [],
            "evidence": "x \x1b[2J <img src=https://evil.example/p.png> [x](javascript:alert(1))",
        }
    ]
    text = _doctor_report.markdown(plan(), states, result, None, "digraph {}")
    line = next(line for line in text.splitlines() if line.startswith("  - evidence:"))
    assert "\x1b" not in line and not re.search(r"(?<!\\)[<>\[\]()]", line.split(": ", 1)[1])
    assert line == "  - evidence: x  \\[2J \\<img src=https://evil.example/p.png\\> \\[x\\]\\(javascript:alert\\(1\\)\\)"


# Mid-rotation: old root ROOT, new root OTHER_ROOT; cacerts (bundle in order, signing root) per phase, as _rotation writes them.
PHASES = {0: ([ROOT], ROOT), 1: ([ROOT, OTHER_ROOT], ROOT), 2: ([ROOT, OTHER_ROOT, OTHER_ROOT], OTHER_ROOT), 3: ([OTHER_ROOT], OTHER_ROOT)}
RECORD = {"id": "2026-q4", "old_root": ROOT, "new_root": OTHER_ROOT}


def rotating(a: int, b: int, c: int) -> dict:
    """The mesh with a, b and c at those phases, settled: a primary's istio-ca-root-cert is a copy of its cacerts, the
    remote c's a copy of its primary a's."""
    states = healthy()
    for host, phase in (("a", a), ("b", b), ("c", c)):
        bundle, signer = PHASES[phase]
        states[host]["cacerts"]["roots"] = [{**cert("O=mesh,CN=root", 3000), "fingerprint_sha256": fp} for fp in bundle]
        states[host]["cacerts"]["chain_root"] = signer
    for host, source in (("a", "a"), ("b", "b"), ("c", "a")):
        states[host]["root_cert_configmaps"]["istio-system"]["root_fingerprints"] = list(PHASES[{"a": a, "b": b}[source]][0])
    return states


def rotation_finding(states, **options) -> dict:
    result = _doctor.diagnose(plan(), states, now=NOW, **options)
    assert [(f["severity"], f["id"], f["clusters"]) for f in result] == [("warning", "rotation_in_progress", ["a", "b", "c"])], result
    return result[0]


@pytest.mark.parametrize("phase", [1, 2])
@pytest.mark.parametrize("pki", [False, True])
def test_every_cluster_at_a_middle_phase_is_a_rotation_not_a_fault(phase, pki):
    options = {"expected_roots": [ROOT], "rotations": [RECORD]} if pki else {}
    finding = rotation_finding(rotating(phase, phase, phase), **options)
    described = f"at phase {phase} ({_rotation.PHASES[phase]})"
    assert finding["evidence"].startswith(f"root rotation {'2026-q4 ' if pki else ''}from {ROOT[:23]} to {OTHER_ROOT[:23]}: a {described}; b {described}")
    assert "every cluster's signing root is trusted by every cluster" in finding["evidence"] and "behind" not in finding["evidence"]
    rerun = "-e rotate_ca_id=2026-q4 with this mesh's inventory" if pki else "with this mesh's inventory and the same rotate_ca_id"
    assert finding["fix"] == f"re-run ansible-playbook meshfed.istio.rotate_ca {rerun}: it resumes with the next write and finishes the rotation"


@pytest.mark.parametrize(("phases", "behind"), [((1, 0, 0), "b at phase 0"), ((2, 1, 1), "b at phase 1"), ((3, 2, 2), "b at phase 2")])
def test_one_cluster_a_phase_ahead_is_a_rotation_and_names_the_one_behind(phases, behind):
    for options in ({}, {"expected_roots": [ROOT], "rotations": [RECORD]}):
        finding = rotation_finding(rotating(*phases), **options)
        assert f"a at phase {phases[0]} (" in finding["evidence"]
        assert f"{behind} ({_rotation.PHASES[phases[1]]}), behind" in finding["evidence"]


def test_before_the_first_write_only_the_pki_directory_knows_the_rotation():
    assert findings(rotating(0, 0, 0), expected_roots=[ROOT]) == []
    finding = rotation_finding(rotating(0, 0, 0), expected_roots=[ROOT], rotations=[RECORD])
    assert "a at phase 0 (old root only)" in finding["evidence"]


def test_new_root_everywhere_before_the_pki_directory_is_promoted_is_a_rotation():
    # without the record it is the wrong root everywhere; with it, the last step of the rotation is still to do
    assert findings(rotating(3, 3, 3), expected_roots=[ROOT]) == [("error", "root_mismatch", (name,)) for name in "abc"]
    finding = rotation_finding(rotating(3, 3, 3), expected_roots=[ROOT], rotations=[RECORD])
    assert finding["evidence"].endswith("; the PKI directory still holds the old root")


def test_a_finished_rotation_is_a_healthy_mesh():
    assert findings(rotating(3, 3, 3), expected_roots=[OTHER_ROOT]) == []
    assert findings(rotating(3, 3, 3)) == []


def test_istio_ca_root_cert_catching_up_mid_rotation_is_no_error_while_trust_holds():
    states = rotating(1, 0, 0)
    for host in ("a", "c"):  # a's istiod has not copied its new bundle yet
        states[host]["root_cert_configmaps"]["istio-system"]["root_fingerprints"] = [ROOT]
    finding = rotation_finding(states, expected_roots=[ROOT], rotations=[RECORD])
    assert "a at phase 1 (old and new root trusted, old intermediates), istio-ca-root-cert not yet a copy of cacerts" in finding["evidence"]
    assert finding["fix"].endswith("if a, c stay(s) behind, check the istiod that serves them")


def test_a_rotation_that_breaks_trust_stays_an_error_naming_who_rejects_whom():
    # a signs under the new root while b's workloads still trust only the old one (b's istiod has not copied b's phase-1 bundle)
    states = rotating(2, 1, 1)
    states["b"]["root_cert_configmaps"]["istio-system"]["root_fingerprints"] = [ROOT]
    result = _doctor.diagnose(plan(), states, now=NOW, expected_roots=[ROOT], rotations=[RECORD])
    assert [(f["severity"], f["id"], f["clusters"], f["peers"]) for f in result] == [
        ("error", "untrusted_intermediate", ["a"], ["b"]),
        ("error", "workload_root_mismatch", ["b"], []),
    ]
    assert result[0]["evidence"].startswith(
        f"the intermediate chains to root {OTHER_ROOT[:23]}, which b (istio-ca-root-cert) do(es) not trust; mid root rotation: a at phase 2"
    )
    assert "rotate_ca_id=2026-q4" in result[0]["fix"]


def test_a_skipped_phase_is_no_rotation():
    # a at phase 2 while b and c never trusted the new root: a's workloads would be rejected by both
    result = _doctor.diagnose(plan(), rotating(2, 0, 0), now=NOW, expected_roots=[ROOT], rotations=[RECORD])
    assert [(f["id"], f["clusters"], f["peers"]) for f in result] == [
        ("untrusted_intermediate", ["a"], ["b", "c"]),
        ("workload_root_mismatch", ["c"], []),  # c's istio-ca-root-cert comes from a
    ]


def test_a_rotation_the_pki_directory_does_not_know_is_no_rotation():
    third = "CC:" * 31 + "CC"
    assert findings(rotating(1, 1, 1), expected_roots=[third]) == [("error", "root_mismatch", (name,)) for name in "abc"]


def test_report_and_summary_show_the_rotation_plainly():
    states = rotating(2, 1, 1)
    result = _doctor.diagnose(plan(), states, now=NOW, expected_roots=[ROOT], rotations=[RECORD])
    markdown = _doctor_report.markdown(plan(), states, result, None, "digraph {}")
    assert "**healthy**: 0 error(s), 1 warning(s)" in markdown
    assert "**mid root rotation**, not broken: root rotation 2026-q4 from" in markdown
    assert "Fix: re-run ansible-playbook meshfed.istio.rotate_ca -e rotate_ca_id=2026-q4 with this mesh's inventory: it resumes" in markdown
    assert f"| a | primary | net1 | `{ROOT[:23]}`, `{OTHER_ROOT[:23]}` |" in markdown
    dot = _doctor_report.dot(plan(), states, result)
    assert dot.count(' -> "root ') == 6  # each cluster tied to both roots
    roots = _doctor.roots_by_cluster(plan(), states)
    text = _doctor_report.summary_text(3, {"summary": _doctor.summary(result), "findings": result, "roots": roots, "shared_root": _doctor.shared_root(roots)})
    assert text.splitlines()[:3] == [
        "3 clusters: 0 error(s), 1 warning(s)",
        "mid root rotation, not broken: each cluster's phase and the fix are in the rotation_in_progress line below",
        f"[warning] rotation_in_progress in a, b, c: {result[0]['evidence']} -> {result[0]['fix']}",
    ]


def test_the_pki_directory_names_its_unfinished_root_rotations(tmp_path):
    states = {
        "r1": {"mode": "root", "status": "started", "old_root": ROOT, "new_root": OTHER_ROOT},
        "r0": {"mode": "root", "status": "done", "old_root": "X", "new_root": ROOT},
        "i1": {"mode": "intermediate", "status": "issued", "root": ROOT},
    }
    for name, state in states.items():
        (tmp_path / "rotations" / name).mkdir(parents=True)
        (tmp_path / "rotations" / name / "state.json").write_text(json.dumps(state))
    (tmp_path / "rotations" / "broken").mkdir()
    (tmp_path / "rotations" / "broken" / "state.json").write_text("{")
    assert _trust.root_rotations_in_progress(str(tmp_path)) == [{"id": "r1", "old_root": ROOT, "new_root": OTHER_ROOT}]
    assert _trust.root_rotations_in_progress(str(tmp_path / "none")) == []


THIRD_ROOT = "CC:" * 31 + "CC"


@pytest.mark.parametrize("rotations", [[], [RECORD]], ids=["no record", "another rotation recorded"])
def test_a_root_planted_in_one_bundle_is_no_rotation_when_the_pki_directory_is_known(rotations):
    # someone appends their own root to a's root-cert.pem: to the bundles alone it looks like phase 1 begun in a; the PKI
    # directory records no rotation to that root, so a trusts a root foreign to the mesh and the mesh is not healthy
    states = rotating(1, 0, 0)
    states["a"]["cacerts"]["roots"][1]["fingerprint_sha256"] = THIRD_ROOT
    for host in ("a", "c"):  # a's istiod copied it into istio-ca-root-cert, its own and its remote c's
        states[host]["root_cert_configmaps"]["istio-system"]["root_fingerprints"] = [ROOT, THIRD_ROOT]
    result = _doctor.diagnose(plan(), states, now=NOW, expected_roots=[ROOT], rotations=rotations)
    assert [(f["severity"], f["id"], f["clusters"]) for f in result] == [
        ("error", "root_mismatch", ["a"]),
        ("error", "workload_root_mismatch", ["c"]),  # c's istio-ca-root-cert comes from a's istiod: c's workloads trust it too
    ], result
    assert f"also trusts {THIRD_ROOT[:23]}" in result[0]["evidence"]


def test_stray_entries_in_the_rotations_directory_are_no_rotation_and_no_crash(tmp_path):
    (tmp_path / "rotations" / "r1").mkdir(parents=True)
    (tmp_path / "rotations" / "r1" / "state.json").write_text(json.dumps({"mode": "root", "status": "started", "old_root": ROOT, "new_root": OTHER_ROOT}))
    (tmp_path / "rotations" / "notes.txt").write_text("a file beside the rotations")
    (tmp_path / "rotations" / "odd" / "state.json").mkdir(parents=True)  # a state that cannot be read
    assert _trust.rotations_in_progress(str(tmp_path)) == ["odd", "r1"]
    assert _trust.root_rotations_in_progress(str(tmp_path)) == [{"id": "r1", "old_root": ROOT, "new_root": OTHER_ROOT}]
