# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: Kubernetes API access.

Authentication reuses kubernetes.core's options and client factory, so module_defaults for
kubernetes.core and for this collection take the same keys. API failures become one of three
errors a user can act on: unreachable, unauthorized/forbidden, other.
"""

from __future__ import annotations

import base64
import copy

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
            configuration = _create_configuration(_create_auth_spec(None, **auth))
        except (CoreException, ConfigException, OSError, TypeError, ValueError) as exc:
            raise K8sError(f"cannot load the credentials for {self.name}: {exc}") from exc
        configuration.retries = 1
        self.api_client = k8s_client.ApiClient(configuration)
        for header, value in _create_headers(None, **auth).items():
            _set_header(self.api_client, header, value)
        self.core = k8s_client.CoreV1Api(self.api_client)

    def call(self, what: str, function, *args, missing_ok: bool = False, **kwargs):
        """Run one API call; None when the object is missing and missing_ok."""
        self.calls += 1
        try:
            return function(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            if exc.status in (401, 403):
                verb = "unauthorized (the credentials were rejected)" if exc.status == 401 else "forbidden by RBAC"
                raise K8sDenied(f"{what} on {self.name}: {verb}: {exc.reason}") from exc
            raise K8sError(f"{what} on {self.name} failed: HTTP {exc.status} {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise K8sUnreachable(
                f"{what}: {self.name} is unreachable ({type(exc).__name__}); check the server address and the network"
            ) from exc

    def secret_data(self, namespace: str, name: str) -> dict | None:
        """The secret's data decoded to bytes, or None when it does not exist."""
        secret = self.call(f"reading secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace, missing_ok=True)
        if secret is None:
            return None
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    def service(self, namespace: str, name: str) -> dict | None:
        """The Service as plain data (API field names), or None when it does not exist."""
        service = self.call(f"reading service {namespace}/{name}", self.core.read_namespaced_service, name, namespace, missing_ok=True)
        return None if service is None else self.api_client.sanitize_for_serialization(service)

    def configmap_data(self, namespace: str, name: str) -> dict | None:
        configmap = self.call(
            f"reading configmap {namespace}/{name}", self.core.read_namespaced_config_map, name, namespace, missing_ok=True
        )
        if configmap is None:
            return None
        return dict(configmap.data or {})


def configmap_body(namespace: str, name: str, data: dict, labels: dict | None = None):
    return k8s_client.V1ConfigMap(
        metadata=k8s_client.V1ObjectMeta(name=name, namespace=namespace, labels=labels or {}), data=data
    )


def write_configmap(cluster: Cluster, namespace: str, name: str, data: dict, labels: dict | None = None) -> None:
    """Create or replace a ConfigMap."""
    body = configmap_body(namespace, name, data, labels)
    if cluster.configmap_data(namespace, name) is None:
        cluster.call(f"creating configmap {namespace}/{name}", cluster.core.create_namespaced_config_map, namespace, body)
    else:
        cluster.call(f"replacing configmap {namespace}/{name}", cluster.core.replace_namespaced_config_map, name, namespace, body)
