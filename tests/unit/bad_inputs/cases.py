# -*- coding: utf-8 -*-
"""One bad input a user can give, what the test feeds, and the refusal it must get.

Each `test_<area>.py` beside this file defines `CASES`, a list of Case, and runs every one of
them as a parametrized test. `test_table.py` keeps the table in tests/README.md in step.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Case(NamedTuple):
    id: str  # unique across areas, kebab-case: the table's "Case" column
    option: str  # the option or variable that carries the bad value (the table's "Option" column)
    value: Any  # what the test feeds (a value, or a dict of options)
    refusal: str  # a fragment of the message the user must get (asserted by the area's test)
    was: str = "refused"  # before the fix: "crash", "accepted" or "unclear" (the table's "Before" column)
