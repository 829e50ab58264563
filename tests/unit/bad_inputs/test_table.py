# -*- coding: utf-8 -*-
"""The bad-input table in tests/README.md lists exactly the cases the tests run, with their counts."""

from __future__ import annotations

import importlib.util
import pathlib
import re

HERE = pathlib.Path(__file__).parent
README = HERE.parent.parent / "README.md"
ROW = re.compile(r"^\| `(?P<id>[a-z0-9-]+)` \| (?P<area>[a-z_]+) \| `(?P<option>[^`]+)` \| (?P<was>crash|accepted|unclear|refused) \| (?P<refusal>.*) \|$")


def _cases() -> dict[str, tuple[str, str, str, str]]:
    found = {}
    for path in sorted(HERE.glob("test_*.py")):
        if path.name == "test_table.py":
            continue
        spec = importlib.util.spec_from_file_location(f"bad_inputs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        area = path.stem.removeprefix("test_")
        for case in module.CASES:
            assert case.id not in found, f"case id {case.id} used twice"
            found[case.id] = (area, case.option, case.was, case.refusal)
    return found


def _table() -> dict[str, tuple[str, str, str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    return {m["id"]: (m["area"], m["option"], m["was"], m["refusal"].replace("\\|", "|")) for m in map(ROW.match, section.splitlines()) if m}


def test_table_lists_every_case():
    """Every case once, with its area, option, before and the refusal fragment its test asserts (a '|' written '\\|')."""
    assert _table() == _cases()


def test_summary_counts():
    cases = _cases()
    text = README.read_text(encoding="utf-8").split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    before = {word: sum(1 for case in cases.values() if case[2] == word) for word in ("crash", "accepted", "unclear")}
    line = f"{len(cases)} bad inputs tried, {len(cases)} refused with a message naming the option, none crashing"
    assert line in text
    assert f"before: {before['crash']} crashed, {before['accepted']} were accepted, {before['unclear']} got an unclear message" in text
