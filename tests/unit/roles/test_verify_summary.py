"""The verify role's summary as `make demo` shows it: summary.j2 rendered by Ansible, printed by the
default callback (YAML result format, as demo.sh asks for), cut out by demo.sh's own filter."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEMO = os.path.join(REPO, "tests", "testbed", "demo.sh")
VERIFY = os.path.join(REPO, "roles", "verify")

ROOT = "AB:CD:EF"
REPORT = {"markdown": "/r/report.md", "dot": "/r/mesh.dot", "json": "/r/findings.json"}
FINDING = {"severity": "error", "id": "remote_secret_missing", "clusters": ["cluster1"],
           "evidence": "no remote secret for cluster2", "fix": "run site"}


def doctor(findings: list, report: dict, roots: dict) -> dict:
    errors = sum(f["severity"] == "error" for f in findings)
    return {"summary": {"error": errors, "warning": len(findings) - errors}, "findings": findings,
            "report": report, "roots": roots, "healthy": errors == 0}


# name, verify_doctor, passed, what the demo prints
CASES = [
    ("healthy, picture rendered", doctor([], {**REPORT, "svg": "/r/mesh.svg"}, {"cluster1": [ROOT], "cluster2": [ROOT]}), True,
     ["2 clusters: 0 error(s), 0 warning(s)", f"2 clusters share root {ROOT}", "report: /r/report.md", "picture: /r/mesh.svg"]),
    ("a finding, no Graphviz", doctor([FINDING], {**REPORT, "svg": ""}, {"cluster1": [ROOT], "cluster2": [ROOT]}), False,
     ["2 clusters: 1 error(s), 0 warning(s)", f"2 clusters share root {ROOT}",
      "[error] remote_secret_missing in cluster1: no remote secret for cluster2 -> run site",
      "report: /r/report.md", "picture: /r/mesh.dot (Graphviz dot not found: no mesh.svg)"]),
    ("two roots, no report", doctor([], {}, {"cluster1": [ROOT], "cluster2": ["01:02"]}), True,
     ["2 clusters: 0 error(s), 0 warning(s)"]),
]

# Runs in its own interpreter: the plugin loader it initialises would stay in this one.
RENDER = r"""
import json, sys
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import callback_loader, init_plugin_loader
from ansible.template import Templar
try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19 templates every string
    trust_as_template = lambda value: value
init_plugin_loader()
callback = callback_loader.get("default")
callback.set_options(direct={"result_format": "yaml"})
source, cases = sys.argv[1], json.load(sys.stdin)
template = open(source).read()
out = []
for doctor, passed in cases:
    variables = {"verify_doctor": doctor, "ansible_play_hosts_all": ["cluster1", "cluster2"]}
    msg = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(template))
    result = {"changed": False, "msg": msg}
    if not passed:
        result.update(assertion="verify_doctor.healthy", evaluated_to=False, failed=True)
    head = "ok: [cluster1] => " if passed else "fatal: [cluster1]: FAILED! => "
    out.append(
        "TASK [meshfed.istio.verify : Diagnose the mesh on the control node] ***\n"
        "ok: [cluster1 -> localhost]\n\n"
        "TASK [meshfed.istio.verify : The mesh is healthy] ***\n"
        + head + callback._dump_results(result, indent=4)
        + "\n\nPLAY RECAP ***\ncluster1 : ok=4 changed=0 unreachable=0 failed=0\n")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def printed() -> dict:
    """What ansible-playbook prints for each case."""
    run = subprocess.run([sys.executable, "-c", RENDER, os.path.join(VERIFY, "templates", "summary.j2")],
                         input=json.dumps([[case[1], case[2]] for case in CASES]), capture_output=True, text=True, check=True)
    return dict(zip([case[0] for case in CASES], json.loads(run.stdout)))


def demo_filter(text: str) -> list[str]:
    run = subprocess.run(["bash", "-c", f". {DEMO} && summary"], input=text, capture_output=True, text=True, check=True)
    return run.stdout.splitlines()


@pytest.mark.parametrize(("name", "expected"), [(case[0], case[3]) for case in CASES])
def test_demo_shows_the_summary(printed, name, expected):
    assert demo_filter(printed[name]) == expected


def test_demo_asks_for_the_result_format_the_filter_reads():
    with open(DEMO) as f:
        demo = f.read()
    assert re.search(r"ANSIBLE_CALLBACK_RESULT_FORMAT=yaml \S+ansible-playbook\S* meshfed\.istio\.verify", demo)


def test_the_summary_is_both_messages_of_the_last_verify_task():
    with open(os.path.join(VERIFY, "tasks", "main.yml")) as f:
        last = yaml.safe_load(f)[-1]["ansible.builtin.assert"]
    assert last["success_msg"] == last["fail_msg"] == "{{ lookup('ansible.builtin.template', 'summary.j2') }}"
