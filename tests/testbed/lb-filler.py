"""LoadBalancer filler of the kwok test bed (started by clusters.sh up, inside the netns).

kwok fills no status.loadBalancer. Every poll this process lists the Services (and, unless told
to keep them, the admission webhook configurations) of every cluster over one kept-alive HTTPS
connection per API server, and
  * gives each LoadBalancer Service without an address the next free 127.0.<cluster>.<n> (n from 2)
    through the status subresource, ipMode VIP;
  * clears the address of a Service marked pending (a CLUSTER/NS/SVC line in the pending list, or
    the annotation meshfed.test/lb-pending: "true") and gives it none;
  * turns failurePolicy Fail of admission webhooks into Ignore (no webhook backend can answer on
    kwok), unless the configuration carries meshfed.test/keep-failure-policy: "true", or it is the
    validation of an istiod that runs (below): that istiod sets Fail itself, as in a real cluster;
  * serves each API server's egress proxy (--egress-dir/<cluster>.sock, HTTP CONNECT; clusters.sh
    gives it to kube-apiserver as the "cluster" egress selection, which carries the calls to
    webhooks given by clientConfig.service): a CONNECT to the webhook port of an istiod Service
    (istio-system/istiod[-<rev>], ClusterIP:443 -> targetPort 15017) is joined to the https port
    of the local istiod of that revision (--routes, kept by istiod.sh; a remote's to its primary's,
    --remote-of); any other CONNECT is refused, as the unreachable ClusterIP was before. The API
    server's TLS goes end to end: it checks istiod's certificate for istiod[-<rev>].istio-system.svc.
Bounded: stops when the state file is gone (clusters.sh down), when no API server answered for
--give-up seconds, or after --max-lifetime seconds; a proxied connection lasts at most
CONNECTION_LIFETIME seconds. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import socket
import ssl
import sys
import threading
import time

PENDING_ANNOTATION = "meshfed.test/lb-pending"
KEEP_POLICY_ANNOTATION = "meshfed.test/keep-failure-policy"
REVISION_LABEL = "istio.io/rev"
ISTIO_NAMESPACE = "istio-system"
WEBHOOK_TARGET_PORT = 15017
CONNECTION_LIFETIME = 120.0
MAX_CONNECTIONS = 32
WEBHOOK_KINDS = {
    "MutatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
}


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}", flush=True)


class ApiServer:
    """One cluster's API server, admin client certificate, one kept-alive connection."""

    def __init__(self, name: str, index: int, port: int, pki: str, timeout: float) -> None:
        self.name, self.index, self.port, self.timeout = name, index, port, timeout
        self.context = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
        self.context.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))
        self.conn: http.client.HTTPSConnection | None = None
        self.failing = False

    def request(self, method: str, path: str, body: object = None, content_type: str = "") -> dict:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        if response.status >= 300:
            raise OSError(f"{method} {path}: HTTP {response.status}")
        return json.loads(data or b"{}")


def pending_marks(path: str) -> set[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return {line.strip() for line in handle if line.strip()}
    except FileNotFoundError:
        return set()


def lb_address(service: dict) -> str:
    ingress = (service.get("status", {}).get("loadBalancer", {}) or {}).get("ingress") or []
    return (ingress[0].get("ip") or "") if ingress else ""


def fill_services(api: ApiServer, services: list[dict], marks: set[str]) -> None:
    """Addresses for LoadBalancer Services; pending ones get theirs cleared."""
    balancers = [svc for svc in services if svc.get("spec", {}).get("type") == "LoadBalancer"]
    used = {lb_address(svc) for svc in balancers} - {""}
    for svc in balancers:
        meta = svc["metadata"]
        ns, name = meta["namespace"], meta["name"]
        ref = f"{api.name}/{ns}/{name}"
        address = lb_address(svc)
        status_path = f"/api/v1/namespaces/{ns}/services/{name}/status"
        if ref in marks or (meta.get("annotations") or {}).get(PENDING_ANNOTATION) == "true":
            if address:
                api.request("PATCH", status_path, {"status": {"loadBalancer": {"ingress": None}}}, "application/merge-patch+json")
                log(f"{ref} pending: cleared {address}")
            continue
        if address:
            continue
        free = next((ip for ip in (f"127.0.{api.index}.{n}" for n in range(2, 255)) if ip not in used), None)
        if free is None:
            log(f"{api.name}: no free loopback address left")
            continue
        patch = {"status": {"loadBalancer": {"ingress": [{"ip": free, "ipMode": "VIP"}]}}}
        api.request("PATCH", status_path, patch, "application/merge-patch+json")
        used.add(free)
        log(f"{ref} -> {free}")


def open_webhooks(api: ApiServer, kind: str, configurations: list[dict], served: set[str]) -> None:
    """failurePolicy Fail -> Ignore, one JSON patch per configuration; served: revisions whose istiod runs for this cluster."""
    for config in configurations:
        meta = config["metadata"]
        if (meta.get("annotations") or {}).get(KEEP_POLICY_ANNOTATION) == "true":
            continue
        if kind == "ValidatingWebhookConfiguration" and (meta.get("labels") or {}).get(REVISION_LABEL) in served:
            continue
        ops = [
            {"op": "replace", "path": f"/webhooks/{index}/failurePolicy", "value": "Ignore"}
            for index, hook in enumerate(config.get("webhooks") or [])
            if hook.get("failurePolicy") == "Fail"
        ]
        if ops:
            api.request("PATCH", f"{WEBHOOK_KINDS[kind]}/{meta['name']}", ops, "application/json-patch+json")
            log(f"{api.name}: {kind} {meta['name']} failurePolicy Fail -> Ignore")


Routes = dict[tuple[str, str], int]  # (cluster, revision) -> https port of that local istiod


def read_routes(path: str) -> Routes:
    """CLUSTER REVISION PORT lines of istiod.sh; a malformed line is skipped."""
    routes: Routes = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) == 3 and fields[2].isdigit():
                    routes[(fields[0], fields[1])] = int(fields[2])
    except FileNotFoundError:
        pass
    return routes


def istiod_webhooks(services: list[dict]) -> dict[str, str]:
    """ClusterIP:port of every istiod Service's webhook port (targetPort 15017) -> its revision."""
    table = {}
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        name, address = meta["name"], spec.get("clusterIP") or ""
        if meta["namespace"] != ISTIO_NAMESPACE or not (name == "istiod" or name.startswith("istiod-")) or address in ("", "None"):
            continue
        revision = (meta.get("labels") or {}).get(REVISION_LABEL) or "default"
        for port in spec.get("ports") or []:
            if str(port.get("targetPort")) == str(WEBHOOK_TARGET_PORT):
                table[f"{address}:{port['port']}"] = revision
    return table


class EgressProxy:
    """The HTTP CONNECT proxy of one API server's "cluster" egress, on a unix socket; joins istiod Services to local istiods."""

    def __init__(self, cluster: str, path: str, routes_path: str, serving_cluster: str) -> None:
        self.cluster, self.path, self.routes_path, self.serving_cluster = cluster, path, routes_path, serving_cluster
        self.table: dict[str, str] = {}  # replaced whole by the poll: ClusterIP:port -> revision
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if os.path.exists(path):
            os.remove(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.listener.settimeout(1.0)

    def target(self, authority: str) -> tuple[str, int] | None:
        """Where a CONNECT authority goes: a loopback address as it is (kwok's kubelet stand-in), an istiod Service to
        the local istiod of its revision; None for anything else."""
        host, port = authority.rpartition(":")[::2]
        if host in ("localhost", "127.0.0.1", "[::1]") and port.isdigit():
            return ("127.0.0.1" if host != "[::1]" else "::1", int(port))
        revision = self.table.get(authority)
        local = None if revision is None else read_routes(self.routes_path).get((self.serving_cluster, revision))
        return None if local is None else ("127.0.0.1", local)

    def serve(self, running: threading.Event) -> None:
        while running.is_set():
            try:
                conn = self.listener.accept()[0]
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        upstream = None
        try:
            conn.settimeout(5.0)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                request += chunk
            words = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            authority = words[1] if len(words) == 3 and words[0] == "CONNECT" else "?"
            port = self.target(authority)
            if port is None or authority in self.table:  # not the loopback pass-through: that is kwok's own traffic
                log(f"{self.cluster}: egress CONNECT {authority} -> {f'{port[0]}:{port[1]}' if port else 'refused'}")
            if port is None:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = socket.create_connection(port, timeout=5.0)
            except OSError:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            pump(conn, upstream)
        except OSError:
            pass
        finally:
            for sock in (conn, upstream):
                if sock is not None:
                    sock.close()
            self.slots.release()


def pump(one: socket.socket, other: socket.socket) -> None:
    """Bytes both ways until a side closes, 60 s pass without any, or CONNECTION_LIFETIME ends."""
    end = time.monotonic() + CONNECTION_LIFETIME
    peers = {one: other, other: one}
    while time.monotonic() < end:
        readable = select.select(list(peers), [], [], 60.0)[0]
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


def poll(api: ApiServer, marks: set[str], webhooks: bool, proxy: EgressProxy | None) -> None:
    services = api.request("GET", "/api/v1/services").get("items") or []
    fill_services(api, services, marks)
    served: set[str] = set()
    if proxy is not None:
        proxy.table = istiod_webhooks(services)
        served = {revision for cluster, revision in read_routes(proxy.routes_path) if cluster == proxy.serving_cluster}
    if webhooks:
        for kind, path in WEBHOOK_KINDS.items():
            open_webhooks(api, kind, api.request("GET", path).get("items") or [], served)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kwok-dir", required=True, help="kwokctl work dir (clusters/<name>/pki)")
    parser.add_argument("--clusters", type=int, required=True)
    parser.add_argument("--port-base", type=int, required=True, help="cluster<i> listens on port-base + i")
    parser.add_argument("--state", required=True, help="stop when this file is gone")
    parser.add_argument("--pending", required=True, help="file of CLUSTER/NS/SVC lines kept pending")
    parser.add_argument("--webhook-policy", choices=["Ignore", "keep"], default="Ignore")
    parser.add_argument("--egress-dir", default="", help="serve <dir>/<cluster>.sock, the API servers' egress proxy")
    parser.add_argument("--routes", default="", help="file of CLUSTER REVISION PORT lines: the local istiods (istiod.sh)")
    parser.add_argument("--remote-of", action="append", default=[], metavar="REMOTE=PRIMARY", help="a remote cluster and its primary")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--give-up", type=float, default=60.0)
    parser.add_argument("--max-lifetime", type=float, default=21600.0)
    args = parser.parse_args()

    apis = [
        ApiServer(f"cluster{i}", i, args.port_base + i, os.path.join(args.kwok_dir, "clusters", f"cluster{i}", "pki"), 5.0) for i in range(1, args.clusters + 1)
    ]
    remote_of = dict(pair.split("=", 1) for pair in args.remote_of)
    running = threading.Event()
    running.set()
    proxies: dict[str, EgressProxy] = {}
    if args.egress_dir:
        for api in apis:
            proxy = EgressProxy(api.name, os.path.join(args.egress_dir, f"{api.name}.sock"), args.routes, remote_of.get(api.name, api.name))
            threading.Thread(target=proxy.serve, args=(running,), daemon=True).start()
            proxies[api.name] = proxy
    try:
        return watch(args, apis, proxies)
    finally:
        running.clear()


def watch(args: argparse.Namespace, apis: list[ApiServer], proxies: dict[str, EgressProxy]) -> int:
    start = last_answer = time.monotonic()
    log(f"lb-filler start pid={os.getpid()} lifetime={args.max_lifetime:.0f}s interval={args.interval}s webhook-failure-policy={args.webhook_policy}")
    while time.monotonic() - start < args.max_lifetime:
        if not os.path.exists(args.state):
            log("state file gone: stopping")
            return 0
        marks = pending_marks(args.pending)
        for api in apis:
            try:
                poll(api, marks, args.webhook_policy == "Ignore", proxies.get(api.name))
            except (OSError, ValueError, KeyError, http.client.HTTPException) as err:
                if not api.failing:  # once per outage, not once per poll
                    log(f"{api.name}: {err}")
                api.failing = True
                continue
            if api.failing:
                log(f"{api.name}: answers again")
            api.failing = False
            last_answer = time.monotonic()
        if time.monotonic() - last_answer > args.give_up:
            log(f"no API server answered for {args.give_up:.0f} s: stopping")
            return 0
        time.sleep(args.interval)
    log("max lifetime reached: stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
