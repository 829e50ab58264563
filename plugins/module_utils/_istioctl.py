# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: istioctl, the interface Istio gives for installing."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _k8s

STATE_PREFIX = "meshfed-install-"


class IstioctlError(Exception):
    pass


def run(argv: list[str], timeout: int) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise IstioctlError(f"istioctl not found at {argv[0]!r}: install it or set the istioctl option (meshfed_istioctl) to its path") from exc
    except subprocess.TimeoutExpired as exc:
        raise IstioctlError(f"{' '.join(argv[:3])} did not finish within {timeout} s") from exc


def version(binary: str) -> str:
    """The version istioctl reports about itself (no cluster is asked)."""
    result = run([binary, "version", "--remote=false", "--short"], 60)
    if result.returncode != 0:
        raise IstioctlError(f"{binary} version failed: {result.stderr.strip() or result.stdout.strip()}")
    parsed = _istio.istioctl_version(result.stdout)
    if not parsed:
        raise IstioctlError(f"{binary} version printed no version: {result.stdout.strip()[:200]!r}")
    return parsed


# The shared Kubernetes auth options istioctl can be given; the others have no istioctl flag.
ISTIOCTL_AUTH_OPTIONS = ("kubeconfig", "context")


def unsupported_auth_options(params: dict) -> list[str]:
    """Shared auth options set to something istioctl cannot be told (it reads a kubeconfig and a context only)."""
    return sorted(key for key in _k8s.AUTH_ARG_SPEC if key not in ISTIOCTL_AUTH_OPTIONS and params.get(key) not in (None, "", [], {}))


def auth_refusal(params: dict, what: str) -> str:
    """The message refusing the shared auth options istioctl cannot be told, '' when there are none."""
    unsupported = unsupported_auth_options(params)
    if not unsupported:
        return ""
    return f"{what} passes only kubeconfig and context to istioctl; unset {', '.join(unsupported)} (put the credentials into a kubeconfig)"


def connection_args(kubeconfig: str | None, context: str | None) -> list[str]:
    args = []
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    if context:
        args += ["--context", context]
    return args


class KubeconfigFile:
    """The kubeconfig option as a file for istioctl: a path as it is, a dict written to a private temporary file."""

    def __init__(self, kubeconfig) -> None:
        self.value, self.path = kubeconfig, None

    def __enter__(self) -> str | None:
        if not isinstance(self.value, dict):
            return os.path.expanduser(self.value) if self.value else None
        handle, self.path = tempfile.mkstemp(prefix="meshfed-kubeconfig-", suffix=".json")  # mode 0600
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(self.value, stream)
        return self.path

    def __exit__(self, *exc) -> None:
        if self.path:
            os.unlink(self.path)


def installed_digest(cluster: _k8s.Cluster, operator: dict) -> str | None:
    metadata = operator["metadata"]
    data = cluster.configmap_data(metadata.get("namespace", _istio.DEFAULT_NAMESPACE), STATE_PREFIX + metadata["name"])
    return (data or {}).get("digest")


def install(binary: str, operator: dict, kubeconfig: str | None, context: str | None, readiness_timeout: int) -> subprocess.CompletedProcess:
    """istioctl install -y -f <operator>; raises with istioctl's own words when it fails."""
    handle, path = tempfile.mkstemp(prefix="meshfed-iop-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(operator, stream)
        argv = [binary, "install", "-y", "-f", path, f"--readiness-timeout={readiness_timeout}s", *connection_args(kubeconfig, context)]
        result = run(argv, readiness_timeout + 300)
    finally:
        os.unlink(path)
    if result.returncode != 0:
        raise IstioctlError(f"istioctl install of {operator['metadata']['name']} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def uninstall(binary: str, kubeconfig: str | None, context: str | None, timeout: int) -> subprocess.CompletedProcess:
    """istioctl uninstall --purge -y: every Istio control plane and its cluster-wide objects of this cluster."""
    result = run([binary, "uninstall", "--purge", "-y", *connection_args(kubeconfig, context)], timeout)
    if result.returncode != 0:
        raise IstioctlError(f"istioctl uninstall --purge failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def record(cluster: _k8s.Cluster, operator: dict, digest: str, istioctl_version: str) -> None:
    metadata = operator["metadata"]
    _k8s.write_configmap(
        cluster,
        metadata.get("namespace", _istio.DEFAULT_NAMESPACE),
        STATE_PREFIX + metadata["name"],
        {"digest": digest, "istioctl-version": istioctl_version, "operator.json": json.dumps(operator, sort_keys=True)},
        labels={_istio.MANAGED_BY_LABEL: _istio.MANAGED_BY},
    )


def ensure(binary: str, operator: dict, cluster: _k8s.Cluster, kubeconfig, context, readiness_timeout: int, check_mode: bool) -> dict:
    """Install unless the recorded install is this operator with this istioctl."""
    istioctl_version = version(binary)
    wanted = _istio.digest(operator, istioctl_version)
    current = installed_digest(cluster, operator)
    result = {"digest": wanted, "previous_digest": current, "istioctl_version": istioctl_version, "changed": current != wanted}
    if result["changed"] and not check_mode:
        with KubeconfigFile(kubeconfig) as path:
            completed = install(binary, operator, path, context, readiness_timeout)
        result["stdout_lines"] = completed.stdout.splitlines()
        record(cluster, operator, wanted, istioctl_version)
    return result
