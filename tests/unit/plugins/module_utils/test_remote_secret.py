from __future__ import annotations

import base64

import pytest
import yaml

from ansible_collections.meshfed.istio.plugins.module_utils import _remote_secret


@pytest.mark.parametrize(
    ("server", "loopback"),
    [
        ("https://127.0.0.1:6443", True),
        ("https://127.0.1.7", True),
        ("https://localhost:6443", True),
        ("https://[::1]:6443", True),
        ("https://192.0.2.10:6443", False),
        ("https://api.example.com", False),
        ("https://[2001:db8::1]:6443", False),
    ],
)
def test_is_loopback(server, loopback):
    assert _remote_secret.is_loopback(server) is loopback


def test_kubeconfig_has_istioctls_shape_and_is_deterministic():
    text = _remote_secret.kubeconfig("west", "https://192.0.2.10:6443", "Q0E=", "tok")
    assert text == _remote_secret.kubeconfig("west", "https://192.0.2.10:6443", "Q0E=", "tok")
    config = yaml.safe_load(text)
    assert config == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "west", "cluster": {"server": "https://192.0.2.10:6443", "certificate-authority-data": "Q0E="}}],
        "contexts": [{"name": "west", "context": {"cluster": "west", "user": "west"}}],
        "current-context": "west",
        "users": [{"name": "west", "user": {"token": "tok"}}],
    }


def test_remote_secret_is_what_istiod_looks_for():
    secret = _remote_secret.remote_secret("west", "istio-system", "config")
    assert secret["metadata"] == {
        "name": "istio-remote-secret-west",
        "namespace": "istio-system",
        "labels": {"istio/multiCluster": "true"},
        "annotations": {"networking.istio.io/cluster": "west"},
    }
    assert list(secret["data"]) == ["west"]
    assert base64.b64decode(secret["data"]["west"]) == b"config"


def test_token_secret_name():
    assert _remote_secret.token_secret_name("istio-reader-service-account") == "istio-reader-service-account-istio-remote-secret-token"
