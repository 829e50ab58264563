"""Upgrade benchmark (not a timed test): the upgrade playbook on three kwok clusters (two primaries and a remote of the
first) from Istio 1.30-dev (site installs the default revision with testbin.sh's istioctl-old) to revision 1-31-dev
with the 1.31-dev istioctl, all six stages in one run, then its no-op rerun.

Each stage's wall time runs from the start of its module call to the start of the next stage's (the doctor after the
stage included), the module call alone beside it; the total is the playbook's wall time. The mesh has a 2-replica
Deployment in an injecting namespace of the second primary and of the remote, so the workloads stage restarts
something.

Usage (needs `make collection testbin-upgrade`): upgrade_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from test_istiod import wait_for  # noqa: E402 pylint: disable=wrong-import-position
from test_restart_workloads import rolled_out  # noqa: E402 pylint: disable=wrong-import-position

from conftest import ENV, PLAYBOOK_TIMEOUT, REPO, Bed, in_bed, istio_version, istioctl, kubectl_json  # noqa: E402 pylint: disable=wrong-import-position

TARGET = "1-31-dev"
APPS = {"cluster2": "shop", "cluster3": "pay"}
MODULE_TASK = "Upgrade, stage by stage"


def moment(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def upgrade(bed: Bed, target: str) -> tuple[float, list[tuple[str, float, float]]]:
    """One upgrade run (JSON callback): its wall time, and per module call (stage, call start, call end)."""
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "meshfed.istio.upgrade", "-i", bed.inventory, "-i", bed.settings, "-i", target]
    start = time.perf_counter()
    result = in_bed(*argv, check=False, timeout=PLAYBOOK_TIMEOUT, env={**ENV, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"upgrade failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    tasks = [task for play in json.loads(result.stdout)["plays"] for task in play["tasks"]]
    calls = []
    for task in tasks:
        if MODULE_TASK in task["task"]["name"]:
            outcome, duration = task["hosts"]["cluster1"], task["task"]["duration"]
            calls.append((outcome.get("stage_before", "?"), moment(duration["start"]), moment(duration["end"])))
    ends = [moment(task["task"]["duration"]["end"]) for task in tasks if task["task"].get("duration", {}).get("end")]
    calls.append(("end", max(ends), max(ends)))
    return wall, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    stages: dict[str, list[tuple[float, float]]] = {}
    totals: dict[str, list[float]] = {}
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}", flush=True)
        bed = Bed(3, True)
        try:
            bed.up()
            old = istioctl("istioctl-old")
            settings = {"meshfed_istioctl": old, "meshfed_istio_version": istio_version(old)}
            bed.write_settings(settings)
            for context, namespace in APPS.items():
                in_bed("kubectl", "--request-timeout=10s", "--context", context, "create", "namespace", namespace)
                in_bed("kubectl", "--request-timeout=10s", "--context", context, "label", "namespace", namespace, "istio-injection=enabled")
            site = bed.playbook("site")
            if site.rc != 0:
                raise SystemExit(f"site failed:\n{site.output[-3000:]}")
            for context, namespace in APPS.items():
                create = ("create", "deployment", "web", "--image=example.invalid/web", "--replicas=2")
                in_bed("kubectl", "--request-timeout=10s", "--context", context, "-n", namespace, *create)
            wait_for(
                "the web Deployments rolled out",
                lambda: all(rolled_out(kubectl_json(c, "-n", n, "get", "deployment", "web")) for c, n in APPS.items()),
                timeout=120,
            )
            target = bed.write_settings(
                {**settings, "meshfed_istio_target_revision": TARGET, "meshfed_istio_target_istioctl": istioctl()}, os.path.join(bed.work, "target.yml")
            )
            wall, calls = upgrade(bed, target)
            print(f"  upgrade: {wall:.1f} s", flush=True)
            totals.setdefault("upgrade, all stages", []).append(wall)
            for index, (stage, start, end) in enumerate(calls[:-1]):
                stages.setdefault(stage, []).append((calls[index + 1][1] - start, end - start))
            rerun, _calls = upgrade(bed, target)
            print(f"  rerun: {rerun:.1f} s", flush=True)
            totals.setdefault("no-op rerun", []).append(rerun)
        finally:
            bed.down()
    print(f"\nmedian of {args.runs} runs, seconds; samples: stages {stages}, totals {totals}\n")
    print("| stage | wall (module call and the doctor after it) | module call |")
    print("|---|---|---|")
    for stage, values in stages.items():
        print(f"| {stage} | {statistics.median(v[0] for v in values):.1f} | {statistics.median(v[1] for v in values):.1f} |")
    for name, values in totals.items():
        print(f"| {name} | {statistics.median(values):.1f} | |")


if __name__ == "__main__":
    main()
