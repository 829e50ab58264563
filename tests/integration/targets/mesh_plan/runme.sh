#!/usr/bin/env bash
# mesh_plan reads real inventories: a consistent one gives the topology, each broken one fails naming the fix.
set -eux
ansible-playbook -i inventory-good.yml good.yml "$@"
for case in duplicate remote-without-primary mesh-ids; do
  if ansible-playbook -i "inventory-$case.yml" bad.yml -e "case=$case" "$@" > "/tmp/mesh_plan-$case.out" 2>&1; then
    echo "inventory-$case.yml was accepted"; exit 1
  fi
  grep -F "$(sed -n "s/^$case: //p" expected.txt)" "/tmp/mesh_plan-$case.out"
  rm -f "/tmp/mesh_plan-$case.out"
done
