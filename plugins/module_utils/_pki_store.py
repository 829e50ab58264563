# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the mesh PKI directory on the control node.

Layout (the keys of Istio's cacerts secret, per cluster):
  <dest>/root-cert.pem, <dest>/root-key.pem
  <dest>/<cluster>/{ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem}

sync() first reads and decides everything, then writes; a refusal leaves the directory as it was.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass, field

from ansible_collections.meshfed.istio.plugins.module_utils import _pki
from ansible_collections.meshfed.istio.plugins.module_utils._names import name_problems

ROOT_CERT = "root-cert.pem"
ROOT_KEY = "root-key.pem"
KEY_FILES = frozenset({ROOT_KEY, "ca-key.pem"})


@dataclass(frozen=True)
class PkiOptions:
    dest: str
    clusters: tuple[str, ...]
    key_algorithm: str = "rsa4096"
    root_organization: str = "Istio"
    root_common_name: str = "Root CA"
    root_days: int = 3650
    intermediate_organization: str = "Istio"
    intermediate_common_name: str = "Intermediate CA"
    intermediate_days: int = 730
    renew_before_days: int = 30
    root_cert_src: str | None = None
    root_key_src: str | None = None
    root_key_passphrase: str | None = None
    force_root: bool = False


@dataclass
class Plan:
    writes: dict[str, bytes] = field(default_factory=dict)
    root: dict = field(default_factory=dict)
    clusters: dict = field(default_factory=dict)
    before: dict = field(default_factory=lambda: {"root": None, "clusters": {}})
    after: dict = field(default_factory=lambda: {"root": None, "clusters": {}})
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.writes)


def read_optional(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _pki.PkiError(f"cannot read {path}: {exc.strerror}") from exc


def _summary(cert) -> dict:
    facts = _pki.describe(cert)
    return {key: facts[key] for key in ("subject", "fingerprint_sha256", "not_after", "key_algorithm")}


def _check_writable(dest: str) -> None:
    target = dest
    while not os.path.exists(target):
        parent = os.path.dirname(target.rstrip("/")) or "/"
        if parent == target:
            break
        target = parent
    if not os.path.isdir(target):
        raise _pki.PkiError(f"dest {dest} is not a directory ({target} is a file)")
    if not os.access(target, os.W_OK | os.X_OK):
        raise _pki.PkiError(f"dest {dest} is not writable ({target} denies write access to this user)")


def _root_spec(options: PkiOptions) -> _pki.CaSpec:
    return _pki.CaSpec(options.root_organization, options.root_common_name, options.root_days, options.key_algorithm)


def _load_root_pair(cert_pem: bytes, key_pem: bytes, cert_path: str, key_path: str, passphrase: str | None):
    cert = _pki.load_cert(cert_pem, f"root certificate {cert_path}")
    key = _pki.load_key(key_pem, f"root key {key_path}", passphrase)
    if not _pki.key_matches(cert, key):
        raise _pki.PkiError(f"root key {key_path} does not match the root certificate {cert_path}")
    if not _pki.is_ca(cert):
        raise _pki.PkiError(f"root certificate {cert_path} is not a CA (basicConstraints CA:TRUE missing)")
    return cert, key


def _plan_root(options: PkiOptions, plan: Plan, now: datetime.datetime):
    """Decide the signing root; returns (cert, key, pem)."""
    cert_path = os.path.join(options.dest, ROOT_CERT)
    key_path = os.path.join(options.dest, ROOT_KEY)
    current_cert_pem = read_optional(cert_path)
    current_key_pem = read_optional(key_path)
    current = None
    if current_cert_pem is not None:
        try:
            current = _pki.load_cert(current_cert_pem, cert_path)
            plan.before["root"] = _summary(current)
        except _pki.PkiError:
            if not options.force_root:
                raise
    replace_hint = "set force_root=true to replace it (every cluster's intermediate is then issued again)"

    if options.root_cert_src:
        src_cert_pem = read_optional(options.root_cert_src)
        src_key_pem = read_optional(options.root_key_src)
        if src_cert_pem is None or src_key_pem is None:
            missing = options.root_cert_src if src_cert_pem is None else options.root_key_src
            raise _pki.PkiError(f"cannot import the root: {missing} does not exist")
        cert, key = _load_root_pair(
            src_cert_pem, src_key_pem, options.root_cert_src, options.root_key_src, options.root_key_passphrase
        )
        pem = _pki.cert_pem(cert)
        if current is not None and _pki.fingerprint(current) == _pki.fingerprint(cert):
            plan.root = {"changed": False, "reason": "imported root already in place"}
            pem = current_cert_pem
        elif current is not None and not options.force_root:
            raise _pki.PkiError(f"{cert_path} holds a different root than {options.root_cert_src}; {replace_hint}")
        else:
            plan.writes[cert_path] = pem
            plan.root = {"changed": True, "reason": "imported" if current is None else "replaced by import (force_root)"}
        if current_key_pem is not None:
            plan.warnings.append(f"{key_path} is not used while the root is imported from {options.root_key_src}")
        return cert, key, pem

    if options.force_root or (current_cert_pem is None and current_key_pem is None):
        key = _pki.generate_key(options.key_algorithm)
        cert = _pki.build_root(key, _root_spec(options), now)
        pem = _pki.cert_pem(cert)
        plan.writes[cert_path] = pem
        plan.writes[key_path] = _pki.key_pem(key, options.root_key_passphrase)
        plan.root = {"changed": True, "reason": "generated" if current_cert_pem is None else "replaced (force_root)"}
        return cert, key, pem

    if current_cert_pem is None or current_key_pem is None:
        present, absent = (cert_path, key_path) if current_key_pem is None else (key_path, cert_path)
        raise _pki.PkiError(f"{present} exists but {absent} does not; restore it, or {replace_hint}")
    cert, key = _load_root_pair(current_cert_pem, current_key_pem, cert_path, key_path, options.root_key_passphrase)
    plan.root = {"changed": False, "reason": "existing root kept"}
    differences = _pki.spec_differences(cert, _root_spec(options))
    if differences:
        plan.warnings.append(
            f"the existing root differs from the requested {', '.join(differences)}; it is kept: roots change only with force_root"
        )
    if cert.not_valid_after_utc <= now + options.renew_before_days * _pki.DAY:
        plan.warnings.append(f"the root expires on {cert.not_valid_after_utc.isoformat()}: plan a root rotation")
    return cert, key, current_cert_pem


def _with_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


def _plan_cluster(options: PkiOptions, cluster: str, root, plan: Plan, now: datetime.datetime) -> None:
    root_cert, root_key, root_pem = root
    directory = os.path.join(options.dest, cluster)
    files = {name: read_optional(os.path.join(directory, name)) for name in _pki.BUNDLE_KEYS}
    spec = _pki.CaSpec(
        options.intermediate_organization, options.intermediate_common_name, options.intermediate_days,
        options.key_algorithm, cluster,
    )
    reasons = _pki.intermediate_reasons(files, spec, root_cert, now, options.renew_before_days)
    if not reasons:
        current = _pki.load_cert(files["ca-cert.pem"], "ca-cert.pem")
        plan.before["clusters"][cluster] = _summary(current)
        ca_pem = files["ca-cert.pem"]
        wanted = {"ca-cert.pem": ca_pem, "ca-key.pem": files["ca-key.pem"]}
    else:
        if files.get("ca-cert.pem"):
            try:
                plan.before["clusters"][cluster] = _summary(_pki.load_cert(files["ca-cert.pem"], "ca-cert.pem"))
            except _pki.PkiError:
                plan.before["clusters"][cluster] = {"invalid": True}
        key = _pki.generate_key(options.key_algorithm)
        current = _pki.build_intermediate(key, spec, root_cert, root_key, now)
        ca_pem = _pki.cert_pem(current)
        wanted = {"ca-cert.pem": ca_pem, "ca-key.pem": _pki.key_pem(key)}
    wanted["root-cert.pem"] = root_pem
    wanted["cert-chain.pem"] = _with_newline(ca_pem) + _pki.cert_pem(root_cert)
    written = sorted(name for name, data in wanted.items() if files.get(name) != data)
    if written and not reasons:
        reasons = [f"bundle out of date: {', '.join(written)}"]
    for name in written:
        plan.writes[os.path.join(directory, name)] = wanted[name]
    plan.after["clusters"][cluster] = _summary(current)
    plan.clusters[cluster] = {
        **_summary(current),
        "changed": bool(written),
        "reasons": reasons,
        "path": directory,
    }


def plan(options: PkiOptions, now: datetime.datetime | None = None) -> Plan:
    """Read the directory and decide every write; raises PkiError and writes nothing on bad input."""
    now = now or _pki.utcnow()
    problems = name_problems(list(options.clusters))
    if problems:
        raise _pki.PkiError("; ".join(problems))
    if os.path.exists(options.dest) and not os.path.isdir(options.dest):
        raise _pki.PkiError(f"dest {options.dest} exists and is not a directory")
    result = Plan()
    root = _plan_root(options, result, now)
    result.after["root"] = _summary(root[0])
    result.root.update(_summary(root[0]))
    for cluster in options.clusters:
        _plan_cluster(options, cluster, root, result, now)
    if result.changed:
        _check_writable(options.dest)
    return result


def write_atomic(path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def apply(result: Plan) -> None:
    """Carry out a plan: every file through a temp file and an atomic rename; keys 0600."""
    try:
        for path, data in result.writes.items():
            write_atomic(path, data, 0o600 if os.path.basename(path) in KEY_FILES else 0o644)
    except OSError as exc:
        raise _pki.PkiError(f"cannot write {exc.filename}: {exc.strerror}") from exc
