"""The failure this collection prevents, as a test: A -> B and B -> A over real mutual TLS.

Each cluster's workload gets a SPIFFE certificate from its cluster's intermediate (as istiod
issues them) and trusts its own cluster's root-cert.pem (as the sidecar does). With one mesh
root both directions work; with a cluster on its own root both directions fail with an
unknown-CA error.
"""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _pki, _pki_store

TIMEOUT = 5


def make_pki(dest, clusters):
    plan = _pki_store.decide(_pki_store.PkiOptions(dest=str(dest), clusters=tuple(clusters), key_algorithm="ecdsa-p256"))
    _pki_store.apply(plan)
    return plan


class Workload:
    def __init__(self, tmp_path, cluster_dir, name):
        directory = tmp_path / f"workload-{name}"
        directory.mkdir()
        ca_cert = _pki.load_cert((cluster_dir / "ca-cert.pem").read_bytes(), "ca-cert.pem")
        ca_key = _pki.load_key((cluster_dir / "ca-key.pem").read_bytes(), "ca-key.pem")
        key = _pki.generate_key("ecdsa-p256")
        leaf = _pki.build_workload(key, f"spiffe://cluster.local/ns/default/sa/{name}", ca_cert, ca_key, _pki.utcnow())
        self.spiffe_id = f"spiffe://cluster.local/ns/default/sa/{name}"
        self.chain = directory / "chain.pem"
        self.chain.write_bytes(_pki.cert_pem(leaf) + (cluster_dir / "ca-cert.pem").read_bytes())
        self.key = directory / "key.pem"
        self.key.write_bytes(_pki.key_pem(key))
        self.trust = cluster_dir / "root-cert.pem"

    def context(self, purpose):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == "server" else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.chain, self.key)
        context.load_verify_locations(cafile=str(self.trust))
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = False  # identities are SPIFFE URIs, checked below
        return context


def peer_spiffe_id(tls_socket):
    return [value for kind, value in tls_socket.getpeercert().get("subjectAltName", ()) if kind == "URI"]


def call(client: Workload, server: Workload):
    """One mutual-TLS request from client to server over loopback; returns both sides' outcome."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    outcome = {}

    def serve():
        try:
            connection = listener.accept()[0]
            connection.settimeout(TIMEOUT)
            with server.context("server").wrap_socket(connection, server_side=True) as tls:
                outcome["server_saw"] = peer_spiffe_id(tls)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            outcome["server_error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw, client.context("client").wrap_socket(raw) as tls:
            outcome["client_saw"] = peer_spiffe_id(tls)
            outcome["reply"] = tls.recv(2)
    except (ssl.SSLError, OSError) as exc:
        outcome["client_error"] = exc
    thread.join(TIMEOUT)
    listener.close()
    return outcome


@pytest.fixture()
def one_mesh(tmp_path):
    make_pki(tmp_path / "pki", ["cluster-a", "cluster-b"])
    return {name: Workload(tmp_path, tmp_path / "pki" / name, name) for name in ("cluster-a", "cluster-b")}


@pytest.fixture()
def split_roots(tmp_path):
    make_pki(tmp_path / "pki", ["cluster-a"])
    make_pki(tmp_path / "rogue", ["cluster-b"])  # cluster-b's istiod signs with a root of its own
    return {
        "cluster-a": Workload(tmp_path, tmp_path / "pki" / "cluster-a", "cluster-a"),
        "cluster-b": Workload(tmp_path, tmp_path / "rogue" / "cluster-b", "cluster-b"),
    }


@pytest.mark.parametrize(("client", "server"), [("cluster-a", "cluster-b"), ("cluster-b", "cluster-a")])
def test_shared_root_mutual_tls_works_both_ways(one_mesh, client, server):
    outcome = call(one_mesh[client], one_mesh[server])
    assert "client_error" not in outcome and "server_error" not in outcome, outcome
    assert outcome["reply"] == b"ok"
    assert outcome["client_saw"] == [one_mesh[server].spiffe_id]
    assert outcome["server_saw"] == [one_mesh[client].spiffe_id]


@pytest.mark.parametrize(("client", "server"), [("cluster-a", "cluster-b"), ("cluster-b", "cluster-a")])
def test_different_root_fails_with_unknown_ca_both_ways(split_roots, client, server):
    outcome = call(split_roots[client], split_roots[server])
    assert "reply" not in outcome
    # The client checks the server's chain first: it rejects it as signed by an unknown CA,
    # and the server sees the alert.
    assert isinstance(outcome["client_error"], ssl.SSLCertVerificationError), outcome
    assert "unable to get local issuer certificate" in outcome["client_error"].verify_message
    assert "unknown ca" in str(outcome["server_error"]).lower(), outcome


def test_server_rejects_client_of_another_root(tmp_path, split_roots):
    """The server side alone: a client that trusts both roots still gets refused by a server on the mesh root."""
    client = split_roots["cluster-b"]
    client.trust = tmp_path / "both.pem"
    client.trust.write_bytes((tmp_path / "pki" / "root-cert.pem").read_bytes() + (tmp_path / "rogue" / "root-cert.pem").read_bytes())
    outcome = call(client, split_roots["cluster-a"])
    assert "reply" not in outcome
    assert "certificate verify failed" in str(outcome["server_error"]).lower(), outcome
