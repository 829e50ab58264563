"""Which way a Cluster takes to the API server: the kubeconfig read directly (lean) or kubernetes.core's loader."""
from __future__ import annotations

import base64
import json
import os

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _k8s, _kubeconfig, _pki

from pki_helpers import NOW

NO_AUTH = {key: None for key in _k8s.AUTH_ARG_SPEC}


def kubeconfig(user: dict, cluster: dict | None = None, context: str = "east") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": "Q0E=", **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "east", "context": {"cluster": "c", "user": "u"}}],
    }


def client_pem(ca) -> tuple[bytes, bytes]:
    key = _pki.generate_key("ecdsa-p256")
    return _pki.cert_pem(_pki.build_workload(key, "spiffe://cluster.local/ns/a/sa/b", ca.cert, ca.key, NOW)), _pki.key_pem(key)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def auth(**values) -> dict:
    return {**NO_AUTH, **values}


class TestKubeconfigSource:
    def test_kubeconfig_path_and_context_only(self):
        assert _kubeconfig.kubeconfig_source(auth(kubeconfig="/k/config", context="east"), {}) == ("/k/config", "")

    def test_kubeconfig_dict(self):
        config = kubeconfig({"token": "t"})
        assert _kubeconfig.kubeconfig_source(auth(kubeconfig=config), {}) == (config, "")

    def test_default_is_the_kubeconfig_environment_then_home(self):
        assert _kubeconfig.kubeconfig_source(auth(), {"KUBECONFIG": "/env/config"}) == ("/env/config", "")
        assert _kubeconfig.kubeconfig_source(auth(), {}) == (os.path.expanduser("~/.kube/config"), "")

    @pytest.mark.parametrize("option", ["host", "api_key", "username", "password", "ca_cert", "client_cert", "client_key",
                                        "proxy", "no_proxy", "impersonate_user", "validate_certs", "persist_config"])
    def test_any_other_option_needs_kubernetes_core(self, option):
        value = False if option in ("validate_certs", "persist_config") else "x"
        source, why = _kubeconfig.kubeconfig_source(auth(kubeconfig="/k/config", **{option: value}), {})
        assert source is None and option in why

    def test_k8s_auth_environment_needs_kubernetes_core(self):
        assert _kubeconfig.kubeconfig_source(auth(kubeconfig="/k/config"), {"K8S_AUTH_HOST": "https://x"}) == (None, "K8S_AUTH_* environment")

    def test_a_kubeconfig_list_is_merged_by_kubernetes_core(self):
        source, why = _kubeconfig.kubeconfig_source(auth(), {"KUBECONFIG": "/a:/b"})
        assert source is None and "merge" in why


class TestLeanConnection:
    def test_client_certificate_data(self):
        conn, why = _kubeconfig.lean_connection(kubeconfig({"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}), None, "/k")
        assert why == ""
        assert conn["server"] == "https://10.0.0.1:6443"
        assert conn["ca_data"] == "Q0E=" and conn["cert_data"] == "Q0VSVA==" and conn["key_data"] == "S0VZ"
        assert conn["token"] is None and not conn["insecure"]

    def test_relative_files_are_relative_to_the_kubeconfig(self):
        config = kubeconfig({"client-certificate": "pki/admin.crt", "client-key": "/abs/admin.key", "tokenFile": "tok"},
                            {"certificate-authority": "pki/ca.crt", "certificate-authority-data": None})
        conn, _why = _kubeconfig.lean_connection(config, "east", "/k")
        assert conn["cert_file"] == "/k/pki/admin.crt"
        assert conn["key_file"] == "/abs/admin.key"
        assert conn["ca_file"] == "/k/pki/ca.crt"
        assert conn["token_file"] == "/k/tok"

    def test_token_as_in_a_remote_secret(self):
        conn, _why = _kubeconfig.lean_connection(kubeconfig({"token": "abc"}), "east", "")
        assert conn["token"] == "abc" and conn["cert_data"] is None

    @pytest.mark.parametrize("user", [
        {"exec": {"command": "aws"}},
        {"auth-provider": {"name": "oidc"}},
        {"username": "a", "password": "b"},
        {"token": "t", "as": "someone"},
    ])
    def test_plugins_passwords_and_impersonation_need_kubernetes_core(self, user):
        conn, why = _kubeconfig.lean_connection(kubeconfig(user), None, "")
        assert conn is None and "kubeconfig fields" in why

    @pytest.mark.parametrize("cluster", [{"proxy-url": "http://proxy:3128"}, {"tls-server-name": "api"}])
    def test_proxies_and_server_names_need_kubernetes_core(self, cluster):
        conn, why = _kubeconfig.lean_connection(kubeconfig({"token": "t"}, cluster), None, "")
        assert conn is None and "kubeconfig fields" in why

    def test_unknown_context_is_left_to_kubernetes_core(self):
        conn, why = _kubeconfig.lean_connection(kubeconfig({"token": "t"}), "west", "")
        assert conn is None and why == "no context 'west'"

    def test_certificate_without_key(self):
        conn, why = _kubeconfig.lean_connection(kubeconfig({"client-certificate-data": "Q0VSVA=="}), None, "")
        assert conn is None and "without its key" in why

    def test_insecure_and_path_prefix(self):
        config = kubeconfig({"token": "t"}, {"server": "https://rancher.example/k8s/clusters/c-1/", "insecure-skip-tls-verify": True,
                                             "certificate-authority-data": None})
        conn, _why = _kubeconfig.lean_connection(config, None, "")
        assert conn["insecure"] and conn["server"] == "https://rancher.example/k8s/clusters/c-1"
        transport = _k8s._LeanTransport(conn, 5)  # pylint: disable=protected-access
        assert transport.prefix == "/k8s/clusters/c-1" and transport.address == ("rancher.example", 443)
        assert transport.headers["Authorization"] == "Bearer t"


class TestLeanTls:
    def test_client_certificate_data_is_loaded_and_not_left_on_disk(self, ca, tmp_path, monkeypatch):
        monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
        cert, key = client_pem(ca)
        config = kubeconfig({"client-certificate-data": b64(cert), "client-key-data": b64(key)},
                            {"certificate-authority-data": b64(_pki.cert_pem(ca.root))})
        conn, _why = _kubeconfig.lean_connection(config, None, "")
        transport = _k8s._LeanTransport(conn, 5)  # pylint: disable=protected-access
        assert transport.context is not None
        assert list(tmp_path.iterdir()) == []

    def test_key_not_matching_is_a_credentials_error(self, ca, other_ca, tmp_path):
        cert, _key = client_pem(ca)
        _cert, other_key = client_pem(other_ca)
        config = kubeconfig({"client-certificate-data": b64(cert), "client-key-data": b64(other_key)},
                            {"certificate-authority-data": b64(_pki.cert_pem(ca.root))})
        path = tmp_path / "config"
        path.write_text(json.dumps(config))
        with pytest.raises(_k8s.K8sError, match="cannot load the credentials"):
            _k8s.Cluster({**NO_AUTH, "kubeconfig": str(path)})
