"""Rotation benchmark (not a timed test): a full root rotation of three kwok clusters (two primaries, each running the
real istiod, and a remote of the first) with meshfed.istio.rotate_ca, its no-op rerun, and the site playbook's no-op
rerun on the same mesh for comparison.

The rotation's wall time includes the waits its module reports (`waited`: istiod copying each phase's bundle into
istio-ca-root-cert, read back before the next phase, plus rotate_ca_workload_wait, here 0); the table shows both and
their difference, the tool's own time.

Usage (needs `make collection testbin`): rotate_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from test_istiod import istiod, wait_for  # noqa: E402 pylint: disable=wrong-import-position
from test_rotate_ca import settled  # noqa: E402 pylint: disable=wrong-import-position

from conftest import Bed  # noqa: E402 pylint: disable=wrong-import-position

WAITED = re.compile(r'"waited_seconds": ([0-9.]+)')


def timed(bed: Bed, name: str, *args: str) -> tuple[float, float]:
    """(wall, waited) seconds of one playbook run, which must succeed; waited is what rotate_ca reports (0 for others)."""
    start = time.perf_counter()
    result = bed.playbook(name, *args)
    wall = time.perf_counter() - start
    if result.rc != 0:
        raise SystemExit(f"{name} {' '.join(args)} failed:\n{result.output[-3000:]}")
    waited = WAITED.search(result.output)
    print(f"  {name} {' '.join(args)}: {wall:.1f} s" + (f", waited {waited.group(1)} s" if waited else ""), flush=True)
    return wall, float(waited.group(1)) if waited else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[tuple[float, float]]] = {}
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}", flush=True)
        bed = Bed(3, True)
        try:
            bed.up()
            timed(bed, "site")
            for name in bed.primaries:
                istiod("start", name)
            wait_for("istio-ca-root-cert everywhere", lambda bed=bed: settled(bed), timeout=120)
            samples.setdefault("site rerun", []).append(timed(bed, "site"))
            rotation = ("-e", f"rotate_ca_id=bench{run}", "-e", "rotate_ca_workload_wait=0")
            samples.setdefault("root rotation", []).append(timed(bed, "rotate_ca", *rotation))
            samples.setdefault("root rotation rerun", []).append(timed(bed, "rotate_ca", *rotation))
        finally:
            istiod("stop-all", check=False)
            bed.down()
    print(f"\nmedian of {args.runs} runs, seconds; samples (wall, waited): {samples}\n")
    print("| run | wall | waited (istiod's copies read back) | wall without the waits |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        wall, waited = statistics.median(pair[0] for pair in values), statistics.median(pair[1] for pair in values)
        rest = statistics.median(w - x for w, x in values)
        print(f"| {name} | {wall:.1f} | {waited:.1f} | {rest:.1f} |")


if __name__ == "__main__":
    main()
