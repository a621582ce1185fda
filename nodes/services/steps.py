"""The node's one step route for engines that run through it (``POST /tasks/{job_id}/{step}``).

An engine registers a :class:`engines.base.NodeEngine` with its steps and their typed bodies; the node
does everything around a step the same way for every engine:

1. the kind comes from the slice **this node approved**, never from the caller; the step must be one
   of that engine's, and the body must validate against the step's model (:class:`TaskMismatch`);
2. the one authorization guard (:mod:`nodes.services.grants`) and the node's policy;
3. the task (one row of the task table, status :class:`nodes.models.TaskStatus`) is created
   ``running`` and audited before the engine acts; a task that ended is never run again. A step the
   engine names in ``prepares`` (it reads no data, e.g. reserving ports) skips 2. and 3.: it runs on
   this node's approval alone and records the task ``ports`` itself (:meth:`TaskPort.reserve`); the
   engine's other steps then run only on a task it reserved;
4. the engine's step runs with a :class:`TaskPort`: when it is done it hands over its outputs, which
   the port seals to their approved receivers (:mod:`nodes.services.receipts`), records the usage
   receipt of every dataset of this node on chain, and marks the task ``succeeded``.
A step that raises fails the task (audited) and the error reaches the caller, unless it refused for
where the task is in its life (:class:`TaskExists`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from engines import registry
from engines.base import NodeEngine
from nodes.errors import NodeError, TaskExists, TaskMismatch, TaskNotFound
from nodes.models import JobCheck, NodeTask, TaskStatus, TaskStopped, utcnow
from nodes.services.receipts import record_receipt, seal_for
from nodes.services.tasks import TaskService, _epoch


class StepNotFound(TaskNotFound):
    """The job's engine has no step of that name."""


class TaskPort:
    """One task as its engine's node side sees it (``engines.base.NodeEngine.step``'s ``task``)."""

    def __init__(
        self, tasks: TaskService, job_id: str, approved: dict[str, Any], actor: str, authorization: Any = None,
    ) -> None:
        self._tasks = tasks
        self.job_id = job_id
        self.member = tasks.member
        self.kind: str = approved["kind"]
        self.approved = approved  # the slice this node approved: inputs, receivers, requester, purpose, ...
        self.actor = actor
        self.authorization = authorization  # the live authorization the guard checked (None in a prepares step)

    def authorize(self, datasets: list[str]) -> Any:
        """The one guard again, for ``datasets`` (a step that reads more than the approved slice names)."""
        guard = self._tasks.guard
        return guard.check(self.job_id, datasets, guard.approval(self.job_id))

    def reserve(self, record: dict[str, Any], action: str, detail: dict[str, Any]) -> None:
        """Record the task ``ports`` with the engine's ``record`` (NodeTask fields), audited as ``action``
        (a ``prepares`` step; the caller holds the task table's lock)."""
        with self._tasks.audit.transaction() as session:
            session.add(NodeTask(job_id=self.job_id, status=TaskStatus.PORTS.value, **record))
            self._tasks.audit.append(session, actor=self.actor, action=action, target=self.job_id, detail=detail)

    def stage(self, stage: str) -> None:
        """Show how far the task got."""
        self._tasks._update(self.job_id, stage=stage)

    def finish(
        self, outputs: dict[str, bytes], rows: int, *, result_hash: bytes | None = None,
        record: dict[str, Any] | None = None, detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Seal ``outputs`` (name -> bytes) to their approved receivers, record this node's usage receipt
        of each of its datasets, and end the task ``succeeded``; the task as the node reports it.

        ``result_hash`` (default: SM3 over the outputs' SM3 digests, in name order) is what the receipt
        names; ``record`` (more NodeTask fields) and ``detail`` (more of the audit entry) are the engine's."""
        from protocols.crypto.sm3 import sm3_digest

        t_seal = time.perf_counter()
        chain = self._tasks.chain
        assert chain is not None  # the guard let the step run: the node is chain-wired
        receivers = self.approved.get("receivers", {})
        unknown = sorted(n for n in outputs if not receivers.get(n))
        if unknown:
            raise TaskMismatch(f"output(s) {unknown} have no receiver this node approved")
        digests = {n: sm3_digest(d) for n, d in outputs.items()}
        if result_hash is None:
            result_hash = sm3_digest(b"".join(digests[n] for n in sorted(digests)))
        job_dir = self._tasks.job_dir(self.job_id)
        job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sealed: dict[str, dict[str, Any]] = {}
        for name, data in sorted(outputs.items()):
            receiver = receivers[name][0]
            fd = os.open(job_dir / f"{name}.sealed", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(seal_for(chain, receiver, self.job_id, name, data))
            sealed[name] = {"receiver": receiver, "sm3": digests[name].hex(), "size": len(data)}
        t = self._tasks._get(self.job_id)
        try:
            txs = [record_receipt(chain, self.member, self.job_id, i["dataset"], rows, result_hash, _epoch(t.started_at))
                   for i in self.approved.get("inputs", [])]
        except Exception:
            for name in sealed:  # no receipt, no output
                (job_dir / f"{name}.sealed").unlink(missing_ok=True)
            raise
        self._tasks._update(
            self.job_id, status=TaskStatus.SUCCEEDED.value, stage="done", intersection_rows=rows,
            outputs_json=json.dumps(sealed), result_hash=result_hash.hex(), receipt_tx=txs[0] if txs else None,
            finished_at=utcnow(), **(record or {}),
            audit={"actor": "node", "action": "task.succeed", "detail": {
                "rows": rows, "result_hash": result_hash.hex(), "receipt_txs": txs,
                "outputs": {n: {"receiver": o["receiver"], "sm3": o["sm3"]} for n, o in sealed.items()},
                "seal_receipt_s": round(time.perf_counter() - t_seal, 3), **(detail or {})}},
        )
        return self._tasks.get(self.job_id).model_dump()


class StepService:
    """The generic step route over the node's one task table."""

    def __init__(self, tasks: TaskService, local: Sequence[NodeEngine] = ()) -> None:
        self.tasks = tasks
        self.local = {k: e for e in local for k in e.kinds}
        """Node engines this node built itself (they keep per-node state); before the registry's."""

    def node_engine(self, kind: str) -> NodeEngine | None:
        """The node side of ``kind``'s engine at this node."""
        return self.local.get(kind) or registry.node_engine_for(kind)

    def _engine(self, job_id: str) -> tuple[NodeEngine | None, Any, dict[str, Any]]:
        approval = self.tasks.guard.approval(job_id)
        approved = json.loads(approval.manifest_json)
        return self.node_engine(str(approved.get("kind"))), approval, approved

    def close(self) -> None:
        """Node shutdown: every node engine of this node stops what it still runs."""
        for e in {id(e): e for e in self.local.values()}.values():
            e.close()

    def _fail(self, job_id: str, exc: Exception) -> None:
        error = f"{getattr(exc, 'name', type(exc).__name__)}: {getattr(exc, 'detail', exc)}"[:500]
        try:
            t = self.tasks._get(job_id)
        except TaskNotFound:
            return
        if t.status == TaskStatus.RUNNING.value:
            self.tasks._update(job_id, status=TaskStatus.FAILED.value, error=error, finished_at=utcnow(),
                               audit={"actor": "node", "action": "task.fail", "detail": {"error": error}})

    def run(self, job_id: str, step: str, raw: dict[str, Any] | None, actor: str) -> dict[str, Any]:
        """Run ``step`` of ``job_id`` (the module docstring says what is checked first)."""
        engine, approval, approved = self._engine(job_id)
        if engine is None:
            raise TaskMismatch(f"a {approved.get('kind')} job has no steps on this route")
        model: type[BaseModel] | None = engine.steps.get(step)
        if model is None:
            raise StepNotFound(f"a {approved['kind']} job has no step {step!r} (it has {', '.join(sorted(engine.steps))})")
        try:
            body = model.model_validate(raw or {})
        except ValidationError as exc:
            e = exc.errors()[0]
            raise TaskMismatch(f"{step}: {'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}") from None
        if step in engine.prepares:  # reads no data: the engine reserves the task itself
            return engine.step(TaskPort(self.tasks, job_id, approved, actor), step, body)
        with self.tasks._lock:
            try:
                t: NodeTask | None = self.tasks._get(job_id)
            except TaskNotFound:
                t = None
            if t is not None and t.status == TaskStatus.SUCCEEDED.value:
                return self.tasks.get(job_id).model_dump()  # done before: the same answer
            if t is None and engine.prepares:
                raise TaskNotFound(f"no task for job {job_id!r} on this node (step {sorted(engine.prepares)[0]!r} first)")
            if t is not None and t.status not in (TaskStatus.RUNNING.value, TaskStatus.PORTS.value):
                raise TaskExists(f"the task of job {job_id!r} is already {t.status}")
            datasets = [i["dataset"] for i in approved.get("inputs", [])]
            auth = self.tasks.guard.check(job_id, datasets, approval)
            self.tasks.policy.enforce(JobCheck.model_validate({
                "kind": approved["kind"], "requester": approved["requester"],
                "requester_role": approved["requester_role"], "purpose": approved["purpose"],
                "inputs": approved.get("inputs", []), "aggregate_group_size": approved.get("aggregate_group_size"),
            }))
            if t is None:
                with self.tasks.audit.transaction() as session:
                    session.add(NodeTask(job_id=job_id, status=TaskStatus.RUNNING.value, stage=step, endpoint_json="{}",
                                         datasets_json=json.dumps(approved.get("inputs", [])), started_at=utcnow()))
                    self.tasks.audit.append(session, actor=actor, action="task.authorized", target=job_id, detail={
                        "auth_digest": bytes(auth.digest).hex(), "manifest_hash": bytes(auth.terms.manifest_hash).hex(),
                        "datasets": datasets, "step": step})
        port = TaskPort(self.tasks, job_id, approved, actor, auth)
        try:
            return engine.step(port, step, body)
        except TaskExists:
            raise  # refused for where the task is in its life (e.g. started twice): not a failure of it
        except NodeError as exc:
            self._fail(job_id, exc)
            raise

    def recover(self) -> int:
        """After a restart: every task that was running gets its engine's ``recover`` (drop what it
        left), then ends ``failed`` (unless the engine ended it); how many."""
        from sqlmodel import Session, select

        with Session(self.tasks.engine) as session:
            running = [t.job_id for t in session.exec(select(NodeTask).where(NodeTask.status == TaskStatus.RUNNING.value))]
        n = 0
        for job_id in running:
            try:
                engine, _, approved = self._engine(job_id)
            except NodeError:  # no longer approved here: nothing tells which engine ran it
                engine, approved = None, {}
            try:
                if engine is not None:
                    engine.recover(TaskPort(self.tasks, job_id, approved, "node"))
            finally:
                if self.tasks._get(job_id).status == TaskStatus.RUNNING.value:
                    self.tasks._update(job_id, status=TaskStatus.FAILED.value, error="the node restarted during the task",
                                       finished_at=utcnow(), audit={"actor": "node", "action": "task.fail",
                                                                    "detail": {"error": "node restarted"}})
            n += 1
        return n

    def stop(self, job_id: str, actor: str) -> TaskStopped:
        """Stop the task: its engine stops what runs; a task it did not end is ``stopped`` (idempotent)."""
        t = self.tasks._get(job_id)
        if t.status == TaskStatus.RUNNING.value:
            try:
                engine, _, approved = self._engine(job_id)
            except NodeError:
                engine = None
            if engine is not None:
                engine.stop(TaskPort(self.tasks, job_id, approved, actor))
            t = self.tasks._get(job_id)
        if t.status in (TaskStatus.RUNNING.value, TaskStatus.PORTS.value):
            self.tasks._update(job_id, status=TaskStatus.STOPPED.value, finished_at=utcnow(),
                               error="stopped on request" if t.status == TaskStatus.RUNNING.value else None,
                               audit={"actor": actor, "action": "task.stop", "detail": {"was": t.status}})
        return TaskStopped(status=self.tasks._get(job_id).status)
