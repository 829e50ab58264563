# -*- coding: utf-8 -*-
"""testbin.sh's first-run messages, as README's quick start documents them, against a fake cache (no Go build).

`plan` and `check` read only the cache; a component's build runs with a stand-in `go` on PATH that writes the
binary `go build -o` names, so the per-component lines are the script's own.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).parents[3]
TESTBIN = ROOT / "tests" / "testbed" / "testbin.sh"
VERSIONS = dict(re.findall(r"^(\w+)=\"?([^\"\n]*)\"?", (ROOT / "tests" / "testbed" / "versions.env").read_text(encoding="utf-8"), re.M))
FAKE_GO = """#!/bin/sh
case "$1 $2" in
  "env GOVERSION") echo go1.25.0 ;;
  "env GOPROXY") echo https://proxy.golang.org ;;
  "list -m") echo '{}' ;;
  "mod tidy") ;;
  build*) while [ $# -gt 0 ]; do [ "$1" = -o ] && { mkdir -p "$(dirname "$2")"; printf '#!/bin/sh\\n' >"$2"; chmod +x "$2"; }; shift; done ;;
  *) echo "fake go: unexpected: $*" >&2; exit 1 ;;
esac
"""


def run(cache: pathlib.Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": path or os.environ["PATH"], "HOME": str(cache.parent), "MESHFED_CACHE": str(cache), "MESHFED_BUILD_JOBS": "1"}
    return subprocess.run(["bash", str(TESTBIN), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


_LAYOUT: dict[str, str] = {}


def plant(cache: pathlib.Path, *names: str) -> None:
    """Binaries in the cache's layout, bin/<name>-<version>/<name>, as testbin.sh env names them (asked once)."""
    if not _LAYOUT:
        anywhere = pathlib.Path("/nonexistent/meshfed-cache")
        for line in run(anywhere, "env").stdout.split():
            variable, path = line.split("=", 1)
            _LAYOUT[variable] = str(pathlib.Path(path).relative_to(anywhere))
    for name in names:
        path = cache / _LAYOUT[name.upper().replace("-", "_") + "_BIN"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)


def figures() -> dict[str, int]:
    """The cold column of tests/testbed/README.md's measured figures, the figures' one home."""
    text = (ROOT / "tests" / "testbed" / "README.md").read_text(encoding="utf-8").split("## Measured figures", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| (\w+) \| [^|]+ \| (\d+) s", text, re.M)}


KUBE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
BED = (*KUBE, "etcd", "kwok", "kwokctl", "istioctl", "pilot-discovery")


def minutes(seconds: int) -> int:
    return (seconds + 30) // 60


def test_an_empty_cache_is_told_what_is_built_and_how_long_as_the_quick_start_says(tmp_path):
    cold = figures()
    result = run(tmp_path / "cache", "plan")
    total = minutes(sum(cold[g] for g in ("etcd", "kwok", "kube", "istio")))
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr == (
        f"testbin: first run: building the test binaries from Go modules (etcd ~{minutes(cold['etcd'])} min, "
        f"kwok ~{minutes(cold['kwok'])} min, Kubernetes ~{minutes(cold['kube'])} min, Istio {VERSIONS['ISTIO_LABEL']} "
        f"~{minutes(cold['istio'])} min): about {total} min on 2 idle cores, more on a busy machine; "
        f"once (cached in {tmp_path / 'cache' / 'bin'})\n"
    )
    quick_start = (ROOT / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert f"Kubernetes, etcd, kwok and Istio, about {total} minutes on 2 idle cores" in " ".join(quick_start.split())


ISTIO, ISTIO_OLD = f"Istio {VERSIONS['ISTIO_LABEL']}", f"Istio {VERSIONS['ISTIO_OLD_LABEL']} (where the upgrade test starts)"


@pytest.mark.parametrize(
    ("present", "args", "planned"),
    [
        (BED, (), []),
        ((*KUBE, "etcd", "istioctl", "pilot-discovery"), (), ["kwok"]),
        (("etcd", "kwok", "kwokctl", "kubectl"), (), ["Kubernetes", ISTIO]),
        (BED, ("upgrade",), [ISTIO_OLD]),
        ((*BED, "istioctl-old", "pilot-discovery-old"), ("upgrade",), []),
    ],
    ids=["all-present", "kwok-missing", "kube-and-istio-missing", "upgrade-wants-the-old-istio", "upgrade-all-present"],
)
def test_plan_names_only_what_is_missing(tmp_path, present, args, planned):
    cache = tmp_path / "cache"
    plant(cache, *present)
    result = run(cache, "plan", *args)
    assert result.returncode == 0
    built = re.match(r"testbin: first run: building the test binaries from Go modules \((.*)\): about \d+ min", result.stderr)
    names = [part.rsplit(" ~", 1)[0] for part in built[1].split(", ")] if built else []
    assert names == planned, result.stderr
    assert bool(built) == bool(result.stderr)


def test_check_lists_each_missing_binary_and_fails(tmp_path):
    cache = tmp_path / "cache"
    plant(cache, *[name for name in BED if name != "kwokctl"])
    result = run(cache, "check")
    assert result.returncode == 1
    assert result.stdout == f"missing: {cache}/bin/kwokctl-{VERSIONS['KWOK_VERSION']}/kwokctl\n"
    plant(cache, "kwokctl")
    assert run(cache, "check").stdout == f"all test-bed binaries present in {cache}/bin\n"
    assert run(cache, "check", "upgrade").returncode == 1


def test_each_component_says_when_it_starts_and_how_long_it_took(tmp_path):
    cache, tools = tmp_path / "cache", tmp_path / "tools"
    tools.mkdir()
    (tools / "go").write_text(FAKE_GO)
    (tools / "go").chmod(0o755)
    result = run(cache, "etcd", path=f"{tools}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    log = cache / "logs" / f"etcd-{VERSIONS['ETCD_VERSION']}.log"
    lines = result.stderr.splitlines()
    assert lines[0] == f"testbin: [1/1] building etcd {VERSIONS['ETCD_VERSION']} (usually ~{minutes(figures()['etcd'])} min on 2 cores; log: {log})"
    assert re.fullmatch(r"testbin: \[1/1\] etcd built in \d+s \(\d+s so far\)", lines[1]), lines
    assert re.fullmatch(r"\S+Z etcd \d+s go=go1.25.0 jobs=1\n", (cache / "logs" / "build-times.txt").read_text())
    assert run(cache, "path", "etcd").stdout.strip() == f"{cache}/bin/etcd-{VERSIONS['ETCD_VERSION']}/etcd"
