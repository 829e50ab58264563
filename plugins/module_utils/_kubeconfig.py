# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: kubeconfig parsing, pure.

Two kinds of kubeconfig reach this collection:
- the user's own (inventory, module options): trusted like any file the user names; the lean way reads it
  directly when it holds nothing but a client certificate or a token (lean_connection);
- one read from a cluster (a remote secret): untrusted input. Anyone who can write a Secret in a
  primary's Istio namespace can plant one. untrusted_connection takes inline data only (server, CA data,
  token, client certificate and key data), the same fields istiod accepts in remote secrets by default,
  and turns everything else into a problem: nothing is executed, no local file is opened, nothing is
  sent with TLS verification off. Problems name fields, never values.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from urllib.parse import urlsplit

# What a kubeconfig context may hold for the lean way; anything else goes through kubernetes.core.
LEAN_USER_KEYS = frozenset({"client-certificate", "client-certificate-data", "client-key", "client-key-data", "token", "tokenFile"})
LEAN_CLUSTER_KEYS = frozenset({"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify", "extensions"})

# The only fields a kubeconfig from a cluster may use.
UNTRUSTED_USER_KEYS = frozenset({"token", "client-certificate-data", "client-key-data"})
UNTRUSTED_CLUSTER_KEYS = frozenset({"server", "certificate-authority-data"})
# Why a field is refused there (any other field: "not an inline credential field").
REFUSED_FIELDS = {
    "exec": "would run a command on the control node",
    "auth-provider": "would run an authentication plugin on the control node",
    "tokenFile": "names a file on the control node",
    "client-certificate": "names a file on the control node",
    "client-key": "names a file on the control node",
    "certificate-authority": "names a file on the control node",
    "proxy-url": "would send the request through a proxy",
    "insecure-skip-tls-verify": "turns TLS verification off",
    "username": "basic authentication is not taken from a cluster",
    "password": "basic authentication is not taken from a cluster",
    "as": "impersonation is not taken from a cluster",
    "as-uid": "impersonation is not taken from a cluster",
    "as-groups": "impersonation is not taken from a cluster",
    "as-user-extra": "impersonation is not taken from a cluster",
}


class KubeconfigError(Exception):
    """A kubeconfig that would be misread (the message names the field, never its value)."""


def kubeconfig_source(auth: dict, environ) -> tuple[object, str]:
    """The kubeconfig the lean way would read (a dict, or a file path), or (None, why kubernetes.core is needed)."""
    others = sorted(key for key, value in auth.items() if key not in ("kubeconfig", "context") and value not in (None, {}, []))
    if others:
        return None, f"options {', '.join(others)}"
    if any(name.startswith("K8S_AUTH_") for name in environ):
        return None, "K8S_AUTH_* environment"
    if isinstance(auth.get("kubeconfig"), dict):
        return auth["kubeconfig"], ""
    path = auth.get("kubeconfig") or environ.get("KUBECONFIG") or "~/.kube/config"
    if os.pathsep in path:
        return None, "a KUBECONFIG list to merge"
    return os.path.expanduser(path), ""


def _entries(config: dict, section: str, key: str) -> dict:
    """Named entries of a section; entries without a string name are not entries (a kubeconfig from a cluster is free data)."""
    items = config.get(section)
    if not isinstance(items, list):
        return {}
    return {item["name"]: item.get(key) or {} for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)}


def kubeconfig_context(config: dict, context_name: str | None = None) -> tuple[bool, dict, dict]:
    """The cluster and user entries of a kubeconfig's named (default: current) context; False when there is no such context."""
    if not isinstance(config, dict):
        return False, {}, {}
    contexts = _entries(config, "contexts", "context")
    name = context_name or config.get("current-context")
    if not isinstance(name, str) or not isinstance(contexts.get(name), dict):
        return False, {}, {}
    context = contexts[name]
    cluster_name, user_name = context.get("cluster"), context.get("user")
    cluster = _entries(config, "clusters", "cluster").get(cluster_name) or {} if isinstance(cluster_name, str) else {}
    user = _entries(config, "users", "user").get(user_name) or {} if isinstance(user_name, str) else {}
    return True, cluster if isinstance(cluster, dict) else {}, user if isinstance(user, dict) else {}


def tls_problem(cluster: dict) -> str:
    """Why a cluster entry's TLS settings would be misread, '' when they are sound.

    insecure-skip-tls-verify counts only as the boolean true (the kubernetes client would read the string
    "false" as true), and never together with a CA (kubectl refuses that too).
    """
    if "insecure-skip-tls-verify" not in cluster:
        return ""
    insecure = cluster["insecure-skip-tls-verify"]
    if not isinstance(insecure, bool):
        return "insecure-skip-tls-verify is not a boolean (write true or false without quotes)"
    if insecure and (cluster.get("certificate-authority") or cluster.get("certificate-authority-data")):
        return "insecure-skip-tls-verify is true beside a certificate authority (remove one of them)"
    return ""


def merge_kubeconfigs(configs: list) -> dict:
    """One kubeconfig from a KUBECONFIG list, as the kubernetes client merges it: the first entry to name a cluster,
    user or context wins; the last file that sets current-context wins."""
    merged: dict = {"clusters": [], "users": [], "contexts": []}
    for config in configs:
        if not isinstance(config, dict):
            continue
        for section in ("clusters", "users", "contexts"):
            items = config.get(section)
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and item.get("name") not in {entry.get("name") for entry in merged[section]}:
                    merged[section].append(item)
        if "current-context" in config:
            merged["current-context"] = config["current-context"]
    return merged


def core_tls_problem(spec: dict, environ, read) -> str:
    """tls_problem() of the context kubernetes.core's loader would use for these options (spec: after its K8S_AUTH_*
    handling, _create_auth_spec); '' when the context is sound or no kubeconfig is loaded (host with a credential of its
    own; in a pod without kubeconfig or context, the in-cluster config it tries first). read(path) gives a parsed
    kubeconfig file, None when there is none (the loader skips those)."""
    if any(all(spec.get(name) for name in names) for names in (("username", "password", "host"), ("api_key", "host"), ("cert_file", "key_file", "host"))):
        return ""
    source = spec.get("kubeconfig")
    if not source and not spec.get("context") and environ.get("KUBERNETES_SERVICE_HOST"):
        return ""
    if isinstance(source, dict):
        config = source
    else:
        paths = str(source or environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)
        config = merge_kubeconfigs([read(os.path.expanduser(path)) for path in paths if path])
    found, cluster, _user = kubeconfig_context(config, spec.get("context"))
    return tls_problem(cluster) if found else ""


def header_safe(token: object) -> bool:
    """Whether a bearer token can go into an HTTP header as it is: printable ASCII, no spaces, no line breaks."""
    return isinstance(token, str) and bool(token) and all(0x21 <= ord(char) <= 0x7E for char in token)


def lean_connection(config: dict, context_name: str | None, base_dir: str) -> tuple[dict | None, str]:
    """Server and credentials of a kubeconfig context, when it holds nothing but a client certificate or a token.

    Returns (connection, "") or (None, why kubernetes.core's loader is needed). Relative file names are
    relative to base_dir, the kubeconfig's directory, as kubectl reads them. Raises KubeconfigError for
    TLS settings either way would misread.
    """
    if not isinstance(config, dict):
        return None, "not a kubeconfig"
    found, cluster, user = kubeconfig_context(config, context_name)
    if not found:
        return None, f"no context {context_name or config.get('current-context')!r}"
    problem = tls_problem(cluster)
    if problem:
        raise KubeconfigError(problem)
    if not cluster.get("server"):
        return None, "no cluster server"
    extra = sorted((set(cluster) - LEAN_CLUSTER_KEYS) | (set(user) - LEAN_USER_KEYS))
    if extra:
        return None, f"kubeconfig fields {', '.join(extra)}"
    scheme = urlsplit(str(cluster["server"])).scheme
    if scheme not in ("https", "http"):
        return None, f"server scheme {scheme!r}"
    has_cert = bool(user.get("client-certificate") or user.get("client-certificate-data"))
    has_key = bool(user.get("client-key") or user.get("client-key-data"))
    if has_cert != has_key:
        return None, "a client certificate without its key"

    def file_of(key: str) -> str | None:
        value = cluster.get(key) if key in cluster else user.get(key)
        return os.path.join(base_dir, os.path.expanduser(value)) if value else None

    return {
        "server": cluster["server"].rstrip("/"),
        "insecure": cluster.get("insecure-skip-tls-verify") is True,
        "ca_file": file_of("certificate-authority"),
        "ca_data": cluster.get("certificate-authority-data"),
        "cert_file": file_of("client-certificate"),
        "cert_data": user.get("client-certificate-data"),
        "key_file": file_of("client-key"),
        "key_data": user.get("client-key-data"),
        "token": user.get("token"),
        "token_file": file_of("tokenFile"),
    }, ""


def _field_problems(where: str, entry: object, allowed: frozenset) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where} is not a mapping"]
    return [
        f"{where} field {_printable_name(key)}: {REFUSED_FIELDS.get(key, 'not an inline credential field')}"
        for key in sorted(map(str, entry))
        if key not in allowed
    ]


def _printable_name(key: str) -> str:
    """A field name as it may be shown: names are free text in an untrusted kubeconfig."""
    return key if len(key) <= 40 and all(char.isalnum() or char in "-_" for char in key) else "(a field with an unusual name)"


def _base64_problem(where: str, value: object, pem: bool) -> str:
    if not isinstance(value, str):
        return f"{where} is not a string"
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"{where} is not base64"
    if pem and b"-----BEGIN " not in data:
        return f"{where} holds no PEM"
    if b"ENCRYPTED" in data:  # OpenSSL would ask for a passphrase on the control node's terminal
        return f"{where} holds an encrypted key"
    return ""


_HOST_NAME = re.compile(r"\A(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")
_SAFE_PATH = re.compile(r"\A[A-Za-z0-9/._~-]*\Z")


def server_problem(server: object) -> str:
    """Why a server URL from a cluster is not taken: https, a host that is an IP address or a DNS name (no shortened or
    numeric IPv4 forms, no non-ASCII names the resolver would map elsewhere), no credentials, query or fragment."""
    if not isinstance(server, str) or not server.isascii() or any(char in server for char in "\r\n\t "):
        return "the server is not an https URL with a host"
    try:
        parts = urlsplit(server)
        host, _port = parts.hostname or "", parts.port
    except ValueError:
        return "the server is not an https URL with a host"
    if parts.scheme != "https" or not host:
        return "the server is not an https URL with a host"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "the server URL carries a query, a fragment or credentials"
    if not _SAFE_PATH.match(parts.path):
        return "the server URL's path holds unusual characters"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.match(host) or host.replace(".", "").isdigit():
            return "the server's host is neither an IP address nor a DNS name"
    return ""


def display_server(server: object) -> str:
    """A server URL as it may be shown: scheme, host, port and path of a sound URL; '' otherwise (never credentials)."""
    if server_problem(server):
        return ""
    parts = urlsplit(server)
    return f"https://{parts.netloc}{parts.path}"


def untrusted_connection(config: object) -> tuple[dict | None, list[str], list[str]]:
    """The connection of a kubeconfig read from a cluster, inline data only; or None, with the problems in two kinds.

    unsafe: what would run, open, proxy or leak something, or turn verification off (exec, auth-provider, file names,
    proxy-url, insecure-skip-tls-verify, any field but the inline ones, a server over plain http or with credentials, a
    token an HTTP header cannot carry, an encrypted key). invalid: what is merely broken (no context, no server, no
    credential, data that is not base64 or PEM): such a secret is not tried, and the remote_secrets role overwrites it
    when it is one of its own. Every user and cluster entry is checked, not only the current context's (istiod checks
    them all too). Problems name fields, never values.
    """
    if not isinstance(config, dict):
        return None, [], ["not a kubeconfig (no mapping)"]
    unsafe, invalid = [], []
    for section, key, allowed in (("clusters", "cluster", UNTRUSTED_CLUSTER_KEYS), ("users", "user", UNTRUSTED_USER_KEYS)):
        items = config.get(section) or []
        if not isinstance(items, list):
            invalid.append(f"{section} is not a list")
            continue
        for index, item in enumerate(items):
            where = f"{section}[{index}]"
            if not isinstance(item, dict):
                invalid.append(f"{where} is not a mapping")
                continue
            unsafe += _field_problems(f"{where} ({key})", item.get(key) or {}, allowed)
    found, cluster, user = kubeconfig_context(config)
    if not found:
        return None, unsafe, [*invalid, "no current context"]
    server = cluster.get("server")
    if server in (None, ""):
        invalid.append("no server")
    else:
        unsafe.append(server_problem(server))
    if "certificate-authority-data" in cluster:
        invalid.append(_base64_problem("certificate-authority-data", cluster["certificate-authority-data"], pem=True))
    token = user.get("token")
    if "token" in user and token not in (None, "") and not header_safe(token):
        unsafe.append("the token holds characters an HTTP header cannot carry (line breaks, spaces, non-ASCII)")
    cert, key = user.get("client-certificate-data"), user.get("client-key-data")
    if (cert is None) != (key is None):
        invalid.append("a client certificate without its key, or a key without its certificate")
    elif cert is not None:
        for name, value in (("client-certificate-data", cert), ("client-key-data", key)):
            problem = _base64_problem(name, value, pem=True)
            (unsafe if problem.endswith("holds an encrypted key") else invalid).append(problem)
    if not token and cert is None:
        invalid.append("no credential (token, or client certificate and key data)")
    unsafe, invalid = [problem for problem in unsafe if problem], [problem for problem in invalid if problem]
    if unsafe or invalid:
        return None, unsafe, invalid
    return (
        {
            "server": server.rstrip("/"),
            "insecure": False,
            "ca_file": None,
            "ca_data": cluster.get("certificate-authority-data"),
            "cert_file": None,
            "cert_data": cert,
            "key_file": None,
            "key_data": key,
            "token": token,
            "token_file": None,
        },
        [],
        [],
    )
