# -*- coding: utf-8 -*-
"""README's "What is here" table names every plugin, filter, role, playbook and top-level directory of the tree."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[2]
SKIPPED = {"__pycache__", "output"}  # Python's caches; ansible-test's results


def _table() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## What is here", 1)[1].split("\n## ", 1)[0]


def _named() -> set[str]:
    """What the table spells in backticks, one name per backtick pair (`a`, `b/c.py`)."""
    return set(re.findall(r"`([^`\s]+)`", _table()))


def _files(folder: str, suffix: str = ".py") -> list[pathlib.Path]:
    return sorted(path for path in (ROOT / folder).glob(f"*{suffix}") if path.name != "__init__.py")


def _entries(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name not in SKIPPED)


def _filters() -> list[str]:
    names = []
    for path in _files("plugins/filter"):
        module = importlib.import_module(f"ansible_collections.meshfed.istio.plugins.filter.{path.stem}")
        names += module.FilterModule().filters()
    return sorted(names)


def _shown(path: str, named: set[str]) -> bool:
    """A file is shown by its path, or by its name (the row gives the folder: `plugins/modules/pki.py`, `_io.py`)."""
    return path in named or pathlib.PurePath(path).name in named


def _missing(named: set[str]) -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}

    def need(kind: str, names, ok=lambda name: name in named):
        absent = [name for name in names if not ok(name)]
        if absent:
            missing[kind] = absent

    for kind in ("modules", "module_utils", "lookup"):
        need(kind, [f"plugins/{kind}/{path.name}" for path in _files(f"plugins/{kind}")], lambda name: _shown(name, named))
    for kind in ("action", "doc_fragments"):  # shown by their folder: each pairs with a module or option set of that name
        need(kind, [f"plugins/{kind}/"])
    need("filters", _filters())
    need("roles", _entries(ROOT / "roles"))
    need("playbooks", [f"playbooks/{path.name}" for path in _files("playbooks", ".yml")])

    def under(folder: str) -> bool:  # a folder is shown by its own name or by a path inside it
        return any(name == folder or name.startswith(folder.rstrip("/") + "/") for name in named)

    need("top level", [name + "/" if (ROOT / name).is_dir() else name for name in _entries(ROOT) if name != "README.md"], under)
    need("tests", [f"tests/{name}" for name in _entries(ROOT / "tests") if (ROOT / "tests" / name).is_dir()], under)
    return missing


def test_the_table_names_everything_in_the_tree():
    assert _missing(_named()) == {}


@pytest.mark.parametrize(
    ("left_out", "reported"),
    [
        ("plugins/modules/pki.py", {"modules": ["plugins/modules/pki.py"]}),
        ("istio_installed", {"filters": ["istio_installed"]}),
        ("tests/ee", {"tests": ["tests/ee"]}),
        ("bindep.txt", {"top level": ["bindep.txt"]}),
        ("rotate_ca", {"roles": ["rotate_ca"]}),
    ],
)
def test_a_name_left_out_of_the_table_is_reported(left_out, reported):
    assert _missing(_named() - {left_out}) == reported
