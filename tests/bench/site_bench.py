"""Site benchmark (not a timed test): converge, rerun and verify (the doctor) of meshfed.istio.site against the same steps
done by hand with kubectl and istioctl (tests/bench/site_script.sh), on 2, 3 and 4 kwok clusters.

Usage (needs `make collection testbin`): site_bench.py [--runs 3] [--sizes 2 3 4]
Prints medians and ratios as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from conftest import Bed, in_bed  # noqa: E402 pylint: disable=wrong-import-position

BUSY: dict[str, list[float]] = {}


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def timed(function, phase: str = "") -> float:
    """Wall time of function; the machine's CPU busy fraction during it is kept per phase."""
    busy, total = cpu_times()
    start = time.perf_counter()
    function()
    elapsed = time.perf_counter() - start
    busy_after, total_after = cpu_times()
    if phase:
        BUSY.setdefault(phase, []).append((busy_after - busy) / max(total_after - total, 1))
    return elapsed


def converge(bed: Bed) -> None:
    result = bed.playbook("site")
    if result.rc != 0:
        raise SystemExit(f"site failed on {bed.clusters} clusters:\n{result.output[-3000:]}")


def verify(bed: Bed) -> None:
    """meshfed.istio.verify: the doctor over every cluster (reads batched per cluster), report and picture written."""
    result = bed.playbook("verify")
    if result.rc != 0:
        raise SystemExit(f"verify failed on {bed.clusters} clusters:\n{result.output[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    rows, raw = [], []
    for size in args.sizes:
        samples: dict[str, list[float]] = {"script": [], "converge": [], "rerun": [], "verify": []}
        for _run in range(args.runs):
            bed = Bed(size, False)
            bed.up()
            samples["script"].append(
                timed(lambda: in_bed(os.path.join(HERE, "site_script.sh"), str(size), os.path.join(bed.work, "script"), timeout=1800), f"script {size}")
            )
            bed.up()
            samples["converge"].append(timed(lambda: converge(bed), f"converge {size}"))
            samples["rerun"].append(timed(lambda: converge(bed)))
            samples["verify"].append(timed(lambda: verify(bed)))
            bed.down()
        rows.append((size, {name: statistics.median(values) for name, values in samples.items()}))
        raw.append((size, {name: [round(value, 1) for value in values] for name, values in samples.items()}))
    base = rows[0][1]["converge"]
    print(f"median of {args.runs} runs, seconds; all samples: {raw}")
    print("CPU busy (all cores, median): " + ", ".join(f"{phase} {statistics.median(values):.0%}" for phase, values in BUSY.items()) + "\n")
    print("| clusters | script (kubectl + istioctl) | site converge | converge/script | site rerun | rerun/script | converge/converge(2) | verify (doctor) |")
    print("|---|---|---|---|---|---|---|---|")
    for size, m in rows:
        print(
            f"| {size} | {m['script']:.1f} | {m['converge']:.1f} | {m['converge'] / m['script']:.2f}x | {m['rerun']:.1f} "
            f"| {m['rerun'] / m['script']:.2f}x | {m['converge'] / base:.2f}x | {m['verify']:.1f} |"
        )


if __name__ == "__main__":
    main()
