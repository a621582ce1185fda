"""Shared fixtures: free ports, a scratch directory, and a process-table check.

Multi-party tests start real processes; ``no_leaked_processes`` asserts that every
child the test started is gone when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}


@pytest.fixture
def no_leaked_processes() -> Iterator[None]:
    """Fail the test if it leaves a child process of the test runner alive."""
    from nodes.secretflow.processes import idle_warm_party

    before = _descendants()
    yield
    leaked = []
    for pid in _descendants() - before:
        try:
            p = psutil.Process(pid)
            # a warm engine party that a node started before the test (a module-scoped federation's)
            # keeps waiting for that node's next task: not the test's
            if p.ppid() in before and idle_warm_party(pid):
                continue
            if p.status() != psutil.STATUS_ZOMBIE:
                leaked.append(f"{pid}: {' '.join(p.cmdline())[:200]}")
        except psutil.NoSuchProcess:
            pass
    assert not leaked, "processes left behind:\n" + "\n".join(leaked)
