"""Shared HE fixtures: one CKKS key set per module (key generation is the slow part)."""

from __future__ import annotations

import pytest

from protocols.he.context import ContextPair, make_context


@pytest.fixture(scope="module")
def pair() -> ContextPair:
    return make_context()


@pytest.fixture(scope="module")
def other_pair() -> ContextPair:
    return make_context()
