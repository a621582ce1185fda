"""The job state machine.

``SUBMITTED → PENDING_APPROVAL → AUTHORIZED → RUNNING → SUCCEEDED`` with the exits ``REJECTED``,
``EXPIRED``, ``REVOKED`` and ``FAILED``. :func:`transition` checks the table, writes the new state
and a :class:`JobEvent` in one committed transaction, and only then returns — callers act after it,
so a coordinator that dies between the two resumes from the stored state.

**Fault-injection points** (tests only): with ``DCP_FAULT_EXIT=before:<STATE>`` or ``after:<STATE>``
in its environment the coordinator process ends at once (``os._exit(86)``, no clean-up: as if killed)
just before, or just after, it commits a job's transition to ``<STATE>``
(``tests/coordinator/test_fault_points.py`` kills it at every transition of a job in turn).
"""

from __future__ import annotations

import logging
import os
import threading

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from coordinator.errors import IllegalTransition, JobNotFound
from coordinator.models import TERMINAL, Job, JobEvent, JobState, utcnow

S = JobState
FAULT_ENV = "DCP_FAULT_EXIT"
FAULT_EXIT_CODE = 86
log = logging.getLogger("dcp.coordinator")


def fault_point(when: str, dst: JobState) -> None:
    """End the process here if :data:`FAULT_ENV` names this point (``before:RUNNING``, ``after:SUCCEEDED``…)."""
    point = os.environ.get(FAULT_ENV)
    if point and point == f"{when}:{dst.value}":
        log.error("fault injection: exiting %s the transition to %s", when, dst.value)
        logging.shutdown()
        os._exit(FAULT_EXIT_CODE)


ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.SUBMITTED: frozenset({S.PENDING_APPROVAL, S.REJECTED, S.EXPIRED, S.REVOKED, S.FAILED}),
    S.PENDING_APPROVAL: frozenset({S.AUTHORIZED, S.REJECTED, S.EXPIRED, S.REVOKED, S.FAILED}),
    S.AUTHORIZED: frozenset({S.RUNNING, S.EXPIRED, S.REVOKED, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.REVOKED, S.FAILED}),
    **{t: frozenset() for t in TERMINAL},
}


def can_transition(src: JobState, dst: JobState) -> bool:
    """Whether ``src → dst`` is in the table."""
    return dst in ALLOWED[src]


class Lifecycle:
    """Serialized, persisted transitions over one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.RLock()

    def state(self, job_id: str) -> JobState:
        """The stored state of ``job_id``."""
        with Session(self.engine) as session:
            job = session.exec(select(Job).where(Job.job_id == job_id)).first()
            if job is None:
                raise JobNotFound(f"no job {job_id!r}")
            return JobState(job.state)

    def transition(
        self, job_id: str, dst: JobState, reason: str | None = None, *, expect: JobState | None = None
    ) -> JobState:
        """Move ``job_id`` to ``dst`` (committed before this returns); the previous state.

        ``expect`` makes it a compare-and-set: :class:`IllegalTransition` if the job is not in that
        state any more (another thread moved it first)."""
        with self._lock, Session(self.engine) as session:
            job = session.exec(select(Job).where(Job.job_id == job_id)).first()
            if job is None:
                raise JobNotFound(f"no job {job_id!r}")
            src = JobState(job.state)
            if expect is not None and src != expect:
                raise IllegalTransition(f"job {job_id} is {src.value}, not {expect.value}; cannot go to {dst.value}")
            if not can_transition(src, dst):
                raise IllegalTransition(f"job {job_id} cannot go from {src.value} to {dst.value}")
            job.state = dst.value
            job.updated_at = utcnow()
            if dst in TERMINAL or reason:
                job.reason = reason
            session.add(job)
            session.add(JobEvent(job_id=job_id, from_state=src.value, to_state=dst.value, reason=reason))
            fault_point("before", dst)
            session.commit()
            fault_point("after", dst)
            return src

    def events(self, job_id: str) -> list[JobEvent]:
        """The transition log of ``job_id``, oldest first."""
        with Session(self.engine) as session:
            return list(session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
