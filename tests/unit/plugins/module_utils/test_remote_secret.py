from __future__ import annotations

import base64
import datetime

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
        "labels": {"istio/multiCluster": "true", "app.kubernetes.io/managed-by": "meshfed.istio"},
        "annotations": {"networking.istio.io/cluster": "west"},
    }
    assert list(secret["data"]) == ["west"]
    assert base64.b64decode(secret["data"]["west"]) == b"config"


def test_token_secret_name():
    assert _remote_secret.token_secret_name("istio-reader-service-account") == "istio-reader-service-account-istio-remote-secret-token"


def test_remote_secret_carries_the_collections_label():
    assert _remote_secret.remote_secret("west", "istio-system", "c")["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "meshfed.istio"


def _token(name, created, labels=None):
    return {
        "metadata": {"name": name, "creationTimestamp": created, "labels": labels or {}, "annotations": {"kubernetes.io/service-account.name": "sa"}},
        "type": "kubernetes.io/service-account-token",
    }


NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("created", "days", "due"),
    [
        ("2026-11-30T11:00:00Z", None, False),
        ("2026-11-30T11:00:00Z", 0, True),
        ("2026-11-30T11:00:00Z", 1, False),
        ("2026-11-29T12:00:00Z", 1, True),
        ("2026-10-01T00:00:00Z", 90, False),
        ("2026-08-01T00:00:00Z", 90, True),
        ("2026-08-01T00:00:00Z", -1, False),
    ],
)
def test_rotation_due(created, days, due):
    assert _remote_secret.rotation_due([_token("sa-istio-remote-secret-token", created)], days, NOW) is due


def test_rotation_looks_at_the_newest_token_only():
    tokens = [
        _token("sa-istio-remote-secret-token", "2026-01-01T00:00:00Z"),
        _token("sa-istio-remote-secret-token-20261130110000", "2026-11-30T11:00:00Z", {"app.kubernetes.io/managed-by": "meshfed.istio"}),
    ]
    assert [t["metadata"]["name"] for t in _remote_secret.newest_first(tokens)] == [
        "sa-istio-remote-secret-token-20261130110000",
        "sa-istio-remote-secret-token",
    ]
    assert _remote_secret.rotation_due(tokens, 1, NOW) is False
    assert _remote_secret.rotated_name("sa", NOW) == "sa-istio-remote-secret-token-20261130120000"


@pytest.mark.parametrize(
    ("name", "labels", "ours"),
    [
        ("sa-istio-remote-secret-token", {}, True),
        ("sa-istio-remote-secret-token-20261130120000", {"app.kubernetes.io/managed-by": "meshfed.istio"}, True),
        ("sa-istio-remote-secret-token-20261130120000", {}, False),
        ("sa-istio-remote-secret-tokens", {"app.kubernetes.io/managed-by": "meshfed.istio"}, False),
        ("other-token", {"app.kubernetes.io/managed-by": "meshfed.istio"}, False),
    ],
)
def test_is_token_secret(name, labels, ours):
    assert _remote_secret.is_token_secret(_token(name, "2026-01-01T00:00:00Z", labels), "sa") is ours


def test_a_new_token_that_cannot_be_used_is_refused_before_any_request():
    class Unreached:
        name, host, timeout = "context 'east'", "https://192.0.2.1:6443", 5

    with pytest.raises(_remote_secret.RemoteSecretError) as failure:
        _remote_secret.check_token(Unreached(), "istio-system", "tok\nen", base64.b64encode(b"not a PEM").decode())
    assert str(failure.value) == (
        "the new reader token of context 'east' cannot be used: the token holds characters an HTTP header cannot carry "
        "(line breaks, spaces, non-ASCII); certificate-authority-data holds no PEM"
    )


@pytest.mark.parametrize(
    ("revision", "name"),
    [
        ("", "istio-reader-clusterrole-istio-system"),
        ("default", "istio-reader-clusterrole-istio-system"),
        ("1-31-0", "istio-reader-clusterrole-1-31-0-istio-system"),
    ],
)
def test_reader_role_is_named_as_istios_install_names_it_per_revision(revision, name):
    assert _remote_secret.reader_role_name("istio-system", revision) == name
