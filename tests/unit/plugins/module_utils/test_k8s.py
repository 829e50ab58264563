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

    @pytest.mark.parametrize(
        "option",
        [
            "host",
            "api_key",
            "username",
            "password",
            "ca_cert",
            "client_cert",
            "client_key",
            "proxy",
            "no_proxy",
            "impersonate_user",
            "validate_certs",
            "persist_config",
        ],
    )
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
        config = kubeconfig(
            {"client-certificate": "pki/admin.crt", "client-key": "/abs/admin.key", "tokenFile": "tok"},
            {"certificate-authority": "pki/ca.crt", "certificate-authority-data": None},
        )
        conn, _why = _kubeconfig.lean_connection(config, "east", "/k")
        assert conn["cert_file"] == "/k/pki/admin.crt"
        assert conn["key_file"] == "/abs/admin.key"
        assert conn["ca_file"] == "/k/pki/ca.crt"
        assert conn["token_file"] == "/k/tok"

    def test_token_as_in_a_remote_secret(self):
        conn, _why = _kubeconfig.lean_connection(kubeconfig({"token": "abc"}), "east", "")
        assert conn["token"] == "abc" and conn["cert_data"] is None

    @pytest.mark.parametrize(
        "user",
        [
            {"exec": {"command": "aws"}},
            {"auth-provider": {"name": "oidc"}},
            {"username": "a", "password": "b"},
            {"token": "t", "as": "someone"},
        ],
    )
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
        config = kubeconfig(
            {"token": "t"}, {"server": "https://rancher.example/k8s/clusters/c-1/", "insecure-skip-tls-verify": True, "certificate-authority-data": None}
        )
        conn, _why = _kubeconfig.lean_connection(config, None, "")
        assert conn["insecure"] and conn["server"] == "https://rancher.example/k8s/clusters/c-1"
        transport = _k8s._LeanTransport(conn, 5)  # pylint: disable=protected-access
        assert transport.prefix == "/k8s/clusters/c-1" and transport.address == ("rancher.example", 443)
        assert transport.headers["Authorization"] == "Bearer t"


class TestLeanTls:
    def test_client_certificate_data_is_loaded_and_not_left_on_disk(self, ca, tmp_path, monkeypatch):
        monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
        cert, key = client_pem(ca)
        config = kubeconfig({"client-certificate-data": b64(cert), "client-key-data": b64(key)}, {"certificate-authority-data": b64(_pki.cert_pem(ca.root))})
        conn, _why = _kubeconfig.lean_connection(config, None, "")
        transport = _k8s._LeanTransport(conn, 5)  # pylint: disable=protected-access
        assert transport.context is not None
        assert list(tmp_path.iterdir()) == []

    def test_key_not_matching_is_a_credentials_error(self, ca, other_ca, tmp_path):
        cert, _key = client_pem(ca)
        _cert, other_key = client_pem(other_ca)
        config = kubeconfig(
            {"client-certificate-data": b64(cert), "client-key-data": b64(other_key)}, {"certificate-authority-data": b64(_pki.cert_pem(ca.root))}
        )
        path = tmp_path / "config"
        path.write_text(json.dumps(config))
        with pytest.raises(_k8s.K8sError, match="cannot load the credentials"):
            _k8s.Cluster({**NO_AUTH, "kubeconfig": str(path)})


class _RawServer:
    """A server on 127.0.0.1 that answers every request with the bytes a scenario writes (a hostile API server).

    close() shuts its sockets down, so a scenario still waiting on the client (a recv, a sendall into a full buffer)
    ends at once; the 2 s socket timeouts only bound a scenario the test forgot to close.
    """

    def __init__(self, scenario):
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.port = self.sock.getsockname()[1]
        self.scenario = scenario
        self.conn = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _address = self.sock.accept()
        except OSError:
            return
        self.conn = conn
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(65536)
                self.scenario(conn, self.stopped)
            except OSError:
                pass

    def close(self):
        import contextlib
        import socket

        self.stopped.set()
        for sock in (self.conn, self.sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(2)
        assert not self.thread.is_alive(), "the raw server did not stop"


def _drip(conn, stopped):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    for _byte in range(50):  # bounded: 50 bytes, 0.1 s apart
        conn.sendall(b" ")
        if stopped.wait(0.1):
            return


def _continue_flood(conn, stopped):
    for _burst in range(100000):  # bounded; ends when the test closes the server
        if stopped.is_set():
            return
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)


def _answer(status_line: bytes, body: bytes):
    def scenario(conn, _stopped):
        conn.sendall(status_line + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    return scenario


def _cluster(port: int, max_bytes: int = _k8s.MAX_RESPONSE_BYTES, deadline: float = 1) -> _k8s.Cluster:
    conn = {
        "server": f"http://127.0.0.1:{port}",
        "insecure": False,
        "ca_file": None,
        "ca_data": None,
        "cert_file": None,
        "cert_data": None,
        "key_file": None,
        "key_data": None,
        "token": "tok",
        "token_file": None,
    }
    cluster = _k8s.Cluster.__new__(_k8s.Cluster)
    cluster.name, cluster.timeout, cluster.calls = "a hostile server", 5, 0
    cluster.retries, cluster.max_wait = _k8s.THROTTLE_RETRIES, _k8s.THROTTLE_MAX_WAIT
    cluster.transport = _k8s._LeanTransport(conn, 5, max_bytes=max_bytes, deadline=deadline)  # pylint: disable=protected-access
    cluster.host = cluster.transport.host
    return cluster


class TestHostileServer:
    @pytest.mark.parametrize("scenario", [_drip, _continue_flood], ids=["drip", "100-continue-flood"])
    def test_a_whole_request_has_a_deadline(self, scenario):
        import time

        server = _RawServer(scenario)
        started = time.monotonic()
        try:
            with pytest.raises(_k8s.K8sUnreachable, match=r"no complete answer within 0.5 s"):
                _cluster(server.port, deadline=0.5).get("listing services", "/api/v1/services")
            elapsed = time.monotonic() - started
        finally:
            server.close()
        assert elapsed < 2

    @pytest.mark.parametrize(
        ("status_line", "body", "message"),
        [
            (b"HTTP/1.1 200 OK", b"[" * 200000, "the answer is not JSON"),
            (b"HTTP/1.1 401 \x1b[2J<img src=x>", b"", "unauthorized (the credentials were rejected): 2Jimg srcx"),
            (b"HTTP/1.1 200 OK", b"[" + b"0," * 700000 + b"0]", "an answer over 1048576 bytes"),
        ],
        ids=["deep-json", "reason-with-escapes", "oversized"],
    )
    def test_what_a_server_says_never_crashes_nor_reaches_output_raw(self, status_line, body, message):
        server = _RawServer(_answer(status_line, body))
        try:
            with pytest.raises(_k8s.K8sError) as failure:
                _cluster(server.port, max_bytes=_k8s.UNTRUSTED_RESPONSE_BYTES, deadline=5).get("listing services", "/api/v1/services")
        finally:
            server.close()
        assert message in str(failure.value) or message in repr(failure.value.__cause__)
        assert "\x1b" not in str(failure.value) and "<img" not in str(failure.value)


def _throttled(times: int, retry_after: bytes = b"1"):
    """429 with Retry-After for the first `times` requests on one kept-alive connection, then 200 (bounded)."""

    def scenario(conn, _stopped):
        for _request in range(times):
            conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: " + retry_after + b"\r\nContent-Length: 0\r\n\r\n")
            if not conn.recv(65536):
                return
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"kind": 1}')

    return scenario


class TestThrottling:
    @pytest.mark.parametrize(
        ("status", "retry_after", "wait"),
        [
            (429, "1", 1),
            (429, None, 1),
            (429, "0", 1),
            (429, "3600", 5),
            (429, "Wed, 21 Oct 2015 07:28:00 GMT", 1),
            (503, "2", 2),
            (503, None, None),
            (500, None, None),
            (404, "1", None),
            (200, None, None),
        ],
    )
    def test_which_answers_are_tried_again_and_after_how_long(self, status, retry_after, wait):
        assert _k8s.throttle_wait(status, retry_after, 5) == wait

    def test_a_throttled_request_is_sent_again_after_the_servers_wait(self):
        import time

        server = _RawServer(_throttled(2))
        cluster = _cluster(server.port, deadline=5)
        started = time.monotonic()
        try:
            assert cluster.get("listing services", "/api/v1/services") == {"kind": 1}
        finally:
            server.close()
        assert cluster.calls == 3
        assert 2 <= time.monotonic() - started < 5

    def test_retries_are_bounded_and_the_message_says_the_server_sheds_load(self, monkeypatch):
        waits = []
        monkeypatch.setattr(_k8s.time, "sleep", waits.append)  # the waits are recorded, not slept (the test above sleeps them)
        server = _RawServer(_throttled(10, retry_after=b"3600"))
        cluster = _cluster(server.port, deadline=5)
        cluster.retries, cluster.max_wait = 2, 1
        try:
            with pytest.raises(_k8s.K8sError, match=r"HTTP 429 Too Many Requests, still after 3 tries; the API server sheds load"):
                cluster.get("listing services", "/api/v1/services")
        finally:
            server.close()
        assert cluster.calls == 3
        assert waits == [1, 1]


def _yaml_file(path, config: dict) -> str:
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return str(path)


STRING_FALSE = {"insecure-skip-tls-verify": "false", "certificate-authority-data": None}  # the client reads "false" as true
TRUE_BESIDE_CA = {"insecure-skip-tls-verify": True}


class TestCoreTls:
    """The TLS check of the lean way also holds where kubernetes.core's loader reads the kubeconfig."""

    @pytest.fixture(autouse=True)
    def _clean_environment(self, monkeypatch, tmp_path):
        for name in [name for name in os.environ if name.startswith("K8S_AUTH_") or name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(tmp_path))
        # the kubernetes client reads KUBECONFIG once, when imported (a module run starts with its environment set)
        kube_config = pytest.importorskip("kubernetes.config.kube_config")
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", "~/.kube/config")
        self.setenv = lambda name, value: (
            monkeypatch.setenv(name, value),
            name == "KUBECONFIG" and monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", value),
        )

    @pytest.mark.parametrize(
        ("route", "cluster", "message"),
        [
            ("K8S_AUTH_KUBECONFIG", STRING_FALSE, "insecure-skip-tls-verify is not a boolean"),
            ("K8S_AUTH_KUBECONFIG", TRUE_BESIDE_CA, "insecure-skip-tls-verify is true beside a certificate authority"),
            ("KUBECONFIG list", STRING_FALSE, "insecure-skip-tls-verify is not a boolean"),
            ("KUBECONFIG list", TRUE_BESIDE_CA, "insecure-skip-tls-verify is true beside a certificate authority"),
            ("host option", STRING_FALSE, "insecure-skip-tls-verify is not a boolean"),
            ("kubeconfig and proxy options", TRUE_BESIDE_CA, "insecure-skip-tls-verify is true beside a certificate authority"),
        ],
    )
    def test_a_misread_tls_setting_is_refused_on_the_core_way(self, monkeypatch, tmp_path, route, cluster, message):
        bad = _yaml_file(tmp_path / "bad", kubeconfig({"token": "t"}, cluster))
        params = auth()
        if route == "K8S_AUTH_KUBECONFIG":
            monkeypatch.setenv("K8S_AUTH_KUBECONFIG", bad)
        elif route == "KUBECONFIG list":
            # the loader selects the current-context of the last file that sets one: the second's, on its cluster w
            first = _yaml_file(tmp_path / "first", kubeconfig({"token": "t"}))
            second = kubeconfig({"token": "t"}, cluster, context="west")
            second["clusters"][0]["name"] = "w"
            second["contexts"] = [{"name": "west", "context": {"cluster": "w", "user": "u"}}]
            self.setenv("KUBECONFIG", f"{first}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{_yaml_file(tmp_path / 'second', second)}")
        elif route == "host option":
            params = auth(kubeconfig=bad, host="https://10.0.0.2:6443")
        else:
            params = auth(kubeconfig=bad, proxy="http://proxy.example:3128")
        assert _kubeconfig.kubeconfig_source(params, os.environ)[0] is None  # the core way indeed
        with pytest.raises(_k8s.K8sError, match=f"cannot load the credentials for .*: {message}"):
            _k8s.Cluster(params)

    def test_the_context_the_loader_selects_is_checked_and_no_other(self, monkeypatch, tmp_path):
        # the first file to name cluster c wins: the second's c (string "false") is never read by the loader
        first = _yaml_file(tmp_path / "first", kubeconfig({"token": "t"}))
        second = _yaml_file(tmp_path / "second", kubeconfig({"token": "t"}, STRING_FALSE))
        self.setenv("KUBECONFIG", f"{first}{os.pathsep}{second}")
        assert _k8s.Cluster(auth()).host == "https://10.0.0.1:6443"
        self.setenv("KUBECONFIG", f"{second}{os.pathsep}{first}")
        with pytest.raises(_k8s.K8sError, match="insecure-skip-tls-verify is not a boolean"):
            _k8s.Cluster(auth())

    def test_host_with_its_own_credential_loads_no_kubeconfig(self, monkeypatch, tmp_path):
        self.setenv("KUBECONFIG", _yaml_file(tmp_path / "bad", kubeconfig({"token": "t"}, STRING_FALSE)))
        assert _k8s.Cluster(auth(host="https://10.0.0.2:6443", api_key="t")).host == "https://10.0.0.2:6443"


class _HeaderRefusingTransport:
    """A transport whose HTTP library refuses a header value, quoting it as http.client does."""

    host = "https://10.0.0.1:6443"

    def send(self, method, path, headers, body):
        raise ValueError("Invalid header value b'Bearer planted-token-77aa\\r\\nX-Leak: planted-token-77aa'")


def test_a_refused_header_value_is_withheld_from_the_message():
    cluster = _k8s.Cluster.__new__(_k8s.Cluster)
    cluster.name, cluster.timeout, cluster.calls = "east", 5, 0
    cluster.retries, cluster.max_wait = 0, 1
    cluster.transport, cluster.host = _HeaderRefusingTransport(), _HeaderRefusingTransport.host
    with pytest.raises(_k8s.K8sError) as failure:
        cluster.get("reading secret istio-system/cacerts", "/api/v1/namespaces/istio-system/secrets/cacerts")
    message = str(failure.value)
    assert message == "reading secret istio-system/cacerts on east: a request header holds characters HTTP does not allow (value withheld)"
    assert "planted-token-77aa" not in message and "Bearer" not in message
