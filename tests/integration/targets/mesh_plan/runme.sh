#!/usr/bin/env bash
# mesh_plan reads real inventories: a consistent one gives the topology, each broken one fails naming the fix.
set -eux
ansible-playbook -i inventory-good.yml good.yml "$@"
for case in duplicate remote-without-primary mesh-ids bad-input; do
  out="/tmp/mesh_plan-$case.out"
  if ansible-playbook -i "inventory-$case.yml" bad.yml -e "case=$case" "$@" > "$out" 2>&1; then
    echo "inventory-$case.yml was accepted"; exit 1
  fi
  grep -F "The inventory is not one consistent mesh" "$out"
  while IFS= read -r fragment; do
    grep -F -- "$fragment" "$out"
  done < <(sed -n "s/^$case: //p" expected.txt)
  if grep -E "Traceback|TypeError|Unexpected Exception" "$out"; then
    echo "inventory-$case.yml crashed instead of being refused"; exit 1
  fi
  rm -f "$out"
done
