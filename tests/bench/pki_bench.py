"""PKI benchmark (not a timed test): meshfed.istio.pki against Istio's openssl recipe.

Generates a root and N intermediates with RSA 4096 and with ECDSA P-256, several runs each:
- openssl: tests/bench/istio_certs_openssl.sh (the steps of Istio's tools/certs Makefile);
- engine: the module's code path (plan + apply), in-process;
- module: ansible-playbook running meshfed.istio.pki (what a user runs, incl. Ansible start-up);
- rerun: the module's no-op rerun on an existing PKI.
Prints medians and ratios as a Markdown table. Usage: pki_bench.py [--runs 5] [--clusters 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
# conftest makes ansible_collections.meshfed.istio importable from a checkout.
from ansible_collections.meshfed.istio.plugins.module_utils import _pki_store  # noqa: E402

import conftest  # noqa: E402,F401 pylint: disable=unused-import

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - meshfed.istio.pki:
        dest: "{{ dest }}"
        clusters: "{{ clusters }}"
        key_algorithm: "{{ algorithm }}"
"""


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run_openssl(dest, algorithm, clusters):
    subprocess.run([os.path.join(HERE, "istio_certs_openssl.sh"), dest, algorithm, *clusters], check=True, stdout=subprocess.DEVNULL)


def run_engine(dest, algorithm, clusters):
    _pki_store.apply(_pki_store.plan(_pki_store.PkiOptions(dest=dest, clusters=tuple(clusters), key_algorithm=algorithm)))


def run_module(dest, algorithm, clusters, playbook):
    extra = f'{{"dest": "{dest}", "algorithm": "{algorithm}", "clusters": {list(clusters)!r}}}'.replace("'", '"')
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook, "-e", extra],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clusters", type=int, default=10)
    args = parser.parse_args()
    clusters = [f"cluster{i}" for i in range(1, args.clusters + 1)]
    work = tempfile.mkdtemp(prefix="meshfed-bench-")
    playbook = os.path.join(work, "bench.yml")
    with open(playbook, "w", encoding="utf-8") as handle:
        handle.write(PLAYBOOK)
    rows = []
    try:
        for algorithm in ("rsa4096", "ecdsa-p256"):
            samples: dict[str, list[float]] = {"openssl": [], "engine": [], "module": [], "rerun": []}
            for run in range(args.runs):
                for name, function in (("openssl", run_openssl), ("engine", run_engine)):
                    dest = os.path.join(work, f"{name}-{algorithm}-{run}")
                    samples[name].append(timed(lambda: function(dest, algorithm, clusters)))
                dest = os.path.join(work, f"module-{algorithm}-{run}")
                samples["module"].append(timed(lambda: run_module(dest, algorithm, clusters, playbook)))
                samples["rerun"].append(timed(lambda: run_module(dest, algorithm, clusters, playbook)))
            medians = {name: statistics.median(values) for name, values in samples.items()}
            rows.append((algorithm, medians))
    finally:
        shutil.rmtree(work)
    print(f"root + {args.clusters} intermediates, median of {args.runs} runs, seconds\n")
    print(
        "| algorithm | openssl CLI (Istio recipe) | engine | ratio engine/openssl | module via ansible-playbook | ratio module/openssl | no-op rerun (module) |"
    )
    print("|---|---|---|---|---|---|---|")
    for algorithm, m in rows:
        print(
            f"| {algorithm} | {m['openssl']:.2f} | {m['engine']:.2f} | {m['engine'] / m['openssl']:.2f}x "
            f"| {m['module']:.2f} | {m['module'] / m['openssl']:.2f}x | {m['rerun']:.2f} |"
        )


if __name__ == "__main__":
    main()
