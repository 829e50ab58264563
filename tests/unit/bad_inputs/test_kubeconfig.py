# -*- coding: utf-8 -*-
"""Kubeconfigs an attacker can plant in a remote secret, and kubeconfigs of the user's own that would be misread.

A remote secret is untrusted input (anyone who can write a Secret in a primary's Istio namespace can plant
one): only inline data is taken, nothing is run, no file is opened, no problem quotes a value.
"""

from __future__ import annotations

import base64

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _k8s, _kubeconfig

from cases import Case

TOKEN = "planted-token-0f1e2d"
PEM = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


def config(user: dict | None = None, cluster: dict | None = None, **top) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://192.0.2.10:6443", "certificate-authority-data": PEM, **(cluster or {})}}],
        "users": [{"name": "c", "user": {"token": TOKEN} if user is None else user}],
        **top,
    }


SECRET = "remote secret data"
OWN = "meshfed_kubeconfig"
CASES = [
    Case("secret-exec", SECRET, config({"exec": {"command": "/bin/sh", "args": ["-c", "id"]}}), "field exec: would run a command", "accepted"),
    Case(
        "secret-auth-provider",
        SECRET,
        config({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/id"}}}),
        "field auth-provider: would run an authentication plugin",
        "accepted",
    ),
    Case("secret-token-file", SECRET, config({"tokenFile": "/etc/shadow"}), "field tokenFile: names a file on the control node", "accepted"),
    Case(
        "secret-client-cert-file",
        SECRET,
        config({"client-certificate": "/root/.ssh/id_rsa", "client-key": "/root/.ssh/id_rsa"}),
        "field client-certificate: names a file",
        "accepted",
    ),
    Case("secret-ca-file", SECRET, config(cluster={"certificate-authority": "/etc/passwd"}), "field certificate-authority: names a file", "accepted"),
    Case("secret-proxy-url", SECRET, config(cluster={"proxy-url": "http://192.0.2.99:3128"}), "field proxy-url: would send the request through", "accepted"),
    Case("secret-insecure-true", SECRET, config(cluster={"insecure-skip-tls-verify": True}), "field insecure-skip-tls-verify: turns TLS", "accepted"),
    Case("secret-insecure-string", SECRET, config(cluster={"insecure-skip-tls-verify": "false"}), "field insecure-skip-tls-verify", "accepted"),
    Case(
        "secret-exec-other-user",
        SECRET,
        config(users=[{"name": "c", "user": {"token": TOKEN}}, {"name": "x", "user": {"exec": {}}}]),
        "users[1] (user) field exec",
        "accepted",
    ),
    Case("secret-basic-auth", SECRET, config({"username": "admin", "password": TOKEN}), "field password: basic authentication", "accepted"),
    Case("secret-impersonation", SECRET, config({"token": TOKEN, "as": "system:admin"}), "field as: impersonation", "accepted"),
    Case("secret-token-newline", SECRET, config({"token": TOKEN + "\r\nX-Injected: 1"}), "the token holds characters an HTTP header cannot", "crash"),
    Case("secret-token-non-ascii", SECRET, config({"token": TOKEN + "\u00e9"}), "the token holds characters", "crash"),
    Case("secret-http-server", SECRET, config(cluster={"server": "http://192.0.2.10:8080"}), "the server is not an https URL", "accepted"),
    Case("secret-server-userinfo", SECRET, config(cluster={"server": "https://user:pw@192.0.2.10"}), "carries a query, a fragment or credentials", "accepted"),
    Case("secret-no-credential", SECRET, config({}), "no credential", "unclear"),
    Case("secret-cert-without-key", SECRET, config({"client-certificate-data": PEM}), "a client certificate without its key", "unclear"),
    Case("secret-ca-not-base64", SECRET, config(cluster={"certificate-authority-data": "not base64!"}), "certificate-authority-data is not base64", "unclear"),
    Case("secret-users-not-a-list", SECRET, config(users={"c": {"token": TOKEN}}), "users is not a list", "crash"),
    Case("secret-no-current-context", SECRET, config(**{"current-context": "nowhere"}), "no current context", "unclear"),
    Case("secret-odd-field-name", SECRET, config({"token": TOKEN, TOKEN + "\n": 1}), "(a field with an unusual name)", "accepted"),
    Case("secret-context-name-list", SECRET, config(contexts=[{"name": ["c"], "context": {"cluster": "c", "user": "c"}}]), "no current context", "crash"),
    Case("secret-context-cluster-list", SECRET, config(contexts=[{"name": "c", "context": {"cluster": ["c"], "user": "c"}}]), "no server", "crash"),
    Case("secret-server-broken-ipv6", SECRET, config(cluster={"server": "https://[::1"}), "the server is not an https URL", "crash"),
    Case("secret-server-short-ipv4", SECRET, config(cluster={"server": "https://127.1:6443"}), "neither an IP address nor a DNS name", "accepted"),
    Case("secret-server-numeric-ipv4", SECRET, config(cluster={"server": "https://2130706433"}), "neither an IP address nor a DNS name", "accepted"),
    Case(
        "secret-server-fullwidth",
        SECRET,
        config(cluster={"server": "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54"}),
        "the server is not an https URL",
        "accepted",
    ),
    Case("secret-server-markup-path", SECRET, config(cluster={"server": "https://192.0.2.10/<img>"}), "path holds unusual characters", "accepted"),
    Case(
        "secret-encrypted-key",
        SECRET,
        config(
            {
                "client-certificate-data": PEM,
                "client-key-data": base64.b64encode(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n").decode(),
            }
        ),
        "client-key-data holds an encrypted key",
        "accepted",
    ),
    Case(
        "own-insecure-string",
        OWN,
        config(cluster={"insecure-skip-tls-verify": "false", "certificate-authority-data": None}),
        "insecure-skip-tls-verify is not a boolean",
        "accepted",
    ),
    Case("own-insecure-with-ca", OWN, config(cluster={"insecure-skip-tls-verify": True}), "insecure-skip-tls-verify is true beside a certificate", "accepted"),
    Case("own-token-newline", OWN, config({"token": TOKEN + "\nX: 1"}), "the token holds characters an HTTP header cannot carry", "crash"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_without_quoting_a_value(case):
    if case.option == SECRET:
        conn, unsafe, invalid = _kubeconfig.untrusted_connection(case.value)
        assert conn is None
        message = "; ".join(unsafe + invalid)
    else:
        with pytest.raises(_k8s.K8sError) as failure:
            _k8s.Cluster({key: None for key in _k8s.AUTH_ARG_SPEC} | {"kubeconfig": case.value})
        message = str(failure.value)
    assert case.refusal in message
    assert TOKEN not in message and "/etc/" not in message and "/bin/" not in message


def test_inline_token_and_ca_are_taken():
    conn, unsafe, invalid = _kubeconfig.untrusted_connection(config())
    assert unsafe == invalid == []
    assert conn["token"] == TOKEN and conn["ca_data"] == PEM and conn["server"] == "https://192.0.2.10:6443"
    assert not conn["insecure"] and conn["ca_file"] is conn["cert_file"] is conn["key_file"] is conn["token_file"] is None


def test_inline_client_certificate_is_taken():
    conn, unsafe, invalid = _kubeconfig.untrusted_connection(config({"client-certificate-data": PEM, "client-key-data": PEM}))
    assert unsafe == invalid == [] and conn["cert_data"] == PEM and conn["token"] is None
