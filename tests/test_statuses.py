"""Task and approval statuses are enums with their allowed moves, like the job's JobState: what is
decided or ended stays so."""

from __future__ import annotations

import pytest

from coordinator.models import APPROVAL_MOVES, ApprovalState, approval_may_move
from nodes.models import APPROVAL_MOVES as NODE_APPROVAL_MOVES
from nodes.models import TASK_MOVES, ApprovalStatus, TaskStatus, task_may_move


def test_task_moves():
    assert task_may_move("ports", "running") and task_may_move("running", "succeeded")
    assert task_may_move("running", "running")  # staying is no move
    for end in ("succeeded", "failed", "stopped"):
        assert TASK_MOVES[TaskStatus(end)] == frozenset()
        assert not any(task_may_move(end, s.value) for s in TaskStatus if s.value != end)
    assert not task_may_move("running", "ports")
    with pytest.raises(ValueError):
        task_may_move("running", "resurrected")


def test_approval_moves_at_the_coordinator_and_the_node():
    assert approval_may_move("unsent", "approved") and approval_may_move("pending", "rejected")
    for end in ("approved", "rejected", "expired"):
        assert APPROVAL_MOVES[ApprovalState(end)] == frozenset()
        assert NODE_APPROVAL_MOVES[ApprovalStatus(end)] == frozenset()
        assert not approval_may_move(end, "pending")
    assert not approval_may_move("pending", "unsent")
    assert not approval_may_move("pending", "maybe")  # not a status at all
    assert {s.value for s in ApprovalStatus} == {s.value for s in ApprovalState} - {"unsent"}
