#!/usr/bin/env bash
# make demo: local kwok clusters, the site playbook, the verify result. The clusters stay up
# for you to look at (tests/testbed/clusters.sh exec -- kubectl --context cluster1 get ns);
# `make demo-down` removes them. N clusters (default 2); MESHFED_REMOTE=1 makes the last a remote.
# The first run builds the test binaries from Go modules (tests/testbed/testbin.sh plan says how long).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export MESHFED_RUN="${MESHFED_RUN:-${MESHFED_CACHE:-$HOME/.cache/meshfed}/demo-run}"
export MESHFED_NETNS="${MESHFED_NETNS:-meshfed-demo}"
N="${1:-2}"
CL="$HERE/clusters.sh"

# The first line of the summary the verify role prints (summary_text, plugins/module_utils/_doctor_report.py);
# tests/unit/roles/test_verify_summary.py keeps the two in step.
SUMMARY_START='[0-9]+ clusters: [0-9]+ error\(s\), [0-9]+ warning\(s\)'
# The summary out of ansible-playbook's output (YAML result format): from its first line to the
# next task, recap or warning, unindented; a one-line summary is printed as msg: '...'.
summary() {
  sed -En "/$SUMMARY_START/,/^(PLAY RECAP|TASK |\[)/{/^(PLAY RECAP|TASK |\[)/d; /^ *$/d; s/^ +//; s/^msg: '(.*)'$/\1/; s/^msg: //; p}"
}

main() {
  local start=$SECONDS status=0
  "$HERE/testbin.sh"          # a no-op when the binaries are cached; else builds them (it says how long)
  "$CL" up "$N"
  local istioctl version settings="$MESHFED_RUN/demo-settings.yml"
  istioctl="$("$HERE/testbin.sh" path istioctl)"
  version="$("$CL" exec -- "$istioctl" version --remote=false --short | sed "s/^client version: *//")"
  cat >"$settings" <<YAML
all:
  vars:
    meshfed_istioctl: $istioctl
    meshfed_istio_version: "$version"
    meshfed_pki_dir: $MESHFED_RUN/pki
    # the demo's API servers listen on loopback inside one network namespace
    remote_secrets_allow_loopback: true
    verify_allow_loopback: true
YAML
  echo "demo: inventory $MESHFED_RUN/inventory.yml + $settings"
  "$CL" exec -- "$REPO/.venv/bin/ansible-playbook" meshfed.istio.site -i "$MESHFED_RUN/inventory.yml" -i "$settings"
  echo
  echo "demo: the mesh doctor (ansible-playbook meshfed.istio.verify):"
  "$CL" exec -- env ANSIBLE_HOST_PATTERN_MISMATCH=ignore ANSIBLE_CALLBACK_RESULT_FORMAT=yaml "$REPO/.venv/bin/ansible-playbook" meshfed.istio.verify \
    -i "$MESHFED_RUN/inventory.yml" -i "$settings" | summary || status=$?
  command -v dot >/dev/null \
    || echo "demo: no mesh.svg - Graphviz's dot is not installed (make tools, or apt-get install graphviz); mesh.dot is beside report.md"
  echo "demo: done in $((SECONDS - start)) s; clusters stay up; remove them with: make demo-down"
  return "$status"
}

[ "${BASH_SOURCE[0]}" != "$0" ] || main "$@"
