# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of meshfed.istio.mesh_plan: reads every play host's variables on the controller."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.meshfed.istio.plugins.module_utils import _mesh

VARIABLES = {
    "cluster_name": "meshfed_cluster_name",
    "network": "meshfed_network",
    "mesh_id": "meshfed_mesh_id",
    "primary": "meshfed_primary",
}
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
        remotes = set(groups.get(args["remote_group"], []))
        hosts = args["hosts"] or sorted(set(groups.get(args["primary_group"], [])) | remotes)
        hostvars = task_vars["hostvars"]
        clusters = []
        for host in hosts:
            if host not in hostvars:
                raise AnsibleActionFail(f"host {host!r} is not in the inventory")
            variables = {key: self._templar.template(hostvars[host].get(name)) for key, name in VARIABLES.items()}
            variables["role"] = "remote" if host in remotes else "primary"
            clusters.append(_mesh.cluster_from_host(host, variables))
        found = _mesh.problems(clusters)
        result["changed"] = False
        if found:
            result.update(failed=True, problems=found, msg="The inventory is not one consistent mesh: " + "; ".join(found))
            return result
        result.update(_mesh.topology(clusters))
        return result
