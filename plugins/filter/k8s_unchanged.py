# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter over Kubernetes objects as read by the preflight; documented in k8s_unchanged.yml."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.module_utils import _observed


def k8s_unchanged(desired: Any, observed: Any = None, namespace: str = "") -> bool:
    """Whether writing desired (an object or a list of them) would change nothing in what was observed."""
    objects = [desired] if isinstance(desired, Mapping) else desired
    if not isinstance(objects, Sequence) or isinstance(objects, str) or not all(isinstance(item, Mapping) for item in objects):
        raise AnsibleFilterError(f"k8s_unchanged takes a Kubernetes object or a list of them, got {type(desired).__name__}")
    if observed is not None and not isinstance(observed, Mapping):
        raise AnsibleFilterError(f"k8s_unchanged: observed must be the objects of meshfed.istio.cluster_state_info, got {type(observed).__name__}")
    return _observed.unchanged([dict(item) for item in objects], None if observed is None else dict(observed), namespace or "")


class FilterModule:
    def filters(self):
        return {"k8s_unchanged": k8s_unchanged}
