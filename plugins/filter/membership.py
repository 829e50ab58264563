# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for mesh membership; documented in leave_plan.yml and installed_role_problem.yml."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.module_utils import _membership


def leave_plan(plan, leaving) -> dict:
    if not isinstance(plan, Mapping) or "clusters" not in plan:
        raise AnsibleFilterError("leave_plan takes the result of meshfed.istio.mesh_plan")
    return _membership.leave_plan(dict(plan), leaving)


def installed_role_problem(state, role: str, cluster: str) -> str:
    if not isinstance(state, Mapping):
        raise AnsibleFilterError("installed_role_problem takes state of meshfed.istio.cluster_state_info")
    return _membership.installed_role_problem(role, dict(state), cluster) or ""


class FilterModule:
    def filters(self):
        return {"leave_plan": leave_plan, "installed_role_problem": installed_role_problem}
