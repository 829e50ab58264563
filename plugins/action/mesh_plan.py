# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of meshfed.istio.mesh_plan: reads every play host's variables on the controller."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.meshfed.istio.plugins.module_utils import _mesh

ARGUMENT_SPEC = {
    "hosts": {"type": "list", "elements": "str"},
    "primary_group": {"type": "str", "default": "istio_primary"},
    "remote_group": {"type": "str", "default": "istio_remote"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("; ".join(validation.error_messages))
        args = validation.validated_parameters
        groups = task_vars.get("groups", {})
        primaries = set(groups.get(args["primary_group"], []))
        remotes = set(groups.get(args["remote_group"], []))
        hosts = args["hosts"] or sorted(primaries | remotes)
        hostvars = task_vars["hostvars"]
        variables = {}
        for host in hosts:
            if host not in hostvars:
                raise AnsibleActionFail(f"host {host!r} is not in the inventory")
            variables[host] = self._variables(hostvars[host])
        plan, found = _mesh.plan(variables, remotes, primaries, (args["primary_group"], args["remote_group"]))
        result["changed"] = False
        if found:
            result.update(failed=True, problems=found, msg="The inventory is not one consistent mesh: " + "; ".join(found))
            return result
        result.update(plan)
        return result

    def _variables(self, host_vars) -> dict:
        """The host's meshfed_* variables, templated where mesh_plan reads them (a failing template: Unreadable)."""
        variables = {}
        for name in host_vars:
            if not name.startswith(_mesh.PREFIX):
                continue
            if name not in _mesh.VARIABLES:
                variables[name] = None
                continue
            try:
                variables[name] = self._templar.template(host_vars.get(name))
            except AnsibleError as error:
                variables[name] = _mesh.Unreadable(error.message)
        if variables.get("meshfed_pki_dir") in (None, "") and host_vars.get("inventory_dir"):
            variables["meshfed_pki_dir"] = f"{host_vars['inventory_dir']}/meshfed-pki"
        return variables
