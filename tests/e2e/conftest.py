"""End-to-end tests of the site playbook on the kwok test bed.

pytest runs on the host; everything that talks to a cluster (ansible-playbook, kubectl,
istioctl) runs inside the test bed's network namespace through `clusters.sh exec`.
Needs `make collection` and the test binaries (`make testbin`); `make e2e` does both.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTERS = os.path.join(REPO, "tests", "testbed", "clusters.sh")
TESTBIN = os.path.join(REPO, "tests", "testbed", "testbin.sh")
CACHE = os.environ.get("MESHFED_CACHE", os.path.expanduser("~/.cache/meshfed"))
ENV = {
    **os.environ,
    "MESHFED_RUN": os.environ.get("MESHFED_E2E_RUN", os.path.join(CACHE, "e2e-run")),
    "MESHFED_NETNS": os.environ.get("MESHFED_E2E_NETNS", "meshfed-e2e"),
    "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", os.path.join(CACHE, "build", "collections")),
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_FORCE_COLOR": "0",
}
PLAYBOOK_TIMEOUT = 1200
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run(argv, timeout=300, check=True, env=None, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or ENV, check=False, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:6])} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def in_bed(*argv, **kwargs) -> subprocess.CompletedProcess:
    """Run a command inside the test bed's network namespace."""
    return run([CLUSTERS, "exec", "--", *argv], **kwargs)


def kubectl_json(context: str, *args) -> dict:
    return json.loads(in_bed("kubectl", "--request-timeout=10s", "--context", context, *args, "-o", "json").stdout)


def istioctl(name: str = "istioctl") -> str:
    """The path of a test-bed istioctl: istioctl (the newer Istio), istioctl-old (the release the upgrade starts from)."""
    return run([TESTBIN, "path", name]).stdout.strip()


def istio_version(binary: str | None = None) -> str:
    return in_bed(binary or istioctl(), "version", "--remote=false", "--short").stdout.strip().removeprefix("client version:").strip()


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict

    @property
    def changed(self) -> dict:
        return {host: values["changed"] for host, values in self.recap.items()}


class Bed:
    """One test-bed topology: N clusters, optionally the last one a remote."""

    def __init__(self, clusters: int, remote: bool):
        self.clusters = clusters
        self.remote = remote
        self.work = tempfile.mkdtemp(prefix="meshfed-e2e-")
        self.names = [f"cluster{i}" for i in range(1, clusters + 1)]
        self.primaries = self.names[:-1] if remote else self.names

    def up(self) -> None:
        run([CLUSTERS, "down"], check=False)
        run([CLUSTERS, "up", str(self.clusters)], env={**ENV, "MESHFED_REMOTE": "1" if self.remote else "0"}, timeout=600)
        self.inventory = os.path.join(ENV["MESHFED_RUN"], "inventory.yml")
        self.settings = os.path.join(self.work, "settings.yml")
        self.write_settings({})

    def down(self) -> None:
        """Clusters down, and the work directory (it holds a root key) removed."""
        run([CLUSTERS, "down"], check=False)
        shutil.rmtree(self.work, ignore_errors=True)

    def write_settings(self, extra: dict, path: str | None = None) -> str:
        """Mesh-wide settings for the test bed, as a second inventory file."""
        variables = {
            "meshfed_istioctl": istioctl(),
            "meshfed_istio_version": istio_version(),
            "meshfed_pki_dir": os.path.join(self.work, "pki"),
            "pki_key_algorithm": "ecdsa-p256",
            # The test bed's API servers listen on loopback inside one network namespace.
            "remote_secrets_allow_loopback": True,
            "verify_allow_loopback": True,
            "eastwest_gateway_address_retries": 30,
        }
        variables.update(extra)
        inventory: dict = {"all": {"vars": variables}}
        if self.remote:
            # A remote's istiod Service gets an EndpointSlice with its primary's gateway address, and the
            # API server refuses loopback addresses there. So the primary's gateway gets an external IP
            # from TEST-NET-2 (RFC 5737), the inventory's fix for sites without a LoadBalancer. Nothing
            # dials it: nothing runs behind it on kwok, and the test bed's namespace has no route out.
            inventory["all"]["children"] = {"istio_primary": {"hosts": {"cluster1": {"meshfed_eastwest_external_ips": ["198.51.100.1"]}}}}
        path = path or self.settings
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(inventory, handle)
        return path

    def playbook(self, name: str, *args, inventories: tuple = (), env: dict | None = None) -> PlaybookRun:
        """Run a playbook of the collection in the bed; env adds to the environment (test-only hooks)."""
        argv = ["ansible-playbook", f"meshfed.istio.{name}", "-i", self.inventory, "-i", self.settings]
        for inventory in inventories:
            argv += ["-i", inventory]
        result = in_bed(
            os.path.join(REPO, ".venv", "bin", "ansible-playbook"), *argv[1:], *args, check=False, timeout=PLAYBOOK_TIMEOUT, env={**ENV, **(env or {})}
        )
        output = result.stdout + result.stderr
        recap = {
            host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
            for host, ok, changed, unreachable, failed in RECAP.findall(output)
        }
        return PlaybookRun(result.returncode, output, recap)

    def secret(self, context: str, namespace: str, name: str) -> dict | None:
        result = in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", namespace, "get", "secret", name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        data = json.loads(result.stdout)
        return {key: base64.b64decode(value) for key, value in (data.get("data") or {}).items()} | {"_object": data}

    def written_state(self) -> dict:
        """What this collection writes, per cluster: resourceVersion (generation for workloads)."""
        state = {}
        for context in self.names:
            for kind, namespaced, field in WRITTEN_KINDS:
                args = ["get", kind] + (["-n", "istio-system"] if namespaced else [])
                result = in_bed("kubectl", "--request-timeout=10s", "--context", context, *args, "-o", "json", check=False)
                if result.returncode != 0:
                    # Istio's kinds exist only once Istio's CRDs are installed
                    assert "doesn't have a resource type" in result.stderr, result.stderr
                    continue
                for item in json.loads(result.stdout).get("items", []):
                    meta = item["metadata"]
                    state[(context, item["kind"], meta.get("namespace"), meta["name"])] = meta[field]
        return state


# (kind, namespaced, the field a write changes): status updates by controllers change a Deployment's
# resourceVersion but not its generation.
WRITTEN_KINDS = [
    *(
        (kind, True, "resourceVersion")
        for kind in (
            "secrets",
            "configmaps",
            "serviceaccounts",
            "services",
            "roles",
            "rolebindings",
            "gateways.networking.istio.io",
            "virtualservices.networking.istio.io",
        )
    ),
    *(
        (kind, False, "resourceVersion")
        for kind in ("namespaces", "clusterroles", "clusterrolebindings", "mutatingwebhookconfigurations", "validatingwebhookconfigurations")
    ),
    ("deployments", True, "generation"),
]


@pytest.fixture(scope="session", autouse=True)
def _no_bed_left_behind():
    yield
    run([CLUSTERS, "down"], check=False)
