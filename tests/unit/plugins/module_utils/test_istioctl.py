"""istioctl_install's share of the Kubernetes auth options: what istioctl can be told, and the kubeconfig it reads."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _istioctl, _k8s

NO_AUTH = {key: None for key in _k8s.AUTH_ARG_SPEC}


def test_kubeconfig_and_context_are_what_istioctl_takes():
    assert _istioctl.unsupported_auth_options({**NO_AUTH, "kubeconfig": "/k", "context": "east", "validate_certs": None}) == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("host", "https://192.0.2.1"),
        ("api_key", "t"),
        ("client_cert", "/c"),
        ("validate_certs", False),
        ("proxy", "http://p"),
        ("impersonate_groups", ["g"]),
    ],
)
def test_options_without_an_istioctl_flag_are_named(option, value):
    assert _istioctl.unsupported_auth_options({**NO_AUTH, option: value}) == [option]


def test_a_kubeconfig_dict_is_a_private_file_for_the_run_only():
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "x"}
    with _istioctl.KubeconfigFile(config) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path, encoding="utf-8") as handle:
            assert json.load(handle) == config
    assert not os.path.exists(path)


def test_a_kubeconfig_path_is_passed_as_it_is():
    with _istioctl.KubeconfigFile("~/k/config") as path:
        assert path == os.path.expanduser("~/k/config")
    with _istioctl.KubeconfigFile(None) as path:
        assert path is None


def test_one_refusal_for_every_module_that_runs_istioctl():
    assert _istioctl.auth_refusal({**NO_AUTH, "context": "east"}, "istioctl_install") == ""
    assert _istioctl.auth_refusal({**NO_AUTH, "host": "https://192.0.2.1", "api_key": "t"}, "uninstall_istio") == (
        "uninstall_istio passes only kubeconfig and context to istioctl; unset api_key, host (put the credentials into a kubeconfig)"
    )
