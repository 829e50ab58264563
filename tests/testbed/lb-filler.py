"""LoadBalancer filler of the kwok test bed (started by clusters.sh up, inside the netns).

kwok fills no status.loadBalancer. Every poll this process lists the Services (and, unless told
to keep them, the admission webhook configurations) of every cluster over one kept-alive HTTPS
connection per API server, and
  * gives each LoadBalancer Service without an address the next free 127.0.<cluster>.<n> (n from 2)
    through the status subresource, ipMode VIP;
  * clears the address of a Service marked pending (a CLUSTER/NS/SVC line in the pending list, or
    the annotation meshfed.test/lb-pending: "true") and gives it none;
  * turns failurePolicy Fail of admission webhooks into Ignore (no webhook backend can answer on
    kwok), unless the configuration carries meshfed.test/keep-failure-policy: "true".
Bounded: stops when the state file is gone (clusters.sh down), when no API server answered for
--give-up seconds, or after --max-lifetime seconds. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import time

PENDING_ANNOTATION = "meshfed.test/lb-pending"
KEEP_POLICY_ANNOTATION = "meshfed.test/keep-failure-policy"
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


def open_webhooks(api: ApiServer, kind: str, configurations: list[dict]) -> None:
    """failurePolicy Fail -> Ignore, one JSON patch per configuration."""
    for config in configurations:
        meta = config["metadata"]
        if (meta.get("annotations") or {}).get(KEEP_POLICY_ANNOTATION) == "true":
            continue
        ops = [
            {"op": "replace", "path": f"/webhooks/{index}/failurePolicy", "value": "Ignore"}
            for index, hook in enumerate(config.get("webhooks") or [])
            if hook.get("failurePolicy") == "Fail"
        ]
        if ops:
            api.request("PATCH", f"{WEBHOOK_KINDS[kind]}/{meta['name']}", ops, "application/json-patch+json")
            log(f"{api.name}: {kind} {meta['name']} failurePolicy Fail -> Ignore")


def poll(api: ApiServer, marks: set[str], webhooks: bool) -> None:
    fill_services(api, api.request("GET", "/api/v1/services").get("items") or [], marks)
    if webhooks:
        for kind, path in WEBHOOK_KINDS.items():
            open_webhooks(api, kind, api.request("GET", path).get("items") or [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kwok-dir", required=True, help="kwokctl work dir (clusters/<name>/pki)")
    parser.add_argument("--clusters", type=int, required=True)
    parser.add_argument("--port-base", type=int, required=True, help="cluster<i> listens on port-base + i")
    parser.add_argument("--state", required=True, help="stop when this file is gone")
    parser.add_argument("--pending", required=True, help="file of CLUSTER/NS/SVC lines kept pending")
    parser.add_argument("--webhook-policy", choices=["Ignore", "keep"], default="Ignore")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--give-up", type=float, default=60.0)
    parser.add_argument("--max-lifetime", type=float, default=21600.0)
    args = parser.parse_args()

    apis = [
        ApiServer(f"cluster{i}", i, args.port_base + i, os.path.join(args.kwok_dir, "clusters", f"cluster{i}", "pki"), 5.0) for i in range(1, args.clusters + 1)
    ]
    start = last_answer = time.monotonic()
    log(f"lb-filler start pid={os.getpid()} lifetime={args.max_lifetime:.0f}s interval={args.interval}s webhook-failure-policy={args.webhook_policy}")
    while time.monotonic() - start < args.max_lifetime:
        if not os.path.exists(args.state):
            log("state file gone: stopping")
            return 0
        marks = pending_marks(args.pending)
        for api in apis:
            try:
                poll(api, marks, args.webhook_policy == "Ignore")
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
