# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: the objects this collection writes, as read once, and whether a write would change them.

The preflight reads each cluster once; a later role compares the object it would write with what was read
and skips the write (a kubernetes.core.k8s run) when the write would change nothing. The comparison follows
what a merge patch of the wanted object does: every wanted label, annotation and field must already be there
with the same value (lists element by element), fields the server added are ignored. Secret values are never
kept: both sides hold SHA-256 digests of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

CLUSTER_SCOPED_KINDS = frozenset({"Namespace"})


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
            digests[key] = digest(base64.b64decode(value or "", validate=True))
        except (binascii.Error, TypeError, ValueError):
            digests[key] = "not base64"
    for key, value in (obj.get("stringData") or {}).items():
        digests[key] = digest(str(value).encode("utf-8"))
    return digests


def project(obj: dict) -> dict:
    """What a write of this collection can set: labels, annotations, then spec, or type and value digests for a Secret."""
    meta = obj.get("metadata") or {}
    projected: dict = {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}
    if obj.get("kind") == "Secret":
        if obj.get("type"):
            projected["type"] = obj["type"]
        projected["data"] = _secret_digests(obj)
    elif "spec" in obj:
        projected["spec"] = obj["spec"]
    return projected


def index(objects: list[dict]) -> dict:
    """Observed objects by key, projected."""
    return {object_key(obj): project(obj) for obj in objects}


def contains(observed, wanted) -> bool:
    """Whether a merge patch of wanted onto observed would change nothing."""
    if isinstance(wanted, dict):
        if not isinstance(observed, dict):
            return False
        return all(
            (key not in observed or observed[key] is None) if value is None else key in observed and contains(observed[key], value)
            for key, value in wanted.items()
        )
    if isinstance(wanted, (list, tuple)):
        return isinstance(observed, (list, tuple)) and len(observed) == len(wanted) and all(map(contains, observed, wanted))
    if isinstance(wanted, bool) or isinstance(observed, bool):
        return type(wanted) is type(observed) and wanted == observed
    return observed == wanted


def unchanged(desired, observed: dict | None, default_namespace: str = "") -> bool:
    """True when every desired object (one or a list) was observed and writing it would change nothing.

    Without observations (no preflight read) the answer is False: the write happens and decides for itself.
    """
    if observed is None:
        return False
    wanted_objects = desired if isinstance(desired, (list, tuple)) else [desired]
    for wanted in wanted_objects:
        seen = observed.get(object_key(wanted, default_namespace))
        if seen is None or not contains(seen, project(wanted)):
            return False
    return True
