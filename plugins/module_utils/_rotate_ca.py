# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: a CA rotation across every cluster of the mesh (the I/O around _rotation's pure core).

The PKI directory records each rotation under <pki_dir>/rotations/<id>/:
  state.json                     mode, roots (fingerprints), clusters, status (started / issued / done)
  new/root-cert.pem root-key.pem the new root (root mode), generated or imported on the control node
  new/<cluster>/...              intermediates under the new root (root mode, issued at phase 2)
  old/...                        what the rotation replaced in <pki_dir>, archived (never deleted)
Every write to the directory is one _io.write_tree step. The clusters' phases are read from their cacerts and
istio-ca-root-cert ConfigMaps, so a run interrupted anywhere resumes where it stopped, and a run after the end
writes nothing.

Test-only: with MESHFED_TEST_KILL_AFTER_WRITES=N in its environment the run kills itself (SIGKILL, as a lost control
node would end it) right after its N-th cacerts write; tests/e2e/test_rotate_ca.py sets it. Unset, it does nothing.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field

from ansible_collections.meshfed.istio.plugins.module_utils import _cluster_state, _io, _istio, _k8s, _pki, _rotation, _trust, _workloads
from ansible_collections.meshfed.istio.plugins.module_utils._pki_store import PkiOptions, _load_root_pair

ROTATIONS = "rotations"
STATE = "state.json"
LOCK = ".rotate-ca.lock"  # one run at a time per PKI directory (flock; released when the run ends, even killed)
ID_PATTERN = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")
KEY_MODE, CERT_MODE = 0o600, 0o644
KILL_AFTER_WRITES = "MESHFED_TEST_KILL_AFTER_WRITES"  # test-only (see above): inert unless a test sets it
FLAGS_FIX = (
    "re-run the site playbook with control_plane_multiroot: true (the default): it installs istiod again with "
    "ISTIO_MULTIROOT_MESH=true and PROXY_CONFIG_XDS_AGENT=true; then restart the workloads, so that their proxies "
    "carry PROXY_CONFIG_XDS_AGENT; then run rotate_ca again"
)


class RotateError(Exception):
    """A rotation that cannot go on; the message names the clusters and the fix. Nothing was written by the refused step."""


@dataclass(frozen=True)
class RotationTarget:
    """One cluster: Istio's cluster name, its inventory host, the cluster name of its primary (remotes), its API."""

    name: str
    host: str
    primary: str
    api: object  # ClusterApi or a test double with the same three methods


@dataclass
class Options:
    pki_dir: str
    rotation_id: str
    mode: str = "root"  # root | intermediate
    namespace: str = _istio.DEFAULT_NAMESPACE
    subset: tuple[str, ...] = ()
    target_phase: int = _rotation.NEW_ROOT_ONLY
    new_root_cert_src: str | None = None
    new_root_key_src: str | None = None
    root_key_passphrase: str | None = None
    settle_timeout: float = 120.0
    workload_wait: float = 0.0
    check_flags: bool = True
    # The workload restart: callable(cluster names, token, check_mode) -> {cluster: result} (restarter() below), or None.
    # Root: before phase 3, so that workloads hold certificates under the new root before the old one is dropped.
    # Intermediate: after the writes, in the rotated clusters and the remotes their istiods serve, before "done".
    restart: object = None


@dataclass
class Observed:
    """One cluster as read: cacerts (bytes per key, None when missing), its resourceVersion, the istio-ca-root-cert
    ConfigMaps (namespace -> root-cert.pem), whether istio-ca-secret exists, the rotation flags' gaps."""

    data: dict | None
    resource_version: str
    root_certs: dict
    istio_ca_secret: bool
    missing_flags: list = field(default_factory=list)


class ClusterApi:
    """The few API calls of a rotation, on one cluster."""

    def __init__(self, cluster: _k8s.Cluster, namespace: str, sample: int = 200) -> None:
        self.cluster, self.namespace, self.sample = cluster, namespace, sample

    def read(self, flags: bool) -> Observed:
        cluster, namespace = self.cluster, self.namespace
        secret = cluster.get(f"reading secret {namespace}/cacerts", _k8s.namespaced(namespace, "secrets", _istio.CACERTS_SECRET), missing_ok=True)
        configmaps = cluster.items(
            "listing istio-ca-root-cert configmaps", "/api/v1/configmaps", fieldSelector=f"metadata.name={_istio.ROOT_CERT_CONFIGMAP}", limit=self.sample
        )
        self_signed = cluster.get(
            f"reading secret {namespace}/{_istio.ISTIO_CA_SECRET}", _k8s.namespaced(namespace, "secrets", _istio.ISTIO_CA_SECRET), missing_ok=True
        )
        observed = Observed(
            data=None if secret is None else {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()},
            resource_version=((secret or {}).get("metadata") or {}).get("resourceVersion", ""),
            root_certs={item["metadata"].get("namespace", ""): ((item.get("data") or {}).get(_istio.ROOT_CERT) or "").encode() for item in configmaps},
            istio_ca_secret=self_signed is not None,
        )
        if flags:
            observed.missing_flags = self._missing_flags()
        return observed

    def _missing_flags(self) -> list[str]:
        cluster, namespace = self.cluster, self.namespace
        where = _k8s.namespaced(namespace, "deployments", group="apps")
        deployments = cluster.items(f"listing deployments in {namespace}", where, labelSelector=_istio.ISTIOD_SELECTOR)
        missing = []
        for deployment in deployments:
            facts = _cluster_state.istiod_facts(deployment)
            if not _istio.flag_on(facts["multiroot"]):
                missing.append(f"istiod Deployment {facts['name']} has {_istio.MULTIROOT_ENV}={facts['multiroot'] or '<unset>'}")
            name = f"istio-{facts['revision']}" if facts["revision"] and facts["revision"] != "default" else "istio"
            mesh = _cluster_state.mesh_config(
                cluster.get(f"reading configmap {namespace}/{name}", _k8s.namespaced(namespace, "configmaps", name), missing_ok=True)
            )
            if not _istio.flag_on(mesh["xds_agent"]):
                missing.append(f"mesh config {name} has defaultConfig.proxyMetadata.{_istio.XDS_AGENT_METADATA}={mesh['xds_agent'] or '<unset>'}")
        if not deployments:
            missing.append(f"no istiod Deployment (label {_istio.ISTIOD_SELECTOR})")
        return missing

    def replace(self, data: dict, resource_version: str) -> dict:
        """The whole secret in one update, on the version read (a change by anyone else since is refused: HTTP 409)."""
        namespace = self.namespace
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": _istio.CACERTS_SECRET,
                "namespace": namespace,
                "resourceVersion": resource_version,
                "labels": {_istio.MANAGED_BY_LABEL: _istio.MANAGED_BY},
            },
            "data": {key: base64.b64encode(value).decode() for key, value in sorted(data.items())},
        }
        answer = self.cluster.request(f"replacing secret {namespace}/cacerts", "PUT", _k8s.namespaced(namespace, "secrets", _istio.CACERTS_SECRET), body=body)
        return {key: base64.b64decode(value) for key, value in ((answer or {}).get("data") or {}).items()}


# The PKI directory


class Pki:
    def __init__(self, options: Options, check_mode: bool) -> None:
        """Finish what an interrupted write left first (in check mode: read as if finished), so nothing is read half moved."""
        self.dest = options.pki_dir
        self.rotation_rel = os.path.join(ROTATIONS, options.rotation_id)
        self.writes: list[str] = []
        try:
            found = _io.leftovers(self.dest)
            self.pending = found.pending() if check_mode else {}
            if found and not check_mode:
                _io.recover(self.dest, found)
                self.writes.append(f"finished an interrupted write in {self.dest}")
        except OSError as exc:
            raise RotateError(f"cannot recover {self.dest}: {exc.strerror}") from exc

    def path(self, *rel: str) -> str:
        return os.path.join(self.dest, *rel)

    def read(self, *rel: str) -> bytes | None:
        try:
            return _io.read_optional(self.pending.get(os.path.join(*rel)) or self.path(*rel))
        except OSError as exc:
            raise RotateError(f"cannot read {self.path(*rel)}: {exc.strerror}") from exc

    def state(self) -> dict | None:
        raw = self.read(self.rotation_rel, STATE)
        if raw is None:
            return None
        try:
            state = json.loads(raw)
        except ValueError as exc:
            raise RotateError(f"{self.path(self.rotation_rel, STATE)} is not JSON: restore it from a backup") from exc
        if not isinstance(state, dict) or state.get("mode") not in ("root", "intermediate"):
            raise RotateError(f"{self.path(self.rotation_rel, STATE)} is not a rotation state: restore it from a backup")
        return state

    def others_in_progress(self) -> list[str]:
        """Other rotations of this directory that have not finished."""
        return [entry for entry in _trust.rotations_in_progress(self.dest) if entry != os.path.basename(self.rotation_rel)]

    def write(self, files: dict[str, tuple[bytes, int]], what: str) -> None:
        try:
            _io.write_tree(self.dest, files)
        except OSError as exc:
            raise RotateError(f"cannot write {exc.filename}: {exc.strerror}; nothing of it was changed") from exc
        self.writes.append(what)


def _state_file(state: dict) -> tuple[bytes, int]:
    return json.dumps(state, indent=2, sort_keys=True).encode() + b"\n", CERT_MODE


def _spec_like(cert, locality: str | None = None) -> _pki.CaSpec:
    """The parameters of an existing CA certificate, for its successor: the pki role then sees nothing to change."""
    oid = _pki.NameOID

    def attribute(which) -> str:
        values = cert.subject.get_attributes_for_oid(which)
        return values[0].value if values else ""

    return _pki.CaSpec(
        attribute(oid.ORGANIZATION_NAME) or "Istio",
        attribute(oid.COMMON_NAME) or "CA",
        max(_pki.lifetime_days(cert), 1),
        _pki.key_algorithm_of(cert.public_key()),
        locality,
    )


def _with_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


# Reading the clusters


def _cluster_trust(member: RotationTarget, observed: Observed) -> _rotation.ClusterTrust:
    data = observed.data or {}
    bundle = data.get(_istio.ROOT_CERT) or b""
    return _rotation.ClusterTrust(
        name=member.name,
        bundle=bundle,
        signer=_rotation.signer_of(data.get(_istio.CA_CERT) or b"", bundle),
        workload=tuple(tuple(_safe_fingerprints(pem)) for _namespace, pem in sorted(observed.root_certs.items())),
        primary=member.primary,
    )


def _safe_fingerprints(pem: bytes) -> list[str]:
    try:
        return _rotation.fingerprints(pem)
    except _pki.PkiError:
        return ["<unreadable>"]


def observe(members: list[RotationTarget], flags: bool = False) -> dict[str, Observed]:
    found = {}
    for member in members:
        try:
            found[member.name] = member.api.read(flags)
        except _k8s.K8sError as exc:
            raise RotateError(f"{member.name}: {exc}; nothing more was written (a rerun resumes where this one stopped)") from exc
    problems = []
    for member in members:
        observed = found[member.name]
        if observed.data is None:
            problems.append(f"{member.name}: no cacerts secret: run the site playbook first")
        elif sorted(observed.data) != sorted(_istio.BUNDLE_KEYS):
            problems.append(
                f"{member.name}: cacerts holds {', '.join(sorted(observed.data))}, not the four keys istiod needs: run the site playbook to repair it"
            )
        if observed.istio_ca_secret:
            problems.append(
                f"{member.name}: istio-ca-secret exists: istiod signs with its own self-signed CA; "
                "migrate with the site playbook (meshfed_allow_migration) before rotating"
            )
    if problems:
        raise RotateError("; ".join(problems))
    return found


def _require_flags(members: list[RotationTarget], observed: dict[str, Observed]) -> None:
    gaps = [
        f"{member.name}: {'; '.join(observed[member.name].missing_flags)}" for member in members if not member.primary and observed[member.name].missing_flags
    ]
    if gaps:
        raise RotateError(f"a root rotation without restarts needs the rotation flags, and they are missing: {'; '.join(gaps)}. Fix: {FLAGS_FIX}")


# Writing one cluster


def _write_cluster(
    member: RotationTarget,
    observed: Observed,
    data: dict,
    projected: dict[str, _rotation.ClusterTrust],
    write: _rotation.Write,
    new: str,
    result: dict,
    check_mode: bool,
) -> None:
    """One cluster's cacerts in one update, the invariant checked before (against every other cluster as it now is) and
    after (on what the API answered)."""
    broken = _rotation.violations(list(projected.values()), {member.name: write}, new)
    if broken:
        raise RotateError(
            f"refusing to write {member.name}'s cacerts (phase {write.phase}): it would break trust between clusters: {'; '.join(map(str, broken))}"
        )
    signer = new if write.new_intermediate else projected[member.name].signer
    result["writes"].append(
        {
            "cluster": member.name,
            "phase": write.phase,
            "keys": sorted(k for k in data if data[k] != (observed.data or {}).get(k)),
            "new_intermediate": write.new_intermediate,
        }
    )
    if check_mode:
        projected[member.name] = _rotation.ClusterTrust(member.name, write.bundle, signer, (tuple(_rotation.fingerprints(write.bundle)),), member.primary)
        return
    try:
        answer = member.api.replace(data, observed.resource_version)
    except _k8s.K8sError as exc:
        raise RotateError(f"{member.name}: writing cacerts failed ({exc}); a rerun reads the clusters again and resumes") from exc
    if answer != data:
        raise RotateError(f"{member.name}: the API server answered the cacerts write with other data than was sent: stopping")
    projected[member.name] = _rotation.ClusterTrust(member.name, write.bundle, signer, projected[member.name].workload, member.primary)
    broken = _rotation.violations(list(projected.values()))
    if broken:  # pragma: no cover - the check before covers it; a second look at what the API holds now
        raise RotateError(f"after writing {member.name}: {'; '.join(map(str, broken))}")
    _test_kill_point(len(result["writes"]))


def _test_kill_point(writes: int) -> None:
    """Test-only: the run ends here, killed, after its writes-th cacerts write when the environment asks for it."""
    limit = os.environ.get(KILL_AFTER_WRITES, "")
    if limit.isdigit() and writes == int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def _settle(members: list[RotationTarget], expect: dict[str, bytes], options: Options, sleep, clock) -> dict[str, Observed]:
    """Read every cluster back until its cacerts holds what was written and its istio-ca-root-cert ConfigMaps caught up
    (bounded by settle_timeout)."""
    deadline = clock() + options.settle_timeout
    while True:
        observed = observe(members)
        trusts = [_cluster_trust(member, observed[member.name]) for member in members]
        by_name = {trust.name: trust for trust in trusts}
        behind = [name for name, data in expect.items() if (observed[name].data or {}).get(_istio.ROOT_CERT) != data]
        if behind:
            raise RotateError(f"{', '.join(behind)}: cacerts changed under this run (read back another root-cert.pem): stopping")
        waiting = [trust.name for trust in trusts if not _rotation.settled(trust, by_name)]
        if not waiting:
            return observed
        if clock() >= deadline:
            where = ", ".join(f"{name} ({_lagging(by_name[name], by_name, observed[name])})" for name in waiting)
            raise RotateError(
                f"istio-ca-root-cert of {where} does not hold its cacerts bundle {options.settle_timeout:.0f} s after "
                "the write: is istiod running (primaries) and managing the remotes? A namespace istiod does not manage keeps "
                "an old copy: delete that ConfigMap there. The rotation stops here; a rerun resumes once istiod has caught up "
                "(rotate_ca_settle_timeout sets the wait)"
            )
        sleep(1)


def _lagging(trust: _rotation.ClusterTrust, by_name: dict[str, _rotation.ClusterTrust], observed: Observed) -> str:
    """The namespaces (at most five) whose istio-ca-root-cert is no copy of the bundle the cluster's istiod publishes."""
    source = by_name.get(trust.primary, trust) if trust.primary else trust
    behind = [namespace for namespace, pem in sorted(observed.root_certs.items()) if _safe_fingerprints(pem) != source.roots]
    if not behind:
        return "none read"
    return "namespaces " + ", ".join(behind[:5]) + (f" and {len(behind) - 5} more" if len(behind) > 5 else "")


# Workload restart


def restarter(members: list[RotationTarget], settings: _workloads.Settings):
    """The restart of Options.restart, on the members' own API clients."""
    clusters = {member.name: member.api.cluster for member in members}
    return lambda names, token, check_mode: _workloads.restart_clusters({name: clusters[name] for name in names}, token, settings, check_mode)


def _restart(options: Options, names: list[str], check_mode: bool, result: dict, stop: str, clock) -> None:
    started = clock()
    try:
        restarts = options.restart(names, f"rotate_ca/{options.rotation_id}", check_mode)
    except (_workloads.RestartError, _k8s.K8sError) as exc:
        raise RotateError(f"restarting the workloads: {exc}; {stop}") from exc
    result["restarts"] = restarts
    result["changed"] = result["changed"] or any(item["changed"] for item in restarts.values())
    if not check_mode:
        result["waited"] += clock() - started


# Root rotation


def _new_root(options: Options, pki: Pki, old_cert, now) -> tuple[bytes, bytes, bool]:
    """The new root's PEM and key PEM: staged in the rotation directory, else imported, else generated (like the old)."""
    cert_pem, key_pem = pki.read(pki.rotation_rel, "new", _istio.ROOT_CERT), pki.read(pki.rotation_rel, "new", "root-key.pem")
    if cert_pem is not None and key_pem is not None:
        _load_root_pair(
            cert_pem,
            key_pem,
            (pki.path(pki.rotation_rel, "new", _istio.ROOT_CERT), pki.path(pki.rotation_rel, "new", "root-key.pem")),
            _pki_options(options),
            now,
            imported=True,
        )
        return cert_pem, key_pem, False
    if cert_pem is not None or key_pem is not None:
        raise RotateError(
            f"{pki.path(pki.rotation_rel, 'new')} holds only half of the new root (certificate or key): restore it, "
            "or remove that directory and its state.json to start the rotation again"
        )
    if options.new_root_cert_src:
        cert_pem, key_pem = _io.read_optional(options.new_root_cert_src), _io.read_optional(options.new_root_key_src or "")
        if cert_pem is None or key_pem is None:
            raise RotateError(
                f"cannot import the new root: {options.new_root_cert_src if cert_pem is None else options.new_root_key_src} "
                "does not exist (new_root_cert_src, new_root_key_src)"
            )
        try:
            cert, _key, _protection = _load_root_pair(
                cert_pem, key_pem, (options.new_root_cert_src, options.new_root_key_src), _pki_options(options), now, imported=True
            )
        except _pki.PkiError as exc:
            raise RotateError(f"the new root cannot be used: {exc} (new_root_cert_src)") from exc
        return _pki.cert_pem(cert), key_pem, True
    key = _pki.generate_key(_pki.key_algorithm_of(old_cert.public_key()))
    cert = _pki.build_root(key, _spec_like(old_cert), now)
    return _pki.cert_pem(cert), _pki.key_pem(key, options.root_key_passphrase), True


def _pki_options(options: Options) -> PkiOptions:
    return PkiOptions(dest=options.pki_dir, clusters=(), root_key_passphrase=options.root_key_passphrase, renew_before_days=0)


def _new_intermediates(options: Options, pki: Pki, names: list[str], new_pem: bytes, new_key_pem: bytes, now) -> tuple[dict, dict]:
    """Each cluster's intermediate under the new root: the staged one, else a new one like its current intermediate.
    Returns (cluster -> bundle files but root-cert.pem, files to stage)."""
    root_cert = _pki.load_cert(new_pem, "the new root")
    root_key = None
    bundles, staged = {}, {}
    for name in names:
        rel = os.path.join(pki.rotation_rel, "new", name)
        ca_pem, key_pem = pki.read(rel, _istio.CA_CERT), pki.read(rel, _istio.CA_KEY)
        if ca_pem is not None and key_pem is not None:
            cert = _pki.load_cert(ca_pem, pki.path(rel, _istio.CA_CERT))
            if not _pki.signed_by(cert, root_cert) or not _pki.key_matches(cert, _pki.load_key(key_pem, pki.path(rel, _istio.CA_KEY))):
                raise RotateError(
                    f"{pki.path(rel)} does not hold an intermediate of the new root with its key: remove that directory and run again (a new one is issued)"
                )
        else:
            if root_key is None:
                root_key = _pki.load_key(new_key_pem, "the new root key", options.root_key_passphrase)
            current = _pki.load_cert(pki.read(name, _istio.CA_CERT) or b"", pki.path(name, _istio.CA_CERT))
            key = _pki.generate_key(_pki.key_algorithm_of(current.public_key()))
            cert = _pki.build_intermediate(key, _spec_like(current, name), root_cert, root_key, now)
            ca_pem, key_pem = _pki.cert_pem(cert), _pki.key_pem(key)
            staged[os.path.join(rel, _istio.CA_CERT)] = (ca_pem, CERT_MODE)
            staged[os.path.join(rel, _istio.CA_KEY)] = (key_pem, KEY_MODE)
        bundles[name] = {_istio.CA_CERT: ca_pem, _istio.CA_KEY: key_pem, _istio.CERT_CHAIN: _with_newline(ca_pem) + new_pem}
    return bundles, staged


def _start(options: Options, check_mode: bool, mode: str) -> tuple[Pki, dict, dict | None]:
    """The PKI directory, an empty result, and the recorded state of this rotation, which must be of this mode."""
    pki = Pki(options, check_mode)
    result: dict = {"changed": False, "writes": [], "pki_writes": pki.writes, "phases": [], "waited": 0.0}
    state = pki.state()
    if state is not None and state["mode"] != mode:
        raise RotateError(
            f"rotation {options.rotation_id} is a {state['mode']} rotation (in {pki.path(pki.rotation_rel)}); choose another rotate_ca_id for a {mode} rotation"
        )
    return pki, result, state


def run_root(options: Options, members: list[RotationTarget], check_mode: bool, now=None, sleep=time.sleep, clock=time.monotonic) -> dict:
    now = now or _pki.utcnow()
    pki, result, state = _start(options, check_mode, "root")
    root_pem = pki.read(_istio.ROOT_CERT)
    if root_pem is None:
        raise RotateError(f"{pki.path(_istio.ROOT_CERT)} does not exist: run the site playbook first (or set meshfed_pki_dir)")
    root_fp = _rotation.block_fingerprint(_rotation.root_block(root_pem))
    names = [member.name for member in members]

    if state is not None and state.get("status") == "done":
        observed = observe(members)
        trusts = [_cluster_trust(member, observed[member.name]) for member in members]
        mesh = _rotation.mesh_phase(trusts, root_fp, "")
        if root_fp != state.get("new_root") or mesh.problems:
            raise RotateError(
                f"rotation {options.rotation_id} finished on root {state.get('new_root', '?')[:23]}, but the PKI directory "
                f"or the clusters disagree: {'; '.join(mesh.problems) or 'root-cert.pem is ' + root_fp[:23]}"
            )
        result.update(phase=_rotation.NEW_ROOT_ONLY, done=True, clusters=dict.fromkeys(names, _rotation.NEW_ROOT_ONLY))
        return result

    others = pki.others_in_progress()
    if others:
        raise RotateError(f"rotation(s) {', '.join(others)} of {pki.path(ROTATIONS)} did not finish: finish them first")
    if state is not None and state.get("old_root") != root_fp:
        raise RotateError(
            f"the PKI directory disagrees with rotation {options.rotation_id}: it started from root "
            f"{state.get('old_root', '?')[:23]}, {pki.path(_istio.ROOT_CERT)} is {root_fp[:23]}; restore that file"
        )
    old_cert = _pki.load_cert(root_pem, pki.path(_istio.ROOT_CERT))
    new_pem, new_key_pem, fresh = _new_root(options, pki, old_cert, now)
    new_fp = _rotation.block_fingerprint(_rotation.root_block(new_pem))
    if new_fp == root_fp:
        raise RotateError(f"the new root is the mesh's current root ({root_fp[:23]}): import or generate another")
    if state is not None and state.get("new_root") != new_fp:
        raise RotateError(f"{pki.path(pki.rotation_rel, 'new', _istio.ROOT_CERT)} is not the new root rotation {options.rotation_id} started with: restore it")

    observed = observe(members, flags=options.check_flags)
    trusts = {member.name: _cluster_trust(member, observed[member.name]) for member in members}
    mesh = _rotation.mesh_phase(list(trusts.values()), root_fp, new_fp)
    result["phase_before"] = mesh.phase
    if mesh.problems:
        raise RotateError(
            f"the clusters disagree with the PKI directory {options.pki_dir} (old root {root_fp[:23]}, new root "
            f"{new_fp[:23]}): {'; '.join(mesh.problems)}; nothing was written"
        )
    by_member = {member.name: member for member in members}
    first = True
    while True:
        try:
            step = _rotation.next_step(list(trusts.values()), root_fp, new_pem, options.target_phase)
        except _rotation.RotationError as exc:
            raise RotateError(str(exc)) from exc
        if step.waiting and not check_mode:
            started = clock()
            observed = _settle(members, {}, options, sleep, clock)
            result["waited"] += clock() - started
            trusts = {member.name: _cluster_trust(member, observed[member.name]) for member in members}
            continue
        if step.waiting:  # check mode: assume istiod catches up
            trusts = {name: _rotation.ClusterTrust(name, t.bundle, t.signer, (tuple(t.roots),), t.primary) for name, t in trusts.items()}
            continue
        if step.done:
            break
        if first:
            if options.check_flags:
                _require_flags(members, observed)
            if fresh or state is None:
                state = {"mode": "root", "status": "started", "old_root": root_fp, "new_root": new_fp, "clusters": names}
                files = {os.path.join(pki.rotation_rel, STATE): _state_file(state)}
                if fresh:
                    files[os.path.join(pki.rotation_rel, "new", _istio.ROOT_CERT)] = (new_pem, CERT_MODE)
                    files[os.path.join(pki.rotation_rel, "new", "root-key.pem")] = (new_key_pem, KEY_MODE)
                if not check_mode:
                    pki.write(files, f"new root {new_fp[:23]} staged in {pki.path(pki.rotation_rel, 'new')}")
                else:
                    pki.writes.append(f"would stage the new root in {pki.path(pki.rotation_rel, 'new')}")
            first = False
        if step.phase == _rotation.NEW_ROOT_ONLY and options.restart is not None and "restarts" not in result:
            stop = "the rotation stops before phase 3 (both roots stay trusted); a rerun resumes the restart, then phase 3"
            _restart(options, names, check_mode, result, stop, clock)
        intermediates = {}
        if step.phase == _rotation.NEW_INTERMEDIATES:
            intermediates, staged = _new_intermediates(options, pki, sorted(step.writes), new_pem, new_key_pem, now)
            if staged and not check_mode:
                pki.write(staged, f"intermediates of {', '.join(sorted(step.writes))} under the new root")
        result["phases"].append(step.phase)
        expect = {}
        for name, write in sorted(step.writes.items()):
            data = dict(observed[name].data) if name in observed else {}
            data.update(intermediates.get(name, {}))
            data[_istio.ROOT_CERT] = write.bundle
            _write_cluster(by_member[name], observed[name], data, trusts, write, new_fp, result, check_mode)
            expect[name] = write.bundle
        result["changed"] = True
        if check_mode:
            trusts = {name: _rotation.ClusterTrust(name, t.bundle, t.signer, (tuple(t.roots),), t.primary) for name, t in trusts.items()}
            observed = {name: Observed({**(observed[name].data or {}), _istio.ROOT_CERT: trusts[name].bundle}, "", {}, False) for name in names}
            continue
        started = clock()
        observed = _settle(members, expect, options, sleep, clock)
        if options.workload_wait and step.phase < _rotation.NEW_ROOT_ONLY:
            sleep(options.workload_wait)
        result["waited"] += clock() - started
        trusts = {member.name: _cluster_trust(member, observed[member.name]) for member in members}

    result["phase"] = max(t for t in [_rotation.cluster_phase(trust, root_fp, new_fp)[0] for trust in trusts.values()] if t is not None)
    result["clusters"] = {name: _rotation.cluster_phase(trust, root_fp, new_fp)[0] for name, trust in trusts.items()}
    if options.target_phase == _rotation.NEW_ROOT_ONLY:
        _finish_root(options, pki, members, observed, new_pem, new_key_pem, root_fp, new_fp, check_mode, result)
    result["done"] = options.target_phase == _rotation.NEW_ROOT_ONLY
    return result


def _finish_root(
    options: Options,
    pki: Pki,
    members: list[RotationTarget],
    observed: dict,
    new_pem: bytes,
    new_key_pem: bytes,
    old_fp: str,
    new_fp: str,
    check_mode: bool,
    result: dict,
) -> None:
    """Every cluster on the new root alone: archive the old root and intermediates, put the new ones in their place and mark the
    rotation done, in one write of the PKI directory."""
    if check_mode:
        pki.writes.append(f"would archive the old root in {pki.path(pki.rotation_rel, 'old')} and put the new one in place")
        result["changed"] = True
        return
    files = {}
    mismatched = []
    for member in members:
        staged = {key: pki.read(pki.rotation_rel, "new", member.name, key) for key in (_istio.CA_CERT, _istio.CA_KEY)}
        live = observed[member.name].data or {}
        if staged[_istio.CA_CERT] != live.get(_istio.CA_CERT) or staged[_istio.CA_KEY] != live.get(_istio.CA_KEY):
            mismatched.append(member.name)
            continue
        wanted = {**staged, _istio.CERT_CHAIN: _with_newline(staged[_istio.CA_CERT]) + new_pem, _istio.ROOT_CERT: new_pem}
        for key, data in wanted.items():
            if live.get(key) != data:
                mismatched.append(member.name)
            mode = KEY_MODE if key == _istio.CA_KEY else CERT_MODE
            files[os.path.join(member.name, key)] = (data, mode)
            current = pki.read(member.name, key)
            if current is not None:
                files[os.path.join(pki.rotation_rel, "old", member.name, key)] = (current, mode)
    if mismatched:
        raise RotateError(
            f"the cacerts of {', '.join(sorted(set(mismatched)))} are on the new root but are not the bundle staged in "
            f"{pki.path(pki.rotation_rel, 'new')}: the PKI directory disagrees with the clusters; nothing was archived"
        )
    for name, data, mode in ((_istio.ROOT_CERT, new_pem, CERT_MODE), ("root-key.pem", new_key_pem, KEY_MODE)):
        current = pki.read(name)
        if current is not None:
            files[os.path.join(pki.rotation_rel, "old", name)] = (current, mode)
        files[name] = (data, mode)
    state = {"mode": "root", "status": "done", "old_root": old_fp, "new_root": new_fp, "clusters": [m.name for m in members]}
    files[os.path.join(pki.rotation_rel, STATE)] = _state_file(state)
    pki.write(files, f"old root {old_fp[:23]} archived in {pki.path(pki.rotation_rel, 'old')}; new root {new_fp[:23]} in place")
    result["changed"] = True


# Intermediate rotation


def run_intermediate(options: Options, members: list[RotationTarget], check_mode: bool, now=None, sleep=time.sleep, clock=time.monotonic) -> dict:
    now = now or _pki.utcnow()
    pki, result, state = _start(options, check_mode, "intermediate")
    names = [member.name for member in members]
    selected = sorted(options.subset) if options.subset else sorted(names)
    unknown = sorted(set(selected) - set(names))
    if unknown:
        raise RotateError(f"rotate_ca_clusters names {', '.join(unknown)}, not clusters of this inventory ({', '.join(names)})")
    if state is not None and sorted(state.get("clusters") or []) != selected:
        raise RotateError(
            f"rotation {options.rotation_id} rotates {', '.join(state.get('clusters') or [])}, not {', '.join(selected)}: "
            "run it with the same rotate_ca_clusters, or choose another rotate_ca_id"
        )
    others = pki.others_in_progress()
    if others:
        raise RotateError(f"rotation(s) {', '.join(others)} of {pki.path(ROTATIONS)} did not finish: finish them first")
    served = [member.name for member in members if member.name in selected or member.primary in selected]
    root_pem = pki.read(_istio.ROOT_CERT)
    if root_pem is None:
        raise RotateError(f"{pki.path(_istio.ROOT_CERT)} does not exist: run the site playbook first (or set meshfed_pki_dir)")
    root_fp = _rotation.block_fingerprint(_rotation.root_block(root_pem))
    observed = observe(members)
    trusts = {member.name: _cluster_trust(member, observed[member.name]) for member in members}
    mesh = _rotation.mesh_phase(list(trusts.values()), root_fp, "")
    if mesh.problems:
        raise RotateError(
            f"the clusters disagree with the PKI directory {options.pki_dir} (root {root_fp[:23]}): {'; '.join(mesh.problems)}; nothing was written"
        )
    problems = [
        f"{name}: root-cert.pem of cacerts differs from {pki.path(name, _istio.ROOT_CERT)}"
        for name in selected
        if (observed[name].data or {}).get(_istio.ROOT_CERT) != pki.read(name, _istio.ROOT_CERT)
    ]
    if problems:
        raise RotateError(
            "; ".join(problems) + ": an intermediate rotation keeps root-cert.pem byte-identical; run the site "
            "playbook first, or finish the root rotation in progress"
        )
    if state is None:
        root_cert = _pki.load_cert(root_pem, pki.path(_istio.ROOT_CERT))
        root_key = _load_root_key(options, pki, root_cert, now)
        files = {}
        for name in selected:
            current_pem = pki.read(name, _istio.CA_CERT)
            current = _pki.load_cert(current_pem or b"", pki.path(name, _istio.CA_CERT))
            key = _pki.generate_key(_pki.key_algorithm_of(current.public_key()))
            cert = _pki.build_intermediate(key, _spec_like(current, name), root_cert, root_key, now)
            ca_pem = _pki.cert_pem(cert)
            new = {
                _istio.CA_CERT: (ca_pem, CERT_MODE),
                _istio.CA_KEY: (_pki.key_pem(key), KEY_MODE),
                _istio.CERT_CHAIN: (_with_newline(ca_pem) + _pki.cert_pem(root_cert), CERT_MODE),
            }
            for key_name, (data, mode) in new.items():
                files[os.path.join(name, key_name)] = (data, mode)
                old = pki.read(name, key_name)
                if old is not None:
                    files[os.path.join(pki.rotation_rel, "old", name, key_name)] = (old, mode)
        state = {"mode": "intermediate", "status": "issued", "root": root_fp, "clusters": selected}
        files[os.path.join(pki.rotation_rel, STATE)] = _state_file(state)
        if check_mode:
            pki.writes.append(f"would issue new intermediates for {', '.join(selected)} (old ones archived in {pki.path(pki.rotation_rel, 'old')})")
            for name in selected:
                result["writes"].append({"cluster": name, "phase": 0, "keys": [_istio.CA_CERT, _istio.CA_KEY, _istio.CERT_CHAIN], "new_intermediate": True})
            result.update(changed=True, phase=0, clusters=dict.fromkeys(names, 0), done=False)
            if options.restart is not None:
                _restart(options, served, check_mode, result, "nothing was written", clock)
            return result
        pki.write(files, f"new intermediates for {', '.join(selected)}; the old ones archived in {pki.path(pki.rotation_rel, 'old')}")
        result["changed"] = True
    elif state.get("root") != root_fp:
        raise RotateError(
            f"rotation {options.rotation_id} issued intermediates under root {state.get('root', '?')[:23]}, the PKI "
            f"directory's root is {root_fp[:23]}: the PKI directory disagrees with the rotation state"
        )
    expect = {}
    for name in selected:
        member = next(m for m in members if m.name == name)
        live = observed[name].data or {}
        wanted = {key: pki.read(name, key) for key in (_istio.CA_CERT, _istio.CA_KEY, _istio.CERT_CHAIN)}
        wanted[_istio.ROOT_CERT] = live[_istio.ROOT_CERT]  # byte-identical
        if wanted == live:
            continue
        report, facts = _pki.check_bundle(wanted, now)
        if report.problems or facts.get("chain_root") != root_fp:
            raise RotateError(
                f"{name}: the bundle in {pki.path(name)} would be refused by istiod "
                f"({'; '.join(report.problems) or 'not on the mesh root'}): run the site playbook to repair it"
            )
        write = _rotation.Write(name, 0, live[_istio.ROOT_CERT], new_intermediate=False)
        _write_cluster(member, observed[name], wanted, trusts, write, root_fp, result, check_mode)
        expect[name] = live[_istio.ROOT_CERT]
        result["changed"] = True
    if not check_mode and expect:
        started = clock()
        _settle(members, expect, options, sleep, clock)
        if options.workload_wait:
            sleep(options.workload_wait)
        result["waited"] += clock() - started
    if options.restart is not None and state.get("status") != "done":
        stop = "the new intermediates are in place; a rerun resumes the restart"
        _restart(options, served, check_mode, result, stop, clock)
    if state.get("status") != "done" and not check_mode:
        pki.write({os.path.join(pki.rotation_rel, STATE): _state_file({**state, "status": "done"})}, f"intermediate rotation {options.rotation_id} marked done")
        result["changed"] = True
    result.update(phase=0, clusters=dict.fromkeys(names, 0), done=True)
    return result


def _load_root_key(options: Options, pki: Pki, root_cert, now):
    key_pem = pki.read("root-key.pem")
    if key_pem is None:
        raise RotateError(f"{pki.path('root-key.pem')} does not exist: intermediates are issued with the root key in the PKI directory")
    try:
        _cert, key, _protection = _load_root_pair(
            pki.read(_istio.ROOT_CERT), key_pem, (pki.path(_istio.ROOT_CERT), pki.path("root-key.pem")), _pki_options(options), now, imported=False
        )
    except _pki.PkiError as exc:
        raise RotateError(f"{exc} (rotate_ca_root_key_passphrase)") from exc
    return key


@contextlib.contextmanager
def _lock(pki_dir: str, check_mode: bool):
    """One run at a time per PKI directory. Check mode creates nothing: it takes a shared lock on the file only where a
    run left one, so that it does not read what a writing run is changing."""
    path = os.path.join(pki_dir, LOCK)
    if check_mode and not os.path.exists(path):
        yield
        return
    with open(path, "r" if check_mode else "a", encoding="ascii") as lock:
        try:
            fcntl.flock(lock, (fcntl.LOCK_SH if check_mode else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RotateError(f"another rotate_ca run holds {path}: let it finish, then run again (it resumes from what that run left)") from exc
        yield


def run(options: Options, members: list[RotationTarget], check_mode: bool, **kwargs) -> dict:
    if not ID_PATTERN.fullmatch(options.rotation_id or ""):
        raise RotateError(
            f"rotate_ca_id {options.rotation_id!r} is not a name for a rotation: lower-case letters, digits, '.', '_' and '-', at most 63, for example 2026-q4"
        )
    if options.target_phase not in (_rotation.BOTH_ROOTS, _rotation.NEW_INTERMEDIATES, _rotation.NEW_ROOT_ONLY):
        raise RotateError(f"rotate_ca_phase must be 1, 2 or 3, not {options.target_phase}")
    if not os.path.isdir(options.pki_dir):
        raise RotateError(f"the PKI directory {options.pki_dir} does not exist: run the site playbook first (or set meshfed_pki_dir)")
    try:
        with _lock(options.pki_dir, check_mode):
            if options.mode == "intermediate":
                return run_intermediate(options, members, check_mode, **kwargs)
            return run_root(options, members, check_mode, **kwargs)
    except (_pki.PkiError, _rotation.RotationError) as exc:
        raise RotateError(str(exc)) from exc
    except OSError as exc:
        raise RotateError(f"cannot use {exc.filename or options.pki_dir}: {exc.strerror}; nothing more was written") from exc
