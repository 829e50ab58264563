#!/usr/bin/env bash
# The real istiod (pilot-discovery, the istio.io/istio build of the installed release) as a local
# process for a cluster and revision of the test bed, standing in for the istiod pod that kwok only
# simulates.
#
# Usage (after clusters.sh up and an istioctl install into the cluster); REVISION defaults to
# `default` (the Deployment labelled istio.io/rev=default, i.e. installed without a revision):
#   istiod.sh start CLUSTER [REVISION]      start that revision's istiod, wait (bounded) until /ready
#                                           answers, then route the revision's injector webhooks to it
#   istiod.sh stop CLUSTER [REVISION]       stop it (and its cacerts sync loop); its webhooks fail open
#   istiod.sh restart CLUSTER [REVISION]    stop, then start
#   istiod.sh stop-all                      stop every istiod of this run dir (clusters.sh down calls it)
#   istiod.sh status                        one line per started istiod: running or stopped, pid, ports
#   istiod.sh logs CLUSTER [REVISION]       istiod's log
#   istiod.sh port CLUSTER KIND [REVISION]  a port: http | grpc | secure-grpc | https | monitoring | ctrlz
#
# The binary follows the Deployment's image tag: ISTIO_LABEL -> testbin.sh's pilot-discovery,
# ISTIO_OLD_LABEL -> pilot-discovery-old (versions.env); any other tag is an error.
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
#   - ports: every listener on 127.0.0.1 of the bed's network namespace, per cluster and slot
#     (base + 20*i + 6*slot: http 8080 +0, grpc 15010 +1, secure gRPC 15012 +2, https 15017 +3,
#     monitoring 15014 +4, ControlZ +5); the default revision has slot 0, other revisions get
#     slot 1 or 2 at their first start (kept until clusters.sh down);
#   - the istiod Service (istiod[-<rev>], its webhook port): a CLUSTER REVISION HTTPS-PORT line in
#     $MESHFED_RUN/istiod/routes, from which the bed's filler (lb-filler.py), the API servers' egress
#     proxy, connects the API server's calls to that Service (the injector and validation webhooks)
#     to this istiod's https listener; for a remote cluster, to its primary's istiod.
#
# Env: MESHFED_RUN, MESHFED_NETNS, MESHFED_CACHE as for clusters.sh;
#   MESHFED_ISTIOD_PORT_BASE (default 25000), MESHFED_ISTIOD_MAX_LIFETIME seconds (default 21600),
#   MESHFED_ISTIOD_READY_TIMEOUT seconds (default 90), MESHFED_ISTIOD_NAMESPACE (default istio-system).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
# shellcheck source=versions.env
. "$HERE/versions.env"
RUN="${MESHFED_RUN:-$HOME/.cache/meshfed/run}"
NS="${MESHFED_NETNS:-meshfed-tb}"
PORT_BASE="${MESHFED_ISTIOD_PORT_BASE:-25000}"
MAX_LIFETIME="${MESHFED_ISTIOD_MAX_LIFETIME:-21600}"
READY_TIMEOUT="${MESHFED_ISTIOD_READY_TIMEOUT:-90}"
ISTIO_NS="${MESHFED_ISTIOD_NAMESPACE:-istio-system}"
KCFG="$RUN/kubeconfig"
BASE_DIR="$RUN/istiod"
SLOTS="$BASE_DIR/slots"     # CLUSTER REVISION SLOT lines
ROUTES="$BASE_DIR/routes"   # CLUSTER REVISION HTTPS-PORT lines (read by lb-filler.py)
SLOTS_PER_CLUSTER=3         # 20 ports per cluster, 6 per slot

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
check_revision() {
  [[ "$1" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "bad revision '$1' (a DNS-1123 label, e.g. default or 1-31)"
}
# Working directory of an istiod: the default revision keeps the plain cluster name.
dir_of() { if [ "$2" = default ]; then echo "$BASE_DIR/$1"; else echo "$BASE_DIR/$1@$2"; fi; }
slot_of() {  # CLUSTER REVISION [allocate]: the revision's port slot on that cluster
  local slot
  [ "$2" = default ] && { echo 0; return 0; }
  slot="$(awk -v c="$1" -v r="$2" '$1 == c && $2 == r {print $3}' "$SLOTS" 2>/dev/null | head -n1)"
  if [ -z "$slot" ]; then
    [ "${3:-}" = allocate ] || die "$1: no istiod of revision '$2' was started (its ports are given at its first start)"
    for slot in $(seq 1 $((SLOTS_PER_CLUSTER - 1))); do
      awk -v c="$1" -v s="$slot" '$1 == c && $3 == s {found = 1} END {exit !found}' "$SLOTS" 2>/dev/null || break
    done
    awk -v c="$1" -v s="$slot" '$1 == c && $3 == s {found = 1} END {exit !found}' "$SLOTS" 2>/dev/null \
      && die "$1: no port slot left for revision '$2' (at most $SLOTS_PER_CLUSTER revisions per cluster, default included)"
    mkdir -p "$BASE_DIR"; echo "$1 $2 $slot" >>"$SLOTS"
  fi
  echo "$slot"
}
port_of() {  # CLUSTER KIND [REVISION]
  local i offset slot; i="$(cluster_index "$1")"
  case "$2" in
    http) offset=0 ;; grpc) offset=1 ;; secure-grpc) offset=2 ;; https) offset=3 ;; monitoring) offset=4 ;; ctrlz) offset=5 ;;
    *) die "unknown port kind '$2' (http, grpc, secure-grpc, https, monitoring, ctrlz)" ;;
  esac
  slot="$(slot_of "$1" "${3:-default}")"
  echo $((PORT_BASE + 20 * i + 6 * slot + offset))
}
kc() { ip netns exec "$NS" "$KUBECTL" --kubeconfig "$KCFG" --request-timeout=5s "$@"; }
alive() { local pid="$1"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qF "$BASE_DIR/" "/proc/$pid/cmdline" 2>/dev/null; }
pid_of() { [ -f "$1" ] && tr -dc '0-9' <"$1" || true; }

load_bins() {
  KUBECTL="$("$HERE/testbin.sh" path kubectl)" || die "kubectl not built: run tests/testbed/testbin.sh"
}
pilot_for_tag() {  # IMAGE-TAG -> the pilot-discovery of that release
  local name
  if [ "$1" = "$ISTIO_LABEL" ]; then name=pilot-discovery
  elif [ -n "${ISTIO_OLD_LABEL:-}" ] && [ "$1" = "$ISTIO_OLD_LABEL" ]; then name=pilot-discovery-old
  else die "the istiod Deployment's image tag '$1' is neither ISTIO_LABEL ($ISTIO_LABEL) nor ISTIO_OLD_LABEL (${ISTIO_OLD_LABEL:-unset}) of versions.env: no local build of that release"
  fi
  "$HERE/testbin.sh" path "$name" || die "$name not built: run tests/testbed/testbin.sh"
}

# The routes file changed under a lock (istiod.sh may run in parallel for several clusters).
edit_lines() {  # FILE add|remove LINE KEY: add LINE in place of the lines starting with KEY; remove them
  python3 - "$@" <<'PYEOF'
import fcntl, sys
path, action, line = sys.argv[1:4]
key = sys.argv[4] if len(sys.argv) > 4 else line
with open(path, "a+", encoding="utf-8") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    lines = handle.read().splitlines()
    kept = [old for old in lines if not (old + " ").startswith(key + " ")]
    wanted = kept + [line] if action == "add" and line not in lines else lines if action == "add" else kept
    if wanted != lines:
        handle.seek(0)
        handle.truncate()
        handle.write("".join(entry + "\n" for entry in wanted))
PYEOF
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
sync_loop() {  # CLUSTER DIR
  local dir="$2" deadline=$(( $(date +%s) + MAX_LIFETIME )) pid
  load_bins
  pid="$(pid_of "$dir/istiod.pid")"
  while [ "$(date +%s)" -lt "$deadline" ] && alive "$pid"; do
    sync_once "$1" "$dir/etc/cacerts" || true
    sleep 1
  done
}

# The installed Deployment's environment (plain values) as NAME=VALUE lines, its args and image tag.
deployment_env() {  # CLUSTER REVISION
  kc --context "$1" -n "$ISTIO_NS" get deployments -l "app=istiod,istio.io/rev=$2" -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
if not items:
    sys.exit("no istiod Deployment of revision %s (labels app=istiod, istio.io/rev=%s): install it first" % (sys.argv[1], sys.argv[1]))
spec = items[0]["spec"]["template"]["spec"]
container = spec["containers"][0]
image = container.get("image") or ""
print("tag\t%s" % (image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""))
skip = {"KUBECONFIG", "GOMAXPROCS", "GOMEMLIMIT"}
for entry in container.get("env") or []:
    if "value" in entry and entry["name"] not in skip:
        print("env\t%s=%s" % (entry["name"], entry["value"]))
print("env\tSERVICE_ACCOUNT=%s" % spec.get("serviceAccountName", "istiod"))
for arg in container.get("args") or []:
    print("arg\t%s" % arg)
' "$2"
}

do_start() {  # CLUSTER REVISION
  local cluster="$1" revision="$2" dir pid kind value mesh tag pilot env=() args=() deadline
  need_bed; load_bins; cluster_index "$cluster" >/dev/null; check_revision "$revision"
  dir="$(dir_of "$cluster" "$revision")"
  pid="$(pid_of "$dir/istiod.pid")"
  if alive "$pid"; then say "$cluster: istiod $revision already running (pid $pid)"; return 0; fi
  local described; described="$(deployment_env "$cluster" "$revision")" || die "$cluster: cannot read the istiod Deployment of revision $revision in $ISTIO_NS"
  while IFS=$'\t' read -r kind value; do
    case "$kind" in env) env+=("$value") ;; arg) args+=("$value") ;; tag) tag="$value" ;; esac
  done <<<"$described"
  pilot="$(pilot_for_tag "${tag:-}")" || exit 1
  mkdir -p "$dir/etc/cacerts" "$dir/etc/istio/config"
  chmod 700 "$dir" "$dir/etc/cacerts"
  mesh="istio"; [ "$revision" = default ] || mesh="istio-$revision"
  kc --context "$cluster" -n "$ISTIO_NS" get configmap "$mesh" -o jsonpath='{.data.mesh}' >"$dir/etc/istio/config/mesh" \
    || die "$cluster: no ConfigMap $ISTIO_NS/$mesh (the mesh config istioctl installs)"
  ip netns exec "$NS" "$KUBECTL" --kubeconfig "$KCFG" config view --raw --minify --context "$cluster" >"$dir/kubeconfig"
  chmod 600 "$dir/kubeconfig"
  sync_once "$cluster" "$dir/etc/cacerts"
  local slot; slot="$(slot_of "$cluster" "$revision" allocate)"
  p() { port_of "$cluster" "$1" "$revision"; }
  (
    cd "$dir"
    exec ip netns exec "$NS" env "${env[@]}" POD_NAME="istiod-local-$cluster-$revision" POD_NAMESPACE="$ISTIO_NS" \
      timeout --signal=TERM --kill-after=10 "$MAX_LIFETIME" "$pilot" "${args[@]}" \
      --kubeconfig "$dir/kubeconfig" --namespace "$ISTIO_NS" \
      --httpAddr "127.0.0.1:$(p http)" --grpcAddr "127.0.0.1:$(p grpc)" \
      --secureGRPCAddr "127.0.0.1:$(p secure-grpc)" --httpsAddr "127.0.0.1:$(p https)" \
      --monitoringAddr "127.0.0.1:$(p monitoring)" --ctrlz_address 127.0.0.1 --ctrlz_port "$(p ctrlz)"
  ) >"$dir/istiod.log" 2>&1 &
  echo $! >"$dir/istiod.pid"
  nohup "$SELF" _sync "$cluster" "$dir" >"$dir/sync.log" 2>&1 &
  echo $! >"$dir/sync.pid"
  deadline=$(( $(date +%s) + READY_TIMEOUT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if ip netns exec "$NS" python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$(p http)/ready" 2>/dev/null; then
      edit_lines "$ROUTES" add "$cluster $revision $(p https)" "$cluster $revision"
      say "$cluster: istiod $revision ($tag) ready (pid $(pid_of "$dir/istiod.pid"), http $(p http), https $(p https), log $dir/istiod.log)"
      return 0
    fi
    alive "$(pid_of "$dir/istiod.pid")" || { tail -n 20 "$dir/istiod.log" >&2; die "$cluster: istiod $revision exited (log $dir/istiod.log)"; }
    sleep 1
  done
  tail -n 20 "$dir/istiod.log" >&2
  die "$cluster: istiod $revision not ready after ${READY_TIMEOUT}s (log $dir/istiod.log)"
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

do_stop() {  # CLUSTER REVISION
  local dir; dir="$(dir_of "$1" "$2")"
  cluster_index "$1" >/dev/null; check_revision "$2"
  [ -f "$ROUTES" ] && edit_lines "$ROUTES" remove "" "$1 $2"
  stop_pid "$dir/istiod.pid"
  # istiod runs under timeout: make sure the child went with it
  local pid
  for pid in $(grep -lF "$dir/kubeconfig" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do kill "$pid" 2>/dev/null || true; done
  stop_pid "$dir/sync.pid"
}

# CLUSTER REVISION of every istiod directory
started() {
  local dir name
  for dir in "$BASE_DIR"/cluster*; do
    [ -d "$dir" ] || continue
    name="$(basename "$dir")"
    case "$name" in *@*) echo "${name%%@*} ${name#*@}" ;; *) echo "$name default" ;; esac
  done
}

do_stop_all() {
  local cluster revision
  [ -d "$BASE_DIR" ] || return 0
  while read -r cluster revision; do do_stop "$cluster" "$revision"; done < <(started)
  return 0
}

do_status() {
  local cluster revision pid
  [ -d "$BASE_DIR" ] || { echo "no istiod started in $RUN"; return 0; }
  while read -r cluster revision; do
    pid="$(pid_of "$(dir_of "$cluster" "$revision")/istiod.pid")"
    if alive "$pid"; then
      echo "$cluster $revision: running pid $pid http $(port_of "$cluster" http "$revision") https $(port_of "$cluster" https "$revision")"
    else echo "$cluster $revision: stopped"; fi
  done < <(started)
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  start) do_start "${1:?usage: istiod.sh start CLUSTER [REVISION]}" "${2:-default}" ;;
  stop) do_stop "${1:?usage: istiod.sh stop CLUSTER [REVISION]}" "${2:-default}" ;;
  restart) do_stop "${1:?usage: istiod.sh restart CLUSTER [REVISION]}" "${2:-default}"; do_start "$1" "${2:-default}" ;;
  stop-all) do_stop_all ;;
  status) do_status ;;
  logs) cat "$(dir_of "${1:?usage: istiod.sh logs CLUSTER [REVISION]}" "${2:-default}")/istiod.log" ;;
  port) port_of "${1:?usage: istiod.sh port CLUSTER KIND [REVISION]}" "${2:?usage: istiod.sh port CLUSTER KIND [REVISION]}" "${3:-default}" ;;
  _sync) sync_loop "$1" "$2" ;;
  -h|--help|help|"") sed -n '2,44p' "$SELF" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac
