"""A node that restarts hands each task of a step-route engine that was running to its engine's
``recover``, then ends it failed; a SecretFlow task is left to the SecretFlow recovery."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlmodel import Session, select

from engines import registry
from nodes.context import NodeContext
from nodes.models import ApprovalRecord, NodeTask
from tests.toy_engine import ENGINE, KIND, NODE_ENGINE


def _approved(job_id: str, kind: str) -> ApprovalRecord:
    return ApprovalRecord(job_id=job_id, requester="bank", kind=kind, status="approved", manifest_hash="00" * 32,
                          manifest_json=json.dumps({"kind": kind, "requester": "bank", "inputs": []}),
                          expires_at=datetime.now(timezone.utc) + timedelta(hours=1))


def test_restart_recovers_step_route_tasks_through_their_engine(settings):
    registry.register(ENGINE, NODE_ENGINE)
    try:
        ctx = NodeContext.build(settings)
        with Session(ctx.engine) as s:
            s.add(_approved("job-toy-1", KIND))
            s.add(NodeTask(job_id="job-toy-1", status="running", endpoint_json="{}"))
            s.add(NodeTask(job_id="job-toy-done", status="succeeded", endpoint_json="{}"))
            s.add(_approved("job-toy-done", KIND))
            s.commit()
        ctx.close()
        NODE_ENGINE.recovered.clear()
        ctx = NodeContext.build(settings)  # the restart
        with Session(ctx.engine) as s:
            got = {t.job_id: (t.status, t.error) for t in s.exec(select(NodeTask))}
        ctx.close()
        assert NODE_ENGINE.recovered == ["job-toy-1"]
        assert got == {"job-toy-1": ("failed", "the node restarted during the task"),
                       "job-toy-done": ("succeeded", None)}
    finally:
        registry.unregister(ENGINE)
