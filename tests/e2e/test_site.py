"""The site playbook on three topologies of real (kwok) clusters, with the real istioctl."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile

import pytest
import yaml

from conftest import Bed, in_bed, istioctl, kubectl_json

TOPOLOGIES = {
    "two-primaries-two-networks": (2, False),
    "primary-remote-two-networks": (2, True),
    "three-clusters-two-networks": (3, True),
}


@pytest.fixture(scope="module", params=list(TOPOLOGIES))
def bed(request):
    clusters, remote = TOPOLOGIES[request.param]
    bed = Bed(clusters, remote)
    bed.up()
    yield bed
    bed.down()


@pytest.fixture(scope="module")
def converged(bed):
    return bed.playbook("site")


def openssl_fingerprint(pem: bytes) -> str:
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem, capture_output=True, check=True).stdout
    return out.decode().strip().split("=", 1)[1]


def test_site_converges(bed, converged):
    assert converged.rc == 0, converged.output[-6000:]
    assert set(converged.recap) == set(bed.names)
    assert all(values["failed"] == 0 and values["unreachable"] == 0 for values in converged.recap.values())
    assert all(changed > 0 for changed in converged.changed.values()), converged.changed


def test_second_run_changes_nothing_and_writes_nothing(bed, converged):
    before = bed.written_state()
    second = bed.playbook("site")
    assert second.rc == 0, second.output[-6000:]
    assert second.changed == {name: 0 for name in bed.names}
    assert bed.written_state() == before


def test_check_mode_on_a_converged_mesh_reports_nothing(bed, converged):
    check = bed.playbook("site", "--check")
    assert check.rc == 0, check.output[-6000:]
    assert check.changed == {name: 0 for name in bed.names}


def drift(bed) -> set:
    """Someone edits what the collection wrote, after a converge; returns the clusters whose objects were changed."""
    first, last = bed.names[0], bed.names[-1]
    kubectl = ("kubectl", "--request-timeout=10s")
    in_bed(*kubectl, "--context", first, "label", "--overwrite", "namespace", "istio-system", "topology.istio.io/network=elsewhere")
    in_bed(*kubectl, "--context", first, "-n", "istio-system", "delete", "gateways.networking.istio.io", "cross-network-gateway")
    watched = next(b for a, b in watches(bed) if a == first)
    merge_patch(first, "secret", f"istio-remote-secret-{watched}", {"data": {watched: base64.b64encode(b"apiVersion: v1\nkind: Config\n").decode()}})
    if bed.remote:
        merge_patch(first, "virtualservices.networking.istio.io", "istiod-vs", {"spec": {"hosts": ["istiod.example"]}})
        merge_patch(first, "service", "istio-eastwestgateway", {"spec": {"externalIPs": None}})
    # inside a list element: the write replaces the list, so this is drift too
    in_bed(
        *kubectl,
        "--context",
        last,
        "-n",
        "istio-system",
        "patch",
        "gateways.networking.istio.io",
        "cross-network-gateway",
        "--type",
        "json",
        "-p",
        json.dumps([{"op": "add", "path": "/spec/servers/0/tls/credentialName", "value": "someone-elses"}]),
    )
    root = bed.secret(last, "istio-system", "cacerts")["root-cert.pem"]
    in_bed(
        *kubectl,
        "--context",
        last,
        "-n",
        "istio-system",
        "patch",
        "secret",
        "cacerts",
        "--type",
        "merge",
        "-p",
        json.dumps({"data": {"ca-cert.pem": base64.b64encode(root).decode()}}),
    )
    return {first, last}


def test_drift_is_seen_and_repaired(bed, converged):
    """The roles skip writes that the preflight's read shows unneeded; an edited object is not one of them."""
    drifted = drift(bed)
    before = bed.written_state()
    # check mode foretells the repair (verify skipped: it would rightly fail on the drifted mesh)
    check = bed.playbook("site", "--check", "--skip-tags", "verify")
    assert check.rc == 0, check.output[-6000:]
    assert {name for name, changed in check.changed.items() if changed} == drifted, check.changed
    assert bed.written_state() == before
    repair = bed.playbook("site")
    assert repair.rc == 0, repair.output[-6000:]
    assert {name for name, changed in repair.changed.items() if changed} == drifted, repair.changed
    first, last = bed.names[0], bed.names[-1]
    assert kubectl_json(first, "get", "namespace", "istio-system")["metadata"]["labels"]["topology.istio.io/network"] != "elsewhere"
    kubectl_json(first, "get", "gateways.networking.istio.io", "cross-network-gateway", "-n", "istio-system")
    server = kubectl_json(last, "get", "gateways.networking.istio.io", "cross-network-gateway", "-n", "istio-system")["spec"]["servers"][0]
    assert server["tls"] == {"mode": "AUTO_PASSTHROUGH"}
    with open(os.path.join(bed.work, "pki", last, "ca-cert.pem"), "rb") as handle:
        assert bed.secret(last, "istio-system", "cacerts")["ca-cert.pem"] == handle.read()
    if bed.remote:
        assert kubectl_json(first, "get", "virtualservices.networking.istio.io", "istiod-vs", "-n", "istio-system")["spec"]["hosts"] == ["*"]
        assert kubectl_json(first, "get", "service", "istio-eastwestgateway", "-n", "istio-system")["spec"]["externalIPs"] == ["198.51.100.1"]
    # the repaired remote secret is checked by test_remote_secrets_authenticate_and_read_the_watched_cluster


def other_ca(directory: str) -> tuple[bytes, bytes]:
    """A key and a self-signed CA certificate of nobody's mesh, made with the openssl CLI: (key, certificate)."""
    key, cert = os.path.join(directory, "other-key.pem"), os.path.join(directory, "other-cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert]
        + ["-subj", "/O=elsewhere/CN=Other CA", "-days", "30", "-addext", "basicConstraints=critical,CA:true"]
        + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        capture_output=True,
        check=True,
    )
    with open(key, "rb") as k, open(cert, "rb") as c:
        return k.read(), c.read()


@pytest.mark.parametrize(
    ("swapped", "refusal"),
    [("ca-key.pem", "ca-key.pem does not match ca-cert.pem"), ("root-cert.pem", "ca-cert.pem does not chain to any root in root-cert.pem")],
    ids=["key-not-matching", "chain-broken"],
)
def test_cacerts_refuses_a_bundle_istiod_would_refuse_and_writes_nothing(bed, converged, swapped, refusal):
    """The cacerts role alone (its tag) on a PKI directory whose cluster bundle was corrupted by hand: a key of another
    pair, or the root the intermediate was not issued by. The role fails naming the problem; no cluster is written.
    The role's check is the same for every role of cluster, so one layout runs it (two site runs fewer per layout)."""
    if (bed.clusters, bed.remote) != TOPOLOGIES["two-primaries-two-networks"]:
        pytest.skip("run on the two-primaries layout")
    last = bed.names[-1]
    path = os.path.join(bed.work, "pki", last, swapped)
    with open(path, "rb") as handle:
        original = handle.read()
    before = bed.written_state()
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = other_ca(tmp)
    try:
        with open(path, "wb") as handle:
            handle.write(key if swapped == "ca-key.pem" else cert)
        run = bed.playbook("site", "--tags", "cacerts")
    finally:
        with open(path, "wb") as handle:
            handle.write(original)
    assert run.rc != 0 and run.recap[last]["failed"] == 1, run.output[-4000:]
    assert f"Not pushing cacerts to {last}: {refusal}" in run.output, run.output[-4000:]
    assert "PRIVATE KEY" not in run.output
    assert bed.written_state() == before
    cacerts = kubectl_json(last, "-n", "istio-system", "get", "secret", "cacerts")
    assert cacerts["metadata"]["resourceVersion"] == before[(last, "Secret", "istio-system", "cacerts")]


def test_one_root_everywhere(bed, converged):
    with open(os.path.join(bed.work, "pki", "root-cert.pem"), "rb") as handle:
        mesh_root = openssl_fingerprint(handle.read())
    for name in bed.names:
        cacerts = bed.secret(name, "istio-system", "cacerts")
        assert openssl_fingerprint(cacerts["root-cert.pem"]) == mesh_root, name
        with tempfile.TemporaryDirectory() as tmp:
            for key in ("root-cert.pem", "ca-cert.pem"):
                with open(os.path.join(tmp, key), "wb") as handle:
                    handle.write(cacerts[key])
            verified = subprocess.run(
                ["openssl", "verify", "-CAfile", f"{tmp}/root-cert.pem", f"{tmp}/ca-cert.pem"], capture_output=True, text=True, check=False
            )
            assert verified.returncode == 0, verified.stderr


def test_network_labels_and_remote_annotation(bed, converged):
    with open(bed.inventory, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    hosts = {}
    for group in inventory["all"]["children"].values():
        hosts.update(group["hosts"])
    for name in bed.names:
        namespace = kubectl_json(name, "get", "namespace", "istio-system")["metadata"]
        assert namespace["labels"]["topology.istio.io/network"] == hosts[name]["meshfed_network"]
        if name not in bed.primaries:
            assert namespace["annotations"]["topology.istio.io/controlPlaneClusters"] == "cluster1"


def merge_patch(context: str, resource: str, name: str, patch: dict) -> None:
    """A JSON merge patch of an object in istio-system, as someone editing the cluster by hand would make it."""
    in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", "istio-system", "patch", resource, name, "--type", "merge", "-p", json.dumps(patch))


def watches(bed):
    """Every primary watches every other cluster, the remotes of other primaries included."""
    return [(a, b) for a in bed.primaries for b in bed.names if a != b]


def test_remote_secrets_authenticate_and_read_the_watched_cluster(bed, converged):
    for watcher, watched in watches(bed):
        secret = bed.secret(watcher, "istio-system", f"istio-remote-secret-{watched}")
        assert secret is not None, f"{watcher} has no remote secret for {watched}"
        meta = secret["_object"]["metadata"]
        assert meta["labels"]["istio/multiCluster"] == "true"
        assert meta["annotations"]["networking.istio.io/cluster"] == watched
        assert sorted(k for k in secret if k != "_object") == [watched]
        kubeconfig = yaml.safe_load(secret[watched])
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(kubeconfig, handle)
        try:
            listed = in_bed(
                "kubectl", "--kubeconfig", handle.name, "--request-timeout=10s", "get", "services,endpointslices.discovery.k8s.io", "-A", "-o", "name"
            )
            assert "service/kubernetes" in listed.stdout
            denied = in_bed("kubectl", "--kubeconfig", handle.name, "auth", "can-i", "create", "namespaces", check=False)
            assert denied.stdout.strip() == "no"
        finally:
            os.unlink(handle.name)
    # no secret a cluster does not need: a primary holds exactly the clusters it watches, a remote none
    for name in bed.names:
        secrets = kubectl_json(name, "get", "secrets", "-n", "istio-system", "-l", "istio/multiCluster=true")
        held = sorted(item["metadata"]["name"] for item in secrets["items"])
        assert held == sorted(f"istio-remote-secret-{watched}" for watcher, watched in watches(bed) if watcher == name), name


def test_remote_points_at_its_primary_gateway(bed, converged):
    if not bed.remote:
        pytest.skip("this topology has no remote")
    gateway = kubectl_json("cluster1", "get", "service", "istio-eastwestgateway", "-n", "istio-system")
    address = gateway["spec"]["externalIPs"][0]
    assert address == "198.51.100.1"
    remote = bed.names[-1]
    record = kubectl_json(remote, "get", "configmap", "meshfed-install-control-plane", "-n", "istio-system")
    operator = json.loads(record["data"]["operator.json"])
    assert operator["spec"]["profile"] == "remote"
    assert operator["spec"]["values"]["global"]["remotePilotAddress"] == address


def test_gateways_have_addresses_and_the_cross_network_gateway(bed, converged):
    for name in bed.names:
        service = kubectl_json(name, "get", "service", "istio-eastwestgateway", "-n", "istio-system")
        assert service["status"]["loadBalancer"]["ingress"][0]["ip"].startswith("127.")
        gateway = kubectl_json(name, "get", "gateways.networking.istio.io", "cross-network-gateway", "-n", "istio-system")
        assert gateway["spec"]["servers"][0]["tls"]["mode"] == "AUTO_PASSTHROUGH"
        assert gateway["spec"]["servers"][0]["port"]["number"] == 15443


def test_verify_playbook_passes(bed, converged):
    verify = bed.playbook("verify")
    assert verify.rc == 0, verify.output[-4000:]
    root = (
        subprocess.run(
            ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", os.path.join(bed.work, "pki", "root-cert.pem")],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split("=", 1)[1]
    )
    assert f"{len(bed.names)} clusters share root {root}" in verify.output


def test_rendered_operator_through_istioctl_manifest_generate(bed, converged):
    record = kubectl_json("cluster1", "get", "configmap", "meshfed-install-control-plane", "-n", "istio-system")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        handle.write(record["data"]["operator.json"])
    try:
        manifests = in_bed(istioctl(), "manifest", "generate", "-f", handle.name).stdout
    finally:
        os.unlink(handle.name)
    documents = [doc for doc in yaml.safe_load_all(manifests) if doc]
    istiod = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "istiod")
    env = {e["name"]: e.get("value") for e in istiod["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CLUSTER_ID"] == "cluster1"
    mesh = next(d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "istio")
    assert yaml.safe_load(mesh["data"]["mesh"])["defaultConfig"]["meshId"] == "mesh1"
    injector = next(d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "istio-sidecar-injector")
    values = json.loads(injector["data"]["values"])
    assert values["global"]["meshID"] == "mesh1"
    assert values["global"]["multiCluster"]["clusterName"] == "cluster1"
    assert values["global"]["network"] == "network1"


def test_remote_secret_has_the_shape_istioctl_makes(bed, converged):
    if bed.remote:
        pytest.skip("compared once, on the two-primaries topology")
    ours = bed.secret("cluster1", "istio-system", "istio-remote-secret-cluster2")["_object"]
    made = in_bed(
        istioctl(),
        "create-remote-secret",
        "--context",
        "cluster2",
        "--name",
        "cluster2",
        "--server",
        yaml.safe_load(ours_kubeconfig(ours))["clusters"][0]["cluster"]["server"],
    ).stdout
    theirs = next(doc for doc in yaml.safe_load_all(made) if doc and doc.get("kind") == "Secret")
    assert theirs["metadata"]["name"] == ours["metadata"]["name"]
    assert theirs["metadata"]["labels"]["istio/multiCluster"] == ours["metadata"]["labels"]["istio/multiCluster"]
    assert theirs["metadata"]["annotations"]["networking.istio.io/cluster"] == ours["metadata"]["annotations"]["networking.istio.io/cluster"]
    their_data = theirs.get("stringData") or {k: base64_decode(v) for k, v in theirs.get("data", {}).items()}
    assert sorted(their_data) == sorted(ours["data"]) == ["cluster2"]
    mine, istioctls = yaml.safe_load(ours_kubeconfig(ours)), yaml.safe_load(their_data["cluster2"])
    assert shape(mine) == shape(istioctls)


def base64_decode(value: str) -> str:
    return base64.b64decode(value).decode()


def ours_kubeconfig(secret: dict) -> str:
    return base64_decode(secret["data"]["cluster2"])


def shape(value):
    """Keys (recursively) of a kubeconfig, with list items' shapes; values ignored."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def test_each_primarys_real_istiod_syncs_every_other_cluster(bed, converged):
    """The real istiod of every primary reads every other cluster of the mesh through the collection's remote secrets
    (/debug/clusterz), a remote of another primary included; a remote runs no istiod."""
    from test_istiod import clusterz, istiod, wait_for  # pylint: disable=import-outside-toplevel

    try:
        for name in bed.primaries:
            istiod("start", name)
        for name in bed.primaries:
            others = {other: "synced" for other in bed.names if other != name}
            wait_for(f"{name}'s istiod synced with {sorted(others)}", lambda: others.items() <= clusterz(name).items())
    finally:
        istiod("stop-all", check=False)
