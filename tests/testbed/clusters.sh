#!/usr/bin/env bash
# Real-cluster test bed: N kwok clusters (real etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler as local processes + kwok-simulated nodes) inside a network namespace that
# has only `lo`. Nothing is downloaded: binaries come from tests/testbed/testbin.sh.
#
# Usage:
#   clusters.sh up [N]                 start N clusters (default 2, max 6): cluster1..clusterN
#   clusters.sh down                   delete everything the harness started (always safe)
#   clusters.sh status                 health of every cluster component; non-zero if one is down
#   clusters.sh exec -- CMD...         run CMD inside the netns with KUBECONFIG and PATH set
#   clusters.sh lb-pending C/NS/SVC    keep that LoadBalancer Service pending (clears its address)
#   clusters.sh lb-ready C/NS/SVC      undo lb-pending
#   clusters.sh env                    print the variables (KUBECONFIG, inventory, netns...)
#
# Env:
#   MESHFED_CACHE   binary cache (default ~/.cache/meshfed)
#   MESHFED_RUN     run dir: kubeconfig, inventory.yml, kwok work dir, logs (default ~/.cache/meshfed/run)
#   MESHFED_NETNS   network namespace name (default meshfed-tb)
#   MESHFED_REMOTE  1: the last cluster goes to group istio_remote (meshfed_primary: cluster1)
#   MESHFED_APISERVER_PORT_BASE  cluster i listens on 127.0.0.1:(base+i) (default 32440)
#   MESHFED_LB_MAX_LIFETIME      seconds the LoadBalancer filler lives at most (default 21600)
#   MESHFED_WEBHOOK_FAILURE_POLICY  Ignore (default): the filler turns failurePolicy Fail of every
#                  admission webhook into Ignore (no webhook backend can run on kwok); keep: leave them
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
# shellcheck source=versions.env
. "$HERE/versions.env"

CACHE="${MESHFED_CACHE:-$HOME/.cache/meshfed}"
RUN="${MESHFED_RUN:-$HOME/.cache/meshfed/run}"
NS="${MESHFED_NETNS:-meshfed-tb}"
PORT_BASE="${MESHFED_APISERVER_PORT_BASE:-32440}"
LB_MAX_LIFETIME="${MESHFED_LB_MAX_LIFETIME:-21600}"
WEBHOOK_POLICY="${MESHFED_WEBHOOK_FAILURE_POLICY:-Ignore}"   # Ignore | keep
MAX_CLUSTERS=6

KWOK_DIR="$RUN/kwok"                # KWOK_WORKDIR
KCFG="$RUN/kubeconfig"
INVENTORY="$RUN/inventory.yml"
STATE="$RUN/state"                  # "clusters=N" "netns=NAME" lines
LB_PID="$RUN/lb-filler.pid"
LB_LOG="$RUN/logs/lb-filler.log"
LB_PENDING="$RUN/lb-pending.list"   # lines CLUSTER/NS/SVC
ISTIOD_ROUTES="$RUN/istiod/routes"  # CLUSTER REVISION HTTPS-PORT lines, kept by istiod.sh
EGRESS_DIR="$RUN/egress"            # <cluster>.sock: the filler's HTTP CONNECT proxy for that API server

die() { echo "clusters: ERROR: $*" >&2; exit 1; }
say() { echo "clusters: $*" >&2; }

binpath() { "$HERE/testbin.sh" path "$1" 2>/dev/null || true; }
load_bins() {
  KUBE_APISERVER="$(binpath kube-apiserver)"; KCM="$(binpath kube-controller-manager)"
  KSCHED="$(binpath kube-scheduler)"; KUBECTL="$(binpath kubectl)"; ETCD="$(binpath etcd)"
  KWOK="$(binpath kwok)"; KWOKCTL="$(binpath kwokctl)"; ISTIOCTL="$(binpath istioctl)"
  local b missing=""
  for b in KUBE_APISERVER:kube-apiserver KCM:kube-controller-manager KSCHED:kube-scheduler KUBECTL:kubectl \
      ETCD:etcd KWOK:kwok KWOKCTL:kwokctl; do
    local var="${b%%:*}"
    [ -n "${!var}" ] || missing="$missing ${b#*:}"
  done
  [ -z "$missing" ] || die "missing binaries:$missing — build them with: tests/testbed/testbin.sh (see '$HERE/testbin.sh check')"
}

need_root() {
  [ "$(id -u)" = 0 ] || die "network namespaces need root (CAP_SYS_ADMIN): run as root (ip netns add/exec)"
  command -v ip >/dev/null || die "'ip' (iproute2) not found"
}
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$NS"; }
nsx() { ip netns exec "$NS" "$@"; }

state_get() { [ -f "$STATE" ] && sed -n "s/^$1=//p" "$STATE" | head -n1; }
cluster_names() { local n; n="$(state_get clusters)"; [ -n "$n" ] && seq -f 'cluster%g' 1 "$n"; return 0; }

# kwokctl runs `kubectl` found on PATH (not its kubectlBinary setting): put ours first.
kwok_env() {
  if [ -n "${KUBECTL:-}" ]; then echo env KWOK_WORKDIR="$KWOK_DIR" KWOK_KUBECTL_BINARY="$KUBECTL" PATH="$(dirname "$KUBECTL"):$PATH"
  else echo env KWOK_WORKDIR="$KWOK_DIR"; fi
}
# kubectl inside the netns with a short per-request timeout.
kc() { nsx env KUBECONFIG="$KCFG" "$KUBECTL" --request-timeout=5s "$@"; }

cluster_pids() { # cluster_pids NAME -> "component pid" lines recorded by kwokctl
  local d="$KWOK_DIR/clusters/$1/pids" f
  [ -d "$d" ] || return 0
  for f in "$d"/*.pid; do [ -f "$f" ] && echo "$(basename "$f" .pid) $(tr -dc '0-9' <"$f")"; done
  return 0
}

alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# This process and its ancestors: `down` may run inside the netns (molecule's destroy does), and
# must not kill the tools that called it.
ancestors() {
  local pid=$$ list=""
  while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
    list="$list|$pid"
    pid="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $2}')"
  done
  echo "${list#|}"
}

# ---------------------------------------------------------------------------------------- down
do_down() {
  local quiet="${1:-}" name pid comp
  need_root
  set +e   # down always runs to the end: one failing step must not leave the rest behind
  [ -n "$quiet" ] || say "tearing down (netns $NS, run dir $RUN)"
  # 0. Local istiods (istiod.sh) and their cacerts copies (key material).
  if [ -d "$RUN/istiod" ]; then
    MESHFED_RUN="$RUN" MESHFED_NETNS="$NS" "$HERE/istiod.sh" stop-all
    rm -rf "$RUN/istiod"
  fi
  # 1. LoadBalancer filler.
  if [ -f "$LB_PID" ]; then
    pid="$(tr -dc '0-9' <"$LB_PID")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "lb-filler" "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$LB_PID"
  fi
  rm -f "$STATE"   # the filler also stops by itself when the state file is gone
  # 2. Clusters via kwokctl (only when the binary and the netns are there).
  if [ -d "$KWOK_DIR/clusters" ]; then
    local pids=""
    for name in $(ls "$KWOK_DIR/clusters" 2>/dev/null); do
      # keep the component logs of the last run for debugging
      rm -rf "$RUN/logs/last-$name"; cp -r "$KWOK_DIR/clusters/$name/logs" "$RUN/logs/last-$name" 2>/dev/null || true
      # only pids whose command line is a binary of this run dir (pid files can outlive a reboot)
      while read -r comp pid; do
        [ -n "$pid" ] && grep -qF "$KWOK_DIR/" "/proc/$pid/cmdline" 2>/dev/null && pids="$pids $pid"
      done < <(cluster_pids "$name")
      if [ -n "${KWOKCTL:-}" ] && [ -x "$KWOKCTL" ] && ns_exists; then
        timeout 60 ip netns exec "$NS" $(kwok_env) "$KWOKCTL" delete cluster --name "$name" \
          >>"$RUN/logs/kwokctl-delete.log" 2>&1 || say "kwokctl delete cluster $name failed (see $RUN/logs/kwokctl-delete.log); killing its processes"
      fi
    done
    # 3. Processes kwokctl recorded that are still alive (only those: pids from our run dir).
    # Bounded: TERM, up to 5 s grace, then KILL. A zombie (exited, not yet reaped by init) holds
    # no port or file and counts as gone.
    for pid in $pids; do alive "$pid" && kill "$pid" 2>/dev/null || true; done
    local k left
    for k in $(seq 1 50); do
      left=""; for pid in $pids; do alive "$pid" && left="$left $pid"; done
      [ -n "$left" ] || break
      [ "$k" = 50 ] && kill -9 $left 2>/dev/null || true
      sleep 0.1
    done
    rm -rf "$KWOK_DIR/clusters"
  fi
  # 4. Anything still running inside our netns was started by this harness.
  if ns_exists; then
    local left i
    for i in 1 2 3 4 5 6 7 8 9 10; do
      left="$(ip netns pids "$NS" 2>/dev/null | { grep -vxE "$(ancestors)" || true; } | tr '\n' ' ')"
      [ -n "${left// /}" ] || break
      if [ "$i" -lt 6 ]; then kill $left 2>/dev/null || true; else kill -9 $left 2>/dev/null || true; fi
      sleep 0.5
    done
    ip netns delete "$NS" 2>/dev/null || say "could not delete netns $NS"
  fi
  rm -rf "$EGRESS_DIR"
  rm -f "$KCFG" "$INVENTORY" "$LB_PENDING"
  [ -n "$quiet" ] || say "down: netns $NS removed, clusters deleted, no harness process left"
}

# ---------------------------------------------------------------------------------------- up
write_kwok_config() {
  mkdir -p "$KWOK_DIR"
  # Loaded automatically by kwokctl from $KWOK_WORKDIR/kwok.yaml: bind every component to loopback,
  # never pull anything, know the Kubernetes version of our binaries (flags/etcd mapping).
  cat >"$KWOK_DIR/kwok.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: "$K8S_VERSION"
  bindAddress: 127.0.0.1
  quietPull: true
  kubeApiserverBinary: "$KUBE_APISERVER"
  kubeControllerManagerBinary: "$KCM"
  kubeSchedulerBinary: "$KSCHED"
  kubectlBinary: "$KUBECTL"
  etcdBinary: "$ETCD"
  kwokControllerBinary: "$KWOK"
EOF
}

# The API server's traffic to Services of its cluster (webhooks given by clientConfig.service) goes
# through an HTTP CONNECT proxy on a unix socket: the filler (lb-filler.py) serves it, and connects a
# Service of a locally running istiod (istiod.sh) to that istiod's https listener; anything else it
# refuses, as the ClusterIP would have been unreachable. Prints the file's path.
write_egress_config() {  # CLUSTER
  local file="$KWOK_DIR/egress-$1.yaml"
  mkdir -p "$EGRESS_DIR"
  cat >"$file" <<EOF
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: $EGRESS_DIR/$1.sock
EOF
  echo "$file"
}

node_manifest() {
  cat <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    beta.kubernetes.io/arch: amd64
    beta.kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
spec: {}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "250"}
  capacity: {cpu: "32", memory: 256Gi, pods: "250"}
  nodeInfo:
    architecture: amd64
    kubeProxyVersion: fake
    kubeletVersion: fake
    operatingSystem: linux
  phase: Running
EOF
}

write_kubeconfig() {
  local tmp="$KCFG.tmp" name port pki
  rm -f "$tmp"
  for name in $(cluster_names); do
    port=$((PORT_BASE + ${name#cluster}))
    pki="$KWOK_DIR/clusters/$name/pki"
    [ -f "$pki/ca.crt" ] && [ -f "$pki/admin.crt" ] && [ -f "$pki/admin.key" ] || die "kwokctl left no pki in $pki"
    KUBECONFIG="$tmp" "$KUBECTL" config set-cluster "$name" --server="https://127.0.0.1:$port" \
      --certificate-authority="$pki/ca.crt" --embed-certs=true >/dev/null
    KUBECONFIG="$tmp" "$KUBECTL" config set-credentials "$name" --client-certificate="$pki/admin.crt" \
      --client-key="$pki/admin.key" --embed-certs=true >/dev/null
    KUBECONFIG="$tmp" "$KUBECTL" config set-context "$name" --cluster="$name" --user="$name" >/dev/null
  done
  KUBECONFIG="$tmp" "$KUBECTL" config use-context cluster1 >/dev/null
  chmod 600 "$tmp"; mv -f "$tmp" "$KCFG"
}

write_inventory() {
  local n="$1" remote="${MESHFED_REMOTE:-0}" i name net tmp="$INVENTORY.tmp"
  host_block() {
    local name="$1" i="$2"
    net="network$(( (i - 1) % 2 + 1 ))"
    cat <<EOF
        $name:
          ansible_connection: local
          ansible_python_interpreter: "{{ ansible_playbook_python }}"
          meshfed_kubeconfig: $KCFG
          meshfed_context: $name
          meshfed_network: $net
EOF
  }
  {
    echo "# Generated by tests/testbed/clusters.sh up — do not edit; recreated on every up."
    echo "all:"
    echo "  vars:"
    echo "    meshfed_mesh_id: mesh1"
    echo "  children:"
    echo "    istio_primary:"
    echo "      hosts:"
    local last="$n"; [ "$remote" = 1 ] && [ "$n" -gt 1 ] && last=$((n - 1))
    for i in $(seq 1 "$last"); do host_block "cluster$i" "$i"; done
    if [ "$last" != "$n" ]; then
      echo "    istio_remote:"
      echo "      hosts:"
      host_block "cluster$n" "$n"
      echo "          meshfed_primary: cluster1"
    fi
  } >"$tmp"
  mv -f "$tmp" "$INVENTORY"
}

wait_ready() { # NAME PORT: bounded (60 x 1 s) wait for /readyz with the cluster's own kubeconfig
  local i
  for i in $(seq 1 60); do
    nsx "$KUBECTL" --kubeconfig "$KWOK_DIR/clusters/$1/kubeconfig.yaml" --request-timeout=3s get --raw /readyz >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

port_free_in_ns() { ! nsx ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

start_lb_filler() {
  mkdir -p "$RUN/logs"
  ip netns exec "$NS" setsid nohup bash "$SELF" _lb-filler >>"$LB_LOG" 2>&1 </dev/null &
  echo $! >"$LB_PID"
}

do_up() {
  local n="${1:-2}" t0 name port i
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$MAX_CLUSTERS" ] || die "N must be 1..$MAX_CLUSTERS (got '$n')"
  [[ "$PORT_BASE" =~ ^[0-9]+$ ]] && [ "$PORT_BASE" -ge 1024 ] && [ $((PORT_BASE + n)) -le 65535 ] || \
    die "MESHFED_APISERVER_PORT_BASE=$PORT_BASE: cluster ports base+1..base+$n must lie in 1025..65535"
  need_root
  load_bins
  t0=$(date +%s)
  if [ -f "$STATE" ]; then
    if ns_exists && do_status >/dev/null 2>&1; then
      say "already up: $(state_get clusters) cluster(s) in netns $NS — nothing to do (kubeconfig: $KCFG)"
      [ "$(state_get clusters)" = "$n" ] || say "note: $n requested but $(state_get clusters) running; run 'down' first to change the count"
      return 0
    fi
    die "a previous test bed in $RUN is broken (see '$SELF status'); run '$SELF down' first"
  fi
  if ns_exists; then
    die "netns $NS already exists but no test bed is recorded in $RUN (another run? MESHFED_RUN differs?). Run '$SELF down' with the same MESHFED_RUN, or 'ip netns delete $NS' if it is a leftover"
  fi
  mkdir -p "$RUN/logs"
  # From here on any failure (die, set -e, Ctrl-C) tears down what was started.
  UP_DONE=0
  trap 'rc=$?; if [ "$UP_DONE" != 1 ]; then say "up failed (exit $rc); tearing down what was started"; do_down quiet || true; fi' EXIT
  trap 'exit 130' INT TERM
  ip netns add "$NS" 2>"$RUN/logs/netns.err" || die "cannot create netns $NS: $(cat "$RUN/logs/netns.err") (needs root and a writable /run/netns)"
  nsx ip link set lo up
  if nsx ip -o link show | awk -F': ' '{print $2}' | grep -vqx lo; then die "netns $NS has interfaces other than lo"; fi
  printf 'clusters=%s\nnetns=%s\nremote=%s\nstarted=%s\n' "$n" "$NS" "${MESHFED_REMOTE:-0}" "$(date -u +%FT%TZ)" >"$STATE.tmp"
  write_kwok_config
  for i in $(seq 1 "$n"); do
    name="cluster$i"; port=$((PORT_BASE + i))
    port_free_in_ns "$port" || die "port 127.0.0.1:$port is in use inside netns $NS (set MESHFED_APISERVER_PORT_BASE)"
    say "creating $name (kube-apiserver https://127.0.0.1:$port)"
    if ! nsx $(kwok_env) timeout 300 "$KWOKCTL" create cluster --name "$name" --runtime binary \
        --kube-apiserver-port "$port" \
        --kube-apiserver-binary "$KUBE_APISERVER" --kube-controller-manager-binary "$KCM" \
        --kube-scheduler-binary "$KSCHED" --etcd-binary "$ETCD" --kwok-controller-binary "$KWOK" \
        --extra-args kube-apiserver=advertise-address=127.0.0.1 \
        --extra-args "kube-apiserver=egress-selector-config-file=$(write_egress_config "$name")" \
        --wait 90s --timeout 180s >"$RUN/logs/kwokctl-create-$name.log" 2>&1; then
      tail -n 20 "$RUN/logs/kwokctl-create-$name.log" >&2
      die "kwokctl create cluster $name failed (log: $RUN/logs/kwokctl-create-$name.log; component logs: $RUN/logs/last-$name/)"
    fi
    # kwokctl may exit 0 although the cluster never became ready: check /readyz ourselves.
    wait_ready "$name" "$port" || die "kube-apiserver of $name is not ready on https://127.0.0.1:$port (component logs: $RUN/logs/last-$name/, kwokctl log: $RUN/logs/kwokctl-create-$name.log)"
  done
  mv -f "$STATE.tmp" "$STATE"
  write_kubeconfig
  for name in $(cluster_names); do
    node_manifest | kc --context "$name" apply -f - >/dev/null || die "cannot create the kwok node in $name"
  done
  write_inventory "$n"
  start_lb_filler
  UP_DONE=1
  trap - EXIT INT TERM
  say "up: $n cluster(s) in $(( $(date +%s) - t0 ))s"
  echo "kubeconfig: $KCFG"
  echo "inventory:  $INVENTORY"
  echo "netns:      $NS   (run tools with: $SELF exec -- CMD...)"
}

# ---------------------------------------------------------------------------------------- status
do_status() {
  need_root
  load_bins
  local rc=0 name comp pid line
  [ -f "$STATE" ] || { echo "no test bed recorded in $RUN (not up)"; return 3; }
  ns_exists || { echo "netns $NS: MISSING"; return 1; }
  echo "netns $NS: ok (interfaces: $(nsx ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' '))"
  for name in $(cluster_names); do
    line="$name:"
    local seen=0
    while read -r comp pid; do
      [ -n "$comp" ] || continue
      seen=1
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then line="$line $comp=up($pid)"
      else line="$line $comp=DOWN"; rc=1; echo "$name: component $comp is not running (pid ${pid:-?}; logs: $KWOK_DIR/clusters/$name/logs/$comp.log)" >&2; fi
    done < <(cluster_pids "$name")
    [ "$seen" = 1 ] || { line="$line NO-PIDS"; rc=1; }
    if kc --context "$name" get --raw /readyz >/dev/null 2>&1; then line="$line readyz=ok"
    else line="$line readyz=FAIL"; rc=1; echo "$name: kube-apiserver /readyz failed on https://127.0.0.1:$((PORT_BASE + ${name#cluster}))" >&2; fi
    echo "$line"
  done
  pid="$(tr -dc '0-9' <"$LB_PID" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "lb-filler: up($pid)"
  else echo "lb-filler: DOWN (log: $LB_LOG)"; rc=1; fi
  return "$rc"
}

# ---------------------------------------------------------------------------------------- LB filler
lb_filler() {
  # Runs inside the netns: tests/testbed/lb-filler.py (standard-library Python, one kept-alive
  # HTTPS connection per API server, a poll every 0.5 s). Bounded: stops when the state file
  # disappears (down), when no API server answered for 60 s, or after LB_MAX_LIFETIME seconds.
  exec python3 "$HERE/lb-filler.py" --kwok-dir "$KWOK_DIR" --clusters "$(state_get clusters)" \
    --port-base "$PORT_BASE" --state "$STATE" --pending "$LB_PENDING" \
    --webhook-policy "$WEBHOOK_POLICY" --max-lifetime "$LB_MAX_LIFETIME" \
    --routes "$ISTIOD_ROUTES" --egress-dir "$EGRESS_DIR" $(remote_of_args)
}

# The remote and its primary, as write_inventory puts them (MESHFED_REMOTE=1: the last cluster, cluster1).
remote_of_args() {
  local n; n="$(state_get clusters)"
  [ "$(state_get remote)" = 1 ] && [ "$n" -gt 1 ] && echo "--remote-of cluster$n=cluster1"
  return 0
}

do_lb_mark() { # pending|ready C/NS/SVC
  local what="$1" ref="${2:-}" c ns svc
  IFS=/ read -r c ns svc <<<"$ref"
  [ -n "$c" ] && [ -n "$ns" ] && [ -n "$svc" ] || die "usage: $SELF lb-$what CLUSTER/NAMESPACE/SERVICE"
  mkdir -p "$RUN"
  touch "$LB_PENDING"
  if [ "$what" = pending ]; then
    grep -qxF "$c/$ns/$svc" "$LB_PENDING" || echo "$c/$ns/$svc" >>"$LB_PENDING"
    say "$c/$ns/$svc stays pending (the filler clears any address it has within ~1 s)"
  else
    grep -vxF "$c/$ns/$svc" "$LB_PENDING" >"$LB_PENDING.tmp" || true; mv -f "$LB_PENDING.tmp" "$LB_PENDING"
    say "$c/$ns/$svc gets an address again"
  fi
}

do_exec() {
  need_root
  ns_exists || die "netns $NS does not exist: run '$SELF up' first"
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "usage: $SELF exec -- CMD..."
  load_bins
  local path="$(dirname "$KUBECTL"):$(dirname "$KWOKCTL")"
  [ -n "$ISTIOCTL" ] && path="$path:$(dirname "$ISTIOCTL")"
  exec ip netns exec "$NS" env KUBECONFIG="$KCFG" MESHFED_RUN="$RUN" MESHFED_INVENTORY="$INVENTORY" \
    MESHFED_NETNS="$NS" PATH="$path:$PATH" "$@"
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  up) do_up "${1:-2}" ;;
  down) KWOKCTL="$(binpath kwokctl)"; KUBECTL="$(binpath kubectl)"; mkdir -p "$RUN/logs"; do_down ;;
  status) do_status ;;
  exec) do_exec "$@" ;;
  lb-pending) do_lb_mark pending "${1:-}" ;;
  lb-ready) do_lb_mark ready "${1:-}" ;;
  env) echo "KUBECONFIG=$KCFG"; echo "MESHFED_INVENTORY=$INVENTORY"; echo "MESHFED_NETNS=$NS"; echo "MESHFED_RUN=$RUN" ;;
  _lb-filler) lb_filler ;;
  -h|--help|help|"") sed -n '2,22p' "$SELF" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac
