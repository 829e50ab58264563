# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: Kubernetes API access.

Authentication takes kubernetes.core's options, so module_defaults for kubernetes.core and for this
collection take the same keys. API failures become one of three errors a user can act on:
unreachable, unauthorized/forbidden, other.

Two ways to the API server, chosen per call of Cluster by lean_connection():
- lean: a kubeconfig (path or dict) whose context uses a client certificate or a bearer token and
  nothing else. It is read directly and requests go over http.client with one kept-alive
  connection. Importing the kubernetes client costs about 0.3 s of CPU per module run (its package
  imports every API class), which is most of what a module run costs beyond Ansible's own start-up.
- core: everything else (host/api_key options, K8S_AUTH_* environment, exec and auth-provider
  plugins, proxies, impersonation, in-cluster config) goes through kubernetes.core's own
  option handling and the kubernetes client's REST layer, as plain JSON.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import importlib.util
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from urllib.parse import quote, urlencode, urlsplit

from ansible.module_utils.common.yaml import HAS_YAML, yaml_load

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.meshfed.istio.plugins.module_utils._kubeconfig import (
    KubeconfigError,
    core_tls_problem,
    header_safe,
    kubeconfig_source,
    lean_connection,
)

HAS_KUBERNETES = importlib.util.find_spec("kubernetes") is not None

# A bound on one answer: list calls here are paged (limit); a server named by a remote secret gets far less, and its
# whole request must finish within the request timeout.
MAX_RESPONSE_BYTES = 128 * 1024 * 1024
UNTRUSTED_RESPONSE_BYTES = 1024 * 1024
REQUEST_DEADLINE_FACTOR = 6
REQUEST_TIMEOUT_SPEC = {"request_timeout": {"type": "int", "default": 10}}
# An API server under load sheds requests with 429 (API Priority and Fairness, max-inflight) and says when to come
# back; client-go retries those, and so does this: a bounded number of times, each wait bounded too. A server named by
# a remote secret gets one retry and a short wait.
THROTTLE_RETRIES = 6
UNTRUSTED_THROTTLE_RETRIES = 1
THROTTLE_MAX_WAIT = 5


def auth_argument_spec() -> dict:
    """kubernetes.core's authentication options plus this collection's request timeout."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(copy.deepcopy(REQUEST_TIMEOUT_SPEC))
    return spec


class K8sError(Exception):
    """An API call that did not give an answer."""


class K8sUnreachable(K8sError):
    pass


class K8sDenied(K8sError):
    pass


def _target(params: dict) -> str:
    if params.get("host"):
        return f"API server {params['host']}"
    if params.get("context"):
        return f"context {params['context']!r}"
    return "the default kubeconfig context"


class _LeanTransport:
    """http.client with one kept-alive connection, TLS from the kubeconfig's own material."""

    def __init__(self, conn: dict, timeout: int, max_bytes: int = MAX_RESPONSE_BYTES, deadline: float | None = None) -> None:
        parts = urlsplit(conn["server"])
        self.host = conn["server"]
        self.prefix = parts.path.rstrip("/")
        self.address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self.timeout = timeout
        self.max_bytes = max_bytes
        # the socket timeout bounds each read; the deadline bounds a whole request (a server dripping bytes or sending
        # endless 100 Continue lines never hits the first)
        self.deadline = deadline or timeout * REQUEST_DEADLINE_FACTOR
        self.aborted = False
        self.headers = {"Accept": "application/json"}
        token = conn["token"]
        if conn["token_file"]:
            with open(conn["token_file"], encoding="utf-8") as handle:
                token = handle.read().strip()
        if token:
            if not header_safe(token):
                raise KubeconfigError("the token holds characters an HTTP header cannot carry (line breaks, spaces, non-ASCII)")
            self.headers["Authorization"] = f"Bearer {token}"
        self.context = None
        if parts.scheme == "https":
            self.context = self._tls(conn)
        self.connection = None

    @staticmethod
    def _tls(conn: dict) -> ssl.SSLContext:
        if conn["insecure"]:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif conn["ca_data"]:
            context = ssl.create_default_context(cadata=base64.b64decode(conn["ca_data"]).decode("ascii"))
        else:
            context = ssl.create_default_context(cafile=conn["ca_file"])
        if conn["cert_file"] or conn["cert_data"]:
            with tempfile.TemporaryDirectory(prefix="meshfed-tls-") as scratch:  # mode 0700, removed at once
                paths = []
                for kind, given, data in (("cert", conn["cert_file"], conn["cert_data"]), ("key", conn["key_file"], conn["key_data"])):
                    path = given
                    if data:
                        path = os.path.join(scratch, kind)
                        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
                            handle.write(base64.b64decode(data))
                    paths.append(path)
                context.load_cert_chain(*paths, password=_no_passphrase)
        return context

    def send(self, method: str, path: str, headers: dict, body) -> tuple[int, str, bytes, str | None]:
        """status, reason, body and the Retry-After header of one request."""
        for attempt in (1, 2):
            fresh = self.connection is None
            if fresh:
                if self.context is None:
                    self.connection = http.client.HTTPConnection(*self.address, timeout=self.timeout)
                else:
                    self.connection = http.client.HTTPSConnection(*self.address, timeout=self.timeout, context=self.context)
            watchdog = threading.Timer(self.deadline, self._abort)
            watchdog.daemon = True
            watchdog.start()
            try:
                self.connection.request(method, self.prefix + path, body=None if body is None else json.dumps(body), headers={**self.headers, **headers})
                response = self.connection.getresponse()
                data = response.read(self.max_bytes + 1)
                if len(data) > self.max_bytes:
                    self.close()
                    raise http.client.HTTPException(f"an answer over {self.max_bytes} bytes")
                if self.aborted or response.length:  # cut short by the deadline, or the server closed before its Content-Length
                    raise http.client.IncompleteRead(b"")
                return response.status, response.reason, data, response.getheader("Retry-After")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if self.aborted:
                    raise TimeoutError(f"no complete answer within {self.deadline:g} s") from exc
                if fresh or attempt == 2:  # only a kept-alive connection the server closed is worth a second try
                    raise
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if self.aborted:
                    raise TimeoutError(f"no complete answer within {self.deadline:g} s") from exc
                raise
            finally:
                watchdog.cancel()
        raise OSError("unreachable")  # pragma: no cover - the loop returns or raises

    def _abort(self) -> None:
        """The deadline passed: shut the socket down under the reading thread, whatever it waits for."""
        self.aborted = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _no_passphrase(*_args):
    raise ValueError("the client key is encrypted; a kubeconfig key is read without a passphrase")


def throttle_wait(status: int, retry_after: str | None, limit: int) -> int | None:
    """Seconds to wait before sending a request again, or None when its answer is final.

    429 is always worth another try (the server shed the request before doing anything); a 5xx only when the server
    says when (Retry-After), as client-go does. The wait is the server's, between 1 s and limit; an HTTP date or
    garbage counts as 1 s.
    """
    if status != 429 and not (status >= 500 and retry_after is not None):
        return None
    try:
        seconds = int(str(retry_after).strip())
    except ValueError:
        seconds = 1
    return max(1, min(seconds, limit))


def _printable(reason: object) -> str:
    """An HTTP reason phrase as it may be shown: a server can put anything there (escape sequences, markup)."""
    text = "".join(char for char in str(reason or "") if char.isalnum() or char in " ._-")
    return text[:64]


class _Unreachable(OSError):
    """The kubernetes client's own words for a connection that failed."""


def _read_kubeconfig(path: str):
    """A kubeconfig file as kubernetes.core's loader would find it; None when there is none (it skips missing files)."""
    if not HAS_YAML or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return yaml_load(handle)


class _CoreTransport:
    """kubernetes.core's option handling and the kubernetes client's REST layer, as plain JSON."""

    def __init__(self, auth: dict, timeout: int) -> None:
        # imported here: the lean way must not pay for the kubernetes client
        import urllib3  # pylint: disable=import-outside-toplevel
        from kubernetes import client as k8s_client  # pylint: disable=import-outside-toplevel
        from kubernetes.client.exceptions import ApiException  # pylint: disable=import-outside-toplevel

        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import (  # pylint: disable=import-outside-toplevel
            _create_auth_spec,
            _create_configuration,
            _create_headers,
            _set_header,
        )

        self.api_exception, self.http_error = ApiException, urllib3.exceptions.HTTPError
        # kubernetes.core's own option handling (K8S_AUTH_* environment, kubeconfig dicts, proxies),
        # without its dynamic client, which would run API discovery before the first call.
        spec = _create_auth_spec(None, **auth)
        problem = core_tls_problem(spec, os.environ, _read_kubeconfig)
        if problem:
            raise KubeconfigError(problem)
        self.configuration = _create_configuration(spec)
        self.configuration.retries = 1
        self.host = self.configuration.host
        self.api_client = k8s_client.ApiClient(self.configuration)
        for header, value in _create_headers(None, **auth).items():
            _set_header(self.api_client, header, value)
        self.timeout = timeout

    def send(self, method: str, path: str, headers: dict, body) -> tuple[int, str, bytes, str | None]:
        headers = {"Accept": "application/json", **(self.api_client.default_headers or {}), **headers}
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        try:
            response = self.api_client.rest_client.request(method, self.host + path, headers=headers, body=body, _request_timeout=self.timeout)
            data = response.read() if getattr(response, "data", None) is None else response.data
            return response.status, response.reason, data, response.getheader("Retry-After")
        except self.api_exception as exc:  # clients before 35 raise for every status >= 400
            if not exc.status:
                raise _Unreachable(exc.reason) from exc
            return exc.status, exc.reason, b"", (exc.headers or {}).get("Retry-After")
        except self.http_error as exc:
            raise _Unreachable(type(exc).__name__) from exc


class Cluster:
    """One cluster's API, with bounded timeouts and errors that name the cluster."""

    def __init__(self, params: dict) -> None:
        self.name = _target(params)
        self.timeout = params.get("request_timeout") or 10
        self.calls = 0
        self.retries, self.max_wait = THROTTLE_RETRIES, THROTTLE_MAX_WAIT
        auth = {key: params.get(key) for key in AUTH_ARG_SPEC}
        try:
            self.transport = self._lean(auth) or _CoreTransport(auth, self.timeout)
        # kubernetes' ConfigException, kubernetes.core's CoreException, ssl errors, unreadable files,
        # the kubernetes library missing...
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise K8sError(f"cannot load the credentials for {self.name}: {exc}") from exc
        self.host = self.transport.host

    @classmethod
    def of_connection(cls, conn: dict, timeout: int, name: str) -> Cluster:
        """A cluster reached with a connection parsed from an untrusted kubeconfig (_kubeconfig.untrusted_connection)."""
        cluster = cls.__new__(cls)
        cluster.name, cluster.timeout, cluster.calls = name, timeout, 0
        cluster.retries, cluster.max_wait = UNTRUSTED_THROTTLE_RETRIES, 1
        try:
            cluster.transport = _LeanTransport(conn, timeout, max_bytes=UNTRUSTED_RESPONSE_BYTES, deadline=timeout)
        except (KubeconfigError, ssl.SSLError) as exc:
            raise K8sError(f"cannot load the credentials for {name}: {exc}") from exc
        except (ValueError, OSError) as exc:  # undecodable data: the type only, the value stays out of the message
            raise K8sError(f"cannot load the credentials for {name}: {type(exc).__name__}") from exc
        cluster.host = cluster.transport.host
        return cluster

    def _lean(self, auth: dict):
        source, _why = kubeconfig_source(auth, os.environ)
        if source is None:
            return None
        base_dir = ""
        if isinstance(source, str):
            if not HAS_YAML or not os.path.isfile(source):
                return None  # kubernetes.core decides: in-cluster config, or its own error
            base_dir = os.path.dirname(source)
            with open(source, encoding="utf-8") as handle:
                source = yaml_load(handle)
        conn, _why = lean_connection(source, auth.get("context"), base_dir)
        return _LeanTransport(conn, self.timeout) if conn else None

    def _fail(self, what: str, status: int, reason: str) -> K8sError:
        reason = _printable(reason)
        if status in (401, 403):
            verb = "unauthorized (the credentials were rejected)" if status == 401 else "forbidden by RBAC"
            return K8sDenied(f"{what} on {self.name}: {verb}: {reason}")
        if throttle_wait(status, None, 1) is not None:
            return K8sError(f"{what} on {self.name} failed: HTTP {status} {reason}, still after {self.retries + 1} tries; the API server sheds load")
        return K8sError(f"{what} on {self.name} failed: HTTP {status} {reason}")

    def request(
        self, what: str, method: str, path: str, query: dict | None = None, body=None, missing_ok: bool = False, content_type: str = "application/json"
    ):
        """One API request as JSON (a PATCH names its patch type in content_type); None when the object is missing and missing_ok."""
        headers = {"Content-Type": content_type} if body is not None else {}
        for attempt in range(self.retries + 1):
            self.calls += 1
            try:
                status, reason, data, retry_after = self.transport.send(method, path + (f"?{urlencode(query)}" if query else ""), headers, body)
            except (OSError, http.client.HTTPException) as exc:
                detail = str(exc) if isinstance(exc, (ssl.SSLError, _Unreachable, TimeoutError)) else type(exc).__name__
                raise K8sUnreachable(f"{what}: {self.name} is unreachable ({detail}); check the server address and the network") from exc
            except ValueError as exc:  # http.client's words would quote the header value: a token
                raise K8sError(f"{what} on {self.name}: a request header holds characters HTTP does not allow (value withheld)") from exc
            wait = throttle_wait(status, retry_after, self.max_wait)
            if wait is None or attempt == self.retries:
                break
            time.sleep(wait)
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise self._fail(what, status, reason)
        try:
            return json.loads(data) if data else {}
        except (ValueError, RecursionError) as exc:
            raise K8sError(f"{what} on {self.name}: the answer is not JSON; is this a Kubernetes API server?") from exc

    def get(self, what: str, path: str, missing_ok: bool = False, **query):
        return self.request(what, "GET", path, query or None, missing_ok=missing_ok)

    def items(self, what: str, path: str, missing_ok: bool = False, **query) -> list[dict]:
        """The items of a list call (one page of at most `limit` when given); [] when missing and missing_ok."""
        result = self.get(what, path, missing_ok=missing_ok, **query)
        return [] if result is None else result.get("items") or []

    def secret_data(self, namespace: str, name: str) -> dict | None:
        """The secret's data decoded to bytes, or None when it does not exist."""
        secret = self.get(f"reading secret {namespace}/{name}", namespaced(namespace, "secrets", name), missing_ok=True)
        if secret is None:
            return None
        return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}

    def service(self, namespace: str, name: str) -> dict | None:
        """The Service as plain data (API field names), or None when it does not exist."""
        return self.get(f"reading service {namespace}/{name}", namespaced(namespace, "services", name), missing_ok=True)

    def configmap_data(self, namespace: str, name: str) -> dict | None:
        configmap = self.get(f"reading configmap {namespace}/{name}", namespaced(namespace, "configmaps", name), missing_ok=True)
        if configmap is None:
            return None
        return dict(configmap.get("data") or {})


def namespaced(namespace: str, resource: str, name: str = "", group: str = "", version: str = "v1") -> str:
    """The API path of a namespaced resource (collection when name is empty)."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{resource}"
    return f"{path}/{quote(name, safe='')}" if name else path


def cluster_scoped(resource: str, name: str = "", group: str = "", version: str = "v1") -> str:
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{base}/{resource}/{quote(name, safe='')}" if name else f"{base}/{resource}"


def write_configmap(cluster: Cluster, namespace: str, name: str, data: dict, labels: dict | None = None) -> None:
    """Create or replace a ConfigMap."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "data": data}
    if cluster.configmap_data(namespace, name) is None:
        cluster.request(f"creating configmap {namespace}/{name}", "POST", namespaced(namespace, "configmaps"), body=body)
    else:
        cluster.request(f"replacing configmap {namespace}/{name}", "PUT", namespaced(namespace, "configmaps", name), body=body)
