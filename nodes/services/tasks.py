"""The node's one task table: a task per job this node takes part in, whichever engine runs it.

:class:`TaskService` reads and writes the rows (:class:`nodes.models.NodeTask`, status
:class:`nodes.models.TaskStatus`, moving only as ``TASK_MOVES`` allows): every change is persisted
with its audit entry in one transaction, before it is acted on. It answers the generic task routes
(status, sealed outputs) and holds the node's one authorization guard
(:class:`nodes.services.grants.AuthorizationGuard`). What a task runs is its engine's: the step route
(:mod:`nodes.services.steps`) hands each step to the engine's node side (e.g. :mod:`nodes.secretflow`).
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from nodes.errors import OutputNotFound, TaskExists, TaskNotFound
from nodes.models import NodeTask, SealedOutput, TaskOut, TaskOutputInfo, task_may_move
from nodes.services.audit import AuditLog
from nodes.services.chain import NodeChain
from nodes.services.datasets import DatasetService
from nodes.services.grants import AuthorizationGuard
from nodes.services.policy import PolicyService
from nodes.settings import NodeSettings


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


class TaskService:
    """The tasks of this node's jobs (the task table, its sealed outputs, the authorization guard)."""

    def __init__(
        self,
        settings: NodeSettings,
        engine: Engine,
        audit: AuditLog,
        datasets: DatasetService,
        policy: PolicyService,
        chain: NodeChain | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.audit = audit
        self.datasets = datasets
        self.policy = policy
        self.chain = chain
        self.member = settings.name
        self.guard = AuthorizationGuard(self.member, engine, chain)
        self.outputs_root = settings.work_dir / "tasks"
        self.scratch_root = settings.tmp_dir()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ storage

    def _row(self, session: Session, job_id: str) -> NodeTask | None:
        return session.exec(select(NodeTask).where(NodeTask.job_id == job_id)).first()

    def find(self, job_id: str) -> NodeTask | None:
        """The task of ``job_id`` on this node, if there is one."""
        with Session(self.engine) as session:
            return self._row(session, job_id)

    def _get(self, job_id: str) -> NodeTask:
        t = self.find(job_id)
        if t is None:
            raise TaskNotFound(f"no task for job {job_id!r} on this node")
        return t

    def _update(self, job_id: str, audit: dict[str, Any] | None = None, **values: Any) -> NodeTask:
        """Persist changes to the task (and, if given, an audit entry) in one transaction."""
        with self.audit.transaction() as session:
            t = self._row(session, job_id)
            assert t is not None
            if "status" in values and not task_may_move(t.status, values["status"]):
                raise TaskExists(f"the task of job {job_id!r} is {t.status}; it cannot become {values['status']}")
            for k, v in values.items():
                setattr(t, k, v)
            session.add(t)
            if audit is not None:
                self.audit.append(session, target=job_id, **audit)
            session.flush()
            return t

    def job_dir(self, job_id: str) -> Path:
        """Where the sealed outputs and the party's log of ``job_id`` stay (named by the job key)."""
        from protocols.crypto.approvals import job_key

        return self.outputs_root / job_key(job_id).hex()[:32]

    def _out(self, t: NodeTask) -> TaskOut:
        outs = json.loads(t.outputs_json or "{}")
        return TaskOut(
            job_id=t.job_id, party=self.member, status=t.status, stage=t.stage, error=t.error,
            intersection_rows=t.intersection_rows,
            outputs=[TaskOutputInfo(name=n, **o) for n, o in sorted(outs.items())],
            result_hash=t.result_hash, receipt_tx=t.receipt_tx,
            started_at=_epoch(t.started_at), finished_at=_epoch(t.finished_at),
        )

    # ------------------------------------------------------------ the generic routes

    def get(self, job_id: str) -> TaskOut:
        """The task as the node reports it (no value of any row)."""
        return self._out(self._get(job_id))

    def output(self, job_id: str, name: str, actor: str) -> SealedOutput:
        """An output sealed to its receiver; only for succeeded tasks and outputs in the receivers."""
        t = self._get(job_id)
        outs = json.loads(t.outputs_json or "{}")
        if t.status != "succeeded" or name not in outs:
            raise OutputNotFound(f"job {job_id!r} has no output {name!r} on this node")
        path = self.job_dir(job_id) / f"{name}.sealed"
        if not path.is_file():
            raise OutputNotFound(f"the sealed output {name!r} of job {job_id!r} is gone")
        o = outs[name]
        self.audit.record(actor=actor, action="task.output", target=job_id,
                          detail={"name": name, "receiver": o["receiver"], "sm3": o["sm3"]})
        return SealedOutput(name=name, receiver=o["receiver"], sm3=o["sm3"],
                            envelope_b64=base64.b64encode(path.read_bytes()).decode())
