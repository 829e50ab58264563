#!/usr/bin/env bash
# CI smoke test of the real-cluster test bed. One line per check, then "N passed, M failed".
# Exits non-zero when any check fails. Uses its own run dir and netns by default so it never
# touches a developer's test bed:
#   MESHFED_RUN   (default ${MESHFED_CACHE:-~/.cache/meshfed}/smoke-run)
#   MESHFED_NETNS (default meshfed-smoke)
# Builds missing binaries first (tests/testbed/testbin.sh; a cold build takes a while).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$HERE/versions.env"
CACHE="${MESHFED_CACHE:-$HOME/.cache/meshfed}"
export MESHFED_RUN="${MESHFED_RUN:-$CACHE/smoke-run}"
export MESHFED_NETNS="${MESHFED_NETNS:-meshfed-smoke}"
CL="$HERE/clusters.sh"
T0=$(date +%s)
PASS=0; FAIL=0

ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { # check "description" CMD...   (output of CMD goes to the smoke log)
  local d="$1"; shift
  if "$@" >>"$LOG" 2>&1; then ok "$d"; else bad "$d (see $LOG)"; fi
}
x() { "$CL" exec -- "$@"; }   # run inside the netns with KUBECONFIG set
k() { x kubectl --request-timeout=10s "$@"; }

finish() {
  echo "smoke: duration $(( $(date +%s) - T0 ))s (log: $LOG)"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" = 0 ]
}

mkdir -p "$MESHFED_RUN"
LOG="$MESHFED_RUN/smoke.log"; : >"$LOG"

# 0. binaries
if "$HERE/testbin.sh" all >>"$LOG" 2>&1; then ok "pinned binaries present (testbin.sh)"
else bad "testbin.sh could not build the binaries (see $LOG)"; finish; exit 1; fi
ISTIOCTL="$("$HERE/testbin.sh" path istioctl)"

# A leftover smoke test bed from an aborted run is removed first.
"$CL" down >>"$LOG" 2>&1 || true
trap '"$CL" down >>"$LOG" 2>&1 || true' EXIT

# 1. clusters
t=$(date +%s)
if "$CL" up 2 >>"$LOG" 2>&1; then ok "two clusters up in $(( $(date +%s) - t ))s"
else bad "clusters.sh up 2 (see $LOG)"; finish; exit 1; fi
check "status: every component of cluster1 and cluster2 healthy" "$CL" status
check "up again is a no-op" bash -c "'$CL' up 2 2>&1 | grep -q 'already up'"
check "netns has only lo" bash -c "[ \"\$('$CL' exec -- ip -o link show | awk -F': ' '{print \$2}' | tr '\n' ' ')\" = 'lo ' ]"
check "kubeconfig has contexts cluster1 and cluster2" bash -c \
  "'$CL' exec -- kubectl config get-contexts -o name | sort | tr '\n' ' ' | grep -qx 'cluster1 cluster2 '"
check "inventory lists cluster1/network1 and cluster2/network2" bash -c \
  "f=\$('$CL' env | sed -n 's/^MESHFED_INVENTORY=//p'); grep -q 'meshfed_network: network1' \$f && grep -q 'meshfed_network: network2' \$f && grep -q 'istio_primary:' \$f && grep -q 'meshfed_mesh_id: mesh1' \$f"
check "API servers listen on 127.0.0.1 only" bash -c \
  "! '$CL' exec -- ss -ltnH | awk '{print \$4}' | grep -v '^127\.0\.0\.1:' | grep -q ."

# 2. a Deployment becomes Ready on a kwok node
k --context cluster2 create deployment smoke-web --image=example.invalid/web:1 --replicas=2 >>"$LOG" 2>&1
check "Deployment smoke-web Available on cluster2 (kwok node)" \
  "$CL" exec -- kubectl --context cluster2 wait --for=condition=Available deployment/smoke-web --timeout=90s

# 3. istioctl
if x "$ISTIOCTL" version --remote=false 2>>"$LOG" | tee -a "$LOG" | grep -q "$ISTIO_LABEL"; then
  ok "istioctl version --remote=false reports $ISTIO_LABEL"
else bad "istioctl version does not report $ISTIO_LABEL"; fi

t=$(date +%s)
if x "$ISTIOCTL" install --context cluster1 -y -f "$HERE/istio-minimal.yaml" --readiness-timeout 5m >>"$LOG" 2>&1; then
  ok "istioctl install (minimal, pilot only) into cluster1 passed its readiness wait in $(( $(date +%s) - t ))s"
else bad "istioctl install into cluster1 (see $LOG)"; fi
check "istiod Deployment Available on cluster1" \
  "$CL" exec -- kubectl --context cluster1 -n istio-system wait --for=condition=Available deployment/istiod --timeout=60s
check "istiod readyReplicas >= 1" bash -c \
  "[ \"\$('$CL' exec -- kubectl --context cluster1 -n istio-system get deploy istiod -o jsonpath='{.status.readyReplicas}')\" -ge 1 ]"

t=$(date +%s)
if x "$ISTIOCTL" install --context cluster1 -y -f "$HERE/istio-eastwest.yaml" --readiness-timeout 2m >>"$LOG" 2>&1; then
  ok "istioctl install of an injected east-west gateway passed its readiness wait in $(( $(date +%s) - t ))s"
else bad "istioctl install of the east-west gateway (see $LOG)"; fi
ewip=""
for _ in $(seq 1 20); do   # bounded: 20 polls x 1 s
  ewip="$(k --context cluster1 -n istio-system get svc istio-eastwestgateway -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>>"$LOG")"
  [ -n "$ewip" ] && break
  sleep 1
done
if [[ "$ewip" == 127.0.1.* ]]; then ok "east-west gateway Service got $ewip"; else bad "east-west gateway Service got no 127.0.1.x address (got '$ewip')"; fi
check "istiod still Available after the gateway install" \
  "$CL" exec -- kubectl --context cluster1 -n istio-system wait --for=condition=Available deployment/istiod --timeout=30s

# 4. LoadBalancer filler
k --context cluster2 create service loadbalancer smoke-lb --tcp=80:8080 >>"$LOG" 2>&1
"$CL" lb-pending cluster2/default/smoke-lb-pending >>"$LOG" 2>&1
k --context cluster2 create service loadbalancer smoke-lb-pending --tcp=80:8080 >>"$LOG" 2>&1
ip=""
for _ in $(seq 1 20); do   # bounded: 20 polls x 1 s
  ip="$(k --context cluster2 get svc smoke-lb -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>>"$LOG")"
  [ -n "$ip" ] && break
  sleep 1
done
if [[ "$ip" == 127.* ]]; then ok "LoadBalancer smoke-lb got loopback address $ip"; else bad "LoadBalancer smoke-lb got no 127.x address (got '$ip')"; fi
sleep 5   # more than two filler polls
ipp="$(k --context cluster2 get svc smoke-lb-pending -o jsonpath='{.status.loadBalancer.ingress}' 2>>"$LOG")"
if [ -z "$ipp" ]; then ok "LoadBalancer smoke-lb-pending stays pending (lb-pending)"; else bad "smoke-lb-pending got $ipp"; fi

# 5. teardown
RUN_PIDS=""
for f in "$MESHFED_RUN"/kwok/clusters/*/pids/*.pid "$MESHFED_RUN/lb-filler.pid"; do
  [ -f "$f" ] && RUN_PIDS="$RUN_PIDS $(tr -dc '0-9' <"$f")"
done
check "clusters.sh down" "$CL" down
trap - EXIT
check "netns $MESHFED_NETNS is gone" bash -c "! ip netns list | awk '{print \$1}' | grep -qx '$MESHFED_NETNS'"
alive=""
for p in $RUN_PIDS; do   # a zombie (exited, not yet reaped by init) counts as gone
  [ -r "/proc/$p/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status" && alive="$alive $p"
done
if [ -z "$alive" ] && [ -n "$RUN_PIDS" ]; then ok "no process of the run left (pids${RUN_PIDS})"; else bad "processes left:${alive:- (no pids were recorded)}"; fi
check "status after down says not up" bash -c "! '$CL' status"

finish
