"""Shared fixtures of the bank-credit scenario tests: one 20k federation per session."""

from __future__ import annotations

import pytest

from scenarios.bank_credit.generator import FederationData, generate


@pytest.fixture(scope="session")
def fed20k() -> FederationData:
    """The default-size federation (20,000 enterprises, seed 7), in memory."""
    return generate(20_000, seed=7)
