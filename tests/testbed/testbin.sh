#!/usr/bin/env bash
# Build or find the pinned test-bed binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, kwokctl, istioctl, pilot-discovery, and the older Istio
# release's istioctl-old and pilot-discovery-old that the upgrade test starts from).
#
# Everything is built from Go modules (the Go module proxy); nothing is downloaded from
# anywhere else. Binaries are cached outside the repo:
#   ${MESHFED_CACHE:-$HOME/.cache/meshfed}/bin/<name>-<version>/<name>
# A warm run only checks that the files exist (seconds); a cold run builds everything.
#
# Usage:
#   testbin.sh [all]            build what is missing of the test bed (default; not istio_old)
#   testbin.sh upgrade          the same, and the older Istio release the upgrade test starts from
#   testbin.sh kube|etcd|kwok|istio|istio_old   build one component group if missing
#   testbin.sh path NAME        print the cached path of NAME (exit 1 when not built)
#   testbin.sh env             print NAME_BIN=path lines for all binaries (for eval)
#   testbin.sh check [upgrade] exit 0 when every binary is present, else list the missing
#   testbin.sh plan [upgrade]  say what a build would do and about how long it takes
#   testbin.sh clean-build     remove the temporary build modules (keeps bin/ and logs/)
# Env: MESHFED_CACHE, MESHFED_BUILD_JOBS (go build -p, default: nproc).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$HERE/versions.env"

CACHE="${MESHFED_CACHE:-$HOME/.cache/meshfed}"
BIN_ROOT="$CACHE/bin"
BUILD_ROOT="$CACHE/build"
LOG_DIR="$CACHE/logs"
TIMES="$LOG_DIR/build-times.txt"
JOBS="${MESHFED_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

K8S_STAGING_VERSION="v0.${K8S_VERSION#v1.}"          # v1.35.4 -> v0.35.4
K8S_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"

die() { echo "testbin: ERROR: $*" >&2; exit 1; }
log() { echo "testbin: $*" >&2; }

# name -> version key
version_of() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) echo "$K8S_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok|kwokctl) echo "$KWOK_VERSION" ;;
    istioctl|pilot-discovery) echo "$ISTIO_LABEL-$ISTIO_REVISION" ;;
    istioctl-old|pilot-discovery-old) echo "$ISTIO_OLD_LABEL-$ISTIO_OLD_REVISION" ;;
    *) die "unknown binary '$1'" ;;
  esac
}
# The older release's binaries keep their own names, in a directory keyed by their version.
bin_path() { local file="${1%-old}"; echo "$BIN_ROOT/$file-$(version_of "$1")/$file"; }

KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
BED_BINS=("${KUBE_BINS[@]}" etcd kwok kwokctl istioctl pilot-discovery)
ALL_BINS=("${BED_BINS[@]}" istioctl-old pilot-discovery-old)

have_all() { local b; for b in "$@"; do [ -x "$(bin_path "$b")" ] || return 1; done; }

need_go() {
  command -v go >/dev/null 2>&1 || die "the Go toolchain ('go') is not on PATH; install Go >= 1.25 (the pinned modules need it)"
  local gv; gv="$(go env GOVERSION 2>/dev/null || true)"
  [ -n "$gv" ] || die "'go env GOVERSION' failed; is the Go toolchain broken?"
}

checked_proxy=0
need_proxy() {
  [ "$checked_proxy" = 1 ] && return 0
  local out
  if ! out="$(cd / && timeout 120 go list -m -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1)"; then
    die "cannot resolve k8s.io/kubernetes@$K8S_VERSION through the Go module proxy (GOPROXY=$(go env GOPROXY)); is the proxy reachable?
$out"
  fi
  checked_proxy=1
}

# run_build COMPONENT LOGFILE CMD... : run with output in a log; on failure name the component and log.
# The module proxy sometimes answers 403 "This module version is not available" for a version it
# serves a moment later (seen for istio.io/api pseudo-versions): such download errors are retried.
RETRIES="${MESHFED_BUILD_RETRIES:-4}"
run_build() {
  local comp="$1" logf="$2" try mark; shift 2
  for try in $(seq 1 "$RETRIES"); do
    mark="$(wc -l <"$logf")"
    if "$@" >>"$logf" 2>&1; then return 0; fi
    if [ "$try" -lt "$RETRIES" ] && tail -n +"$((mark + 1))" "$logf" | \
        grep -qE '403 Forbidden|not available|i/o timeout|connection reset|TLS handshake timeout|unexpected EOF|502 Bad Gateway|503 Service'; then
      log "$comp: module download error from the proxy; retry $((try + 1))/$RETRIES in $((try * 10))s"
      sleep $((try * 10))
      continue
    fi
    break
  done
  echo "----- last 30 lines of $logf -----" >&2
  tail -n 30 "$logf" >&2 || true
  if grep -qE '403 Forbidden|not available' "$logf"; then
    echo "testbin: hint: the Go module proxy refused a module version (see the log); check GOPROXY=$(go env GOPROXY)" >&2
  fi
  die "building component '$comp' failed (full log: $logf)"
}

# What each group is, and its cold build time on 2 cores (read from tests/testbed/README.md).
COMPONENTS=(etcd kwok kube istio)
[ "${1:-}" = upgrade ] || [ "${2:-}" = upgrade ] && COMPONENTS+=(istio_old)
label_of() {
  case "$1" in
    etcd) echo etcd ;; kwok) echo "kwok" ;; kube) echo Kubernetes ;; istio) echo "Istio $ISTIO_LABEL" ;;
    istio_old) echo "Istio $ISTIO_OLD_LABEL (where the upgrade test starts)" ;;
  esac
}
FIGURES="$HERE/README.md"   # the one home of the cold figures: its table "Measured figures", column "cold"
cold_seconds() {
  local s
  s="$(awk -F'|' -v g="$1" '/^## / { t = ($0 ~ /^## Measured figures/) } { c = $2; gsub(/ /, "", c) } t && c == g { if (match($4, /[0-9]+ s/)) print substr($4, RSTART, RLENGTH - 2); exit }' "$FIGURES")"
  [ -n "$s" ] || die "no cold build figure for '$1' in $FIGURES (table 'Measured figures')"
  echo "$s"
}
group_present() {
  case "$1" in
    kube)  have_all "${KUBE_BINS[@]}" ;;
    etcd)  have_all etcd ;;
    kwok)  have_all kwok kwokctl ;;
    istio) have_all istioctl pilot-discovery ;;
    istio_old) have_all istioctl-old pilot-discovery-old ;;
    *) die "unknown component group '$1' (kube|etcd|kwok|istio|istio_old)" ;;
  esac
}
missing_groups() { local g; for g in "${COMPONENTS[@]}"; do group_present "$g" || echo "$g"; done; }
minutes() { echo "$(( ($1 + 30) / 60 ))"; }

plan() { # one line: what is built, roughly how long; nothing when all is present
  local g parts="" total=0 s
  for g in $(missing_groups); do
    s=$(cold_seconds "$g"); total=$((total + s))
    parts="${parts:+$parts, }$(label_of "$g") ~$(minutes "$s") min"
  done
  [ -n "$parts" ] || return 0
  log "first run: building the test binaries from Go modules ($parts): about $(minutes "$total") min on 2 idle cores, more on a busy machine; once (cached in $BIN_ROOT)"
}

STEP=0 STEPS=0 STARTED=$(date +%s) STEP_TAG="" STEP_HINT=""
timed() { # timed COMPONENT FUNC
  local comp="$1" fn="$2" t0 t1
  t0=$(date +%s)
  STEP=$((STEP + 1)) STEP_TAG="[$((STEP))/$STEPS] " STEP_HINT="usually ~$(minutes "$(cold_seconds "$comp")") min on 2 cores; "
  "$fn"
  t1=$(date +%s)
  echo "$(date -u +%FT%TZ) $comp $((t1 - t0))s go=$(go env GOVERSION) jobs=$JOBS" >>"$TIMES"
  log "$STEP_TAG$(label_of "$comp") built in $((t1 - t0))s ($((t1 - STARTED))s so far)"
}

install_into() { # install_into NAME BUILT_FILE
  local dst; dst="$(bin_path "$1")"
  mkdir -p "$(dirname "$dst")"
  install -m 0755 "$2" "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst"
}

build_kube() {
  local dir="$BUILD_ROOT/kubernetes-$K8S_VERSION" logf="$LOG_DIR/kube-$K8S_VERSION.log"
  local src mods m
  mkdir -p "$dir/out" "$LOG_DIR"; : >"$logf"
  log "${STEP_TAG}building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION (${STEP_HINT}log: $logf)"
  run_build kube "$logf" go mod download -json "k8s.io/kubernetes@$K8S_VERSION"
  src="$(cd / && go list -m -f '{{.Dir}}' "k8s.io/kubernetes@$K8S_VERSION" 2>/dev/null)" || true
  [ -n "$src" ] && [ -f "$src/go.mod" ] || die "component 'kube': k8s.io/kubernetes@$K8S_VERSION source not found in the module cache (log: $logf)"
  # Every staging module (replace k8s.io/x => ./staging/src/k8s.io/x) is pinned to its published v0.X.Y.
  mods="$(sed -n '/^replace (/,/^)/p' "$src/go.mod" | awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}')"
  [ -n "$mods" ] || die "component 'kube': no staging replace block found in $src/go.mod"
  {
    echo "module meshfed.test/kubebuild"
    echo
    echo "go $(awk '$1=="go"{print $2; exit}' "$src/go.mod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in $mods; do echo "	$m => $m $K8S_STAGING_VERSION"; done
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<EOF
//go:build tools

// Generated by tests/testbed/testbin.sh: pins the commands built from k8s.io/kubernetes.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  (cd "$dir" && run_build kube "$logf" go mod tidy)
  local pkg="k8s.io/component-base/version"
  local ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
  ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z -X $pkg.gitCommit=module-$K8S_VERSION"
  (cd "$dir" && run_build kube "$logf" env CGO_ENABLED=0 go build -p "$JOBS" -trimpath -ldflags "$ld" -o out/ \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  for m in "${KUBE_BINS[@]}"; do install_into "$m" "$dir/out/$m"; done
}

build_etcd() {
  local dir="$BUILD_ROOT/etcd-$ETCD_VERSION" logf="$LOG_DIR/etcd-$ETCD_VERSION.log"
  mkdir -p "$dir" "$LOG_DIR"; : >"$logf"
  log "${STEP_TAG}building etcd $ETCD_VERSION (${STEP_HINT}log: $logf)"
  cat >"$dir/go.mod" <<EOF
module meshfed.test/etcdbuild

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >"$dir/main.go" <<'EOF'
// Generated by tests/testbed/testbin.sh: etcd server entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (cd "$dir" && run_build etcd "$logf" go mod tidy)
  (cd "$dir" && run_build etcd "$logf" env CGO_ENABLED=0 go build -p "$JOBS" -trimpath -ldflags "-s -w" -o out/etcd .)
  install_into etcd "$dir/out/etcd"
}

build_kwok() {
  local dir="$BUILD_ROOT/kwok-$KWOK_VERSION" logf="$LOG_DIR/kwok-$KWOK_VERSION.log"
  mkdir -p "$dir" "$LOG_DIR"; : >"$logf"
  log "${STEP_TAG}building kwok, kwokctl $KWOK_VERSION (${STEP_HINT}log: $logf)"
  run_build kwok "$logf" env GOBIN="$dir" CGO_ENABLED=0 go install -p "$JOBS" -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  install_into kwok "$dir/kwok"
  install_into kwokctl "$dir/kwokctl"
}

build_istio() {
  local dir="$BUILD_ROOT/istio-$ISTIO_MODULE_VERSION" logf="$LOG_DIR/istio-$ISTIO_MODULE_VERSION.log"
  mkdir -p "$dir" "$LOG_DIR"; : >"$logf"
  log "${STEP_TAG}building istioctl, pilot-discovery $ISTIO_LABEL ($ISTIO_MODULE_VERSION) (${STEP_HINT}log: $logf)"
  local pkg="istio.io/istio/pkg/version"
  local ld="-s -w -X $pkg.buildVersion=$ISTIO_LABEL -X $pkg.buildTag=$ISTIO_LABEL -X $pkg.buildGitRevision=$ISTIO_REVISION"
  ld="$ld -X $pkg.buildStatus=Clean -X $pkg.buildHub=docker.io/istio"
  run_build istio "$logf" env GOBIN="$dir" CGO_ENABLED=0 go install -p "$JOBS" -trimpath -ldflags "$ld" \
    "istio.io/istio/istioctl/cmd/istioctl@$ISTIO_MODULE_VERSION" "istio.io/istio/pilot/cmd/pilot-discovery@$ISTIO_MODULE_VERSION"
  install_into istioctl "$dir/istioctl"
  install_into pilot-discovery "$dir/pilot-discovery"
}

# The release-1.30 commit the proxy serves names istio.io/api, istio.io/client-go, two envoy go-control-plane modules
# and agentgateway's api at pseudo-versions the proxy refuses (403 on every try). A wrapper module replaces them with
# served versions (ISTIO_OLD_REPLACES in versions.env), as build_kube does for the staging modules: `go install
# pkg@version` refuses replace directives.
build_istio_old() {
  local dir="$BUILD_ROOT/istio-$ISTIO_OLD_MODULE_VERSION" logf="$LOG_DIR/istio-$ISTIO_OLD_MODULE_VERSION.log" r
  mkdir -p "$dir/out" "$LOG_DIR"; : >"$logf"
  log "${STEP_TAG}building istioctl, pilot-discovery $ISTIO_OLD_LABEL ($ISTIO_OLD_MODULE_VERSION) (${STEP_HINT}log: $logf)"
  {
    echo "module meshfed.test/istiobuildold"
    echo
    echo "go $ISTIO_OLD_GO"
    echo
    echo "require istio.io/istio $ISTIO_OLD_MODULE_VERSION"
    echo
    echo "replace ("
    for r in $ISTIO_OLD_REPLACES; do echo "	${r%@*} => ${r%@*} ${r#*@}"; done
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<EOF
//go:build tools

// Generated by tests/testbed/testbin.sh: pins the commands built from istio.io/istio.
package tools

import (
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)
EOF
  rm -f "$dir/go.sum"
  (cd "$dir" && run_build istio_old "$logf" go mod tidy)
  local pkg="istio.io/istio/pkg/version"
  local ld="-s -w -X $pkg.buildVersion=$ISTIO_OLD_LABEL -X $pkg.buildTag=$ISTIO_OLD_LABEL"
  ld="$ld -X $pkg.buildGitRevision=$ISTIO_OLD_REVISION -X $pkg.buildStatus=Clean -X $pkg.buildHub=docker.io/istio"
  (cd "$dir" && run_build istio_old "$logf" env CGO_ENABLED=0 go build -p "$JOBS" -trimpath -ldflags "$ld" -o out/ \
      istio.io/istio/istioctl/cmd/istioctl istio.io/istio/pilot/cmd/pilot-discovery)
  install_into istioctl-old "$dir/out/istioctl"
  install_into pilot-discovery-old "$dir/out/pilot-discovery"
}

ensure() { # ensure GROUP
  local group="$1"
  group_present "$group" && return 0
  need_go
  need_proxy
  timed "$group" "build_$group"
}

cmd="${1:-all}"
case "$cmd" in
  all|upgrade)
    t0=$(date +%s)
    if [ -z "$(missing_groups)" ]; then log "all binaries present in $BIN_ROOT"; exit 0; fi
    plan
    STEPS=$(missing_groups | wc -l)
    for g in "${COMPONENTS[@]}"; do ensure "$g"; done
    log "done in $(( $(date +%s) - t0 ))s; timings appended to $TIMES"
    ;;
  kube|etcd|kwok|istio|istio_old) STEPS=1; ensure "$cmd" ;;
  plan) plan ;;
  path)
    [ $# -ge 2 ] || die "usage: testbin.sh path NAME"
    p="$(bin_path "$2")"; [ -x "$p" ] || die "$2 is not built ($p); run tests/testbed/testbin.sh"
    echo "$p" ;;
  env)
    for b in "${ALL_BINS[@]}"; do v="$(echo "$b" | tr 'a-z-' 'A-Z_')_BIN"; echo "$v=$(bin_path "$b")"; done ;;
  check)
    miss=0 wanted=("${BED_BINS[@]}")
    [ "${2:-}" = upgrade ] && wanted=("${ALL_BINS[@]}")
    for b in "${wanted[@]}"; do [ -x "$(bin_path "$b")" ] || { echo "missing: $(bin_path "$b")"; miss=1; }; done
    [ "$miss" = 0 ] && echo "all test-bed binaries present in $BIN_ROOT"
    exit "$miss" ;;
  clean-build) rm -rf "$BUILD_ROOT"; log "removed $BUILD_ROOT" ;;
  -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac
