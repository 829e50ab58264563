# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: name rules shared by modules and roles. Not a public API."""

from __future__ import annotations

import re

# Used with fullmatch: `$` would also accept a trailing newline ("east\n").
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def is_dns1123_label(name: object) -> bool:
    return isinstance(name, str) and DNS1123_LABEL.fullmatch(name) is not None


def name_problems(names: list[str], what: str = "cluster name") -> list[str]:
    """Every reason this list of names cannot be used, as sentences; empty when fine."""
    problems = []
    seen: list = []
    for name in names:
        if not is_dns1123_label(name):
            problems.append(
                f"{what} {name!r} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters, starting and ending alphanumeric)"
            )
        if name in seen:
            problems.append(f"{what} {name!r} appears more than once; every {what} must be unique")
        seen.append(name)
    return problems
