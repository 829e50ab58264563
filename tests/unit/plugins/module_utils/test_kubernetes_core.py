"""The names this collection takes from kubernetes.core: its public argument spec, and four private helpers of
its client module that _k8s uses for option handling without the dynamic client's discovery. galaxy.yml bounds
kubernetes.core to the tested major version; an upstream rename or signature change fails here, not in a cluster."""

from __future__ import annotations

import inspect

from ansible_collections.kubernetes.core.plugins.module_utils import args_common
from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client
from ansible_collections.meshfed.istio.plugins.module_utils import _k8s


def test_auth_options_are_kubernetes_cores():
    assert set(_k8s.auth_argument_spec()) == set(args_common.AUTH_ARG_SPEC) | {"request_timeout"}
    assert {"kubeconfig", "context", "host", "api_key", "validate_certs"} <= set(args_common.AUTH_ARG_SPEC)


def test_private_client_helpers_keep_their_shape():
    assert list(inspect.signature(client._create_auth_spec).parameters)[:1] == ["module"]  # pylint: disable=protected-access
    assert list(inspect.signature(client._create_headers).parameters)[:1] == ["module"]  # pylint: disable=protected-access
    assert list(inspect.signature(client._create_configuration).parameters) == ["auth"]  # pylint: disable=protected-access
    assert list(inspect.signature(client._set_header).parameters) == ["client", "header", "value"]  # pylint: disable=protected-access


def test_option_handling_without_a_cluster():
    spec = client._create_auth_spec(None, kubeconfig={"apiVersion": "v1"}, context="east")  # pylint: disable=protected-access
    assert spec["context"] == "east" and spec["kubeconfig"] == {"apiVersion": "v1"}
