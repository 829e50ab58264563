# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: Kubernetes API access.

Authentication reuses kubernetes.core's options and client factory, so module_defaults for
kubernetes.core and for this collection take the same keys. API failures become one of three
errors a user can act on: unreachable, unauthorized/forbidden, other.

Requests go through the client's REST layer as plain JSON: the typed API classes of recent
kubernetes clients build hundreds of pydantic models on import (about 0.4 s per module run).
"""

from __future__ import annotations

import base64
import copy
import json
from urllib.parse import quote, urlencode

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC

try:
    import urllib3
    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import (
        _create_auth_spec,
        _create_configuration,
        _create_headers,
        _set_header,
    )
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
except ImportError:  # pragma: no cover - reported by the module through missing_required_lib
    HAS_KUBERNETES = False
else:
    HAS_KUBERNETES = True

REQUEST_TIMEOUT_SPEC = {"request_timeout": {"type": "int", "default": 10}}


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


class Cluster:
    """One cluster's API, with bounded timeouts and errors that name the cluster."""

    def __init__(self, params: dict) -> None:
        self.name = _target(params)
        self.timeout = params.get("request_timeout") or 10
        self.calls = 0
        auth = {key: params.get(key) for key in AUTH_ARG_SPEC}
        try:
            # kubernetes.core's own option handling (K8S_AUTH_* environment, kubeconfig dicts, proxies),
            # without its dynamic client, which would run API discovery before the first call.
            self.configuration = _create_configuration(_create_auth_spec(None, **auth))
        except (CoreException, ConfigException, OSError, TypeError, ValueError) as exc:
            raise K8sError(f"cannot load the credentials for {self.name}: {exc}") from exc
        self.configuration.retries = 1
        self.api_client = k8s_client.ApiClient(self.configuration)
        for header, value in _create_headers(None, **auth).items():
            _set_header(self.api_client, header, value)

    def _fail(self, what: str, status: int, reason: str) -> K8sError:
        if status in (401, 403):
            verb = "unauthorized (the credentials were rejected)" if status == 401 else "forbidden by RBAC"
            return K8sDenied(f"{what} on {self.name}: {verb}: {reason}")
        return K8sError(f"{what} on {self.name} failed: HTTP {status} {reason}")

    def _headers(self, body) -> dict:
        headers = {"Accept": "application/json", **(self.api_client.default_headers or {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        return headers

    def request(self, what: str, method: str, path: str, query: dict | None = None, body=None, missing_ok: bool = False):
        """One API request as JSON; None when the object is missing and missing_ok."""
        self.calls += 1
        url = self.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        try:
            response = self.api_client.rest_client.request(method, url, headers=self._headers(body), body=body,
                                                           _request_timeout=self.timeout)
            data = response.read() if getattr(response, "data", None) is None else response.data
            status, reason = response.status, response.reason
        except ApiException as exc:  # clients before 35 raise for every status >= 400
            status, reason, data = exc.status, exc.reason, None
            if not status:
                raise K8sUnreachable(f"{what}: {self.name} is unreachable ({reason}); check the server address and the network") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise K8sUnreachable(
                f"{what}: {self.name} is unreachable ({type(exc).__name__}); check the server address and the network"
            ) from exc
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise self._fail(what, status, reason)
        return json.loads(data) if data else {}

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
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "data": data}
    if cluster.configmap_data(namespace, name) is None:
        cluster.request(f"creating configmap {namespace}/{name}", "POST", namespaced(namespace, "configmaps"), body=body)
    else:
        cluster.request(f"replacing configmap {namespace}/{name}", "PUT", namespaced(namespace, "configmaps", name), body=body)
