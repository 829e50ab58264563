"""Scale benchmark (not a timed test): converge and rerun of meshfed.istio.site on 2, 4 and 6 kwok clusters, and a
sixth cluster joining a converged mesh of five; wall time and the tool's own CPU (Ansible, its workers, the modules
and the istioctl they run: every process the playbook starts, from the kernel's accounting of reaped children).

Usage (needs `make collection testbin`): scale_bench.py [--runs 3] [--sizes 2 4 6] [--join 6] [--forks N]
Prints medians as Markdown tables, and every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from conftest import ENV, Bed  # noqa: E402 pylint: disable=wrong-import-position


def children_cpu() -> float:
    """User + system seconds of every reaped descendant of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def site(bed: Bed, what: str) -> tuple[float, float]:
    """(wall, tool CPU) seconds of one site run, which must succeed."""
    cpu, start = children_cpu(), time.perf_counter()
    result = bed.playbook("site")
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if result.rc != 0:
        raise SystemExit(f"{what} failed:\n{result.output[-3000:]}")
    print(f"  {what}: {wall:.1f} s wall, {cpu:.1f} s tool CPU", flush=True)
    return wall, cpu


def without_last(bed: Bed) -> tuple[str, str]:
    """Inventory files naming the first N-1 clusters and all N (the test bed writes one with all)."""
    with open(os.path.join(ENV["MESHFED_RUN"], "inventory.yml"), encoding="utf-8") as handle:
        full = yaml.safe_load(handle)
    fewer = json.loads(json.dumps(full))
    del fewer["all"]["children"]["istio_primary"]["hosts"][bed.names[-1]]
    paths = [os.path.join(bed.work, name) for name in ("inventory-fewer.yml", "inventory-full.yml")]
    for path, content in zip(paths, (fewer, full), strict=True):
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(content, handle)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2, 4, 6])
    parser.add_argument("--join", type=int, default=6, help="mesh size after the join (0: no join)")
    parser.add_argument("--forks", type=int, default=0, help="ANSIBLE_FORKS (default: Ansible's own, 5)")
    args = parser.parse_args()
    if args.forks:
        ENV["ANSIBLE_FORKS"] = str(args.forks)
    samples: dict[str, list[tuple[float, float]]] = {}
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}", flush=True)
        for size in args.sizes:
            bed = Bed(size, False)
            try:
                bed.up()
                samples.setdefault(f"converge {size}", []).append(site(bed, f"converge of {size}"))
                samples.setdefault(f"rerun {size}", []).append(site(bed, f"rerun of {size}"))
            finally:
                bed.down()
        if args.join:
            bed = Bed(args.join, False)
            try:
                bed.up()
                fewer, full = without_last(bed)
                bed.inventory = fewer
                samples.setdefault(f"converge {args.join - 1}", []).append(site(bed, f"converge of {args.join - 1}"))
                bed.inventory = full
                samples.setdefault(f"join 1 to {args.join - 1}", []).append(site(bed, "join"))
                samples.setdefault(f"rerun {args.join}", []).append(site(bed, f"rerun of {args.join} after the join"))
            finally:
                bed.down()
    print(f"median of {args.runs} runs, seconds (wall, tool CPU); forks {args.forks or 5}")
    print(f"samples: { {name: [(round(w, 1), round(c, 1)) for w, c in values] for name, values in samples.items()} }\n")
    print("| run | wall | tool CPU | tool CPU per cluster |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        wall, cpu = statistics.median(pair[0] for pair in values), statistics.median(pair[1] for pair in values)
        size = int(name.split()[-1]) if not name.startswith("join") else 1
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu / size:.1f} |")


if __name__ == "__main__":
    main()
