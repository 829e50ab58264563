"""The verify role's summary as `make demo` shows it: the doctor's summary_text, printed by the verify
role's last task through the default callback (YAML result format, as demo.sh asks for), cut out by
demo.sh's own filter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from ansible_collections.meshfed.istio.plugins.module_utils import _doctor_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEMO = os.path.join(REPO, "tests", "testbed", "demo.sh")
VERIFY_TASKS = os.path.join(REPO, "roles", "verify", "tasks", "main.yml")

ROOT = "AB:CD:EF"
REPORT = {"markdown": "/r/report.md", "dot": "/r/mesh.dot", "json": "/r/findings.json"}
FINDING = {"severity": "error", "id": "remote_secret_missing", "clusters": ["cluster1"], "evidence": "no remote secret for cluster2", "fix": "run site"}


def doctor(findings: list, report: dict, shared_root: str) -> dict:
    errors = sum(f["severity"] == "error" for f in findings)
    return {
        "summary": {"error": errors, "warning": len(findings) - errors},
        "findings": findings,
        "report": report,
        "roots": {"cluster1": [ROOT], "cluster2": [shared_root or "01:02"]},
        "shared_root": shared_root,
    }


# name, the doctor's result, healthy, what the demo prints
CASES = [
    (
        "healthy, picture rendered",
        doctor([], {**REPORT, "svg": "/r/mesh.svg"}, ROOT),
        True,
        ["2 clusters: 0 error(s), 0 warning(s)", f"2 clusters share root {ROOT}", "report: /r/report.md", "picture: /r/mesh.svg"],
    ),
    (
        "a finding, no Graphviz",
        doctor([FINDING], {**REPORT, "svg": ""}, ROOT),
        False,
        [
            "2 clusters: 1 error(s), 0 warning(s)",
            f"2 clusters share root {ROOT}",
            "[error] remote_secret_missing in cluster1: no remote secret for cluster2 -> run site",
            "report: /r/report.md",
            "picture: /r/mesh.dot (Graphviz dot not found: no mesh.svg)",
        ],
    ),
    ("two roots, no report", doctor([], {}, ""), True, ["2 clusters: 0 error(s), 0 warning(s)"]),
]

# ansible-playbook's output around the verify role's last task. Its own interpreter: the plugin
# loader it initialises would stay in this one.
PRINT = r"""
import json, sys
from ansible.plugins.loader import callback_loader, init_plugin_loader
init_plugin_loader()
callback = callback_loader.get("default")
callback.set_options(direct={"result_format": "yaml"})
out = []
for msg, healthy in json.load(sys.stdin):
    result = {"changed": False, "msg": msg}
    if not healthy:
        result.update(assertion="verify_doctor.healthy", evaluated_to=False, failed=True)
    out.append(
        "TASK [meshfed.istio.verify : Diagnose the mesh on the control node] ***\n"
        "ok: [cluster1 -> localhost]\n\n"
        "TASK [meshfed.istio.verify : The mesh is healthy] ***\n"
        + ("ok: [cluster1] => " if healthy else "fatal: [cluster1]: FAILED! => ")
        + callback._dump_results(result, indent=4)
        + "\n\nPLAY RECAP ***\ncluster1 : ok=4 changed=0 unreachable=0 failed=0\n")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def printed() -> dict:
    """What ansible-playbook prints for each case."""
    messages = [[_doctor_report.summary_text(2, case[1]), case[2]] for case in CASES]
    run = subprocess.run([sys.executable, "-c", PRINT], input=json.dumps(messages), capture_output=True, text=True, check=True)
    return dict(zip([case[0] for case in CASES], json.loads(run.stdout), strict=True))


def demo_filter(text: str) -> list[str]:
    run = subprocess.run(["bash", "-c", f". {DEMO} && summary"], input=text, capture_output=True, text=True, check=True)
    return run.stdout.splitlines()


@pytest.mark.parametrize(("name", "expected"), [(case[0], case[3]) for case in CASES])
def test_demo_shows_the_summary(printed, name, expected):
    assert demo_filter(printed[name]) == expected


def test_demo_asks_for_the_result_format_the_filter_reads():
    with open(DEMO, encoding="utf-8") as f:
        demo = f.read()
    assert re.search(r"ANSIBLE_CALLBACK_RESULT_FORMAT=yaml \S+ansible-playbook\S* meshfed\.istio\.verify", demo)


def test_verify_prints_the_summary_text_pass_or_fail():
    with open(VERIFY_TASKS, encoding="utf-8") as f:
        last = yaml.safe_load(f)[-1]["ansible.builtin.assert"]
    assert last["success_msg"] == last["fail_msg"] == "{{ verify_doctor.summary_text }}"
