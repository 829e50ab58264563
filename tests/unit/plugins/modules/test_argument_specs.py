# -*- coding: utf-8 -*-
"""What every module's argument spec promises: the action group's shared auth options, Istio's defaults from _istio."""

from __future__ import annotations

import importlib
import pathlib

import pytest
import yaml

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s

ROOT = pathlib.Path(__file__).parents[4]
MODULES = sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py") if path.stem != "__init__")
GROUP = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text(encoding="utf-8"))["action_groups"]["k8s"]


class _Built(Exception):
    def __init__(self, argument_spec):
        super().__init__("argument spec captured")
        self.argument_spec = argument_spec


def _refuse(*_args, argument_spec=None, **_kwargs):
    raise _Built(argument_spec)


def argument_spec(name: str) -> dict:
    """The spec main() gives AnsibleModule, captured before the module reads any input (as validate-modules does)."""
    module = importlib.import_module(f"ansible_collections.meshfed.istio.plugins.modules.{name}")
    original, module.AnsibleModule = module.AnsibleModule, _refuse
    try:
        module.main()
    except _Built as built:
        return built.argument_spec
    finally:
        module.AnsibleModule = original
    raise AssertionError(f"{name}: main() did not build an AnsibleModule")


def documented_options(name: str) -> dict:
    module = importlib.import_module(f"ansible_collections.meshfed.istio.plugins.modules.{name}")
    return yaml.safe_load(module.DOCUMENTATION).get("options") or {}


def test_the_group_names_modules_that_exist():
    assert GROUP and set(GROUP) <= set(MODULES)


@pytest.mark.parametrize("name", GROUP)
def test_every_member_of_the_action_group_takes_the_shared_auth_options(name):
    """module_defaults: {group/meshfed.istio.k8s: {kubeconfig, context}} must fit every member (unknown options fail)."""
    spec = argument_spec(name)
    shared = _k8s.auth_argument_spec()
    assert {option: spec.get(option) for option in shared} == shared


# Istio's names a module defaults to: the argument spec takes them from _istio, the DOCUMENTATION repeats them literally
# (ansible-doc reads YAML); both must be _istio's.
ISTIO_DEFAULTS = {
    "namespace": _istio.DEFAULT_NAMESPACE,
    "root_cert_namespaces": [_istio.DEFAULT_NAMESPACE],
    "service_account": _istio.READER_SERVICE_ACCOUNT,
    "name": _istio.EASTWEST_GATEWAY,
}


@pytest.mark.parametrize("name", MODULES)
def test_istio_defaults_are_those_of_module_utils_istio(name):
    spec, docs = argument_spec(name), documented_options(name)
    for option, value in ISTIO_DEFAULTS.items():
        default = (spec.get(option) or {}).get("default")
        if option == "name" and name != "eastwest_gateway_info" or default is None:
            continue
        assert default == value, f"{name}: option {option} defaults to {default!r}, not _istio's {value!r}"
        assert docs[option].get("default") == value, f"{name}: DOCUMENTATION of {option} says {docs[option].get('default')!r}"
