# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters rendering IstioOperator documents; documented in istio_operator.yml and eastwest_operator.yml."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.module_utils import _istio


def _call(function, options, what):
    if not isinstance(options, dict):
        raise AnsibleFilterError(f"{what} takes a dict of options, got {type(options).__name__}")
    try:
        return function(**options)
    except TypeError as exc:
        raise AnsibleFilterError(f"{what}: {exc}") from exc


def istio_operator(options):
    return _call(_istio.control_plane, options, "istio_operator")


def eastwest_operator(options):
    return _call(_istio.eastwest_gateway, options, "eastwest_operator")


class FilterModule:
    def filters(self):
        return {"istio_operator": istio_operator, "eastwest_operator": eastwest_operator}
