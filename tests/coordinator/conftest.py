"""Fixtures of the coordinator tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.coordkit import seeded_coordinator


@pytest.fixture
def coord(tmp_path) -> Iterator[Any]:
    """The seeded coordinator (tests/coordkit.py) over ``tmp_path``."""
    c = seeded_coordinator(tmp_path)
    yield c
    c.close()
