from __future__ import annotations

import pytest

from pki_helpers import Ca


@pytest.fixture(scope="session")
def ca() -> Ca:
    return Ca()


@pytest.fixture(scope="session")
def other_ca() -> Ca:
    return Ca()
