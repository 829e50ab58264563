#!/usr/bin/env bash
# make ee: the execution-environment files, checked with ansible-builder (no container engine).
#  1. `ansible-builder create` on tests/ee/execution-environment.yml: schema, additional files,
#     the build context an image build would use;
#  2. `ansible-builder introspect` on the collections `make dist` installed from the tarball: what
#     an image build installs must hold meshfed.istio's requirements.txt (less ansible-core, which
#     ansible-builder leaves to dependencies.ansible_core) and bindep.txt, read through
#     meta/execution-environment.yml;
#  3. bindep reads bindep.txt and names Graphviz for this platform.
# Usage: check.sh BUILDER_VENV_BIN DIST_DIR
set -euo pipefail
BIN="$1" DIST="$2"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$DIST/ee"
failed=0
fail() { echo "ee: FAILED: $*" >&2; failed=1; }

rm -rf "$WORK" && mkdir -p "$WORK"
cp "$REPO/tests/ee/execution-environment.yml" "$WORK/"
printf '#!/bin/sh\necho "stand-in for istioctl"\n' >"$WORK/istioctl"   # the user's istioctl goes here
"$BIN/ansible-builder" create -f "$WORK/execution-environment.yml" -c "$WORK/context" \
  --output-filename Containerfile >"$WORK/create.log" 2>&1 || { cat "$WORK/create.log" >&2; fail "ansible-builder create"; }
grep -qx 'COPY _build/bin/istioctl /usr/local/bin/istioctl' "$WORK/context/Containerfile" \
  || fail "the Containerfile does not copy istioctl in"
[ -f "$WORK/context/_build/bin/istioctl" ] || fail "istioctl is not in the build context"

"$BIN/ansible-builder" introspect --sanitize "$DIST/collections" >"$WORK/introspect.yml"
expect() { # expect FILE KIND: every requirement line of FILE, as introspect reports it for meshfed.istio
  local line
  while IFS= read -r line; do
    line="${line%%#*}"; line="${line%"${line##*[![:space:]]}"}"
    [ -z "$line" ] || [[ "$line" == ansible-core* ]] && continue
    grep -qF -- "- '$line  # from collection meshfed.istio'" "$WORK/introspect.yml" \
      || fail "$2 requirement '$line' of $1 is not in the image's dependencies ($WORK/introspect.yml)"
  done <"$REPO/$1"
}
expect requirements.txt python
expect bindep.txt system

"$BIN/bindep" -f "$REPO/bindep.txt" -l newline >"$WORK/bindep.txt" 2>&1 || true
grep -qx graphviz "$WORK/bindep.txt" || fail "bindep does not name graphviz for this platform: $(cat "$WORK/bindep.txt")"

[ "$failed" = 0 ] && echo "ee: ansible-builder create and introspect agree with meta/execution-environment.yml (context: $WORK/context)"
exit "$failed"
