"""The node's one step route for engines that run through it (``POST /tasks/{job_id}/{step}``).

An engine registers a :class:`engines.base.NodeEngine` with its steps and their typed bodies; the node
does everything around a step the same way for every engine:

1. the kind comes from the slice **this node approved**, never from the caller; the step must be one
   of that engine's, and the body must validate against the step's model (:class:`TaskMismatch`);
2. the one authorization guard (:mod:`nodes.services.grants`) and the node's policy: the whole check
   when a task begins, then, for each later step of the running task, that the authorization is still
   live on chain (a multi-step engine may have recorded its receipt, using the run, before its last step);
3. the task (one row of the task table, status :class:`nodes.models.TaskStatus`) is created
   ``running`` and audited before the engine acts; a task that ended is never run again. A step the
   engine names in ``prepares`` (it reads no data, e.g. reserving ports) skips 2. and 3.: it runs on
   this node's approval alone and records the task ``ports`` itself (:meth:`TaskPort.reserve`); the
   engine's other steps then run only on a task it reserved (the whole check is made on the first);
4. the engine's step runs with a :class:`TaskPort`: when it is done it hands over its outputs, which
   the port seals to their approved receivers (:mod:`nodes.services.receipts`), records the usage
   receipt of every dataset of this node on chain, and marks the task ``succeeded``.
A step that raises fails the task (audited) and the error reaches the caller, unless it refused for
where the task is in its life (:class:`TaskExists`); an engine's :class:`engines.errors.StepRefused`
that is not ``fatal`` leaves the task as it was.

A node that approved nothing for the job (the requester, holding no data of it) takes a step only
with the job's whole ``manifest`` in the first step's body: it must hash (SM3) to the manifest hash of
the live authorization on chain, whose requester is this node's account; it is kept with the task.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session, select

from engines import registry
from engines.base import NodeEngine
from engines.errors import StepRefused
from nodes.errors import NodeError, NotAuthorized, TaskExists, TaskMismatch, TaskNotFound
from nodes.models import ApprovalRecord, JobCheck, NodeTask, TaskStatus, TaskStopped, utcnow
from nodes.services.receipts import receiver_key, record_receipt, seal_for
from nodes.services.tasks import TaskService, _epoch


class StepNotFound(TaskNotFound):
    """The job's engine has no step of that name."""


class EngineRefusal(NodeError):
    """An engine's named refusal (:class:`engines.errors.StepRefused`), reported under its own name."""

    def __init__(self, exc: StepRefused) -> None:
        super().__init__(exc.detail)
        self.error = exc.error
        self.status_code = exc.status

    @property
    def name(self) -> str:
        return self.error


class TaskPort:
    """One task as its engine's node side sees it (``engines.base.NodeEngine.step``'s ``task``)."""

    def __init__(self, tasks: TaskService, job_id: str, approved: dict[str, Any], actor: str,
                 steps: StepService | None = None, auth: Any = None) -> None:
        self._tasks = tasks
        self._steps = steps
        self.job_id = job_id
        self.member = tasks.member
        self.kind: str = approved["kind"]
        self.approved = approved  # the slice this node approved: inputs, receivers, requester, purpose, ...
        self.actor = actor
        self.auth = auth  # the live authorization the guard checked (None in a prepares step, stop, recover)

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

    # what an engine may read or use at this node (never the node's private key itself)

    def key_column(self, dataset: str) -> str | None:
        """The key column of one of this node's datasets (its values are identifiers)."""
        return self._tasks.datasets.get(dataset).key_column

    def extract(self, dataset: str, columns: list[str], dest: Path) -> int:
        """Write exactly ``columns`` of ``dataset`` to ``dest`` (CSV, 0600); only an approved input's
        approved columns. The rows written."""
        approved = {i["dataset"]: i["columns"] for i in self.approved.get("inputs", [])}
        if dataset not in approved or not set(columns) <= set(approved[dataset]):
            raise TaskMismatch(f"{dataset} {columns} is not what this node approved for job {self.job_id!r}")
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        rows = self._tasks.datasets.extract_csv(dataset, columns, dest)
        dest.chmod(0o600)
        return rows

    def scratch(self, create: bool = True) -> Path:
        """The task's private 0700 directory under the node's tmp (deleted with :meth:`drop_scratch`)."""
        from protocols.crypto.approvals import job_key

        d = self._tasks.scratch_root / f"step-{job_key(self.job_id).hex()[:32]}"
        if create:
            d.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            d.mkdir(exist_ok=True, mode=0o700)
        return d

    def drop_scratch(self) -> bool:
        """Delete the task's private directory; whether it is gone."""
        d = self.scratch(create=False)
        shutil.rmtree(d, ignore_errors=True)
        return not d.exists()

    def node_secret(self, label: bytes, n: int = 32) -> bytes:
        """A secret of this node for ``label`` (SM3-KDF of its SM2 private key and the label)."""
        from protocols.crypto.sm3 import sm3_kdf

        return sm3_kdf(self._keys().sm2.private_key + b"|" + label, n)

    def sign(self, message: bytes) -> bytes:
        """This node's SM2 identity signature over ``message`` (its key in the Registry)."""
        from protocols.crypto import sm2

        k = self._keys().sm2
        return sm2.sign(k.private_key, message, public_key=k.public_key)

    def open_sealed(self, envelope: bytes, aad: bytes) -> bytes:
        """Open an envelope sealed to this node's SM2 key (protocols.crypto.errors.CryptoError if not)."""
        from protocols.crypto.envelope import open_

        return open_(self._keys().sm2.private_key, envelope, aad)

    def member_key(self, member: str) -> bytes | None:
        """``member``'s SM2 public key in the Registry (None unless an active member)."""
        assert self._tasks.chain is not None
        return self._tasks.chain.member_sm2_key(member)

    def read_frame(self, dataset: str, columns: list[str]) -> Any:
        """``columns`` of one of this node's datasets (a pandas frame)."""
        return self._tasks.datasets.read_frame(dataset, columns)

    def policy(self) -> Any:
        """This node's current policy (``nodes.models.Policy``)."""
        return self._tasks.policy.current()

    def ledger(self) -> Any:
        """This node's ε ledger (``protocols.he.budget.PrivacyLedger``)."""
        assert self._steps is not None
        return self._steps.ledger()

    def past_task(self, job_id: str) -> dict[str, Any] | None:
        """This node's task in another job and who requested it: status, intersection_rows, requester."""
        with Session(self._tasks.engine) as session:
            t = session.exec(select(NodeTask).where(NodeTask.job_id == job_id)).first()
            a = session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == job_id)).first()
        if t is None or a is None:
            return None
        return {"status": t.status, "intersection_rows": t.intersection_rows, "requester": a.requester}

    def stored(self, name: str) -> dict[str, Any] | None:
        """A model an officer stored on this node (``PUT /models/{name}``): model, commitment."""
        assert self._steps is not None
        return self._steps.stored_model(name)

    def audit(self, action: str, detail: dict[str, Any]) -> None:
        """Record what the engine did in the node's audit log."""
        self._tasks.audit.record(actor=self.actor, action=action, target=self.job_id, detail=detail)

    def receipt(self, dataset: str, rows: int, result_hash: bytes) -> str:
        """Record this node's usage receipt of ``dataset`` on chain now (before a result leaves)."""
        chain = self._tasks.chain
        assert chain is not None
        return record_receipt(chain, self.member, self.job_id, dataset, rows, result_hash,
                              _epoch(self._tasks._get(self.job_id).started_at))

    def _keys(self) -> Any:
        if self._steps is None or self._steps.keys is None:
            raise NotAuthorized("this node has no identity keys loaded")
        return self._steps.keys()

    def stage(self, stage: str, **values: Any) -> None:
        """Show how far the task got (and, if given, its ``receipt_tx``, ``result_hash``, ``intersection_rows``)."""
        unknown = set(values) - {"receipt_tx", "result_hash", "intersection_rows"}
        if unknown:
            raise TypeError(f"an engine may not set {sorted(unknown)}")
        self._tasks._update(self.job_id, stage=stage, **values)

    def finish(self, outputs: dict[str, bytes], rows: int, result_hash: bytes | None = None,
               receipts: bool = True, *, record: dict[str, Any] | None = None,
               detail: dict[str, Any] | None = None) -> dict[str, Any]:
        """Seal ``outputs`` (name -> bytes) to their approved receivers, record this node's usage receipt
        of each of its datasets (unless ``receipts`` is False: the engine recorded them), and end the task
        ``succeeded``; the task as the node reports it.

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
        t = self._tasks._get(self.job_id)
        # every receiver is an active member before anything is recorded (a refusal records nothing)
        keys = {name: receiver_key(chain, receivers[name][0]) for name in outputs}
        # the receipts go out (durably queued first, then on chain) while the outputs are sealed: both
        # need only the result hash, and the requester's result waits for the slower of the two, not the sum
        got: dict[str, Any] = {}

        def send() -> None:
            try:
                got["txs"] = [record_receipt(chain, self.member, self.job_id, i["dataset"], rows, result_hash,
                                             _epoch(t.started_at))
                              for i in (self.approved.get("inputs", []) if receipts else [])]
            except BaseException as exc:  # noqa: BLE001 - raised again in the step's own thread below
                got["error"] = exc

        sender = threading.Thread(target=send, name=f"receipt-{self.job_id}", daemon=True)
        sender.start()
        job_dir = self._tasks.job_dir(self.job_id)
        job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sealed: dict[str, dict[str, Any]] = {}
        try:
            for name, data in sorted(outputs.items()):
                receiver = receivers[name][0]
                fd = os.open(job_dir / f"{name}.sealed", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(seal_for(chain, receiver, self.job_id, name, data, key=keys[name]))
                sealed[name] = {"receiver": receiver, "sm3": digests[name].hex(), "size": len(data)}
        finally:
            sender.join()
        try:
            if "error" in got:
                raise got["error"]
        except Exception:
            for name in sealed:  # no receipt, no output
                (job_dir / f"{name}.sealed").unlink(missing_ok=True)
            raise
        txs = got["txs"]
        self._tasks._update(
            self.job_id, status=TaskStatus.SUCCEEDED.value, stage="done", intersection_rows=rows,
            outputs_json=json.dumps(sealed), result_hash=result_hash.hex(), receipt_tx=txs[0] if txs else t.receipt_tx,
            finished_at=utcnow(), **(record or {}),
            audit={"actor": "node", "action": "task.succeed", "detail": {
                "rows": rows, "result_hash": result_hash.hex(), "receipt_txs": txs,
                "outputs": {n: {"receiver": o["receiver"], "sm3": o["sm3"]} for n, o in sealed.items()},
                "seal_receipt_s": round(time.perf_counter() - t_seal, 3), **(detail or {})}},
        )
        return self._tasks.get(self.job_id).model_dump()


class StepService:
    """The generic step route over the node's one task table."""

    def __init__(self, tasks: TaskService, keys: Any = None, local: Sequence[NodeEngine] = ()) -> None:
        self.tasks = tasks
        self.keys = keys  # () -> the node's MemberKeys (loaded once, by the approvals service)
        self.local = {k: e for e in local for k in e.kinds}
        """Node engines this node built itself (they keep per-node state); before the registry's."""
        self._ledger: Any = None
        self._ledger_lock = threading.Lock()

    def ledger(self) -> Any:
        """The node's ε ledger (in its own database)."""
        with self._ledger_lock:
            if self._ledger is None:
                from protocols.he.budget import PrivacyLedger

                self._ledger = PrivacyLedger(self.tasks.settings.resolved_database_url())
            return self._ledger

    def stored_model(self, name: str) -> dict[str, Any] | None:
        """A model stored on this node: ``{"name", "model", "commitment"}`` (None if none)."""
        from nodes.models import HeModel

        with Session(self.tasks.engine) as session:
            rec = session.exec(select(HeModel).where(HeModel.name == name)).first()
        if rec is None:
            return None
        return {"name": rec.name, "model": json.loads(rec.model_json), "commitment": rec.commitment}

    def node_engine(self, kind: str) -> NodeEngine | None:
        """The node side of ``kind``'s engine at this node."""
        return self.local.get(kind) or registry.node_engine_for(kind)

    def close(self) -> None:
        """Node shutdown: every node engine of this node stops what it still runs; the ε ledger closes."""
        for e in {id(e): e for e in self.local.values()}.values():
            e.close()
        if self._ledger is not None:
            self._ledger.close()

    def _engine(self, job_id: str, raw: dict[str, Any] | None = None) -> tuple[NodeEngine | None, Any, dict[str, Any]]:
        try:
            approval: ApprovalRecord | None = self.tasks.guard.approval(job_id)
        except NotAuthorized as refused:
            approval, approved = None, self._own_job(job_id, raw, refused)
        else:
            approved = json.loads(approval.manifest_json)
        return self.node_engine(str(approved.get("kind"))), approval, approved

    def _own_job(self, job_id: str, raw: dict[str, Any] | None, refused: NotAuthorized) -> dict[str, Any]:
        """The slice of a job this node requested without data of its own (the module docstring)."""
        from protocols.manifest import inputs_of, manifest_sm3

        try:
            t: NodeTask | None = self.tasks._get(job_id)
        except TaskNotFound:
            t = None
        if t is not None and t.manifest_json:  # checked against the chain when the task began
            return self._own_slice(json.loads(t.manifest_json))
        manifest = (raw or {}).get("manifest")
        if not isinstance(manifest, dict):
            raise refused
        try:
            if manifest.get("job_id") != job_id or manifest.get("requester") != self.tasks.member:
                raise refused
            if inputs_of(manifest, self.tasks.member):
                raise refused  # it holds data for the job: only its approval lets it take part
            auth = self.tasks.guard.live(job_id)
            assert self.tasks.chain is not None
            if bytes(auth.terms.manifest_hash) != manifest_sm3(manifest):
                raise NotAuthorized("the manifest sent is not the one authorized on chain")
            if str(auth.terms.requester).lower() != self.tasks.chain.account.lower():
                raise NotAuthorized(f"the authorization of job {job_id!r} names another requester")
            return self._own_slice(manifest)
        except (KeyError, TypeError, AttributeError):
            raise refused from None

    @staticmethod
    def _own_slice(manifest: dict[str, Any]) -> dict[str, Any]:
        from protocols.manifest import manifest_sm3, receivers_of

        return {"job_id": manifest["job_id"], "kind": manifest["kind"], "requester": manifest["requester"],
                "requester_role": manifest.get("requester_role"), "purpose": manifest["purpose"],
                "inputs": [], "receivers": receivers_of(manifest),
                "job_manifest_hash": manifest_sm3(manifest).hex(), "manifest": manifest}

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
        engine, approval, approved = self._engine(job_id, raw)
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
            return engine.step(TaskPort(self.tasks, job_id, approved, actor, self), step, body)
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
            if approval is None:  # its own job, no data of it here: the live authorization names it
                auth = self.tasks.guard.live(job_id)
            elif t is None or t.status == TaskStatus.PORTS.value:  # a run starts: approved, authorized, covered, runs left
                auth = self.tasks.guard.check(job_id, datasets, approval)
            else:  # a later step of a running task (its receipts may be on chain): still live
                auth = self.tasks.guard.live(job_id)
            if approval is not None:
                self.tasks.policy.enforce(JobCheck.model_validate({
                    "kind": approved["kind"], "requester": approved["requester"],
                    "requester_role": approved["requester_role"], "purpose": approved["purpose"],
                    "inputs": approved.get("inputs", []), "aggregate_group_size": approved.get("aggregate_group_size"),
                }))
            if t is None:
                with self.tasks.audit.transaction() as session:
                    session.add(NodeTask(job_id=job_id, status=TaskStatus.RUNNING.value, stage=step, endpoint_json="{}",
                                         datasets_json=json.dumps(approved.get("inputs", [])), started_at=utcnow(),
                                         manifest_json=json.dumps(approved["manifest"]) if approval is None else None))
                    self.tasks.audit.append(session, actor=actor, action="task.authorized", target=job_id, detail={
                        "auth_digest": bytes(auth.digest).hex(), "manifest_hash": bytes(auth.terms.manifest_hash).hex(),
                        "datasets": datasets, "step": step})
        port = TaskPort(self.tasks, job_id, approved, actor, self, auth)
        try:
            return engine.step(port, step, body)
        except TaskExists:
            raise  # refused for where the task is in its life (e.g. started twice): not a failure of it
        except StepRefused as exc:
            err = EngineRefusal(exc)
            if exc.fatal:
                self._fail(job_id, err)
            raise err from None
        except NodeError as exc:
            self._fail(job_id, exc)
            raise

    def recover(self) -> int:
        """After a restart: every task that was running gets its engine's ``recover`` (drop what it
        left), then ends ``failed`` (unless the engine ended it); how many."""
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
                    engine.recover(TaskPort(self.tasks, job_id, approved, "node", self))
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
                engine.stop(TaskPort(self.tasks, job_id, approved, actor, self))
            t = self.tasks._get(job_id)
        if t.status in (TaskStatus.RUNNING.value, TaskStatus.PORTS.value):
            self.tasks._update(job_id, status=TaskStatus.STOPPED.value, finished_at=utcnow(),
                               error="stopped on request" if t.status == TaskStatus.RUNNING.value else None,
                               audit={"actor": actor, "action": "task.stop", "detail": {"was": t.status}})
        return TaskStopped(status=self.tasks._get(job_id).status)
