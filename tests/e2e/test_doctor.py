"""The mesh doctor on real (kwok) clusters: each failure injected into a healthy mesh is reported
exactly, for exactly the cluster it was injected in; the healthy mesh reports nothing."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import CLUSTERS, Bed, in_bed, kubectl_json

NS = "istio-system"


@pytest.fixture(scope="module")
def bed():
    bed = Bed(2, remote=False)
    bed.up()
    converged = bed.playbook("site")
    assert converged.rc == 0, converged.output[-6000:]
    yield bed
    bed.down()


def doctor(bed: Bed, *extra: str) -> tuple[list[tuple], dict]:
    """Run the verify playbook without failing; (severity, id, clusters) of every finding, and the whole result."""
    report_dir = os.path.join(bed.work, "report")
    result = bed.playbook("verify", "-e", "verify_fail_on_problems=false", "-e", f"verify_report_dir={report_dir}", *extra)
    assert result.rc == 0, result.output[-4000:]
    with open(os.path.join(report_dir, "findings.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    return sorted((f["severity"], f["id"], tuple(f["clusters"])) for f in data["findings"]), data


def kubectl(context: str, *args: str, stdin: str | None = None) -> str:
    return in_bed("kubectl", "--request-timeout=10s", "--context", context, *args, input=stdin).stdout


def saved(context: str, kind: str, name: str, namespace: str = NS) -> str:
    """The object as JSON, without what the API server owns, ready for `kubectl replace`/`apply`."""
    item = kubectl_json(context, "-n", namespace, "get", kind, name)
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
        item["metadata"].pop(key, None)
    return json.dumps(item)


def restore(context: str, document: str) -> None:
    kubectl(context, "apply", "--server-side", "--force-conflicts", "--field-manager=e2e-restore", "-f", "-", stdin=document)


def secret_with(context: str, name: str, data: dict[str, bytes], namespace: str = NS, **meta) -> None:
    item = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }
    kubectl(context, "replace", "--force", "-f", "-", stdin=json.dumps(item)) if exists(context, "secret", name, namespace) else kubectl(
        context, "create", "-f", "-", stdin=json.dumps(item)
    )


def exists(context: str, kind: str, name: str, namespace: str = NS) -> bool:
    return in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", namespace, "get", kind, name, check=False).returncode == 0


def _name(common_name: str, locality: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "e2e"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if locality:
        parts.append(x509.NameAttribute(NameOID.LOCALITY_NAME, locality))
    return x509.Name(parts)


def ca_cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, not_before, not_after, pathlen=None) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def foreign_bundle(cluster: str, expired: bool = False, root=None) -> dict[str, bytes]:
    """A cacerts bundle: a new root (or `root` = (cert, key)) and an intermediate for cluster, expired if asked."""
    now = datetime.datetime.now(datetime.UTC)
    if root is None:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_cert = ca_cert(_name("other root"), root_key, _name("other root"), root_key, now - datetime.timedelta(days=1), now + datetime.timedelta(days=365))
    else:
        root_cert, root_key = root
    key = ec.generate_private_key(ec.SECP256R1())
    begin, end = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired else (now, now + datetime.timedelta(days=90))
    cert = ca_cert(_name("intermediate", cluster), key, root_cert.subject, root_key, begin, end, pathlen=0)
    return {"ca-cert.pem": pem(cert), "ca-key.pem": key_pem(key), "root-cert.pem": pem(root_cert), "cert-chain.pem": pem(cert) + pem(root_cert)}


def mesh_root(bed: Bed):
    pki = os.path.join(bed.work, "pki")
    with open(os.path.join(pki, "root-cert.pem"), "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    with open(os.path.join(pki, "root-key.pem"), "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), None)
    return cert, key


def remote_secret(context: str, watched: str) -> dict:
    return kubectl_json(context, "-n", NS, "get", "secret", f"istio-remote-secret-{watched}")


def put_secret(context: str, item: dict) -> None:
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        item["metadata"].pop(key, None)
    kubectl(context, "replace", "--force", "-f", "-", stdin=json.dumps(item))


# --- the injections: each returns the undo -------------------------------------------------------------


def different_root(bed):
    original = saved("cluster2", "secret", "cacerts")
    secret_with("cluster2", "cacerts", foreign_bundle("cluster2"))
    return lambda: (kubectl("cluster2", "-n", NS, "delete", "secret", "cacerts"), restore("cluster2", original))


def missing_remote_secret(bed):
    original = saved("cluster1", "secret", "istio-remote-secret-cluster2")
    kubectl("cluster1", "-n", NS, "delete", "secret", "istio-remote-secret-cluster2")
    return lambda: restore("cluster1", original)


def wrong_data_key(bed):
    original = saved("cluster1", "secret", "istio-remote-secret-cluster2")
    item = remote_secret("cluster1", "cluster2")
    item["data"] = {"cluster-2": item["data"]["cluster2"]}
    put_secret("cluster1", item)
    return lambda: (kubectl("cluster1", "-n", NS, "delete", "secret", "istio-remote-secret-cluster2"), restore("cluster1", original))


def dead_credential(bed):
    original = saved("cluster1", "secret", "istio-remote-secret-cluster2")
    item = remote_secret("cluster1", "cluster2")
    config = yaml.safe_load(base64.b64decode(item["data"]["cluster2"]))
    config["users"][0]["user"]["token"] = "not-a-token"
    item["data"]["cluster2"] = base64.b64encode(yaml.safe_dump(config).encode()).decode()
    put_secret("cluster1", item)
    return lambda: restore("cluster1", original)


def pending_gateway(bed):
    subprocess.run([CLUSTERS, "lb-pending", f"cluster2/{NS}/istio-eastwestgateway"], check=True, capture_output=True, env=bed_env())
    wait_for(lambda: not kubectl_json("cluster2", "-n", NS, "get", "svc", "istio-eastwestgateway")["status"].get("loadBalancer", {}).get("ingress"))

    def undo():
        subprocess.run([CLUSTERS, "lb-ready", f"cluster2/{NS}/istio-eastwestgateway"], check=True, capture_output=True, env=bed_env())
        wait_for(lambda: kubectl_json("cluster2", "-n", NS, "get", "svc", "istio-eastwestgateway")["status"].get("loadBalancer", {}).get("ingress"))

    return undo


def missing_network_label(bed):
    kubectl("cluster2", "label", "namespace", NS, "topology.istio.io/network-")
    return lambda: kubectl("cluster2", "label", "namespace", NS, "topology.istio.io/network=network2")


def workload_root_disagrees(bed):
    other = foreign_bundle("cluster2")["root-cert.pem"].decode()
    kubectl("cluster2", "-n", "default", "create", "configmap", "istio-ca-root-cert", f"--from-literal=root-cert.pem={other}")
    return lambda: kubectl("cluster2", "-n", "default", "delete", "configmap", "istio-ca-root-cert")


def leftover_istio_ca_secret(bed):
    bundle = foreign_bundle("cluster1")
    secret_with("cluster1", "istio-ca-secret", {"ca-cert.pem": bundle["root-cert.pem"], "ca-key.pem": b"unused"})
    return lambda: kubectl("cluster1", "-n", NS, "delete", "secret", "istio-ca-secret")


def expired_intermediate(bed):
    original = saved("cluster2", "secret", "cacerts")
    secret_with("cluster2", "cacerts", foreign_bundle("cluster2", expired=True, root=mesh_root(bed)))
    return lambda: (kubectl("cluster2", "-n", NS, "delete", "secret", "cacerts"), restore("cluster2", original))


def default_cluster_name(bed):
    kubectl("cluster2", "-n", NS, "set", "env", "deployment/istiod", "CLUSTER_ID=Kubernetes")
    return lambda: kubectl("cluster2", "-n", NS, "set", "env", "deployment/istiod", "CLUSTER_ID=cluster2")


INJECTIONS = {
    "different root": (different_root, ("error", "root_mismatch", ("cluster2",))),
    "missing remote secret": (missing_remote_secret, ("error", "remote_secret_missing", ("cluster1",))),
    "wrong data key": (wrong_data_key, ("error", "remote_secret_data_key", ("cluster1",))),
    "dead credential": (dead_credential, ("error", "remote_secret_credential", ("cluster1",))),
    "pending gateway": (pending_gateway, ("error", "gateway_address", ("cluster2",))),
    "missing network label": (missing_network_label, ("error", "namespace_network_label", ("cluster2",))),
    "istio-ca-root-cert disagrees": (workload_root_disagrees, ("error", "workload_root_mismatch", ("cluster2",))),
    "leftover istio-ca-secret": (leftover_istio_ca_secret, ("warning", "self_signed_leftover", ("cluster1",))),
    "expired intermediate": (expired_intermediate, ("error", "intermediate_expiry", ("cluster2",))),
    "clusterName Kubernetes": (default_cluster_name, ("error", "cluster_name_default", ("cluster2",))),
}


def bed_env() -> dict:
    from conftest import ENV

    return ENV


def wait_for(predicate, attempts: int = 30) -> None:
    for _attempt in range(attempts):
        if predicate():
            return
        time.sleep(1)
    raise AssertionError("condition not reached in time")


def test_healthy_mesh_has_no_findings(bed):
    findings, data = doctor(bed)
    assert findings == [], findings
    assert data["summary"] == {"error": 0, "warning": 0, "info": 0}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_each_injected_failure_is_reported_exactly(bed, name):
    inject, expected = INJECTIONS[name]
    undo = inject(bed)
    try:
        findings = doctor(bed)[0]
    finally:
        undo()
    assert findings == [expected]


def test_error_fails_the_playbook_with_a_summary(bed):
    undo = missing_network_label(bed)
    try:
        result = bed.playbook("verify")
    finally:
        undo()
    assert result.rc != 0
    assert "1 error(s)" in result.output
    assert "namespace_network_label in cluster2" in result.output


def test_mesh_is_healthy_again_after_the_injections(bed):
    findings = doctor(bed)[0]
    assert findings == []


def test_report_and_picture(bed):
    undo = missing_remote_secret(bed)
    try:
        doctor(bed)
    finally:
        undo()
    report_dir = os.path.join(bed.work, "report")
    with open(os.path.join(report_dir, "report.md"), encoding="utf-8") as handle:
        report = handle.read()
    assert "**broken**: 1 error(s)" in report
    assert "**remote_secret_missing** in cluster1" in report
    assert "![mesh](mesh.svg)" in report
    # The picture rendered: an SVG with a node per cluster and per root, and the broken edge drawn in red.
    svg = ET.parse(os.path.join(report_dir, "mesh.svg")).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    nodes = {g.find("svg:title", ns).text for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node"}
    assert {"cluster1", "cluster2"} <= nodes
    assert any(node.startswith("root ") for node in nodes)
    edges = {g.find("svg:title", ns).text: g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "edge"}
    broken = edges["cluster1->cluster2"]
    assert broken.find("svg:path", ns).get("stroke") == "#c62828"
    assert edges["cluster2->cluster1"].find("svg:path", ns).get("stroke") == "#2e7d32"
    # and it converts to a bitmap with an independent renderer
    png = os.path.join(report_dir, "mesh.png")
    subprocess.run(["rsvg-convert", "-o", png, os.path.join(report_dir, "mesh.svg")], check=True, capture_output=True)
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_reachability_of_gateways(bed):
    """Only cluster2's gateway address has a listener; cluster1's does not."""
    addresses = {
        context: kubectl_json(context, "-n", NS, "get", "svc", "istio-eastwestgateway")["status"]["loadBalancer"]["ingress"][0]["ip"]
        for context in ("cluster1", "cluster2")
    }
    listener = subprocess.Popen(
        [
            CLUSTERS,
            "exec",
            "--",
            "timeout",
            "60",
            "python3",
            "-c",
            "import socket,sys; s=socket.create_server((sys.argv[1], 15443)); print('up', flush=True)\nwhile True: s.accept()[0].close()",
            addresses["cluster2"],
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=bed_env(),
        start_new_session=True,
    )
    try:
        assert listener.stdout.readline().strip() == "up"
        findings, data = doctor(bed, "-e", "verify_check_reachability=true", "-e", "verify_reachability_timeout=1")
    finally:
        os.killpg(listener.pid, 9)
        listener.wait(10)
    assert findings == [("warning", "gateway_unreachable", ("cluster1",))]
    assert f"{addresses['cluster1']}:15443" in data["findings"][0]["evidence"]


# --- planted remote secrets: untrusted input -------------------------------------------------------------

CANARY = "canary-token-5a7c9e"  # the contents of every control-node file a planted secret names
PLANTED_TOKEN = "planted-inline-token-3b8d1f"


def planted_kubeconfig(server: str, user: dict, cluster: dict | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "x",
            "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            "clusters": [{"name": "x", "cluster": {"server": server, **(cluster or {})}}],
            "users": [{"name": "x", "user": user}],
        }
    )


def planted_secrets(canaries: str, marker: str, witness: str) -> dict[str, str]:
    """secret name -> kubeconfig: one per way a kubeconfig can make its reader run, open or leak something."""
    files = {kind: os.path.join(canaries, kind) for kind in ("token", "cert", "key", "ca")}
    return {
        "planted-exec": planted_kubeconfig(
            witness, {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh", "args": ["-c", f"touch {marker}-exec"]}}
        ),
        "planted-auth-provider": planted_kubeconfig(
            witness, {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh", "cmd-args": f"-c 'touch {marker}-gcp'"}}}
        ),
        "planted-token-file": planted_kubeconfig(witness, {"tokenFile": files["token"]}),
        "planted-client-files": planted_kubeconfig(witness, {"client-certificate": files["cert"], "client-key": files["key"]}),
        "planted-ca-file": planted_kubeconfig(witness, {"token": PLANTED_TOKEN}, {"certificate-authority": files["ca"]}),
        "planted-proxy": planted_kubeconfig("https://192.0.2.7:6443", {"token": PLANTED_TOKEN}, {"proxy-url": witness.replace("https", "http")}),
        "planted-insecure": planted_kubeconfig(witness, {"token": PLANTED_TOKEN}, {"insecure-skip-tls-verify": "false"}),
        "planted-insecure-true": planted_kubeconfig(witness, {"token": PLANTED_TOKEN}, {"insecure-skip-tls-verify": True}),
        "planted-token-newline": planted_kubeconfig(witness, {"token": f"{PLANTED_TOKEN}\r\nX-Leak: {PLANTED_TOKEN}"}),
        "planted-token-non-ascii": planted_kubeconfig(witness, {"token": f"{PLANTED_TOKEN}\u00e9\u2028{PLANTED_TOKEN}"}),
    }


class Inotify:
    """Opens and reads of the files in one directory, seen by the kernel (the test bed shares this file system)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, directory: str):
        import ctypes  # pylint: disable=import-outside-toplevel

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0 and self.libc.inotify_add_watch(self.fd, directory.encode(), self.IN_ACCESS | self.IN_OPEN) >= 0

    def events(self) -> bytes:
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.fd)


def test_planted_remote_secrets_run_nothing_open_nothing_leak_nothing(bed):
    canaries = os.path.join(bed.work, "canaries")
    os.makedirs(canaries)
    for kind in ("token", "cert", "key", "ca"):
        with open(os.path.join(canaries, kind), "w", encoding="utf-8") as handle:
            handle.write(CANARY)
    marker = os.path.join(bed.work, "ran")
    # A TCP witness in the bed: any connection to the server (or proxy) a planted secret names is logged.
    log = os.path.join(bed.work, "witness.log")
    witness = subprocess.Popen(
        [
            CLUSTERS,
            "exec",
            "--",
            "timeout",
            "900",
            "python3",
            "-c",
            "import socket,sys; s=socket.create_server(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True)\n"
            "while True:\n c, a = s.accept(); open(sys.argv[1], 'a').write(f'{a}\\n'); c.close()",
            log,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=bed_env(),
        start_new_session=True,
    )
    planted = []
    try:
        port = int(witness.stdout.readline().strip())
        secrets = planted_secrets(canaries, marker, f"https://127.0.0.1:{port}")
        for name, config in secrets.items():
            put_secret(
                "cluster1",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {"name": name, "namespace": NS, "labels": {"istio/multiCluster": "true"}, "annotations": {"networking.istio.io/cluster": name}},
                    "data": {name: base64.b64encode(config.encode()).decode()},
                },
            )
            planted.append(name)
        watch = Inotify(canaries)
        try:
            findings, data = doctor(bed, "-vvvv")
            verify_output = bed.playbook("verify", "-vvvv", "-e", "verify_fail_on_problems=false", "-e", "verify_report_dir=none").output
            site = bed.playbook("site", "-vvvv")
            opened = watch.events()
        finally:
            watch.close()
    finally:
        for name in planted:
            kubectl("cluster1", "-n", NS, "delete", "secret", name)
        os.killpg(witness.pid, 9)
        witness.wait(10)
    unsafe = [f for f in data["findings"] if f["id"] == "remote_secret_unsafe"]
    assert sorted(f["evidence"].split(" key ")[0].removeprefix("secret ") for f in unsafe) == sorted(secrets)
    assert {f["clusters"][0] for f in unsafe} == {"cluster1"}
    assert findings == sorted(
        [("error", "remote_secret_unsafe", ("cluster1",))] * len(secrets) + [("warning", "remote_secret_unexpected", ("cluster1",))] * len(secrets)
    )
    # The site playbook refuses in its preflight, naming each planted secret, before any write.
    assert site.rc != 0 and all(f"secret {name} key {name}:" in site.output for name in secrets), site.output[-3000:]
    assert set(site.changed.values()) == {0}
    for output in (verify_output, site.output):
        assert CANARY not in output and PLANTED_TOKEN not in output
    assert not [path for path in os.listdir(bed.work) if path.startswith("ran-")], "a planted command ran"
    assert opened == b"", "a control-node file named by a planted secret was opened"
    assert not os.path.exists(log), "a planted server or proxy was dialled"
