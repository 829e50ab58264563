# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the trust material of one cluster, as facts without key material."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from ansible_collections.meshfed.istio.plugins.module_utils import _io, _istio, _pki
from ansible_collections.meshfed.istio.plugins.module_utils._pki_store import read_optional


def fingerprints(pem: bytes | str | None) -> list[str]:
    if pem is None:
        return []
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return [_pki.fingerprint(cert) for cert in _pki.load_certs(data, "root bundle")]
    except _pki.PkiError:
        return []


def bundle_facts(files: dict | None) -> dict:
    """Facts about a cacerts bundle (secret data or a cluster directory); never the key."""
    if files is None:
        return {"present": False, "complete": False, "usable": False, "roots": [], "intermediate": None, "problems": ["absent"]}
    report, facts = _pki.check_bundle(files)
    return {"present": True, "usable": report.usable, **asdict(report), **facts}


def self_signed_facts(data: dict | None) -> dict:
    """Facts about istiod's own self-signed CA (secret istio-ca-secret, decoded): present, and its root's fingerprint."""
    return {"present": data is not None, "root_fingerprints": fingerprints((data or {}).get(_istio.CA_CERT))}


def root_cert_configmap_facts(data: dict | None) -> dict:
    """Facts about an istio-ca-root-cert ConfigMap's data (what workloads trust): present, and its roots' fingerprints."""
    return {"present": data is not None, "root_fingerprints": fingerprints((data or {}).get(_istio.ROOT_CERT))}


def root_fingerprints(facts: dict) -> list[str]:
    return [root["fingerprint_sha256"] for root in facts.get("roots", [])]


def from_directory(path: str) -> dict:
    if not os.path.isdir(path):
        return {"cacerts": bundle_facts(None)}
    files = {name: read_optional(os.path.join(path, name)) for name in _pki.BUNDLE_KEYS}
    if all(value is None for value in files.values()):
        files = None
    return {"cacerts": bundle_facts(files)}


def from_cluster(cluster, namespace: str, secret_name: str, configmap_namespaces: list[str]) -> dict:
    """Read cacerts, istio-ca-secret and istio-ca-root-cert ConfigMaps through the API."""
    return {
        "cacerts": bundle_facts(cluster.secret_data(namespace, secret_name)),
        "istio_ca_secret": self_signed_facts(cluster.secret_data(namespace, _istio.ISTIO_CA_SECRET)),
        "root_cert_configmaps": {
            configmap_namespace: root_cert_configmap_facts(cluster.configmap_data(configmap_namespace, _istio.ROOT_CERT_CONFIGMAP))
            for configmap_namespace in configmap_namespaces
        },
    }


def bundle_problems(files: dict, mesh_root: bytes | None) -> list[str]:
    """Why istiod would refuse this cacerts bundle (key -> PEM bytes, None when missing), or why it is not on the mesh
    root; [] when it can be pushed. Never quotes key material."""
    missing = [name for name in _istio.BUNDLE_KEYS if files.get(name) is None]
    if missing:
        return [f"missing {', '.join(missing)}"]
    report, facts = _pki.check_bundle(files)
    problems = list(report.problems)
    if mesh_root is None:
        problems.append("the PKI directory has no root-cert.pem")
    elif facts["chain_root"] is not None and facts["chain_root"] not in fingerprints(mesh_root):
        problems.append("ca-cert.pem does not chain to the mesh root (root-cert.pem of the PKI directory)")
    return problems


def rotations_in_progress(pki_dir: str, mode: str | None = None) -> list[str]:
    """The rotations of the PKI directory (<pki_dir>/rotations/<id>/state.json, written by meshfed.istio.rotate_ca) that
    have not finished, of one mode or all; an unreadable state counts as unfinished."""
    top = os.path.join(pki_dir, "rotations")
    found = []
    for entry in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        if not os.path.isdir(os.path.join(top, entry)):
            continue  # a file beside the rotations is none
        raw = _read_state(pki_dir, entry)
        try:
            state = json.loads(raw) if raw else {}
        except ValueError:
            state = {}
        if not isinstance(state, dict) or (raw and state.get("status") != "done" and mode in (None, state.get("mode"))):
            found.append(entry)
    return found


def _read_state(pki_dir: str, entry: str) -> bytes | None:
    """A rotation's state.json, None when missing; bytes that are no JSON when it cannot be read (as an unreadable state)."""
    try:
        return read_optional(os.path.join(pki_dir, "rotations", entry, "state.json"))
    except _pki.PkiError:
        return b"\0"


def root_rotations_in_progress(pki_dir: str) -> list[dict]:
    """The unfinished root rotations of the PKI directory with the roots they go between: {id, old_root, new_root}
    (fingerprints from state.json; a state that cannot be read names no roots and is left out)."""
    found = []
    for entry in rotations_in_progress(pki_dir, "root"):
        try:
            state = json.loads(_read_state(pki_dir, entry) or b"{}")
        except ValueError:
            continue
        if isinstance(state, dict) and state.get("old_root") and state.get("new_root"):
            found.append({"id": entry, "old_root": str(state["old_root"]), "new_root": str(state["new_root"])})
    return found


def unfinished_writes(pki_dir: str) -> list[str]:
    """The commit journals (_io.write_tree) of the PKI directory still to be rolled forward."""
    try:
        return _io.leftovers(pki_dir).commits
    except OSError as exc:
        raise _pki.PkiError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def bundle_for_push(pki_dir: str, cluster: str) -> tuple[dict[str, bytes], list[str]]:
    """A cluster's cacerts bundle as the PKI directory holds it, read once, and its problems: what is checked is what is
    pushed. During a root rotation the clusters hold bundles the PKI directory's cluster files do not: none is pushed;
    nor while a committed write of the pki module is still being moved into place (the live files may be mixed)."""
    problems = [
        f"the PKI directory holds a write of the pki module that is not finished ({commit}): its files may be half old, "
        "half new; run the pki role (the site playbook, or --tags pki) to finish it"
        for commit in unfinished_writes(pki_dir)
    ]
    files = {name: read_optional(os.path.join(pki_dir, cluster, name)) for name in _istio.BUNDLE_KEYS}
    problems += bundle_problems(files, read_optional(os.path.join(pki_dir, _istio.ROOT_CERT)))
    problems += [
        f"root rotation {rotation} is in progress ({os.path.join(pki_dir, 'rotations', rotation)}): pushing the PKI "
        f"directory's bundle would undo its phases; finish it first (meshfed.istio.rotate_ca -e rotate_ca_id={rotation})"
        for rotation in rotations_in_progress(pki_dir, "root")
    ]
    return files, problems
