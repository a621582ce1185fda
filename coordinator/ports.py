"""What the coordinator lends an engine: the ports of :mod:`engines.base`, over its own stores.

:class:`JobPort` is one RUNNING job as an engine sees it (node calls, the job's task records, the
stored results of other jobs); :class:`SubmitPort` is what a spec check may look up at submission.
Every store write happens here, in a session of its own; engines never open one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from coordinator.models import Job, TaskRecord, aware, utcnow
from coordinator.spec import JobSpec
from engines.base import RUNNING, PastJob, Progress

if TYPE_CHECKING:
    from coordinator.service import Coordinator


class SubmitPort:
    """Earlier jobs of this coordinator, for an engine's :meth:`~engines.base.Engine.complete_spec`."""

    def __init__(self, coord: Coordinator) -> None:
        self._coord = coord

    def job(self, job_id: str) -> PastJob | None:
        with Session(self._coord.engine) as session:
            job = session.exec(select(Job).where(Job.job_id == job_id)).first()
            tasks = list(session.exec(select(TaskRecord).where(TaskRecord.job_id == job_id))) if job else []
        if job is None:
            return None
        return PastJob(
            job_id=job.job_id, kind=job.kind, state=job.state, requester=job.requester,
            spec=JobSpec.model_validate_json(job.spec_json), results=json.loads(job.results_json or "{}"),
            task_details={t.member: json.loads(t.detail_json or "{}") for t in tasks},
        )


class JobPort:
    """One RUNNING job, as its engine advances it (:class:`engines.base.JobContext`)."""

    def __init__(self, coord: Coordinator, job: Job, manifest: dict[str, Any]) -> None:
        self._coord = coord
        self.job_id: str = job.job_id
        self.kind: str = job.kind
        self.manifest = manifest
        self.settings = coord.settings
        self.work_dir: Path = coord.settings.work_dir

    def call(self, member: str, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        node = self._coord.node(member) if timeout is None else self._coord.node(member, timeout=timeout)
        return node._call(method, path, json=body)

    def tasks(self) -> list[TaskRecord]:
        with Session(self._coord.engine) as session:
            q = select(TaskRecord).where(TaskRecord.job_id == self.job_id).order_by(TaskRecord.id)
            return list(session.exec(q))

    def _task(self, member: str) -> TaskRecord | None:
        with Session(self._coord.engine) as session:
            q = select(TaskRecord).where(TaskRecord.job_id == self.job_id, TaskRecord.member == member)
            return session.exec(q).first()

    def update_task(self, member: str, **values: Any) -> TaskRecord:
        with Session(self._coord.engine) as session:
            q = select(TaskRecord).where(TaskRecord.job_id == self.job_id, TaskRecord.member == member)
            t = session.exec(q).first() or TaskRecord(job_id=self.job_id, member=member)
            for k, v in values.items():
                setattr(t, k, v)
            t.last_seen = utcnow()
            session.add(t)
            session.commit()
            session.refresh(t)
            return t

    def cluster(self) -> dict[str, Any] | None:
        j = self._coord.get_job(self.job_id)
        return json.loads(j.cluster_json) if j.cluster_json else None

    def update_job(self, *, stage: str | None = None, cluster: dict[str, Any] | None = None) -> None:
        with Session(self._coord.engine) as session:
            job = session.exec(select(Job).where(Job.job_id == self.job_id)).one()
            if stage is not None:
                job.stage = stage
            if cluster is not None:
                job.cluster_json = json.dumps(cluster)
            session.add(job)
            session.commit()

    def silent(self, member: str, exc: Exception) -> Progress:
        """A node that stays silent longer than ``node_timeout_s`` fails the job (silence is measured
        from the task's ``last_seen``; the first silence starts the clock)."""
        t = self._task(member)
        if t is None or t.last_seen is None:
            self.update_task(member)
            return RUNNING
        silent = (utcnow() - aware(t.last_seen)).total_seconds()
        if silent >= self.settings.node_timeout_s:
            return Progress("failed", f"node {member} stopped answering for {silent:.0f}s: {getattr(exc, 'detail', exc)}")
        return RUNNING

    def result_of(self, job_id: str, name: str) -> dict[str, Any]:
        return self._coord.result(job_id, name).model_dump()

    def results_of(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._coord.get_job(job_id).results_json or "{}")
