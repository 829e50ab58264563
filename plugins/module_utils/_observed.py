# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the objects this collection writes, as read once, and whether a write would change them.

The preflight reads each cluster once; a later role compares the object it would write with what was read
and skips the write (a kubernetes.core.k8s run) when the write would change nothing. The comparison follows
what a merge patch of the wanted object does: every wanted label, annotation and field must already be there
with the same value, fields the server added beside them are ignored, and a list must be equal as a whole (a
merge patch replaces lists). Anything the projection does not cover counts as a change, so the write happens.
Secret values are never kept: both sides hold SHA-256 digests of them, and only of the Secrets the roles write.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from ansible_collections.meshfed.istio.plugins.module_utils import _istio
from ansible_collections.meshfed.istio.plugins.module_utils._remote_secret import is_remote_secret

CLUSTER_SCOPED_KINDS = frozenset({"Namespace"})
# kubectl apply keeps the whole object in this annotation, a Secret's values included
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# top-level and metadata fields a projection covers; a wanted object with others is never skipped
PROJECTED = frozenset({"apiVersion", "kind", "metadata", "spec", "type", "data", "stringData"})
PROJECTED_METADATA = frozenset({"name", "namespace", "labels", "annotations"})
CHANGE = "not comparable"  # a wanted value that matches nothing observed


def written_secret(obj: dict) -> bool:
    """The Secrets the roles write: cacerts and remote secrets (istio/multiCluster=true)."""
    return (obj.get("metadata") or {}).get("name") == _istio.CACERTS_SECRET or is_remote_secret(obj)


def digest(value: bytes) -> str:
    return "sha256:" + hashlib.sha256(value).hexdigest()


def object_key(obj: dict, default_namespace: str = "") -> str:
    """group/Kind/namespace/name: one key for an object whatever version it was read or written with."""
    api_version = obj.get("apiVersion") or "v1"
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    kind = obj.get("kind") or ""
    meta = obj.get("metadata") or {}
    namespace = "" if kind in CLUSTER_SCOPED_KINDS else (meta.get("namespace") or default_namespace)
    return f"{group}/{kind}/{namespace}/{meta.get('name', '')}"


def _secret_digests(obj: dict) -> dict:
    """Digests of a Secret's values from data (base64) and stringData (text); a value that is not base64 matches nothing."""
    digests = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            digests[key] = digest(base64.b64decode(value, validate=True)) if isinstance(value, str) else CHANGE
        except (binascii.Error, ValueError):
            digests[key] = CHANGE
    for key, value in (obj.get("stringData") or {}).items():
        digests[key] = digest(value.encode("utf-8")) if isinstance(value, str) else CHANGE
    return digests


def project(obj: dict) -> dict:
    """What a write of this collection can set: labels, annotations, then spec, or type and value digests for a Secret.

    A null (which a merge patch reads as "delete") stays null and so matches nothing observed.
    """
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations", {})
    if isinstance(annotations, dict):
        annotations = {key: value for key, value in annotations.items() if key != LAST_APPLIED}
    projected: dict = {"labels": meta.get("labels", {}), "annotations": annotations}
    if obj.get("kind") == "Secret":
        if obj.get("type"):
            projected["type"] = obj["type"]
        projected["data"] = None if "data" in obj and obj["data"] is None else _secret_digests(obj)
    elif "spec" in obj:
        projected["spec"] = obj["spec"]
    return projected


def index(objects: list[dict]) -> dict:
    """Observed objects by key, projected; of the Secrets only those the roles write."""
    return {object_key(obj): project(obj) for obj in objects if obj.get("kind") != "Secret" or written_secret(obj)}


def equal(observed: Any, wanted: Any) -> bool:
    """Deep equality that tells booleans from numbers and lists from tuples alike."""
    if isinstance(wanted, dict):
        return isinstance(observed, dict) and observed.keys() == wanted.keys() and all(equal(observed[k], v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return isinstance(observed, (list, tuple)) and len(observed) == len(wanted) and all(map(equal, observed, wanted))
    if isinstance(wanted, bool) or isinstance(observed, bool):
        return type(wanted) is type(observed) and wanted == observed
    return observed == wanted


def contains(observed: Any, wanted: Any) -> bool:
    """Whether a merge patch of wanted onto observed would change nothing: maps merge key by key, anything else is replaced."""
    if isinstance(wanted, dict):
        if not isinstance(observed, dict):
            return False
        return all(
            (key not in observed or observed[key] is None) if value is None else key in observed and contains(observed[key], value)
            for key, value in wanted.items()
        )
    return equal(observed, wanted)


def comparable(wanted: dict) -> bool:
    """Whether every field of a wanted object is one the projection covers."""
    return set(wanted) <= PROJECTED and set(wanted.get("metadata") or {}) <= PROJECTED_METADATA


def unchanged(desired, observed: dict | None, default_namespace: str = "") -> bool:
    """True when every desired object (one or a list) was observed and writing it would change nothing.

    Without observations (no preflight read) the answer is False: the write happens and decides for itself.
    """
    if observed is None:
        return False
    wanted_objects = desired if isinstance(desired, (list, tuple)) else [desired]
    for wanted in wanted_objects:
        seen = observed.get(object_key(wanted, default_namespace))
        if seen is None or not comparable(wanted) or not contains(seen, project(wanted)):
            return False
    return True
