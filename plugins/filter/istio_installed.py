# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter over the installs the preflight read; documented in istio_installed.yml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.module_utils import _istio


def istio_installed(operator: Any, installs: Any = None, istioctl_version: Any = None) -> bool:
    """Whether the install recorded in the cluster is this operator document installed by this istioctl version."""
    if not isinstance(operator, Mapping) or not isinstance((operator.get("metadata") or {}).get("name"), str):
        raise AnsibleFilterError("istio_installed takes an IstioOperator document with metadata.name")
    if installs is None or not istioctl_version:
        return False
    if not isinstance(installs, Mapping):
        raise AnsibleFilterError(f"istio_installed: installs must be state.installs of meshfed.istio.cluster_state_info, got {type(installs).__name__}")
    recorded = installs.get(operator["metadata"]["name"])
    return bool(recorded) and recorded == _istio.digest(dict(operator), str(istioctl_version))


class FilterModule:
    def filters(self):
        return {"istio_installed": istio_installed}
