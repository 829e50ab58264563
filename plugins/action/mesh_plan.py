# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of meshfed.istio.mesh_plan: reads every play host's variables on the controller."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.meshfed.istio.plugins.module_utils import _mesh

CLUSTER_VARIABLES = ("cluster_name", "network", "mesh_id", "primary", "kubeconfig", "context", "api_server", "eastwest_external_ips")
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
        clusters, per_host_settings = [], {}
        for host in hosts:
            if host not in hostvars:
                raise AnsibleActionFail(f"host {host!r} is not in the inventory")
            variables = {key: self._read(hostvars[host], key) for key in CLUSTER_VARIABLES}
            variables["role"] = "remote" if host in remotes else "primary"
            clusters.append(_mesh.cluster_from_host(host, variables))
            per_host_settings[host] = {key: self._read(hostvars[host], key) for key in _mesh.MESH_SETTINGS}
            if not per_host_settings[host]["pki_dir"] and hostvars[host].get("inventory_dir"):
                per_host_settings[host]["pki_dir"] = f"{hostvars[host]['inventory_dir']}/meshfed-pki"
        settings, found = _mesh.mesh_settings(per_host_settings)
        found = _mesh.problems(clusters) + found
        result["changed"] = False
        if found:
            result.update(failed=True, problems=found, msg="The inventory is not one consistent mesh: " + "; ".join(found))
            return result
        result.update(_mesh.topology(clusters, settings))
        return result

    def _read(self, variables, key: str):
        return self._templar.template(variables.get(f"meshfed_{key}"))
