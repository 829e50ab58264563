from __future__ import annotations

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils._names import is_dns1123_label, name_problems


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("east", True),
        ("cluster-1", True),
        ("a", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("East", False),
        ("-east", False),
        ("east-", False),
        ("east.west", False),
        ("east_west", False),
        ("", False),
        ("east\n", False),
        ("\neast", False),
        ("east\nwest", False),
        (None, False),
        (1, False),
    ],
)
def test_dns1123_label(name, valid):
    assert is_dns1123_label(name) is valid


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["east", "west"], []),
        ([], []),
        (["east", "east"], ["cluster name 'east' appears more than once; every cluster name must be unique"]),
        (["East"], ["cluster name 'East' is not a DNS-1123 label"]),
    ],
)
def test_name_problems(names, expected):
    problems = name_problems(names)
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start)
