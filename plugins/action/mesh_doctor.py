# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of meshfed.istio.mesh_doctor: the doctor is pure, so it runs in the controller, without a module process."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.meshfed.istio.plugins.module_utils import _doctor_run


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(_doctor_run.ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("; ".join(validation.error_messages))
        try:
            outcome, warnings = _doctor_run.run(validation.validated_parameters, bool(self._play_context.check_mode))
        except _doctor_run.DoctorInputError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        for warning in warnings:
            Display().warning(warning)
        result.update(outcome)
        return result
