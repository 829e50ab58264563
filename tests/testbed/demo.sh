#!/usr/bin/env bash
# make demo: local kwok clusters, the site playbook, the verify result. The clusters stay up
# for you to look at (tests/testbed/clusters.sh exec -- kubectl --context cluster1 get ns);
# `make demo-down` removes them. N clusters (default 2); MESHFED_REMOTE=1 makes the last a remote.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export MESHFED_RUN="${MESHFED_RUN:-${MESHFED_CACHE:-$HOME/.cache/meshfed}/demo-run}"
export MESHFED_NETNS="${MESHFED_NETNS:-meshfed-demo}"
N="${1:-2}"
CL="$HERE/clusters.sh"

"$CL" up "$N"
ISTIOCTL="$("$HERE/testbin.sh" path istioctl)"
VERSION="$("$CL" exec -- "$ISTIOCTL" version --remote=false --short | sed "s/^client version: *//")"
cat >"$MESHFED_RUN/demo-settings.yml" <<YAML
all:
  vars:
    meshfed_istioctl: $ISTIOCTL
    meshfed_istio_version: "$VERSION"
    meshfed_pki_dir: $MESHFED_RUN/pki
    # the demo's API servers listen on loopback inside one network namespace
    remote_secrets_allow_loopback: true
YAML
echo "demo: inventory $MESHFED_RUN/inventory.yml + $MESHFED_RUN/demo-settings.yml"
"$CL" exec -- "$REPO/.venv/bin/ansible-playbook" meshfed.istio.site \
  -i "$MESHFED_RUN/inventory.yml" -i "$MESHFED_RUN/demo-settings.yml"
echo
echo "demo: verification of the mesh:"
"$CL" exec -- "$REPO/.venv/bin/ansible-playbook" meshfed.istio.verify \
  -i "$MESHFED_RUN/inventory.yml" -i "$MESHFED_RUN/demo-settings.yml" | sed -n '/The mesh is consistent/,/PLAY RECAP/p'
echo "demo: clusters stay up; remove them with: make demo-down"
