#!/usr/bin/env bash
# The real istiod (pilot-discovery, the same istio.io/istio build as istioctl) as a local process
# for a cluster of the test bed, standing in for the istiod pod that kwok only simulates.
#
# Usage (after clusters.sh up and an istioctl install into the cluster):
#   istiod.sh start CLUSTER      start istiod for CLUSTER and wait (bounded) until /ready answers
#   istiod.sh stop CLUSTER       stop it (and its cacerts sync loop)
#   istiod.sh restart CLUSTER    stop, then start
#   istiod.sh stop-all           stop every istiod of this run dir (clusters.sh down calls it)
#   istiod.sh status             one line per started istiod: running or dead, pid, ports
#   istiod.sh logs CLUSTER       istiod's log
#   istiod.sh port CLUSTER KIND  a port of CLUSTER's istiod: http | grpc | secure-grpc | https | monitoring
#
# What a pod gets from Kubernetes and how the harness supplies it:
#   - the environment of the installed Deployment (CLUSTER_ID, REVISION, ISTIO_MULTIROOT_MESH...):
#     read from the Deployment's container (plain values); POD_NAME, POD_NAMESPACE and
#     SERVICE_ACCOUNT (fieldRefs there) are set by the harness;
#   - the API server: the cluster's context of the bed's kubeconfig (admin) instead of the
#     in-cluster service-account token;
#   - the cacerts secret volume (/etc/cacerts): a sync loop (every second, bounded lifetime)
#     mirrors the secret's keys into ./etc/cacerts of istiod's working directory, which is
#     where istiod reads them (ROOT_CA_DIR defaults to ./etc/cacerts); files are replaced
#     atomically, and removed when the secret is deleted, as the kubelet does for an optional
#     secret volume;
#   - the mesh config volume (/etc/istio/config/mesh): the `mesh` key of the `istio` ConfigMap
#     (or `istio-<revision>`), written once at start;
#   - ports: every listener on 127.0.0.1 of the bed's network namespace, per cluster
#     (base + 20*i: http 8080 +0, grpc 15010 +1, secure gRPC 15012 +2, https 15017 +3,
#     monitoring 15014 +4, ControlZ +5).
#
# Env: MESHFED_RUN, MESHFED_NETNS, MESHFED_CACHE as for clusters.sh;
#   MESHFED_ISTIOD_PORT_BASE (default 25000), MESHFED_ISTIOD_MAX_LIFETIME seconds (default 21600),
#   MESHFED_ISTIOD_READY_TIMEOUT seconds (default 90), MESHFED_ISTIOD_NAMESPACE (default istio-system).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
RUN="${MESHFED_RUN:-$HOME/.cache/meshfed/run}"
NS="${MESHFED_NETNS:-meshfed-tb}"
PORT_BASE="${MESHFED_ISTIOD_PORT_BASE:-25000}"
MAX_LIFETIME="${MESHFED_ISTIOD_MAX_LIFETIME:-21600}"
READY_TIMEOUT="${MESHFED_ISTIOD_READY_TIMEOUT:-90}"
ISTIO_NS="${MESHFED_ISTIOD_NAMESPACE:-istio-system}"
KCFG="$RUN/kubeconfig"
BASE_DIR="$RUN/istiod"

die() { echo "istiod.sh: $*" >&2; exit 1; }
say() { echo "istiod.sh: $*" >&2; }

need_bed() {
  [ "$(id -u)" = 0 ] || die "network namespaces need root: run as root"
  ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$NS" || die "netns $NS does not exist: run clusters.sh up first"
  [ -f "$KCFG" ] || die "no kubeconfig at $KCFG: run clusters.sh up first"
}
cluster_index() {
  [[ "${1:-}" =~ ^cluster([1-9])$ ]] || die "unknown cluster '${1:-}' (cluster1..cluster6)"
  echo "${BASH_REMATCH[1]}"
}
port_of() {  # CLUSTER KIND
  local i offset; i="$(cluster_index "$1")"
  case "$2" in
    http) offset=0 ;; grpc) offset=1 ;; secure-grpc) offset=2 ;; https) offset=3 ;; monitoring) offset=4 ;; ctrlz) offset=5 ;;
    *) die "unknown port kind '$2' (http, grpc, secure-grpc, https, monitoring, ctrlz)" ;;
  esac
  echo $((PORT_BASE + 20 * i + offset))
}
kc() { ip netns exec "$NS" "$KUBECTL" --kubeconfig "$KCFG" --request-timeout=5s "$@"; }
alive() { local pid="$1"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qF "$BASE_DIR/" "/proc/$pid/cmdline" 2>/dev/null; }
pid_of() { [ -f "$1" ] && tr -dc '0-9' <"$1" || true; }

load_bins() {
  KUBECTL="$("$HERE/testbin.sh" path kubectl)" || die "kubectl not built: run tests/testbed/testbin.sh"
  PILOT="$("$HERE/testbin.sh" path pilot-discovery)" || die "pilot-discovery not built: run tests/testbed/testbin.sh"
}

# One pass: mirror the cacerts secret into DIR (atomic per file; missing secret -> empty dir).
sync_once() {  # CLUSTER DIR
  local json error
  if json="$(kc --context "$1" -n "$ISTIO_NS" get secret cacerts -o json 2>"$2.err")"; then
    printf '%s' "$json" | python3 -c '
import base64, json, os, sys
target = sys.argv[1]
data = json.load(sys.stdin).get("data") or {}
for key, value in data.items():
    content, path = base64.b64decode(value), os.path.join(target, key)
    try:
        with open(path, "rb") as handle:
            if handle.read() == content:
                continue
    except FileNotFoundError:
        pass
    with open(path + ".tmp", "wb") as handle:
        handle.write(content)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)
for name in os.listdir(target):
    if name not in data:
        os.remove(os.path.join(target, name))
' "$2"
  else
    error="$(cat "$2.err")"
    # NotFound: the volume empties (optional secret); API not answering: keep what is there, like the kubelet
    case "$error" in *NotFound*) find "$2" -mindepth 1 -maxdepth 1 -type f -delete ;; esac
  fi
  rm -f "$2.err"
}

# The sync loop: runs until istiod's pid is gone or the lifetime ends.
sync_loop() {  # CLUSTER
  local dir="$BASE_DIR/$1" deadline=$(( $(date +%s) + MAX_LIFETIME )) pid
  load_bins
  pid="$(pid_of "$dir/istiod.pid")"
  while [ "$(date +%s)" -lt "$deadline" ] && alive "$pid"; do
    sync_once "$1" "$dir/etc/cacerts" || true
    sleep 1
  done
}

# The installed Deployment's environment (plain values) as NAME=VALUE lines, and its args.
deployment_env() {  # CLUSTER
  kc --context "$1" -n "$ISTIO_NS" get deployments -l app=istiod -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
if not items:
    sys.exit("no istiod Deployment (label app=istiod): run istioctl install into the cluster first")
spec = items[0]["spec"]["template"]["spec"]
container = spec["containers"][0]
skip = {"KUBECONFIG", "GOMAXPROCS", "GOMEMLIMIT"}
for entry in container.get("env") or []:
    if "value" in entry and entry["name"] not in skip:
        print("env\t%s=%s" % (entry["name"], entry["value"]))
print("env\tSERVICE_ACCOUNT=%s" % spec.get("serviceAccountName", "istiod"))
print("revision\t%s" % items[0]["metadata"].get("labels", {}).get("istio.io/rev", "default"))
for arg in container.get("args") or []:
    print("arg\t%s" % arg)
'
}

do_start() {  # CLUSTER
  local cluster="$1" dir pid line kind value mesh revision env=() args=() deadline
  need_bed; load_bins; cluster_index "$cluster" >/dev/null
  dir="$BASE_DIR/$cluster"
  pid="$(pid_of "$dir/istiod.pid")"
  if alive "$pid"; then say "$cluster: istiod already running (pid $pid)"; return 0; fi
  mkdir -p "$dir/etc/cacerts" "$dir/etc/istio/config"
  chmod 700 "$dir" "$dir/etc/cacerts"
  local described; described="$(deployment_env "$cluster")" || die "$cluster: cannot read the istiod Deployment in $ISTIO_NS"
  revision=default
  while IFS=$'\t' read -r kind value; do
    case "$kind" in env) env+=("$value") ;; arg) args+=("$value") ;; revision) revision="$value" ;; esac
  done <<<"$described"
  mesh="istio"; [ "$revision" = default ] || mesh="istio-$revision"
  kc --context "$cluster" -n "$ISTIO_NS" get configmap "$mesh" -o jsonpath='{.data.mesh}' >"$dir/etc/istio/config/mesh" \
    || die "$cluster: no ConfigMap $ISTIO_NS/$mesh (the mesh config istioctl installs)"
  ip netns exec "$NS" "$KUBECTL" --kubeconfig "$KCFG" config view --raw --minify --context "$cluster" >"$dir/kubeconfig"
  chmod 600 "$dir/kubeconfig"
  sync_once "$cluster" "$dir/etc/cacerts"
  (
    cd "$dir"
    exec ip netns exec "$NS" env "${env[@]}" POD_NAME="istiod-local-$cluster" POD_NAMESPACE="$ISTIO_NS" \
      timeout --signal=TERM --kill-after=10 "$MAX_LIFETIME" "$PILOT" "${args[@]}" \
      --kubeconfig "$dir/kubeconfig" --namespace "$ISTIO_NS" \
      --httpAddr "127.0.0.1:$(port_of "$cluster" http)" --grpcAddr "127.0.0.1:$(port_of "$cluster" grpc)" \
      --secureGRPCAddr "127.0.0.1:$(port_of "$cluster" secure-grpc)" --httpsAddr "127.0.0.1:$(port_of "$cluster" https)" \
      --monitoringAddr "127.0.0.1:$(port_of "$cluster" monitoring)" --ctrlz_address 127.0.0.1 --ctrlz_port "$(port_of "$cluster" ctrlz)"
  ) >"$dir/istiod.log" 2>&1 &
  echo $! >"$dir/istiod.pid"
  nohup "$SELF" _sync "$cluster" "$dir" >"$dir/sync.log" 2>&1 &
  echo $! >"$dir/sync.pid"
  deadline=$(( $(date +%s) + READY_TIMEOUT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if ip netns exec "$NS" python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$(port_of "$cluster" http)/ready" 2>/dev/null; then
      say "$cluster: istiod ready (pid $(pid_of "$dir/istiod.pid"), http $(port_of "$cluster" http), log $dir/istiod.log)"
      return 0
    fi
    alive "$(pid_of "$dir/istiod.pid")" || { tail -n 20 "$dir/istiod.log" >&2; die "$cluster: istiod exited (log $dir/istiod.log)"; }
    sleep 1
  done
  tail -n 20 "$dir/istiod.log" >&2
  die "$cluster: istiod not ready after ${READY_TIMEOUT}s (log $dir/istiod.log)"
}

stop_pid() {  # PIDFILE
  local pid i; pid="$(pid_of "$1")"
  if alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$1"
}

do_stop() {  # CLUSTER
  local dir="$BASE_DIR/$1"
  cluster_index "$1" >/dev/null
  stop_pid "$dir/istiod.pid"
  # istiod runs under timeout: make sure the child went with it
  local pid
  for pid in $(grep -lF "$dir/kubeconfig" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do kill "$pid" 2>/dev/null || true; done
  stop_pid "$dir/sync.pid"
}

do_stop_all() {
  local dir
  [ -d "$BASE_DIR" ] || return 0
  for dir in "$BASE_DIR"/cluster*; do [ -d "$dir" ] && do_stop "$(basename "$dir")"; done
  return 0
}

do_status() {
  local dir pid
  [ -d "$BASE_DIR" ] || { echo "no istiod started in $RUN"; return 0; }
  for dir in "$BASE_DIR"/cluster*; do
    [ -d "$dir" ] || continue
    pid="$(pid_of "$dir/istiod.pid")"
    if alive "$pid"; then echo "$(basename "$dir"): running pid $pid http $(port_of "$(basename "$dir")" http)"
    else echo "$(basename "$dir"): stopped"; fi
  done
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  start) do_start "${1:?usage: istiod.sh start CLUSTER}" ;;
  stop) do_stop "${1:?usage: istiod.sh stop CLUSTER}" ;;
  restart) do_stop "${1:?usage: istiod.sh restart CLUSTER}"; do_start "$1" ;;
  stop-all) do_stop_all ;;
  status) do_status ;;
  logs) cat "$BASE_DIR/${1:?usage: istiod.sh logs CLUSTER}/istiod.log" ;;
  port) port_of "${1:?usage: istiod.sh port CLUSTER KIND}" "${2:?usage: istiod.sh port CLUSTER KIND}" ;;
  _sync) sync_loop "$1" ;;
  -h|--help|help|"") sed -n '2,32p' "$SELF" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac
