# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the mesh doctor, Istio's multicluster troubleshooting checks as pure functions.

Input: the plan of the inventory (module_utils/_mesh.topology) and, per inventory host, what
module_utils/_cluster_state.read found in that cluster (or {"error": ...}). Output: findings,
each with an id, a severity, the clusters it concerns, the evidence and the fix.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _rotation

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
ROTATE_INTERMEDIATE = (
    "issue a new intermediate: re-run the site playbook (the pki role re-issues intermediates within "
    "pki_renew_before_days of expiry; istiod takes the new cacerts without a restart)"
)
ROTATE_ROOT = "change the root with overlapping trust (both roots in every cluster's root-cert.pem before any intermediate changes)"

# id -> (default severity, what it means); the README lists the same checks (a unit test keeps them in step).
CHECKS = {
    "api_unreachable": (ERROR, "the cluster's API server did not answer the doctor"),
    "self_signed_ca": (ERROR, "istiod runs its own self-signed CA (istio-ca-secret, no cacerts)"),
    "cacerts_missing": (ERROR, "no cacerts secret: istiod will create its own root when it starts"),
    "cacerts_incomplete": (ERROR, "cacerts lacks one of ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem"),
    "cacerts_not_ca": (ERROR, "ca-cert.pem is not a CA certificate"),
    "cacerts_key_mismatch": (ERROR, "ca-key.pem does not belong to ca-cert.pem"),
    "cacerts_sha1": (ERROR, "a certificate of the bundle is signed with SHA-1"),
    "cacerts_chain": (ERROR, "ca-cert.pem does not chain to a root in root-cert.pem"),
    "cacerts_unreadable": (ERROR, "a PEM of cacerts cannot be read"),
    "root_mismatch": (ERROR, "the cluster trusts a different root than the mesh"),
    "untrusted_intermediate": (ERROR, "the cluster's intermediate chains to a root another cluster does not trust"),
    "workload_root_mismatch": (ERROR, "istio-ca-root-cert (what workloads trust) disagrees with cacerts"),
    "rotation_in_progress": (
        WARNING,
        "a root rotation is under way: every cluster is at one of its phases and trusts every cluster's signing root (not broken; finish it)",
    ),
    "self_signed_leftover": (WARNING, "istio-ca-secret beside cacerts: a self-signed leftover"),
    "root_expiry": (ERROR, "a root expires soon (warning) or has expired (error)"),
    "intermediate_expiry": (ERROR, "the intermediate expires soon (warning) or has expired (error)"),
    "remote_secret_missing": (ERROR, "a primary has no remote secret for a cluster it must watch"),
    "remote_secret_data_key": (ERROR, "a remote secret's data key is not the cluster name"),
    "remote_secret_credential": (ERROR, "a remote secret's credential does not work against its cluster"),
    "remote_secret_unparsable": (ERROR, "a remote secret does not hold a usable kubeconfig (server, CA data, credential)"),
    "remote_secret_unsafe": (
        ERROR,
        "a remote secret holds more than inline credentials (a command, a file, a proxy, TLS off): nothing in it was run, opened or tried",
    ),
    "remote_secret_loopback": (ERROR, "a remote secret points at a loopback server"),
    "remote_secret_foreign_server": (ERROR, "a remote secret does not pin its cluster's API CA or address (another server could answer)"),
    "remote_secret_duplicate": (ERROR, "two remote secrets claim the same cluster ID"),
    "remote_secret_self": (ERROR, "a cluster holds a remote secret for itself"),
    "remote_secret_unexpected": (
        WARNING,
        "a remote secret for a cluster this primary should not watch (an error when meshfed.istio made it for a cluster outside the inventory)",
    ),
    "remote_pilot_address": (ERROR, "a remote's istiod Service does not point at its primary's gateway"),
    "remote_local_istiod": (ERROR, "a remote runs its own istiod"),
    "remote_injection": (ERROR, "a remote's injection webhook does not call its primary"),
    "namespace_missing": (ERROR, "the Istio namespace does not exist"),
    "namespace_network_label": (ERROR, "the Istio namespace lacks the right topology.istio.io/network label"),
    "gateway_missing": (ERROR, "no east-west gateway in a multi-network mesh"),
    "gateway_address": (ERROR, "the east-west gateway has no address other clusters can use"),
    "gateway_network_label": (ERROR, "the east-west gateway is labelled with another network"),
    "cross_network_gateway": (ERROR, "no Gateway exposing *.local on 15443 with AUTO_PASSTHROUGH"),
    "pod_network": (ERROR, "injected pods carry another ISTIO_META_NETWORK than their cluster's network"),
    "mesh_id_mismatch": (ERROR, "the installed meshID differs from the mesh's"),
    "cluster_name_default": (ERROR, "the installed clusterName is Istio's default 'Kubernetes'"),
    "cluster_name_mismatch": (ERROR, "the installed clusterName differs from the inventory's"),
    "cluster_name_duplicate": (ERROR, "two clusters are installed with the same clusterName"),
    "version_skew": (WARNING, "control planes more than one minor version apart"),
    "rotation_flags": (WARNING, ("istiod or proxies lack the flags of root rotation without restarts (ISTIO_MULTIROOT_MESH, PROXY_CONFIG_XDS_AGENT)")),
    "gateway_unreachable": (WARNING, "the control node cannot open TCP 15443 on a gateway address"),
}


@dataclass
class Finding:
    id: str
    severity: str
    clusters: list[str]
    title: str
    evidence: str
    fix: str
    peers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _authority(url: str) -> str:
    """host:port of an https URL (port 443 when absent), '' when it is no URL."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or 443}"
    except ValueError:
        return ""


def _short(fingerprint: str) -> str:
    return fingerprint[:23] if fingerprint else "?"


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


@dataclass
class Rotation:
    """A root rotation the clusters are in the middle of: its id when the PKI directory records it, the two roots, where
    each cluster stands (_rotation's reading), and the pairs that break the safety invariant."""

    id: str
    old: str
    new: str
    mesh: _rotation.MeshPhase
    violations: list

    def rerun(self) -> str:
        if self.id:
            return f"ansible-playbook meshfed.istio.rotate_ca -e rotate_ca_id={self.id} with this mesh's inventory"
        return "ansible-playbook meshfed.istio.rotate_ca with this mesh's inventory and the same rotate_ca_id"

    def lagging(self) -> str:
        behind = [name for name, item in self.mesh.clusters.items() if not item.settled]
        if not behind:
            return ""
        return f"; istiod copies each write into istio-ca-root-cert within seconds: if {', '.join(behind)} stay(s) behind, check the istiod that serves them"

    def phases(self) -> str:
        parts = []
        for name, item in self.mesh.clusters.items():
            text = f"{name} at phase {item.phase} ({_rotation.PHASES[item.phase]})"
            if item.position == "behind":
                text += ", behind"
            if not item.settled:
                text += ", istio-ca-root-cert not yet a copy of cacerts"
            parts.append(text)
        return "; ".join(parts)


class Doctor:
    def __init__(
        self,
        plan: dict,
        states: dict,
        *,
        expected_roots: list[str] | None = None,
        expiry_days: int = 30,
        allow_loopback: bool = False,
        expect_rotation_flags: bool = True,
        rotations: list[dict] | None = None,
        now: datetime.datetime | None = None,
    ) -> None:
        self.plan = plan
        self.states = states
        self.expected_roots = list(expected_roots or [])
        self.expiry_days = expiry_days
        self.allow_loopback = allow_loopback
        self.expect_rotation_flags = expect_rotation_flags
        self.rotations = list(rotations or [])
        self.now = now or datetime.datetime.now(datetime.UTC)
        self.findings: list[Finding] = []
        self.namespace = (plan.get("settings") or {}).get("namespace") or _istio.DEFAULT_NAMESPACE

    # helpers
    def add(self, check: str, clusters, evidence: str, fix: str, severity: str | None = None, peers=()) -> None:
        default_severity, title = CHECKS[check]
        self.findings.append(Finding(check, severity or default_severity, list(clusters), title, evidence, fix, list(peers)))

    def name(self, host: str) -> str:
        return self.plan["clusters"][host]["name"]

    def hosts(self) -> list[str]:
        return [host for host in self.plan["clusters"] if "error" not in (self.states.get(host) or {"error": "not read"})]

    def state(self, host: str) -> dict:
        return self.states[host]

    def roots(self, host: str) -> list[str]:
        return [root["fingerprint_sha256"] for root in self.state(host)["cacerts"].get("roots") or []]

    def mesh_roots(self) -> set[str]:
        if self.expected_roots:
            return set(self.expected_roots)
        counts = Counter(tuple(sorted(self.roots(host))) for host in self.hosts() if self.roots(host))
        return set(counts.most_common(1)[0][0]) if counts else set()

    def trusts(self) -> list[_rotation.ClusterTrust]:
        """Each readable cluster with cacerts and roots, by fingerprints, as _rotation reads a cluster: its bundle, its signing
        root, its sampled istio-ca-root-cert ConfigMaps and, for a remote, its primary (whose istiod writes them)."""
        found = []
        for host in self.hosts():
            state, cluster = self.state(host), self.plan["clusters"][host]
            if not state["cacerts"].get("present") or not self.roots(host):
                continue
            primary = cluster.get("primary_host") if cluster["role"] == "remote" else None
            workload = [facts["root_fingerprints"] for _namespace, facts in sorted((state.get("root_cert_configmaps") or {}).items())]
            found.append(
                _rotation.ClusterTrust.of_fingerprints(
                    cluster["name"],
                    self.roots(host),
                    state["cacerts"].get("chain_root") or "",
                    workload,
                    self.name(primary) if primary in self.plan["clusters"] else "",
                )
            )
        return found

    def rotation(self, trusts: list[_rotation.ClusterTrust]) -> Rotation | None:
        """The root rotation the clusters are in, when their bundles and signing roots fit its phases (_rotation's reading):
        one the PKI directory records as unfinished, else one the bundles show. The PKI directory's root, when known, is the
        rotation's old root (it is promoted only when the rotation ends)."""
        candidates = [(item["id"], item["old_root"], item["new_root"]) for item in self.rotations]
        shown = _rotation.roots_of_rotation(trusts)
        if shown and not self.expected_roots:  # with a PKI directory, only a rotation it records: a root planted in a bundle is none
            candidates.append(("", *shown))
        for rotation_id, old, new in candidates:
            if not trusts or (self.expected_roots and old not in self.expected_roots):
                continue
            mesh = _rotation.mesh_phase(trusts, old, new)
            if not mesh.problems and (rotation_id or mesh.phase != _rotation.NOT_STARTED):
                return Rotation(rotation_id, old, new, mesh, _rotation.violations(trusts))
        return None

    # the checks
    def run(self) -> list[Finding]:
        for host in self.plan["clusters"]:
            state = self.states.get(host) or {"error": "the doctor got no state for this cluster"}
            if "error" in state:
                self.add(
                    "api_unreachable",
                    [self.name(host)],
                    state["error"],
                    f"check meshfed_kubeconfig / meshfed_context of host {host} and that its API server is up",
                )
        self.trust()
        self.remote_secret_safety()
        self.remote_secrets()
        self.primary_remote()
        self.networks()
        self.identity()
        self.rotation_flags()
        order = {severity: index for index, severity in enumerate(SEVERITIES)}
        self.findings.sort(key=lambda f: (order[f.severity], f.id, f.clusters))
        return self.findings

    def trust(self) -> None:
        trusts = self.trusts()
        rotation = self.rotation(trusts)
        mesh_roots = {rotation.old, rotation.new} if rotation else self.mesh_roots()
        known = set(self.expected_roots).union(*({item["old_root"], item["new_root"]} for item in self.rotations)) if self.expected_roots else set()
        mismatched = set()
        for host in self.hosts():
            name, state = self.name(host), self.state(host)
            cacerts, self_signed = state["cacerts"], state["istio_ca_secret"]
            if not cacerts["present"]:
                if self_signed["present"]:
                    self.add(
                        "self_signed_ca",
                        [name],
                        f"secret {self.namespace}/istio-ca-secret holds root {_short((self_signed['root_fingerprints'] or [''])[0])}; "
                        "there is no cacerts secret",
                        "install cacerts (site playbook with meshfed_allow_migration=true), then restart istiod, then the workloads",
                    )
                else:
                    self.add(
                        "cacerts_missing",
                        [name],
                        f"secret {self.namespace}/cacerts does not exist",
                        "run the site playbook (cacerts role) before istiod starts; restart istiod if it already runs",
                    )
                continue
            self.bundle(name, cacerts)
            roots = self.roots(host)
            if mesh_roots and roots and not set(roots) & mesh_roots:
                mismatched.add(host)
                self.add(
                    "root_mismatch",
                    [name],
                    f"cacerts trusts {', '.join(map(_short, roots))}; the mesh root is {', '.join(map(_short, sorted(mesh_roots)))}",
                    "reinstall this cluster's cacerts from the mesh PKI (site playbook), then restart istiod and the workloads",
                )
            elif known and set(roots) - known:
                self.add(
                    "root_mismatch",
                    [name],
                    f"cacerts also trusts {', '.join(map(_short, sorted(set(roots) - known)))}, which is neither the PKI "
                    f"directory's root nor a root of a rotation it records ({', '.join(map(_short, sorted(known)))})",
                    "find out who can write Secrets in this cluster's Istio namespace; reinstall its cacerts from the mesh PKI "
                    "(site playbook), then restart istiod and the workloads",
                )
            if self_signed["present"]:
                self.add(
                    "self_signed_leftover",
                    [name],
                    f"secret {self.namespace}/istio-ca-secret exists beside cacerts",
                    "make sure istiod was restarted after cacerts was created (compare istio-ca-root-cert), then delete istio-ca-secret",
                )
            self.workload_roots(name, state, roots, {rotation.old, rotation.new} if rotation and not rotation.violations else set())
            self.expiry(name, cacerts)
        if rotation and not rotation.violations:
            self.add(
                "rotation_in_progress",
                [trust.name for trust in trusts],
                f"root rotation {rotation.id + ' ' if rotation.id else ''}from {_short(rotation.old)} to {_short(rotation.new)}: "
                f"{rotation.phases()}; every cluster's signing root is trusted by every cluster (cacerts and istio-ca-root-cert)"
                + ("; the PKI directory still holds the old root" if rotation.mesh.done else ""),
                f"re-run {rotation.rerun()}: it resumes with the next write and finishes the rotation" + rotation.lagging(),
            )
        self.untrusted(trusts, {self.name(host) for host in mismatched}, rotation)

    def untrusted(self, trusts: list[_rotation.ClusterTrust], mismatched: set[str], rotation: Rotation | None) -> None:
        """The safety invariant (_rotation.violations) between the clusters on the mesh's roots: every cluster's signing root
        is in every cluster's cacerts and, mid-rotation, in its istio-ca-root-cert too (otherwise that lag is
        workload_root_mismatch's). One finding per signing cluster, naming the clusters that would reject it."""
        kept = [trust for trust in trusts if trust.name not in mismatched]
        where = ("cacerts", "istio-ca-root-cert") if rotation else ("cacerts",)
        rejecting: dict[tuple[str, str], list[_rotation.Violation]] = {}
        for violation in rotation.violations if rotation else _rotation.violations(kept):
            if violation.where in where and violation.cluster not in mismatched:
                rejecting.setdefault((violation.signer, violation.root), []).append(violation)
        for (signer, root), found in sorted(rejecting.items()):
            distrusting = [item.cluster if item.where == "cacerts" else f"{item.cluster} ({item.where})" for item in found]
            evidence = f"the intermediate chains to root {_short(root)}, which {', '.join(distrusting)} do(es) not trust"
            fix = "add that root to every cluster's root-cert.pem first (trust both roots mesh-wide), then switch intermediates"
            if rotation:
                evidence += f"; mid root rotation: {rotation.phases()}"
                fix = (
                    "let istiod copy each cluster's root-cert.pem into istio-ca-root-cert (is it running?), then finish the "
                    f"rotation: {rotation.rerun()}; it writes a phase only after the previous one has settled everywhere"
                )
            self.add("untrusted_intermediate", [signer], evidence, fix, peers=list(dict.fromkeys(item.cluster for item in found)))

    def bundle(self, name: str, cacerts: dict) -> None:
        fix = "regenerate the cluster's intermediate with meshfed.istio.pki and reinstall cacerts (site playbook)"
        known = False
        if cacerts.get("missing_keys"):
            known = True
            self.add("cacerts_incomplete", [name], f"missing keys: {', '.join(cacerts['missing_keys'])}", fix)
        if cacerts.get("intermediate") and not cacerts.get("intermediate_is_ca"):
            known = True
            self.add("cacerts_not_ca", [name], f"ca-cert.pem {cacerts['intermediate']['subject']} has no CA:TRUE", fix)
        if cacerts.get("intermediate") and _istio.CA_KEY not in (cacerts.get("missing_keys") or []) and not cacerts.get("key_matches"):
            known = True
            self.add("cacerts_key_mismatch", [name], "the public key of ca-key.pem differs from ca-cert.pem's", fix)
        if cacerts.get("sha1_signatures"):
            known = True
            self.add("cacerts_sha1", [name], "istiod refuses SHA-1 signatures", fix)
        if cacerts.get("intermediate") and cacerts.get("roots") and not cacerts.get("chain_root"):
            known = True
            self.add("cacerts_chain", [name], f"{cacerts['intermediate']['subject']} is not signed by any root of root-cert.pem", fix)
        if not known and cacerts.get("problems"):
            unexplained = [p for p in cacerts["problems"] if "expired" not in p]
            if unexplained:
                self.add("cacerts_unreadable", [name], "; ".join(unexplained), fix)

    def workload_roots(self, name: str, state: dict, roots: list[str], rotating: set[str]) -> None:
        """istio-ca-root-cert holds cacerts' roots; mid-rotation, while the invariant holds, any of the rotation's roots (istiod
        copies each write within seconds, and a remote's comes from its primary, which may be a phase ahead)."""
        wrong = {
            namespace: facts["root_fingerprints"]
            for namespace, facts in sorted(state.get("root_cert_configmaps", {}).items())
            if roots and set(facts["root_fingerprints"]) != set(roots) and not (facts["root_fingerprints"] and set(facts["root_fingerprints"]) <= rotating)
        }
        if wrong:
            evidence = "; ".join(f"{ns}: {', '.join(map(_short, fps)) or 'no certificate'}" for ns, fps in wrong.items())
            self.add(
                "workload_root_mismatch",
                [name],
                f"istio-ca-root-cert holds {evidence}; cacerts has {', '.join(map(_short, roots))}",
                "istiod started before cacerts or was not restarted: restart istiod, then the workloads",
            )

    def expiry(self, name: str, cacerts: dict) -> None:
        soon = self.now + datetime.timedelta(days=self.expiry_days)
        certs = [("root_expiry", root) for root in cacerts.get("roots") or []]
        if cacerts.get("intermediate"):
            certs.append(("intermediate_expiry", cacerts["intermediate"]))
        for check, cert in certs:
            not_after = _parse_time(cert["not_after"])
            what = "root" if check == "root_expiry" else "intermediate"
            fix = ROTATE_INTERMEDIATE if what == "intermediate" else ROTATE_ROOT
            if not_after <= self.now:
                self.add(
                    check,
                    [name],
                    f"the {what} {cert['subject']} expired on {cert['not_after']}",
                    f"{fix}, now: workloads in this cluster cannot get valid certificates",
                    severity=ERROR,
                )
            elif not_after <= soon:
                self.add(check, [name], f"the {what} {cert['subject']} expires on {cert['not_after']}", f"{fix}, before it expires", severity=WARNING)

    def remote_secret_safety(self) -> None:
        """Every cluster's remote secrets, primaries' and remotes': a kubeconfig from a cluster is untrusted input."""
        for host in self.hosts():
            name = self.name(host)
            for secret in self.state(host).get("remote_secrets") or []:
                for entry in secret["entries"]:
                    if entry.get("unsafe"):
                        self.add(
                            "remote_secret_unsafe",
                            [name],
                            f"secret {secret['name']} key {entry['key']}: {'; '.join(entry['unsafe'])}",
                            f"delete it and find out who can write Secrets in {self.namespace} of this cluster; remote secrets "
                            "made by the remote_secrets role hold a server, its CA data and a token, nothing else",
                        )

    def remote_secrets(self) -> None:
        plan_names = {self.name(host): host for host in self.plan["clusters"]}
        for watcher in self.hosts():
            if self.plan["clusters"][watcher]["role"] != "primary":
                continue
            wname = self.name(watcher)
            secrets = self.state(watcher).get("remote_secrets") or []
            by_key: dict[str, list[tuple[dict, dict]]] = {}
            for secret in secrets:
                for entry in secret["entries"]:
                    by_key.setdefault(entry["key"], []).append((secret, entry))
            expected = {self.name(watched) for watched in self.plan["watched_by"].get(watcher, [])}
            misnamed = set()
            for cluster in sorted(expected):
                if cluster in by_key:
                    continue
                annotated = [s for s in secrets if s["cluster_annotation"] == cluster]
                if annotated:
                    misnamed.update(annotated[0]["data_keys"])
                    self.add(
                        "remote_secret_data_key",
                        [wname],
                        f"secret {annotated[0]['name']} is for cluster {cluster} but its data key is "
                        f"{', '.join(annotated[0]['data_keys']) or 'missing'}: istiod uses the key as the cluster ID",
                        f"recreate it with the data key {cluster} (remote_secrets role)",
                        peers=[cluster],
                    )
                else:
                    self.add(
                        "remote_secret_missing",
                        [wname],
                        f"no secret labelled istio/multiCluster=true holds cluster {cluster}",
                        "run the remote_secrets role (site playbook)",
                        peers=[cluster],
                    )
            for key, entries in sorted(by_key.items()):
                if len(entries) > 1:
                    self.add(
                        "remote_secret_duplicate",
                        [wname],
                        f"secrets {', '.join(sorted(found[0]['name'] for found in entries))} all hold cluster {key}",
                        "delete all but one of them",
                        peers=[key],
                    )
                if key == wname:
                    self.add(
                        "remote_secret_self",
                        [wname],
                        f"secret {entries[0][0]['name']} holds this cluster ({key}) itself",
                        "delete it: istiod reads its own cluster in-cluster",
                    )
                    continue
                if key in misnamed:
                    continue
                if key not in expected:
                    self.unexpected(wname, key, entries[0][0], key in plan_names)
                for secret, entry in entries:
                    self.remote_secret_entry(wname, key, secret, entry)

    def unexpected(self, wname: str, key: str, secret: dict, in_inventory: bool) -> None:
        """A secret for a cluster this primary does not watch. The collection's own (managed-by) for a cluster outside the
        inventory is debris of a leave not done - an error: istiod keeps reading that cluster with a live token."""
        if in_inventory:
            self.add(
                "remote_secret_unexpected",
                [wname],
                f"secret {secret['name']} holds cluster {key}, not watched by this primary in the inventory",
                "delete it, or add the cluster to the inventory",
                peers=[key],
            )
        elif secret.get("managed"):
            self.add(
                "remote_secret_unexpected",
                [wname],
                f"secret {secret['name']} (made by meshfed.istio) holds cluster {key}, not in the inventory: a cluster that left without the leave playbook",
                f"run meshfed.istio.leave with leave_clusters={key} while the cluster is still in the inventory, or delete the "
                "secret and the reader token in that cluster",
                severity=ERROR,
                peers=[key],
            )
        else:
            self.add(
                "remote_secret_unexpected",
                [wname],
                f"secret {secret['name']} holds cluster {key}, not in the inventory",
                "delete it, or add the cluster to the inventory",
                peers=[key],
            )

    def remote_secret_entry(self, wname: str, key: str, secret: dict, entry: dict) -> None:
        if entry.get("unsafe"):
            return  # remote_secret_unsafe says it; its credential was never tried
        if not entry["parsed"] or entry.get("invalid"):
            why = "; ".join(entry.get("invalid") or []) or "no kubeconfig with a server"
            self.add("remote_secret_unparsable", [wname], f"secret {secret['name']} key {key}: {why}", "recreate it (remote_secrets role)", peers=[key])
            return
        self.remote_secret_server(wname, key, secret, entry)
        if entry["loopback"] and not self.allow_loopback:
            self.add(
                "remote_secret_loopback",
                [wname],
                f"secret {secret['name']} points at {entry['server']}: istiod would dial its own pod",
                "set meshfed_api_server of that cluster to an address reachable from this cluster's pods",
                peers=[key],
            )
        credential = entry.get("credential")
        if credential is not None and not credential["ok"]:
            self.add(
                "remote_secret_credential",
                [wname],
                f"secret {secret['name']} ({entry['server']}): {credential['error']}",
                "recreate the token (remote_secrets role); check the reader ServiceAccount and its RBAC in that cluster",
                peers=[key],
            )

    def remote_secret_server(self, wname: str, key: str, secret: dict, entry: dict) -> None:
        """A remote secret must lead to its cluster: its CA data is the cluster's own API CA (kube-root-ca.crt there),
        and its server the inventory's meshfed_api_server when that is set. Otherwise anyone who can write the secret can
        hand istiod another cluster's endpoints, with a credential that works against a server of their own."""
        host = next((h for h in self.hosts() if self.name(h) == key), None)
        if host is None:
            return
        expected_ca = set(self.state(host).get("api_ca_fingerprints") or [])
        pinned = set(entry.get("ca_fingerprints") or [])
        api_server = self.plan["clusters"][host].get("api_server") or ""
        wrong = []
        if expected_ca and not pinned:
            wrong.append("it holds no certificate-authority-data, so any server with a publicly trusted certificate passes")
        elif expected_ca and not pinned & expected_ca:
            wrong.append(f"its CA {_short(sorted(pinned)[0])} is not {key}'s API CA {_short(sorted(expected_ca)[0])}")
        if api_server and _authority(api_server) != _authority(entry["server"]):
            wrong.append(f"its server {entry['server']} is not {key}'s meshfed_api_server {api_server}")
        if wrong:
            self.add(
                "remote_secret_foreign_server",
                [wname],
                f"secret {secret['name']}: {'; '.join(wrong)}",
                f"delete it and re-run the remote_secrets role (site playbook), which writes {key}'s own CA and address; find out who wrote it",
                peers=[key],
            )

    def primary_remote(self) -> None:
        for host in self.hosts():
            cluster = self.plan["clusters"][host]
            if cluster["role"] != "remote":
                continue
            name, state = cluster["name"], self.state(host)
            primary = cluster.get("primary_host")
            if state["istiods"]:
                self.add(
                    "remote_local_istiod",
                    [name],
                    f"Deployments {', '.join(i['name'] for i in state['istiods'])} run here",
                    "reinstall with profile remote (control_plane role); a remote's proxies use the primary's istiod",
                )
            if not primary or primary not in self.hosts():
                continue
            addresses = set(self.state(primary)["gateway"]["addresses"])
            if not addresses:
                continue
            pointed = set(state["istiod_service"]["endpoint_addresses"]) | {state["injector"]["remote_pilot_address"]} - {""}
            if not pointed & addresses:
                self.add(
                    "remote_pilot_address",
                    [name],
                    f"istiod here resolves to {', '.join(sorted(pointed)) or 'nothing'}; "
                    f"the primary {self.name(primary)}'s east-west gateway is {', '.join(sorted(addresses))}",
                    "reinstall the remote with remotePilotAddress = the primary's gateway address (control_plane role)",
                    peers=[self.name(primary)],
                )
            self.injection(name, cluster["network"], state, addresses, self.name(primary))

    def injection(self, name: str, network: str, state: dict, addresses: set, primary: str) -> None:
        """A remote's injector must reach the primary's istiod (a URL at its gateway, or the local istiod Service whose
        endpoints are the gateway) on the path that injects for this cluster and network."""
        expected_path = f"/inject/cluster/{name}/net/{network}"
        local_service = f"{self.namespace}/istiod"
        wrong = []
        targets = [target for hook in state["injection_webhooks"] for target in hook["targets"]]
        for target in targets:
            if target["url"]:
                good = any(address in target["url"] for address in addresses) and expected_path in target["url"]
                where = target["url"]
            else:
                # the istiod Service of the default revision or of another one (istiod-<revision>, a canary upgrade)
                good = (target["service"] == local_service or target["service"].startswith(f"{local_service}-")) and target["path"] == expected_path
                where = f"service {target['service']} path {target['path'] or '/'}"
            if not good:
                wrong.append(where)
        if not targets or wrong:
            self.add(
                "remote_injection",
                [name],
                f"injection webhooks call {', '.join(sorted(set(wrong))) or 'nothing'}; expected {expected_path} on the primary "
                f"{primary}'s istiod ({', '.join(sorted(addresses))}, directly or through service {local_service})",
                "reinstall the remote (control_plane role): its injector must call the primary's istiod",
                peers=[primary],
            )

    def networks(self) -> None:
        multi_network = len({c["network"] for c in self.plan["clusters"].values()}) > 1
        for host in self.hosts():
            cluster = self.plan["clusters"][host]
            name, state, network = cluster["name"], self.state(host), cluster["network"]
            if not state["namespace"]["present"]:
                self.add("namespace_missing", [name], f"namespace {self.namespace} does not exist", "run the site playbook")
            else:
                label = state["namespace"]["labels"].get(_istio.NETWORK_LABEL, "")
                if label != network:
                    self.add(
                        "namespace_network_label",
                        [name],
                        f"namespace {self.namespace} has {_istio.NETWORK_LABEL}={label or '<unset>'}, expected {network}",
                        f"kubectl label namespace {self.namespace} {_istio.NETWORK_LABEL}={network} --overwrite (namespace role)",
                    )
            gateway = state["gateway"]
            needed = multi_network or bool(cluster.get("remotes"))
            if not gateway["present"]:
                if needed:
                    self.add("gateway_missing", [name], "no Service labelled istio=eastwestgateway", "run the eastwest_gateway role (site playbook)")
            else:
                if not gateway["addresses"]:
                    self.add(
                        "gateway_address",
                        [name],
                        gateway["problem"] or "no address",
                        "set meshfed_eastwest_external_ips for this cluster, or give the cluster a LoadBalancer implementation",
                    )
                label = gateway["labels"].get(_istio.NETWORK_LABEL, "")
                if label != network:
                    self.add(
                        "gateway_network_label",
                        [name],
                        f"Service {gateway['name']} has {_istio.NETWORK_LABEL}={label or '<unset>'}, expected {network}",
                        "reinstall the east-west gateway for this network (eastwest_gateway role)",
                    )
                if multi_network and not state["cross_network_gateways"]:
                    self.add(
                        "cross_network_gateway",
                        [name],
                        f"no Gateway in {self.namespace} has a 15443 server with tls mode AUTO_PASSTHROUGH"
                        + ("" if state["gateway_crd"] else " (Istio's Gateway CRD is not installed)"),
                        "run the eastwest_gateway role: services on this network are unreachable from other networks",
                    )
            wrong = [pod for pod in state["injected_pods"] if pod["network"] != network]
            if wrong:
                sample = ", ".join(f"{p['namespace']}/{p['name']}={p['network'] or '<unset>'}" for p in wrong[:5])
                self.add(
                    "pod_network",
                    [name],
                    f"{len(wrong)} injected pod(s) with ISTIO_META_NETWORK != {network}: {sample}",
                    "fix the network label / install values, then restart these workloads",
                )

    def installed_name(self, state: dict) -> str:
        for istiod in state["istiods"]:
            if istiod["cluster_id"]:
                return istiod["cluster_id"]
        return state["injector"]["cluster_name"]

    def identity(self) -> None:
        mesh_id = self.plan.get("mesh_id", "")
        names: dict[str, list[str]] = {}
        minors: dict[str, tuple[int, int]] = {}
        for host in self.hosts():
            name, state = self.name(host), self.state(host)
            installed_ids = {state["injector"]["mesh_id"], state["mesh_config"]["mesh_id"]} - {""}
            if mesh_id and installed_ids and installed_ids != {mesh_id}:
                self.add(
                    "mesh_id_mismatch",
                    [name],
                    f"installed meshID {', '.join(sorted(installed_ids))}, the mesh's is {mesh_id}",
                    "reinstall the control plane with meshfed_mesh_id (control_plane role)",
                )
            installed = self.installed_name(state)
            if installed:
                names.setdefault(installed, []).append(name)
            if installed == _istio.DEFAULT_CLUSTER_NAME:
                self.add(
                    "cluster_name_default",
                    [name],
                    "istiod runs with CLUSTER_ID Kubernetes, Istio's default",
                    f"reinstall the control plane with clusterName {name} (control_plane role)",
                )
            elif installed and installed != name:
                self.add(
                    "cluster_name_mismatch",
                    [name],
                    f"installed clusterName {installed}, the inventory says {name}",
                    "reinstall the control plane (control_plane role), or set meshfed_cluster_name to the installed name",
                )
            for istiod in state["istiods"]:
                match = re.match(r"(\d+)\.(\d+)", istiod["version"])
                if match:
                    minors[name] = (int(match.group(1)), int(match.group(2)))
        for installed, clusters in sorted(names.items()):
            if len(clusters) > 1:
                self.add(
                    "cluster_name_duplicate",
                    clusters,
                    f"{', '.join(clusters)} are all installed as {installed}",
                    "give every cluster its own clusterName and reinstall",
                )
        if minors:
            newest = max(minors.values())
            behind = sorted(name for name, version in minors.items() if version[0] != newest[0] or newest[1] - version[1] > 1)
            if behind:
                evidence = ", ".join(f"{name}: {'.'.join(map(str, version))}" for name, version in sorted(minors.items()))
                self.add("version_skew", behind, evidence, "upgrade these control planes, one minor at a time, control plane before data plane")

    def rotation_flags(self) -> None:
        """A primary's istiod and mesh config carry the rotation flags for the primary and its remotes (a remote has neither:
        its proxies are injected by the primary's istiod, with the primary's proxyMetadata); a proxy carries the agent's flag
        from its injection, so pods injected before it was set need a restart."""
        severity = WARNING if self.expect_rotation_flags else INFO
        fix = (
            "re-run the site playbook with control_plane_multiroot: true (the default): it reinstalls istiod with both flags; "
            "then restart the workloads of {where} so that their proxies carry PROXY_CONFIG_XDS_AGENT"
        )
        if not self.expect_rotation_flags:
            fix = "none needed (verify_expect_rotation_flags is false): a root rotation needs istiod and workload restarts; " + fix
        for host in self.hosts():
            cluster = self.plan["clusters"][host]
            if cluster["role"] != "primary":
                continue
            state = self.state(host)
            remotes = [self.name(remote) for remote in cluster.get("remotes") or []]
            missing = [
                f"istiod Deployment {istiod['name']} has {_istio.MULTIROOT_ENV}={istiod.get('multiroot') or '<unset>'}"
                for istiod in state["istiods"]
                if not _istio.flag_on(istiod.get("multiroot"))
            ]
            mesh = state["mesh_config"]
            if mesh["present"] and not _istio.flag_on(mesh.get("xds_agent")):
                missing.append(f"the mesh config has defaultConfig.proxyMetadata.{_istio.XDS_AGENT_METADATA}={mesh.get('xds_agent') or '<unset>'}")
            if missing:
                served = f" (the proxies of its remotes {', '.join(remotes)} take both from it)" if remotes else ""
                self.add(
                    "rotation_flags",
                    [cluster["name"], *remotes],
                    "; ".join(missing) + served,
                    fix.format(where=", ".join([cluster["name"], *remotes])),
                    severity=severity,
                )
                continue
            for name, pods in [(cluster["name"], state["injected_pods"])] + [
                (self.name(remote), self.state(remote)["injected_pods"]) for remote in cluster.get("remotes") or [] if remote in self.hosts()
            ]:
                stale = [pod for pod in pods if not _istio.flag_on(pod.get("xds_agent"))]
                if stale:
                    sample = ", ".join(f"{pod['namespace']}/{pod['name']}" for pod in stale[:5])
                    self.add(
                        "rotation_flags",
                        [name],
                        f"{len(stale)} injected pod(s) without {_istio.XDS_AGENT_METADATA}=true, injected before the flag: {sample}",
                        "restart these workloads (kubectl rollout restart) so that they are injected again",
                        severity=severity,
                    )


def diagnose(plan: dict, states: dict, **options) -> list[dict]:
    return [finding.as_dict() for finding in Doctor(plan, states, **options).run()]


def reachability_findings(plan: dict, states: dict, results: dict) -> list[dict]:
    """Findings for gateway addresses the control node could not connect to. results: host -> {address: error or ''}."""
    findings = []
    for host, attempts in sorted(results.items()):
        failed = {address: error for address, error in attempts.items() if error}
        if failed:
            evidence = "; ".join(f"{address}:15443 {error}" for address, error in sorted(failed.items()))
            findings.append(
                Finding(
                    "gateway_unreachable",
                    WARNING,
                    [plan["clusters"][host]["name"]],
                    CHECKS["gateway_unreachable"][1],
                    evidence,
                    "check firewalls and the load balancer between the networks",
                ).as_dict()
            )
    return findings


def roots_by_cluster(plan: dict, states: dict) -> dict[str, list[str]]:
    """Root fingerprints of each readable cluster's cacerts, by cluster name (empty list: no cacerts)."""
    return {
        plan["clusters"][host]["name"]: sorted(root["fingerprint_sha256"] for root in (state.get("cacerts") or {}).get("roots") or [])
        for host, state in states.items()
        if host in plan["clusters"] and "error" not in state
    }


def shared_root(roots: dict[str, list[str]]) -> str:
    """The root set every cluster's cacerts holds, joined with ', ', when they all hold the same one; '' otherwise."""
    distinct = {", ".join(fingerprints) for fingerprints in roots.values()}
    return distinct.pop() if len(distinct) == 1 else ""


def summary(findings: list[dict]) -> dict:
    counts = Counter(finding["severity"] for finding in findings)
    return {severity: counts.get(severity, 0) for severity in SEVERITIES}
