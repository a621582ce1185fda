"""A node that answers an approval status its request cannot move to (a decided request reopened, a
status that does not exist) fails the job by name; the coordinator's record keeps what it was."""

from __future__ import annotations

from sqlmodel import Session, select

from coordinator.models import ApprovalRecord, JobState
from coordinator.spec import parse_spec

from .test_spec import base

S = JobState


class _Inbox:
    """One node's approvals inbox: files every request as pending, then answers ``later``."""

    def __init__(self, member: str, later: str) -> None:
        self.member, self.later = member, later

    def submit_approval(self, body: dict) -> dict:
        return {"id": 7, "status": "pending", "manifest_hash": body["manifest_hash"]}

    def approval(self, request_id: int) -> dict:
        return {"id": request_id, "status": self.later, "reason": None, "approval": None}


def _records(coord, job: str) -> dict[str, str]:  # noqa: F811
    with Session(coord.engine) as s:
        return {a.member: a.status for a in s.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == job))}


def test_a_reopened_or_unknown_approval_status_fails_the_job_and_changes_no_record(coord):  # noqa: F811
    for later in ("unsent", "maybe"):
        job = coord.submit(parse_spec(base())).job_id
        coord.node = lambda m, later=later: _Inbox(m, later if m == "tax" else "pending")
        assert coord.step(job) == S.PENDING_APPROVAL  # both requests filed
        assert _records(coord, job) == {"bank": "pending", "tax": "pending"}
        assert coord.step(job) == S.FAILED
        j = coord.get_job(job)
        assert j.state == "FAILED" and f"tax's node answered approval status {later!r}" in j.reason
        assert _records(coord, job) == {"bank": "pending", "tax": "pending"}
