# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: rotating the mesh root across every cluster, as pure functions (no I/O).

The phases (old root A, new root B), each finished in every cluster before the next begins:

- 0: bundle A, intermediate under A (not started);
- 1: bundle A+B (B's bytes appended), intermediate under A;
- 2: bundle A+B+B (changed bytes: istiod pushes, workloads re-issue), intermediate under B;
- 3: bundle B alone, intermediate under B (done).

istiod takes a changed root-cert.pem only when one bundle contains the other: as raw bytes in Istio
1.24-1.29, as certificate sets from 1.30. Every bundle here is made by appending bytes to the one a
cluster holds, or by cutting one block out of it, so both rules accept it. The safety invariant: every
cluster's signing root (the root its intermediate chains to) is trusted by every cluster, in cacerts
root-cert.pem and in istio-ca-root-cert, before, during and after each write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _pki

NOT_STARTED, BOTH_ROOTS, NEW_INTERMEDIATES, NEW_ROOT_ONLY = 0, 1, 2, 3
PHASES = {
    NOT_STARTED: "old root only",
    BOTH_ROOTS: "old and new root trusted, old intermediates",
    NEW_INTERMEDIATES: "old and new root trusted, intermediates under the new root",
    NEW_ROOT_ONLY: "new root only",
}
_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----[ \t]*(?:\r?\n)?", re.DOTALL)


class RotationError(ValueError):
    """A rotation step that cannot be taken; the message names the clusters and the fix."""


def _short(fingerprint: str) -> str:
    return fingerprint[:23] if fingerprint else "?"


# Bundle arithmetic on raw PEM bytes


def blocks(bundle: bytes) -> list[bytes]:
    """The certificate blocks of a PEM bundle as the raw bytes they are in it (through the line end after END)."""
    return [match.group(0) for match in _BLOCK.finditer(bundle or b"")]


def block_fingerprint(block: bytes) -> str:
    return _pki.fingerprint(_pki.load_cert(block, "a certificate block"))


def fingerprints(bundle: bytes) -> list[str]:
    """Fingerprints of a bundle's certificates, in order, duplicates kept."""
    return [block_fingerprint(block) for block in blocks(bundle)]


def root_block(root_pem: bytes) -> bytes:
    """The single certificate block of a root's PEM, ending with a newline (what gets appended)."""
    found = blocks(root_pem)
    if len(found) != 1:
        raise RotationError(f"a root PEM must hold exactly one certificate, this one holds {len(found)}")
    return found[0] if found[0].endswith(b"\n") else found[0] + b"\n"


def append_root(bundle: bytes, root_pem: bytes) -> bytes:
    """bundle, byte for byte, then the root: a newline goes between only when bundle does not end with one. The old bundle
    is a prefix of the result, so istiod's containment check (bytes or sets) accepts the change."""
    separator = b"\n" if bundle and not bundle.endswith(b"\n") else b""
    return bundle + separator + root_block(root_pem)


def only_root(bundle: bytes, fingerprint: str) -> bytes:
    """The first block of bundle with that fingerprint, as its bytes there: a bundle of that root alone, contained in bundle."""
    for block in blocks(bundle):
        if block_fingerprint(block) == fingerprint:
            return block
    raise RotationError(f"the bundle holds no root {_short(fingerprint)}")


def accepted_by_istiod(current: bytes, new: bytes) -> bool:
    """Whether every istiod from 1.24 takes new over current: one contains the other as bytes (1.24-1.29), which implies
    the certificate-set relation of 1.30+. Equal bundles are no change."""
    return bool(current and new) and (current in new or new in current)


# What a cluster holds


@dataclass(frozen=True)
class ClusterTrust:
    """One cluster's trust as read: cacerts root-cert.pem (raw bytes), the root its ca-cert.pem chains to, the roots of each
    sampled istio-ca-root-cert in order (what workloads trust; the Istio namespace's at least: read back, never assumed),
    and for a remote the name of its primary, whose istiod writes the remote's istio-ca-root-cert from its own cacerts.
    listed: the bundle's fingerprints in order, for a reader that has them and not the bytes (the doctor's facts)."""

    name: str
    bundle: bytes
    signer: str
    workload: tuple[tuple[str, ...], ...] = ()
    primary: str = ""
    listed: tuple[str, ...] | None = None

    @property
    def roots(self) -> list[str]:
        return list(self.listed) if self.listed is not None else fingerprints(self.bundle)

    @classmethod
    def of_fingerprints(cls, name: str, roots, signer: str, workload=(), primary: str = "") -> ClusterTrust:
        """A cluster known by fingerprints only: its bundle's (in order, duplicates kept), its signing root's, and those of
        each sampled istio-ca-root-cert. Enough for phases, settling and the invariant; not for writing."""
        return cls(name, b"", signer or "", tuple(tuple(item) for item in workload), primary, tuple(roots))


def settled(trust: ClusterTrust, by_name: dict[str, ClusterTrust]) -> bool:
    """istiod has copied root-cert.pem into every sampled istio-ca-root-cert of the cluster: its own cacerts' for a primary,
    its primary's for a remote. A byte copy, so the same fingerprints in the same order, duplicates included (the phase 2
    bundle differs from phase 1's only so). None read: not known, so not settled."""
    source = by_name.get(trust.primary, trust) if trust.primary else trust
    return bool(trust.workload) and all(list(roots) == source.roots for roots in trust.workload)


def signer_of(ca_cert_pem: bytes, root_cert_pem: bytes) -> str:
    """Fingerprint of the root in root_cert_pem that ca-cert.pem chains to ('' when none does)."""
    try:
        root = _pki.chain_root(_pki.load_cert(ca_cert_pem, _istio.CA_CERT), [], _pki.load_certs(root_cert_pem, _istio.ROOT_CERT))
    except _pki.PkiError:
        return ""
    return _pki.fingerprint(root) if root is not None else ""


# Phases


@dataclass
class ClusterPhase:
    phase: int | None
    position: str  # "at" the mesh's phase, "behind" it (this phase's write still to do), "unknown"
    settled: bool
    problem: str = ""


@dataclass
class MeshPhase:
    """phase: the phase the mesh is in, the highest any cluster's cacerts has reached (a phase begins with its first write);
    complete: every cluster is at it and settled. A cluster is "at" that phase or "behind" it (the phase's write is still to
    do there); one more than one phase behind means a phase was skipped, a problem. None is ahead: the reference is the
    most advanced cluster."""

    phase: int | None
    complete: bool
    clusters: dict[str, ClusterPhase] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.complete and self.phase == NEW_ROOT_ONLY


def roots_of_rotation(clusters: list[ClusterTrust]) -> tuple[str, str] | None:
    """(old, new) of a root rotation the bundles show, read from the clusters alone: two roots in all, and a bundle holding
    both, whose first root is the old one (the new one is appended to it); None when the bundles show no rotation."""
    distinct = {root for trust in clusters for root in trust.roots}
    both = next((trust.roots for trust in clusters if len(distinct) == 2 and set(trust.roots) == distinct), None)
    if not both:
        return None
    return both[0], next(root for root in both if root != both[0])


def cluster_phase(trust: ClusterTrust, old: str, new: str) -> tuple[int | None, str]:
    """The phase of one cluster's cacerts, or None and why it is none of them."""
    try:
        roots = set(trust.roots)
    except _pki.PkiError as exc:
        return None, f"{trust.name}: root-cert.pem cannot be read ({exc})"
    if not roots:
        return None, f"{trust.name}: cacerts holds no root"
    foreign = roots - {old, new} - {""}
    if foreign:
        return None, f"{trust.name}: cacerts trusts {', '.join(map(_short, sorted(foreign)))}, neither the old nor the new root"
    if trust.signer not in roots:
        return None, f"{trust.name}: the intermediate chains to {_short(trust.signer) if trust.signer else 'no root'} of its bundle"
    rotating = bool(new) and new != old
    phases = {(frozenset({old}), old): NOT_STARTED}
    if rotating:
        phases.update({(frozenset({old, new}), old): BOTH_ROOTS, (frozenset({old, new}), new): NEW_INTERMEDIATES, (frozenset({new}), new): NEW_ROOT_ONLY})
    phase = phases.get((frozenset(roots), trust.signer))
    if phase is None:
        return None, f"{trust.name}: cacerts trusts {', '.join(map(_short, sorted(roots)))} and signs with {_short(trust.signer)}"
    return phase, ""


def mesh_phase(clusters: list[ClusterTrust], old: str, new: str) -> MeshPhase:
    """Where a rotation from old to new stands across the clusters (primaries and remotes); new '' means none."""
    phases = {trust.name: cluster_phase(trust, old, new) for trust in clusters}
    by_name = {trust.name: trust for trust in clusters}
    known = [phase for phase, _problem in phases.values() if phase is not None]
    current = max(known) if known else None
    result = MeshPhase(phase=current, complete=False)
    for trust in clusters:
        phase, problem = phases[trust.name]
        if phase is None:
            result.clusters[trust.name] = ClusterPhase(None, "unknown", False, problem)
            result.problems.append(problem)
            continue
        position = "at" if phase == current else "behind"
        if current - phase > 1:
            problem = f"{trust.name}: at phase {phase} ({PHASES[phase]}) while another cluster is at phase {current}: a phase was skipped"
            result.problems.append(problem)
        result.clusters[trust.name] = ClusterPhase(phase, position, settled(trust, by_name), problem)
    result.complete = bool(clusters) and not result.problems and all(item.position == "at" and item.settled for item in result.clusters.values())
    return result


# The safety invariant


@dataclass(frozen=True)
class Write:
    """What to write into one cluster's cacerts, in one update: the new root-cert.pem and whether the intermediate is
    re-issued under the new root (ca-cert.pem, ca-key.pem, cert-chain.pem with it)."""

    cluster: str
    phase: int
    bundle: bytes
    new_intermediate: bool


@dataclass(frozen=True)
class Violation:
    signer: str  # the cluster whose signing root is not trusted
    root: str
    cluster: str  # the cluster that does not trust it
    where: str  # "cacerts" or "istio-ca-root-cert"

    def __str__(self) -> str:
        return f"{self.cluster} would not trust {self.signer}'s signing root {_short(self.root)} ({self.where})"


def violations(clusters: list[ClusterTrust], writes: dict[str, Write] | None = None, new: str = "") -> list[Violation]:
    """Every (signing cluster, distrusting cluster) pair that breaks the invariant now, while writes are applied (old and
    new signer both sign, old and new bundle both trusted), or after them; new is the root new intermediates chain to."""
    writes = writes or {}
    signing: dict[str, set[str]] = {}
    for trust in clusters:
        signing[trust.name] = {trust.signer} - {""}
        write = writes.get(trust.name)
        if write is not None and write.new_intermediate:
            if not new:
                raise RotationError(f"the write for {trust.name} issues a new intermediate: name the new root")
            signing[trust.name].add(new)
    found = []
    for holder in clusters:
        cacerts = [set(holder.roots)]
        if holder.name in writes:
            cacerts.append(set(fingerprints(writes[holder.name].bundle)))
        for signer, roots in sorted(signing.items()):
            for root in sorted(roots):
                if any(root not in bundle for bundle in cacerts):
                    found.append(Violation(signer, root, holder.name, "cacerts"))
                elif any(root not in workload for workload in holder.workload):
                    found.append(Violation(signer, root, holder.name, "istio-ca-root-cert"))
    return found


# The next step


@dataclass
class Step:
    """The writes of one phase (cluster -> Write); or the clusters whose istio-ca-root-cert has not caught up with cacerts
    (nothing is written until it has); done when the mesh is at the target and settled."""

    phase: int
    writes: dict[str, Write] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    done: bool = False


def _write(trust: ClusterTrust, phase: int, new_pem: bytes, new: str) -> Write:
    if phase in (BOTH_ROOTS, NEW_INTERMEDIATES):
        bundle = append_root(trust.bundle, new_pem)
    else:
        bundle = only_root(trust.bundle, new)
    if not accepted_by_istiod(trust.bundle, bundle):  # pragma: no cover - append and cut always are
        raise RotationError(f"{trust.name}: istiod would refuse the phase {phase} bundle")
    return Write(trust.name, phase, bundle, new_intermediate=phase == NEW_INTERMEDIATES)


def next_step(clusters: list[ClusterTrust], old: str, new_pem: bytes, target: int = NEW_ROOT_ONLY) -> Step:
    """What to write in which cluster to move the rotation from old to the root new_pem one phase on, never skipping one,
    resuming a phase that was written in some clusters only. Refuses (RotationError) states it does not understand, a
    target behind the mesh and any write that would break the invariant."""
    if target not in PHASES:
        raise RotationError(f"target must be one of the phases {', '.join(map(str, PHASES))}, not {target}")
    new = block_fingerprint(root_block(new_pem))
    if new == old:
        raise RotationError(f"the new root is the old root ({_short(old)}): generate or import another")
    state = mesh_phase(clusters, old, new)
    if state.problems:
        raise RotationError("cannot tell where the rotation stands: " + "; ".join(state.problems))
    if not clusters:
        raise RotationError("no clusters to rotate")
    if state.phase > target:
        raise RotationError(f"the mesh is at phase {state.phase} ({PHASES[state.phase]}), past the target {target}: a rotation does not go back")
    unsettled = sorted(name for name, item in state.clusters.items() if not item.settled)
    if unsettled:
        return Step(state.phase, waiting=unsettled)
    if state.complete and state.phase == target:
        return Step(state.phase, done=True)
    phase = state.phase if not state.complete else state.phase + 1
    by_name = {trust.name: trust for trust in clusters}
    writes = {name: _write(by_name[name], phase, new_pem, new) for name, item in sorted(state.clusters.items()) if item.phase < phase}
    broken = violations(clusters, writes, new)
    if broken:
        raise RotationError(f"phase {phase} would break trust between clusters: " + "; ".join(map(str, broken)))
    return Step(phase, writes=writes)
