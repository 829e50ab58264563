# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the mesh PKI directory on the control node.

Layout (the keys of Istio's cacerts secret, per cluster):
  <dest>/root-cert.pem, <dest>/root-key.pem
  <dest>/<cluster>/{ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem}

decide() reads and decides everything and raises PkiError on bad input; apply() then finishes what an
interrupted run left (see _io.recover) and writes every file of the plan as one step (_io.write_tree),
after checking the staged directory (each bundle as istiod checks it, on the planned root).
"""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass, field

from ansible_collections.meshfed.istio.plugins.module_utils import _io, _istio, _pkcs8, _pki
from ansible_collections.meshfed.istio.plugins.module_utils._names import name_problems

ROOT_CERT = _istio.ROOT_CERT
ROOT_KEY = "root-key.pem"
KEY_FILES = frozenset({ROOT_KEY, _istio.CA_KEY})
NAME_OPTIONS = ("root_organization", "root_common_name", "intermediate_organization", "intermediate_common_name")
FORCE_ROOT_HINT = "set force_root=true to replace it (every cluster's intermediate is then issued again)"
IMPORT_HINT = "import another root (root_cert_src, root_key_src)"
REENCRYPT_HINT = f"openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter {_pkcs8.KDF_ITERATIONS}"


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
class PkiChanges:
    writes: dict[str, bytes] = field(default_factory=dict)
    root: dict = field(default_factory=dict)
    clusters: dict = field(default_factory=dict)
    before: dict = field(default_factory=lambda: {"root": None, "clusters": {}})
    after: dict = field(default_factory=lambda: {"root": None, "clusters": {}})
    warnings: list[str] = field(default_factory=list)
    recovery: list[str] = field(default_factory=list)
    leftovers: _io.Leftovers = field(default_factory=_io.Leftovers)
    options: PkiOptions | None = None
    now: datetime.datetime | None = None

    @property
    def changed(self) -> bool:
        return bool(self.writes or self.leftovers)


def read_optional(path: str) -> bytes | None:
    try:
        return _io.read_optional(path)
    except OSError as exc:
        raise _pki.PkiError(f"cannot read {path}: {exc.strerror}") from exc


class _Directory:
    """The PKI directory as the next write will find it: files still in a commit journal count as written."""

    def __init__(self, dest: str, leftovers: _io.Leftovers):
        self.dest = dest
        self.pending = leftovers.pending()

    def path(self, rel: str) -> str:
        return os.path.join(self.dest, rel)

    def read(self, rel: str) -> bytes | None:
        return read_optional(self.pending.get(rel) or self.path(rel))


def _summary(cert) -> dict:
    facts = _pki.describe(cert)
    return {key: facts[key] for key in ("subject", "fingerprint_sha256", "not_after", "key_algorithm")}


def validate(options: PkiOptions, now: datetime.datetime) -> None:
    """Refuse options no certificate can be built from, or that would never settle; reads nothing."""
    if not (options.dest or "").strip():
        raise _pki.PkiError("dest is empty: set dest to the PKI directory on the control node (for example <inventory dir>/meshfed-pki)")
    limit = (_pki.LAST_DATE - now).days
    for name in ("root_days", "intermediate_days"):
        days = getattr(options, name)
        if days < 1:
            raise _pki.PkiError(f"{name} must be at least 1, got {days}")
        if days > limit:
            raise _pki.PkiError(f"{name} {days} reaches past 9999-12-31, the last date an X.509 certificate can carry: set {name} to at most {limit}")
    renew = options.renew_before_days
    if renew < 0:
        raise _pki.PkiError(f"renew_before_days must not be negative, got {renew}")
    lifetimes = [("intermediate_days", options.intermediate_days)]
    if not options.root_cert_src:
        lifetimes.append(("root_days", options.root_days))
    for name, days in lifetimes:
        if renew >= days:
            raise _pki.PkiError(
                f"renew_before_days ({renew}) must be less than {name} ({days}): every intermediate would be inside its "
                f"renewal window when issued, and issued again on every run; lower renew_before_days or raise {name}"
            )
    for name in NAME_OPTIONS:
        value = getattr(options, name)
        if not value.strip():
            raise _pki.PkiError(f"{name} is empty: an X.509 name attribute needs 1 to {_pki.NAME_MAX} characters; set {name}")
        if len(value) > _pki.NAME_MAX:
            raise _pki.PkiError(f"{name} is {len(value)} characters long: X.509 allows at most {_pki.NAME_MAX} (RFC 5280); shorten {name}")
    if options.root_key_passphrase and len(options.root_key_passphrase.encode()) > _pkcs8.MAX_PASSPHRASE_BYTES:
        raise _pki.PkiError(
            f"root_key_passphrase is {len(options.root_key_passphrase.encode())} bytes long: OpenSSL reads at most "
            f"{_pkcs8.MAX_PASSPHRASE_BYTES}, so no openssl command could open the key; choose a shorter root_key_passphrase"
        )
    problems = name_problems(list(options.clusters))
    if problems:
        raise _pki.PkiError("; ".join(problems))


def _refuse_open_directory(path: str, what: str) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o022:
        raise _pki.PkiError(
            f"{what} {path} is writable by group or others (mode {mode:04o}): they could replace the mesh's keys; "
            f"run chmod go-w {path} (this module creates it 0700), then check its files"
        )


def _inspect(options: PkiOptions, directory: _Directory) -> None:
    """Refuse a directory whose permissions or links would put the keys where others reach them."""
    dest = options.dest
    if not os.path.exists(dest):
        return
    if not os.path.isdir(dest):
        raise _pki.PkiError(f"dest {dest} exists and is not a directory")
    _refuse_open_directory(dest, "dest")
    files = [ROOT_CERT, ROOT_KEY]
    for cluster in options.clusters:
        path = directory.path(cluster)
        if os.path.islink(path):
            raise _pki.PkiError(
                f"{path} is a symbolic link: the PKI directory holds the cluster's key itself, never through a link; "
                f"replace the link with a directory (move the files it points to into {path}) or remove it"
            )
        if os.path.lexists(path) and not os.path.isdir(path):
            raise _pki.PkiError(f"{path} exists and is not a directory: move it away, the cluster's intermediate goes there")
        if os.path.isdir(path):
            _refuse_open_directory(path, f"cluster directory of {cluster}")
        files.extend(os.path.join(cluster, name) for name in _pki.BUNDLE_KEYS)
    for rel in files:
        if rel in directory.pending:
            continue
        path = directory.path(rel)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _pki.PkiError(f"cannot read {path}: {exc.strerror}") from exc
        if stat.S_ISLNK(info.st_mode):
            raise _pki.PkiError(f"{path} is a symbolic link: replace it with the file it points to")
        if not stat.S_ISREG(info.st_mode):
            raise _pki.PkiError(f"{path} is not a regular file: move it away")
        mode = stat.S_IMODE(info.st_mode)
        if os.path.basename(rel) in KEY_FILES and mode & 0o077:
            exposed = FORCE_ROOT_HINT.replace("replace it", "replace the root") if rel == ROOT_KEY else ("delete it, and a new intermediate is issued")
            raise _pki.PkiError(
                f"{path} is open to group or others (mode {mode:04o}): if nobody else could read it, run chmod 0600 {path}; "
                f"if it may have been copied, {exposed}"
            )
        if mode & 0o022:
            raise _pki.PkiError(f"{path} is writable by group or others (mode {mode:04o}): run chmod go-w {path}")


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


def _load_root_pair(cert_pem: bytes, key_pem: bytes, paths: tuple[str, str], options: PkiOptions, now, imported: bool):
    """The root certificate and key, refused with the fix when they cannot sign this mesh's intermediates."""
    cert_path, key_path = paths
    fix = IMPORT_HINT if imported else FORCE_ROOT_HINT
    what = f"root certificate {cert_path}" + (" (root_cert_src)" if imported else "")
    cert = _pki.load_cert(cert_pem, f"root certificate {cert_path}")
    problems = _pki.root_problems(cert, now)
    if problems:
        raise _pki.PkiError(f"{what} {'; '.join(problems)}: {fix}")
    renew = options.renew_before_days
    if cert.not_valid_after_utc <= now + renew * _pki.DAY:
        days_left = (cert.not_valid_after_utc - now) // _pki.DAY
        lower = f"lower renew_before_days below {days_left} to use it until then, or " if days_left >= 1 else ""
        raise _pki.PkiError(
            f"{what} expires on {cert.not_valid_after_utc.isoformat()}, within renew_before_days ({renew}): every intermediate "
            f"(it ends with the root) would be issued again on every run; {lower}rotate the root: {fix}"
        )
    protection = _pkcs8.protection(key_pem)
    passphrase = options.root_key_passphrase if imported or protection.encrypted else None
    key = _pki.load_key(key_pem, f"root key {key_path}", passphrase)
    problem = _pki.signing_key_problem(key.public_key())
    if problem:
        raise _pki.PkiError(f"root key {key_path} {problem}: {fix}")
    if not _pki.key_matches(cert, key):
        raise _pki.PkiError(f"root key {key_path} does not match the root certificate {cert_path}")
    return cert, key, protection


def _unencrypted_warning(key_path: str) -> str:
    return (
        f"the root key {key_path} is not encrypted: whoever can read it can sign for every cluster of the mesh; "
        "set root_key_passphrase (pki_root_key_passphrase in the pki role; keep it in Ansible Vault) and run again to encrypt it"
    )


def _plan_import(options: PkiOptions, plan: PkiChanges, current, current_pem: bytes | None, directory: _Directory, now):
    src_cert_pem = read_optional(options.root_cert_src)
    src_key_pem = read_optional(options.root_key_src)
    if src_cert_pem is None or src_key_pem is None:
        missing = options.root_cert_src if src_cert_pem is None else options.root_key_src
        raise _pki.PkiError(f"cannot import the root: {missing} does not exist")
    cert, key, protection = _load_root_pair(src_cert_pem, src_key_pem, (options.root_cert_src, options.root_key_src), options, now, imported=True)
    pem = _pki.cert_pem(cert)
    cert_path = directory.path(ROOT_CERT)
    if current is not None and _pki.fingerprint(current) == _pki.fingerprint(cert):
        plan.root = {"changed": False, "reason": "imported root already in place"}
        pem = current_pem
    elif current is not None and not options.force_root:
        raise _pki.PkiError(f"{cert_path} holds a different root than {options.root_cert_src}; {FORCE_ROOT_HINT}")
    else:
        plan.writes[cert_path] = pem
        plan.root = {"changed": True, "reason": "imported" if current is None else "replaced by import (force_root)"}
    if directory.read(ROOT_KEY) is not None:
        plan.warnings.append(f"{directory.path(ROOT_KEY)} is not used while the root is imported from {options.root_key_src}")
    if not protection.encrypted:
        plan.warnings.append(
            _unencrypted_warning(options.root_key_src).replace(
                "set root_key_passphrase (pki_root_key_passphrase in the pki role; keep it in Ansible Vault) and run again to encrypt it",
                f"encrypt it ({REENCRYPT_HINT}) and set root_key_passphrase",
            )
        )
    elif not protection.strong:
        plan.warnings.append(
            f"the root key {options.root_key_src} (root_key_src) is protected only by {protection.description}, "
            f"which is quick to guess; re-encrypt it: {REENCRYPT_HINT}"
        )
    return cert, key, pem


def _plan_root(options: PkiOptions, plan: PkiChanges, directory: _Directory, now: datetime.datetime):
    """Decide the signing root; returns (cert, key, pem)."""
    cert_path, key_path = directory.path(ROOT_CERT), directory.path(ROOT_KEY)
    current_cert_pem = directory.read(ROOT_CERT)
    current_key_pem = directory.read(ROOT_KEY)
    current = None
    if current_cert_pem is not None:
        try:
            current = _pki.load_cert(current_cert_pem, cert_path)
            plan.before["root"] = _summary(current)
        except _pki.PkiError:
            if not options.force_root:
                raise

    if options.root_cert_src:
        return _plan_import(options, plan, current, current_cert_pem, directory, now)

    if options.force_root or (current_cert_pem is None and current_key_pem is None):
        key = _pki.generate_key(options.key_algorithm)
        cert = _pki.build_root(key, _root_spec(options), now)
        pem = _pki.cert_pem(cert)
        plan.writes[cert_path] = pem
        plan.writes[key_path] = _pki.key_pem(key, options.root_key_passphrase)
        plan.root = {"changed": True, "reason": "generated" if current_cert_pem is None else "replaced (force_root)"}
        if not options.root_key_passphrase:
            plan.warnings.append(_unencrypted_warning(key_path))
        return cert, key, pem

    if current_cert_pem is None or current_key_pem is None:
        present, absent = (cert_path, key_path) if current_key_pem is None else (key_path, cert_path)
        raise _pki.PkiError(f"{present} exists but {absent} does not; restore it, or {FORCE_ROOT_HINT}")
    cert, key, protection = _load_root_pair(current_cert_pem, current_key_pem, (cert_path, key_path), options, now, imported=False)
    plan.root = {"changed": False, "reason": "existing root kept"}
    if options.root_key_passphrase and not protection.strong:
        plan.writes[key_path] = _pki.key_pem(key, options.root_key_passphrase)
        plan.root = {"changed": True, "reason": f"existing root kept, its key re-encrypted ({protection.description} -> {_pkcs8.KDF_NAME})"}
    elif not protection.encrypted:
        plan.warnings.append(_unencrypted_warning(key_path))
    differences = _pki.spec_differences(cert, _root_spec(options))
    if differences:
        plan.warnings.append(f"the existing root differs from the requested {', '.join(differences)}; it is kept: roots change only with force_root")
    return cert, key, current_cert_pem


def _with_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


def _plan_cluster(options: PkiOptions, cluster: str, root, plan: PkiChanges, directory: _Directory, now: datetime.datetime) -> None:
    root_cert, root_key, root_pem = root
    files = {name: directory.read(os.path.join(cluster, name)) for name in _pki.BUNDLE_KEYS}
    spec = _pki.CaSpec(
        options.intermediate_organization,
        options.intermediate_common_name,
        options.intermediate_days,
        options.key_algorithm,
        cluster,
    )
    reasons = _pki.intermediate_reasons(files, spec, root_cert, now, options.renew_before_days)
    if not reasons:
        current = _pki.load_cert(files[_istio.CA_CERT], _istio.CA_CERT)
        plan.before["clusters"][cluster] = _summary(current)
        ca_pem = files[_istio.CA_CERT]
        wanted = {_istio.CA_CERT: ca_pem, _istio.CA_KEY: files[_istio.CA_KEY]}
    else:
        if files.get(_istio.CA_CERT):
            try:
                plan.before["clusters"][cluster] = _summary(_pki.load_cert(files[_istio.CA_CERT], _istio.CA_CERT))
            except _pki.PkiError:
                plan.before["clusters"][cluster] = {"invalid": True}
        key = _pki.generate_key(options.key_algorithm)
        current = _pki.build_intermediate(key, spec, root_cert, root_key, now)
        ca_pem = _pki.cert_pem(current)
        wanted = {_istio.CA_CERT: ca_pem, _istio.CA_KEY: _pki.key_pem(key)}
    wanted[_istio.ROOT_CERT] = root_pem
    wanted[_istio.CERT_CHAIN] = _with_newline(ca_pem) + _pki.cert_pem(root_cert)
    written = sorted(name for name, data in wanted.items() if files.get(name) != data)
    if written and not reasons:
        reasons = [f"bundle out of date: {', '.join(written)}"]
    for name in written:
        plan.writes[directory.path(os.path.join(cluster, name))] = wanted[name]
    plan.after["clusters"][cluster] = _summary(current)
    plan.clusters[cluster] = {
        **_summary(current),
        "changed": bool(written),
        "reasons": reasons,
        "path": directory.path(cluster),
    }


def _recovery_notes(dest: str, leftovers: _io.Leftovers) -> list[str]:
    notes = [
        f"finished an interrupted write: moved {len(_io.Leftovers(commits=[commit]).pending())} file(s) of {os.path.basename(commit)} into place"
        for commit in leftovers.commits
    ]
    notes += [f"removed {os.path.basename(staging)}, a write interrupted before it was complete (nothing of it was in place)" for staging in leftovers.stagings]
    notes += [f"removed the stray temporary file {os.path.relpath(path, dest)}" for path in leftovers.temporaries]
    return notes


def decide(options: PkiOptions, now: datetime.datetime | None = None) -> PkiChanges:
    """Read the directory and decide every write; raises PkiError and writes nothing on bad input."""
    now = now or _pki.utcnow()
    validate(options, now)
    if os.path.lexists(options.dest) and not os.path.isdir(options.dest):
        raise _pki.PkiError(f"dest {options.dest} exists and is not a directory")
    try:
        leftovers = _io.leftovers(options.dest, options.clusters)
    except OSError as exc:
        raise _pki.PkiError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    directory = _Directory(options.dest, leftovers)
    _inspect(options, directory)
    result = PkiChanges(leftovers=leftovers, options=options, now=now, recovery=_recovery_notes(options.dest, leftovers))
    root = _plan_root(options, result, directory, now)
    result.after["root"] = _summary(root[0])
    result.root.update(_summary(root[0]))
    for cluster in options.clusters:
        _plan_cluster(options, cluster, root, result, directory, now)
    if result.changed:
        _check_writable(options.dest)
    return result


def _check_staged(result: PkiChanges, staged: frozenset, read) -> None:
    """The directory as the write would leave it: every bundle as istiod checks it, all on the planned root."""
    problems = []
    root_pem = read(ROOT_CERT)
    root = _pki.load_cert(root_pem or b"", ROOT_CERT)
    if _pki.fingerprint(root) != result.root["fingerprint_sha256"]:
        problems.append(f"{ROOT_CERT} is not the planned root")
    if ROOT_KEY in staged:
        key = _pki.load_key(read(ROOT_KEY), ROOT_KEY, result.options.root_key_passphrase)
        if not _pki.key_matches(root, key):
            problems.append(f"{ROOT_KEY} does not match {ROOT_CERT}")
    for cluster in result.clusters:
        files = {name: read(os.path.join(cluster, name)) for name in _pki.BUNDLE_KEYS}
        report, facts = _pki.check_bundle(files, result.now)
        problems.extend(f"{cluster}: {problem}" for problem in report.problems)
        if files[_istio.ROOT_CERT] != root_pem or facts["chain_root"] != result.root["fingerprint_sha256"]:
            problems.append(f"{cluster}: the bundle is not on the root in {ROOT_CERT}")
    if problems:
        raise _pki.PkiError(f"the new PKI files failed their check, nothing was changed (please report this): {'; '.join(problems)}")


def apply(result: PkiChanges) -> None:
    """Finish what an interrupted run left, then write the plan's files as one step; keys 0600."""
    dest = result.options.dest
    files = {os.path.relpath(path, dest): (data, 0o600 if os.path.basename(path) in KEY_FILES else 0o644) for path, data in result.writes.items()}
    try:
        if result.leftovers:
            _io.recover(dest, result.leftovers)
        if files:
            _io.write_tree(dest, files, check=lambda read: _check_staged(result, frozenset(files), read))
    except OSError as exc:
        raise _pki.PkiError(f"cannot write {exc.filename}: {exc.strerror}") from exc
