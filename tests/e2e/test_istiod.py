"""The real istiod (pilot-discovery, tests/testbed/istiod.sh) consumes what the collection installs.

kwok only simulates the istiod pod; here the same istio.io/istio build as istioctl runs as a
local process per cluster, inside the test bed's network namespace, with the cacerts secret
mirrored into its ./etc/cacerts as the kubelet would mount it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest
import yaml

from conftest import ENV, REPO, Bed, in_bed, kubectl_json, run

ISTIOD = os.path.join(REPO, "tests", "testbed", "istiod.sh")
CSR_CLIENT = os.path.join(REPO, "tests", "e2e", "csr_client.py")
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
NS = "istio-system"
WAIT = 90  # seconds any condition below may take at most


def istiod(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([ISTIOD, *args], check=check, timeout=180)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def istiod_pid(cluster: str) -> str:
    with open(os.path.join(ENV["MESHFED_RUN"], "istiod", cluster, "istiod.pid"), encoding="ascii") as handle:
        return handle.read().strip()


def fingerprint(pem: str) -> str:
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem, capture_output=True, text=True, check=True)
    return out.stdout.strip().split("=", 1)[1]


def wait_for(what: str, probe, timeout: float = WAIT):
    """probe() until it returns something truthy; bounded."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def root_cert_fingerprint(context: str, namespace: str) -> str | None:
    result = in_bed(
        "kubectl", "--request-timeout=5s", "--context", context, "-n", namespace, "get", "configmap", "istio-ca-root-cert", "-o", "json", check=False
    )
    if result.returncode != 0:
        return None
    return fingerprint(json.loads(result.stdout)["data"]["root-cert.pem"])


def has_secret(context: str, name: str) -> bool:
    result = in_bed("kubectl", "--request-timeout=5s", "--context", context, "-n", NS, "get", "secret", name, check=False)
    if result.returncode != 0 and "NotFound" not in result.stderr:
        raise AssertionError(result.stderr)
    return result.returncode == 0


def clusterz(context: str) -> dict:
    """What istiod reports about the clusters it reads: {cluster id: sync status}."""
    port = istiod("port", context, "http").stdout.strip()
    out = in_bed(
        PYTHON,
        "-c",
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
        f"http://127.0.0.1:{port}/debug/clusterz",
        check=False,
    ).stdout
    return {entry["id"]: entry["syncStatus"] for entry in json.loads(out or "[]")}


class Workload:
    """A workload of a cluster with a certificate issued by that cluster's istiod, trusting what istiod published."""

    def __init__(self, bed: Bed, cluster: str, account: str, tag: str = "", revision: str = "default"):
        self.cluster, self.spiffe_id = cluster, f"spiffe://cluster.local/ns/default/sa/{account}"
        self.dir = os.path.join(bed.work, f"workload-{cluster}{tag}")
        os.makedirs(self.dir, exist_ok=True)
        in_bed("kubectl", "--context", cluster, "-n", "default", "create", "serviceaccount", account, check=False)
        token = os.path.join(self.dir, "token")
        with open(token, "w", encoding="ascii") as handle:
            handle.write(
                in_bed("kubectl", "--context", cluster, "-n", "default", "create", "token", account, "--audience", "istio-ca", "--duration", "10m").stdout
            )
        self.trust = os.path.join(self.dir, "root-cert.pem")
        with open(self.trust, "w", encoding="ascii") as handle:  # what the sidecar trusts: the cluster's istio-ca-root-cert
            handle.write(kubectl_json(cluster, "-n", "default", "get", "configmap", "istio-ca-root-cert")["data"]["root-cert.pem"])
        port = istiod("port", cluster, "secure-grpc", revision).stdout.strip()
        issued = in_bed(
            PYTHON,
            CSR_CLIENT,
            "--address",
            f"127.0.0.1:{port}",
            "--root",
            self.trust,
            "--token-file",
            token,
            "--spiffe-id",
            self.spiffe_id,
            "--out",
            self.dir,
            timeout=60,
        )
        self.chain = json.loads(issued.stdout)

    def context(self, server: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        context.load_cert_chain(os.path.join(self.dir, "chain.pem"), os.path.join(self.dir, "key.pem"))
        context.load_verify_locations(cafile=self.trust)
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = False  # identities are SPIFFE URIs, compared below
        return context


def mutual_tls(client: Workload, server: Workload) -> dict:
    """One mutual-TLS exchange over the host's loopback; the identities each side saw, or its error."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    outcome: dict = {}

    def uri(tls) -> list[str]:
        return [value for kind, value in tls.getpeercert().get("subjectAltName", ()) if kind == "URI"]

    def serve():
        try:
            connection = listener.accept()[0]
            connection.settimeout(10)
            with server.context(True).wrap_socket(connection, server_side=True) as tls:
                outcome["server_saw"] = uri(tls)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            outcome["server_error"] = str(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, client.context(False).wrap_socket(raw) as tls:
            outcome["client_saw"] = uri(tls)
            outcome["reply"] = tls.recv(2)
    except (ssl.SSLError, OSError) as exc:
        outcome["client_error"] = str(exc)
    thread.join(10)
    listener.close()
    return outcome


def collection_writes(bed: Bed) -> dict:
    """resourceVersions of what the collection writes, without what a running istiod keeps writing itself
    (ConfigMaps: istio-ca-root-cert, leader elections; webhook configurations: caBundle, failurePolicy)."""
    istiod_owned = ("ConfigMap", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    return {key: value for key, value in bed.written_state().items() if key[1] not in istiod_owned}


@pytest.fixture(scope="module")
def bed():
    bed = Bed(2, False)
    bed.up()
    site = bed.playbook("site")
    assert site.rc == 0, site.output[-4000:]
    with open(os.path.join(bed.work, "pki", "root-cert.pem"), encoding="ascii") as handle:
        bed.root = fingerprint(handle.read())
    yield bed
    bed.down()
    assert not os.path.exists(os.path.join(ENV["MESHFED_RUN"], "istiod")), "clusters.sh down left istiod's directory (cacerts keys)"
    assert not processes_mentioning(os.path.join(ENV["MESHFED_RUN"], "istiod")), "an istiod or its sync loop survived down"


def test_with_cacerts_first_istiod_runs_on_the_mesh_root(bed):
    for name in bed.names:
        started = time.monotonic()
        istiod("start", name)
        bed.startup = getattr(bed, "startup", []) + [round(time.monotonic() - started, 1)]
    for name in bed.names:
        for namespace in (NS, "default"):
            assert wait_for(f"istio-ca-root-cert in {name}/{namespace}", lambda: root_cert_fingerprint(name, namespace)) == bed.root
        assert not has_secret(name, "istio-ca-secret"), f"{name}: istiod created its own CA although cacerts was there"
        log = istiod("logs", name).stdout
        assert "Use local CA certificate" in log and "Use root cert from etc/cacerts/root-cert.pem" in log


def test_istiod_syncs_every_remote_cluster_through_our_remote_secrets(bed):
    for name in bed.names:
        others = {other: "synced" for other in bed.names if other != name}
        wait_for(f"{name}'s istiod synced with {sorted(others)}", lambda: others.items() <= clusterz(name).items())


def test_a_broken_remote_secret_shows_as_not_synced_and_site_repairs_it(bed):
    secret = kubectl_json("cluster1", "-n", NS, "get", "secret", "istio-remote-secret-cluster2")
    kubeconfig = yaml.safe_load(base64.b64decode(secret["data"]["cluster2"]))
    kubeconfig["users"][0]["user"]["token"] = "not-a-token"
    secret["data"]["cluster2"] = base64.b64encode(yaml.safe_dump(kubeconfig).encode()).decode()
    for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        secret["metadata"].pop(field, None)
    in_bed("kubectl", "--context", "cluster1", "replace", "-f", "-", input=json.dumps(secret))
    # istiod retries the remote cluster, then gives up on it: "syncing", then "timeout"
    wait_for("cluster2 not synced in cluster1's istiod", lambda: clusterz("cluster1").get("cluster2") == "timeout")
    assert clusterz("cluster2").get("cluster1") == "synced"
    site = bed.playbook("site")
    assert site.rc == 0, site.output[-4000:]
    assert site.changed["cluster1"] >= 1
    wait_for("cluster2 synced again in cluster1's istiod", lambda: clusterz("cluster1").get("cluster2") == "synced")


def test_a_changed_cacerts_secret_reaches_istiods_directory_like_a_kubelet_volume(bed):
    directory = os.path.join(ENV["MESHFED_RUN"], "istiod", "cluster1", "etc", "cacerts")
    secret = kubectl_json("cluster1", "-n", NS, "get", "secret", "cacerts")
    for key, value in secret["data"].items():
        with open(os.path.join(directory, key), "rb") as handle:
            assert handle.read() == base64.b64decode(value), key
        assert oct(os.stat(os.path.join(directory, key)).st_mode & 0o777) == "0o600"
    patch = json.dumps({"data": {"extra.pem": base64.b64encode(b"extra").decode()}})
    in_bed("kubectl", "--context", "cluster1", "-n", NS, "patch", "secret", "cacerts", "-p", patch)
    wait_for("a new key appears", lambda: os.path.exists(os.path.join(directory, "extra.pem")), timeout=30)
    in_bed(
        "kubectl",
        "--context",
        "cluster1",
        "-n",
        NS,
        "patch",
        "secret",
        "cacerts",
        "--type",
        "json",
        "-p",
        json.dumps([{"op": "remove", "path": "/data/extra.pem"}]),
    )
    wait_for("a removed key disappears", lambda: not os.path.exists(os.path.join(directory, "extra.pem")), timeout=30)
    assert sorted(os.listdir(directory)) == sorted(secret["data"])


def test_certificates_issued_by_both_istiods_pass_mutual_tls_both_ways(bed):
    a, b = Workload(bed, "cluster1", "shop-a"), Workload(bed, "cluster2", "shop-b")
    for workload in (a, b):
        assert workload.chain["issuers"][0] == f"CN=Intermediate CA,L={workload.cluster},O=Istio", workload.chain
        assert workload.chain["fingerprints"][-1] == bed.root
    for client, server in ((a, b), (b, a)):
        outcome = mutual_tls(client, server)
        assert outcome.get("reply") == b"ok", outcome
        assert outcome["client_saw"] == [server.spiffe_id] and outcome["server_saw"] == [client.spiffe_id]


def test_a_new_intermediate_is_picked_up_by_the_running_istiod(bed):
    """Same root, new intermediates (a changed lifetime re-issues them): no istiod restart, new certs chain through them."""
    pid = istiod_pid("cluster1")
    old = Workload(bed, "cluster1", "shop-a", "-old").chain["fingerprints"][1]
    site = bed.playbook("site", "-e", "pki_intermediate_days=700")
    assert site.rc == 0, site.output[-4000:]
    with open(os.path.join(bed.work, "pki", "cluster1", "ca-cert.pem"), encoding="ascii") as handle:
        new = fingerprint(handle.read())
    assert new != old
    chains = []
    wait_for(
        "cluster1's istiod signs with the new intermediate",
        lambda: chains.append(Workload(bed, "cluster1", "shop-a", f"-new{len(chains)}")) or chains[-1].chain["fingerprints"][1] == new,
    )
    assert chains[-1].chain["fingerprints"][-1] == bed.root
    assert istiod_pid("cluster1") == pid
    assert "Use root cert from etc/cacerts/root-cert.pem" in istiod("logs", "cluster1").stdout
    outcome = mutual_tls(chains[-1], Workload(bed, "cluster2", "shop-b", "-new"))
    assert outcome.get("reply") == b"ok", outcome


def test_istiod_started_before_cacerts_is_caught_by_verify_and_preflight(bed):
    """The failure this collection prevents, for real: cluster2's istiod comes up without cacerts."""
    istiod("stop", "cluster2")
    in_bed("kubectl", "--context", "cluster2", "-n", NS, "delete", "secret", "cacerts")
    for namespace in (NS, "default", "kube-system"):
        in_bed("kubectl", "--context", "cluster2", "-n", namespace, "delete", "configmap", "istio-ca-root-cert", "--ignore-not-found")
    istiod("start", "cluster2")
    wait_for("istio-ca-secret created by cluster2's istiod", lambda: has_secret("cluster2", "istio-ca-secret"))
    own_root = wait_for("istio-ca-root-cert in cluster2", lambda: root_cert_fingerprint("cluster2", "default"))
    assert own_root != bed.root
    assert "Use self-signed certificate as the CA certificate" in istiod("logs", "cluster2").stdout

    report_dir = os.path.join(bed.work, "report")
    verify = bed.playbook("verify", "-e", f"verify_report_dir={report_dir}")
    assert verify.rc != 0
    with open(os.path.join(report_dir, "findings.json"), encoding="utf-8") as handle:
        findings = {(f["severity"], f["id"], tuple(f["clusters"])) for f in json.load(handle)["findings"]}
    assert ("error", "self_signed_ca", ("cluster2",)) in findings, findings
    assert all("cluster1" not in clusters for _severity, _id, clusters in findings), findings

    before = collection_writes(bed)
    site = bed.playbook("site")
    assert site.rc != 0
    assert "cluster cluster2: istiod already runs with its own self-signed root" in site.output
    assert collection_writes(bed) == before

    # and the A -> B / B -> A story with certificates from the real control planes: both directions fail
    a, b = Workload(bed, "cluster1", "shop-a", "-split"), Workload(bed, "cluster2", "shop-b", "-split")
    assert b.chain["fingerprints"][-1] == own_root
    for client, server in ((a, b), (b, a)):
        outcome = mutual_tls(client, server)
        assert "reply" not in outcome, outcome
        assert "certificate verify failed" in outcome.get("client_error", "") + outcome.get("server_error", ""), outcome
