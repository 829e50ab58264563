# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter for the mesh doctor; documented in doctor_state.yml."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def doctor_state(result):
    """A registered meshfed.istio.cluster_state_info result as the doctor's input: the state, or the error."""
    if not isinstance(result, dict):
        raise AnsibleFilterError(f"doctor_state takes a registered cluster_state_info result, got {type(result).__name__}")
    if "state" in result and not result.get("failed"):
        return result["state"]
    if result.get("skipped"):
        return {"error": "the cluster was not read (task skipped)", "error_type": "Skipped"}
    return {"error": result.get("msg") or "the cluster could not be read", "error_type": result.get("error_type") or "Failed"}


class FilterModule:
    def filters(self):
        return {"doctor_state": doctor_state}
