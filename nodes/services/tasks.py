"""Task execution: the node runs its engine party for a job only after checking everything itself.

``start`` checks, in order, and refuses with a named error (each refusal audited):

1. the task: ports allocated for this job (:class:`TaskNotFound`), not started before (:class:`TaskExists`),
   addressed to this node and to the endpoint it allocated (:class:`TaskMismatch`);
2. this node approved the job in its inbox (:class:`NotAuthorized`);
3. **on chain**: an authorization exists, is not revoked, has not expired (chain time), covers this
   node's dataset ids, carries the manifest hash this node approved (or this node's on-chain approval
   of exactly its digest), and has runs left (:class:`NotAuthorized`);
4. the requested dataset, columns, features and receivers are within the approved slice
   (:class:`ColumnNotApproved`, :class:`TaskMismatch`); the node's policy still allows the job
   (:class:`PolicyViolation`).

Then it answers at once (202); the task's own follower thread extracts exactly the approved columns
into a private directory (mode 0700; stage ``extract``) and starts ``python -m protocols.secretflow.party``
in its own process group (stage ``start``). The follower (which spawned the process, so the party dies
with it) reads the party's JSON progress lines. A failed extract or spawn fails the task (its status
says why). On success the
node seals each output to its receiver's SM2 key from the Registry, records its usage receipt on chain
(row count = intersection rows, result hash = SM3 over the SM3 digests of every output the party
produced, in name order), and keeps only the sealed copies. The extract and every plaintext output are
deleted on success, failure and stop alike. Every state change is persisted before it is acted on and
audited; a node that restarts fails the tasks it was running and deletes their extracts.

With ``warm_engine`` the node keeps one pre-started party (:class:`WarmEngine`, the engine already
imported): a task takes it and hands it its config on stdin instead of spawning a party, and the next
one is started once no task runs. No usable warm process -> the task starts its party cold (logged).
"""

from __future__ import annotations

import base64
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from common.net import free_ports
from common.settings import project_root
from nodes.errors import (
    ColumnNotApproved,
    NodeError,
    OutputNotFound,
    TaskExists,
    TaskMismatch,
    TaskNotFound,
)
from nodes.models import (
    ApprovalRecord,
    JobCheck,
    NodeTask,
    SealedOutput,
    TaskOut,
    TaskOutputInfo,
    TaskPortsIn,
    TaskPortsOut,
    TaskStarted,
    TaskStartIn,
    TaskStopped,
    task_may_move,
    utcnow,
)
from nodes.services.audit import AuditLog
from nodes.services.chain import NodeChain
from nodes.services.datasets import DatasetService
from nodes.services.grants import AuthorizationGuard
from nodes.services.policy import PolicyService
from nodes.services.receipts import record_receipt, seal_for
from nodes.settings import NodeSettings


class ModelNotAvailable(NodeError):
    """A vertical_predict task names a training job that this node did not run to success, or whose
    stored model part is gone."""

    status_code = 422


class PredictColumnsMismatch(NodeError):
    """A vertical_predict task asks for other columns or features than the training job used here."""

    status_code = 422


PARTY_MODULE = "protocols.secretflow.party"
#: The engine stages each SecretFlow kind may run (the node derives them from the kind it approved).
KIND_STAGES: dict[str, tuple[tuple[str, ...], ...]] = {
    "psi": (("psi",),),
    "vertical_train": (("psi", "train", "predict"), ("psi", "train")),
    "vertical_predict": (("psi", "predict"),),
}
#: Output names of a job -> the party's file that holds it.
OUTPUT_FILES = {"predictions": "predictions.csv", "metrics": "metrics.json", "intersection": "psi_output.csv"}
TERMINAL = ("succeeded", "failed", "stopped")
_VALUE_LIKE = re.compile(r"(?<![A-Za-z0-9_.])(?=[A-Za-z0-9.]*\d)[A-Za-z0-9][A-Za-z0-9.]{5,}(?![A-Za-z0-9_])")
_PR_SET_PDEATHSIG = 1
try:
    _LIBC: Any = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc: parties are still stopped by the node's shutdown and restart recovery
    _LIBC = None


def scrub(text: str, limit: int = 500) -> str:
    """An engine message fit to leave the node: anything that looks like a cell value (IDs, codes,
    numbers of six or more characters) is masked; column names and error kinds stay."""
    return _VALUE_LIKE.sub("…", text)[:limit]


def _die_with_follower() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def kill_group(pid: int, grace: float) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stacks_then_kill(proc: subprocess.Popen[str], grace: float, settle: float = 0.5) -> None:
    """Kill a party's process group (:func:`kill_group`); a party still running is first asked to
    write its threads' stacks to its log (SIGUSR1), so one that outran its time or is stopped mid-run
    leaves where it waited. A leader that has ended gets no signal of its own (its pid may be reused);
    anything left in its group is killed all the same."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(settle)
        except (ProcessLookupError, PermissionError):
            pass
    kill_group(proc.pid, grace)


log = logging.getLogger("dcp.node")

WARM_PIDFILE = "warm.pid"


def party_env(tmp: Path) -> dict[str, str]:
    """The environment of a party process: the node's, the project on the path, ``TMPDIR`` = ``tmp``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project_root()), *filter(None, [env.get("PYTHONPATH")])])
    env.update({"PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)})
    return env


class WarmEngine:
    """The node's one pre-started ("warm") party process: ``python -m protocols.secretflow.party --warm``.

    A thread that lives as long as the node spawns it (PR_SET_PDEATHSIG follows the spawning thread,
    so the warm process, and the party it becomes, die with the node and not with a short-lived
    thread), in its own session (``kill_group`` kills the whole party). A task :meth:`take` s it and
    hands it the task on stdin; :meth:`request` asks for the next one, which is spawned only while
    ``busy()`` is false (a warm start-up must not steal CPU from a running engine). Its pid is kept in
    ``home/warm.pid`` so that a node restarting after a crash can kill an orphan (:func:`kill_orphan_warm`).
    """

    def __init__(self, home: Path, cwd: Path, busy: Callable[[], bool], node_dir: Path) -> None:
        self.home = home
        self.node_dir = node_dir  # named on the warm party's command line: ps shows whose it is
        self.cwd = cwd
        self._busy = busy
        self._proc: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self._wanted = False
        self._spawning = False
        self._closed = False
        self.spawned = 0  # how many warm processes this node started
        self._thread = threading.Thread(target=self._keep, name="warm-engine", daemon=True)

    @property
    def pid(self) -> int | None:
        """The idle warm process's pid (None when there is none)."""
        with self._cond:
            return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the keeper thread and the first warm process."""
        self._thread.start()
        self.request()

    def request(self) -> None:
        """Ask for a warm process (spawned unless there is one, a task runs, or the engine is closed)."""
        with self._cond:
            self._wanted = True
            self._cond.notify_all()

    def _keep(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._wanted = False
                if self._proc is not None and self._proc.poll() is None:
                    continue
                self._proc = None
            if self._busy():  # the task's end asks again
                continue
            with self._cond:
                self._spawning = True
            proc = None
            try:
                proc = self._spawn()
            except OSError as exc:
                log.warning("the warm engine process could not be started (%s); tasks start cold", exc)
            finally:
                with self._cond:
                    self._spawning = False
                    closed = self._closed
                    if proc is not None and not closed:
                        self._proc = proc
                    self._cond.notify_all()
            if proc is not None and closed:
                _end_process(proc)
                self._pidfile().unlink(missing_ok=True)

    def _pidfile(self) -> Path:
        return self.home / WARM_PIDFILE

    def _spawn(self) -> subprocess.Popen[str]:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.home / "warm.stderr.log").open("a") as err:
            proc = subprocess.Popen(  # spawned by the keeper thread: PDEATHSIG follows the node
                [sys.executable, "-m", PARTY_MODULE, "--warm", "--node-dir", str(self.node_dir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=self.cwd, env=party_env(self.cwd), start_new_session=True,
                preexec_fn=_die_with_follower,  # noqa: PLW1509 - one prctl call, no locks
            )
        self._pidfile().write_text(str(proc.pid))
        self.spawned += 1
        log.info("warm engine process %d started", proc.pid)
        return proc

    def take(self) -> tuple[subprocess.Popen[str] | None, str]:
        """The idle warm process, now the caller's (None and why when there is no usable one)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._spawning or self._closed, timeout=10)
            proc, self._proc = self._proc, None
        if proc is None:
            return None, "no warm engine process is ready"
        self._pidfile().unlink(missing_ok=True)
        rc = proc.poll()
        if rc is not None:
            _end_process(proc)
            return None, f"the warm engine process {proc.pid} had exited with {rc}"
        return proc, ""

    def close(self) -> None:
        """Kill the idle warm process and end the keeper thread (node shutdown)."""
        with self._cond:
            self._closed = True
            proc, self._proc = self._proc, None
            self._cond.notify_all()
        if proc is not None:
            _end_process(proc)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._pidfile().unlink(missing_ok=True)


def _end_process(proc: subprocess.Popen[str], grace: float = 1.0) -> None:
    """Kill a warm process's group, reap it and close its pipes (reaped while it is waited for: an
    unreaped leader would keep its group alive for the whole grace)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace if sig == signal.SIGTERM else 10)
        except subprocess.TimeoutExpired:
            continue
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def kill_orphan_warm(home: Path, root: Path) -> bool:
    """Kill the warm process a previous run of this node left (its pid in ``home/warm.pid``); True if one was.

    Only a warm party whose working directory is under ``root`` (this node's scratch directory) counts:
    a pid that has since been reused by anything else is left alone."""
    path = home / WARM_PIDFILE
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return False
    killed = False
    if _is_party(pid) and _runs_under(pid, root):
        kill_group(pid, 0.5)
        killed = True
    path.unlink(missing_ok=True)
    return killed


def idle_warm_party(pid: int) -> bool:
    """``pid`` is a warm party that no task has taken yet (its working directory is still the node's
    scratch directory; a party that took a task works in the task's ``task-*/tmp``)."""
    if not _is_party(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return b"--warm" in cmdline and not any(part.startswith("task-") for part in cwd.parts)


def _runs_under(pid: int, root: Path) -> bool:
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return cwd == root.resolve() or root.resolve() in cwd.parents


@dataclass
class _Run:
    """A live party process of this node (in memory only; the row in NodeTask is the record)."""

    job_id: str
    proc: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None
    spawned: threading.Event = field(default_factory=threading.Event)
    spawn_error: str | None = None
    stop_requested: bool = False
    timed_out: bool = False
    engine: str | None = None  # "warm": the node's pre-started party took the task; "cold": spawned for it
    result_at: float | None = None  # perf_counter when the party reported its result
    exited_at: float | None = None  # … and when its process had exited


class TaskService:
    """The tasks of this node's jobs."""

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
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self.warm: WarmEngine | None = None  # started by recover() when settings.warm_engine

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._runs)

    # ------------------------------------------------------------ storage

    def _row(self, session: Session, job_id: str) -> NodeTask | None:
        return session.exec(select(NodeTask).where(NodeTask.job_id == job_id)).first()

    def _get(self, job_id: str) -> NodeTask:
        with Session(self.engine) as session:
            t = self._row(session, job_id)
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

    # ------------------------------------------------------------ restart recovery

    def recover(self) -> int:
        """Fail the tasks a previous run of this node left running; delete their extracts; kill the
        warm engine process it left (if any). Then, with ``warm_engine``, start this run's warm engine."""
        n = self._fail_stale()
        engine_home = self.settings.work_dir / "engine"
        if kill_orphan_warm(engine_home, self.scratch_root):
            log.warning("killed the warm engine process a previous run of node %s left", self.member)
        if self.settings.warm_engine and self.warm is None:
            self.warm = WarmEngine(engine_home, self.scratch_root, self._busy, self.settings.work_dir.resolve())
            self.warm.start()
        return n

    def _fail_stale(self) -> int:
        with Session(self.engine) as session:
            stale = list(session.exec(select(NodeTask).where(NodeTask.status == "running")))
        for t in stale:
            if t.pid is not None and _is_party(t.pid):
                kill_group(t.pid, 0.5)
            if t.extract_dir:
                from protocols.secretflow.traces import remove_psi_traces

                remove_psi_traces(t.extract_dir)  # a party killed with the node cannot clean up its traces
            removed = _remove_tree(t.extract_dir)
            self._update(
                t.job_id, status="failed", error="the node restarted during the task", extract_dir=None,
                finished_at=utcnow(),
                audit={"actor": "node", "action": "task.fail", "outcome": "ok",
                       "detail": {"error": "node restarted", "extract_deleted": removed}},
            )
        return len(stale)

    # ------------------------------------------------------------ the API

    def get(self, job_id: str) -> TaskOut:
        return self._out(self._get(job_id))

    def _approval(self, job_id: str) -> ApprovalRecord:
        return self.guard.approval(job_id)

    def ports(self, job_id: str, req: TaskPortsIn, actor: str) -> TaskPortsOut:
        """Reserve this node's ports for the job's party (idempotent)."""
        from protocols.secretflow.spec import PartyEndpoint, psi_peers

        with self._lock:
            with Session(self.engine) as session:
                t = self._row(session, job_id)
            if t is not None:
                return TaskPortsOut(host=self.settings.host, endpoint=json.loads(t.endpoint_json))
            self._approval(job_id)
            names = sorted({*req.peers, self.member})
            if req.label_party not in names:
                raise TaskMismatch(f"label party {req.label_party!r} is neither this node nor one of its peers")
            mine = psi_peers(self.member, req.label_party, names)
            ports = free_ports(2 + len(mine), self.settings.host)
            ep = PartyEndpoint(name=self.member, sf_port=ports[0], spu_port=ports[1],
                               psi_ports=dict(zip(mine, ports[2:], strict=True)))
            endpoint = json.loads(ep.model_dump_json())
            with self.audit.transaction() as session:
                session.add(NodeTask(job_id=job_id, status="ports", endpoint_json=json.dumps(endpoint),
                                     peers_json=json.dumps(sorted(req.peers)), label_party=req.label_party))
                self.audit.append(session, actor=actor, action="task.ports", target=job_id,
                                  detail={"peers": sorted(req.peers), "label_party": req.label_party})
            return TaskPortsOut(host=self.settings.host, endpoint=endpoint)

    def check_authorization(self, job_id: str, datasets: list[str], approval: ApprovalRecord) -> Any:
        """The live on-chain authorization of ``job_id`` for this node's ``datasets`` (the node's one guard,
        :class:`nodes.services.grants.AuthorizationGuard`)."""
        return self.guard.check(job_id, datasets, approval)

    def _check_slice(self, body: TaskStartIn, approved: dict[str, Any]) -> None:
        """The requested data and outputs are within what this node approved."""
        by_ds = {a["dataset"]: a["columns"] for a in approved.get("inputs", [])}
        for inp in body.inputs:
            if inp.dataset not in by_ds:
                raise ColumnNotApproved(f"dataset {inp.dataset!r} is not in the approved manifest")
            extra = [c for c in inp.columns if c not in by_ds[inp.dataset]]
            if extra:
                raise ColumnNotApproved(f"columns {extra} of {inp.dataset!r} are beyond the approved manifest")
            if len(set(inp.columns)) != len(inp.columns):
                raise TaskMismatch(f"columns of {inp.dataset!r} are listed twice")
        cols = set(body.inputs[0].columns)
        beyond = [f for f in body.features if f not in cols]
        if beyond:
            raise ColumnNotApproved(f"features {beyond} are not among the approved columns")
        if body.join_key not in cols:
            raise TaskMismatch(f"the join key {body.join_key!r} is not among this node's approved columns")
        if body.label_party == self.member and body.label_column and body.label_column not in cols:
            raise TaskMismatch(f"the label {body.label_column!r} is not among this node's approved columns")
        allowed = approved.get("receivers", {})
        for name, who in body.receivers.items():
            if name not in allowed or any(w not in allowed[name] for w in who):
                raise TaskMismatch(f"output {name!r} to {who} is not what this node approved")

    def model_dir(self, job_id: str) -> Path:
        """Where this node keeps its private model part of training job ``job_id`` (never sent anywhere)."""
        from protocols.crypto.approvals import job_key

        return self.settings.work_dir / "models" / job_key(job_id).hex()[:32]

    def _plan(self, job_id: str, body: TaskStartIn, approved: dict[str, Any]) -> tuple[tuple[str, ...], Path | None]:
        """The engine stages and this party's model dir, from the kind this node approved.

        A vertical_predict task must name the training job of the approved manifest; that job must
        have been this node's own and have succeeded, its model part must still be here, and the
        predict columns and features must equal the training task's (else a named error)."""
        kind = approved.get("kind")
        plans = KIND_STAGES.get(str(kind))
        if plans is None:
            raise TaskMismatch(f"a {kind} job does not run on the SecretFlow party")
        stages = tuple(body.stages) if body.stages is not None else plans[0]
        if stages not in plans:
            raise TaskMismatch(f"a {kind} job runs stages {[list(p) for p in plans]}, not {list(stages)}")
        if kind != "vertical_predict":
            if body.model_from is not None:
                raise TaskMismatch(f"a {kind} job uses no stored model (model_from {body.model_from!r})")
            return stages, (self.model_dir(job_id) if "train" in stages else None)
        ref = body.model_from
        if ref is None or ref != approved.get("model_from"):
            raise TaskMismatch(
                f"the task names model_from {ref!r}; this node approved {approved.get('model_from')!r}"
            )
        with Session(self.engine) as session:
            trained = self._row(session, ref)
        if trained is None:
            raise ModelNotAvailable(f"job {ref!r} did not run on this node; it holds no model part of it")
        if trained.status != "succeeded" or not trained.model_dir:
            raise ModelNotAvailable(f"job {ref!r} is {trained.status} on this node and left no model part")
        if not (Path(trained.model_dir) / "model.json").is_file():
            raise ModelNotAvailable(f"the model part of job {ref!r} is gone from this node")
        used = json.loads(trained.datasets_json or "[]")
        if not used:
            raise ModelNotAvailable(f"job {ref!r} recorded no columns on this node")
        want, got = list(used[0]["columns"]), list(body.inputs[0].columns)
        dropped = [c for c in want if c not in got]
        feats = used[0].get("features")
        # the same columns, except that scoring rows without an outcome may leave out the training label
        if [c for c in want if c in got] != got or len(dropped) > 1 or (
            feats is not None and any(c in feats for c in dropped)
        ):
            raise PredictColumnsMismatch(
                f"the columns {body.inputs[0].columns} differ from those job {ref!r} trained on here {used[0]['columns']}"
            )
        if "features" in used[0] and list(body.features) != list(used[0]["features"]):
            raise PredictColumnsMismatch(
                f"the features {body.features} differ from those job {ref!r} trained on here {used[0]['features']}"
            )
        return stages, Path(trained.model_dir)

    def start(self, job_id: str, body: TaskStartIn, actor: str) -> TaskStarted:
        """Check everything (see the module docstring), extract, start the party."""
        from protocols.secretflow.spec import ClusterSpec, ModelParams, PartyConfig, PartySpec

        if body.job_id != job_id:
            raise TaskMismatch(f"the body is for job {body.job_id!r}, the path for {job_id!r}")
        if body.party != self.member:
            raise TaskMismatch(f"this node is {self.member!r}, not {body.party!r}")
        with self._lock:
            t = self._get(job_id)
            if t.status != "ports" or job_id in self._runs:
                raise TaskExists(f"the task of job {job_id!r} is already {t.status}")
            approval = self._approval(job_id)
            approved = json.loads(approval.manifest_json)
            datasets = [i.dataset for i in body.inputs]
            auth = self.check_authorization(job_id, datasets, approval)
            self._check_slice(body, approved)
            self.policy.enforce(JobCheck.model_validate({
                "kind": approved["kind"], "requester": approved["requester"],
                "requester_role": approved["requester_role"], "purpose": approved["purpose"],
                "inputs": [i.model_dump() for i in body.inputs],
                "aggregate_group_size": approved.get("aggregate_group_size"),
            }))
            stages, model_dir = self._plan(job_id, body, approved)
            try:
                cluster = ClusterSpec.model_validate({**body.cluster, "recv_timeout_s": body.timeout_s})
                model = ModelParams.model_validate(body.model or {})
            except ValidationError as exc:
                e = exc.errors()[0]
                raise TaskMismatch(f"cluster or model: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None
            try:
                mine = cluster.endpoint(self.member)
            except KeyError:
                raise TaskMismatch(f"the cluster has no endpoint for {self.member!r}") from None
            if json.loads(mine.model_dump_json()) != json.loads(t.endpoint_json):
                raise TaskMismatch("the cluster gives this node another endpoint than the ports it allocated")

            # checks passed: persist, then act
            self.scratch_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.scratch_root, 0o700)
            private = Path(tempfile.mkdtemp(prefix="task-", dir=self.scratch_root))  # mode 0700
            inp = body.inputs[0]
            self._update(
                job_id, status="running", stage="extract", extract_dir=str(private), started_at=utcnow(),
                datasets_json=json.dumps([{"dataset": inp.dataset, "columns": inp.columns, "features": body.features}]),
                model_from=body.model_from,
                audit={"actor": actor, "action": "task.authorized", "detail": {
                    "auth_digest": bytes(auth.digest).hex(), "manifest_hash": bytes(auth.terms.manifest_hash).hex(),
                    "datasets": datasets}},
            )
            run = _Run(job_id=job_id)
            self._runs[job_id] = run
        csv = private / "input.csv"
        try:
            cfg = PartyConfig(
                job_id=_party_job_id(job_id), cluster=cluster,
                me=PartySpec(name=self.member, input_csv=csv, output_dir=private / "out", features=body.features,
                             model_dir=model_dir),
                join_key=body.join_key, label_party=body.label_party, label_column=body.label_column,
                psi_protocol=body.psi_protocol, model=model, stages=list(stages),
            )
        except ValidationError as exc:
            self._finish_failed(job_id, run, private, "party config refused")
            raise TaskMismatch(f"party config: {exc.errors()[0]['msg']}") from None
        receivers = {n: w[0] for n, w in body.receivers.items() if w}
        # the extract and the party's start happen in the task's own thread: this call returns at once
        # and the task's stage (extract → start → connect → …) shows the progress
        run.thread = threading.Thread(
            target=self._follow,
            args=(run, private, inp.dataset, receivers, body.timeout_s, body.join_key),
            kwargs={"extract": (list(inp.columns), body.features, cfg, actor)},
            name=f"task-{self.member}-{job_id}", daemon=True,
        )
        run.thread.start()
        return TaskStarted(job_id=job_id, status="running")

    def _extract(self, run: _Run, private: Path, dataset: str, columns: list[str], features: list[str],
                 cfg: Any, actor: str) -> None:
        """Write exactly the approved columns and the party's config into the private directory."""
        t0 = time.perf_counter()
        csv = private / "input.csv"
        rows = self.datasets.extract_csv(dataset, columns, csv)
        csv.chmod(0o600)
        (private / "out").mkdir(mode=0o700)
        (private / "tmp").mkdir(mode=0o700)
        (private / "party.json").write_text(cfg.model_dump_json())
        self._update(run.job_id, stage="start", audit={"actor": actor, "action": "task.start", "detail": {
            "dataset": dataset, "columns": columns, "rows": rows, "features": features,
            "extract_dir": private.name, "extract_s": round(time.perf_counter() - t0, 3)}})

    # ------------------------------------------------------------ the follower

    def _follow(
        self, run: _Run, private: Path, dataset: str, receivers: dict[str, str], timeout_s: float, join_key: str,
        extract: tuple[list[str], list[str], Any, str] | None = None,
    ) -> None:
        try:
            self._follow_party(run, private, dataset, receivers, timeout_s, join_key, extract)
        finally:
            warm = self.warm
            if warm is not None:  # the next warm process, once no task runs
                warm.request()

    def _follow_party(
        self, run: _Run, private: Path, dataset: str, receivers: dict[str, str], timeout_s: float, join_key: str,
        extract: tuple[list[str], list[str], Any, str] | None,
    ) -> None:
        job_id = run.job_id
        if extract is not None and not run.stop_requested:
            try:
                self._extract(run, private, dataset, *extract)
            except Exception as exc:  # noqa: BLE001 - the task fails with a named reason, never silently
                self._finish_failed(job_id, run, private, f"extract failed: {type(exc).__name__}")
                run.spawned.set()
                return
        log_dir = self.job_dir(job_id)
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = party_env(private / "tmp")
        if run.stop_requested:  # stopped while the extract was written: never start
            self._finish_stopped(job_id, run, private)
            run.spawned.set()
            return
        if self.warm is not None:
            run.proc = self._hand_to_warm(run, private, log_dir / "party.stderr.log")
        if run.proc is None:
            try:
                with (log_dir / "party.stderr.log").open("w") as err:
                    run.proc = subprocess.Popen(  # spawned by this thread: PDEATHSIG follows the follower
                        [sys.executable, "-m", PARTY_MODULE, "--config", str(private / "party.json"),
                         "--party", self.member],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                        cwd=private / "tmp", env=env, start_new_session=True,
                        preexec_fn=_die_with_follower,  # noqa: PLW1509 - one prctl call, no locks
                    )
                run.engine = "cold"
            except OSError as exc:
                run.spawn_error = f"{type(exc).__name__}: {exc.strerror}"
                self._finish_failed(job_id, run, private, f"cannot start the party: {run.spawn_error}")
                run.spawned.set()
                return
        try:
            self._update(job_id, pid=run.proc.pid, stage="connect")
        except Exception:  # noqa: BLE001 - the pid is also in memory; the run goes on
            pass
        finally:
            run.spawned.set()
        timer = threading.Timer(timeout_s + 30.0, self._timeout, args=(run,))
        timer.daemon = True
        timer.start()
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            assert run.proc.stdout is not None
            for line in run.proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(msg, dict):  # a stray line that happens to be JSON is not an event
                    continue
                if msg.get("event") == "stage":
                    values: dict[str, Any] = {"stage": f"{msg.get('stage')}:{msg.get('status')}"}
                    if msg.get("intersection_rows") is not None:
                        values["intersection_rows"] = int(msg["intersection_rows"])
                    try:
                        self._update(job_id, **values)
                    except Exception:  # noqa: BLE001 - progress is best effort; the outcome is not
                        pass
                elif msg.get("event") == "error":
                    error = f"{msg.get('kind', 'error')}: {msg.get('message', '')}"
                elif msg.get("event") == "result":
                    result = msg.get("result")
                    run.result_at = time.perf_counter()
            rc = run.proc.wait()
            run.exited_at = time.perf_counter()
        finally:
            timer.cancel()
        try:
            if run.stop_requested:
                self._finish_stopped(job_id, run, private)
            elif run.timed_out:
                self._finish_failed(job_id, run, private, f"the party ran longer than {timeout_s:.0f}s and was stopped")
            elif rc != 0 or result is None:
                self._finish_failed(job_id, run, private, scrub(error or f"the party exited with {rc}"))
            else:
                self._finish_succeeded(job_id, run, private, dataset, receivers, result, join_key)
        except Exception as exc:  # noqa: BLE001 - never leave a task running silently
            self._finish_failed(job_id, run, private, scrub(f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}"))

    def _hand_to_warm(self, run: _Run, private: Path, stderr: Path) -> subprocess.Popen[str] | None:
        """Give the task to the warm engine process (None, logged, when there is no usable one)."""
        assert self.warm is not None
        proc, why = self.warm.take()
        if proc is None:
            log.warning("node %s, job %s: %s; starting the party cold", self.member, run.job_id, why)
            return None
        handoff = {"config": str(private / "party.json"), "party": self.member, "cwd": str(private / "tmp"),
                   "env": {"TMPDIR": str(private / "tmp")}, "stderr": str(stderr)}
        try:
            fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the task's log, fresh
            os.close(fd)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(handoff) + "\n")
            proc.stdin.close()  # flushes; the party reads one line and nothing more
        except (OSError, ValueError) as exc:
            log.warning("node %s, job %s: the warm engine process %d did not take the task (%s); starting "
                        "the party cold", self.member, run.job_id, proc.pid, exc)
            _end_process(proc)
            return None
        run.engine = "warm"
        return proc

    def _timeout(self, run: _Run) -> None:
        if run.proc is not None and run.proc.poll() is None:
            run.timed_out = True
            stacks_then_kill(run.proc, self.settings.task_kill_grace_s)

    def _cleanup(self, job_id: str, private: Path) -> bool:
        from protocols.secretflow.traces import remove_psi_traces

        remove_psi_traces(str(private))  # libpsi's /tmp traces of a party killed mid-PSI
        removed = _remove_tree(str(private))
        with self._lock:
            self._runs.pop(job_id, None)
        return removed

    def _finish_failed(self, job_id: str, run: _Run, private: Path, error: str) -> None:
        removed = self._cleanup(job_id, private)
        shutil.rmtree(self.model_dir(job_id), ignore_errors=True)  # a failed training keeps no model part
        self._update(job_id, status="failed", error=error, extract_dir=None, finished_at=utcnow(),
                     audit={"actor": "node", "action": "task.fail",
                            "detail": {"error": error[:300], "extract_deleted": removed}})

    def _finish_stopped(self, job_id: str, run: _Run, private: Path) -> None:
        removed = self._cleanup(job_id, private)
        self._update(job_id, status="stopped", error="stopped on request", extract_dir=None, finished_at=utcnow(),
                     audit={"actor": "node", "action": "task.stopped", "detail": {"extract_deleted": removed}})

    def _finish_succeeded(
        self, job_id: str, run: _Run, private: Path, dataset: str, receivers: dict[str, str],
        result: dict[str, Any], join_key: str,
    ) -> None:
        from protocols.crypto.sm3 import sm3_digest, sm3_file

        assert self.chain is not None
        t_seal = time.perf_counter()
        out_dir = private / "out"
        produced = sorted(p for p in out_dir.iterdir() if p.is_file())
        digests = {p.name: sm3_file(p) for p in produced}
        result_hash = sm3_digest(b"".join(bytes.fromhex(digests[n]) for n in sorted(digests)))
        rows = int(result.get("intersection_rows") or 0)
        job_dir = self.job_dir(job_id)
        outputs: dict[str, dict[str, Any]] = {}
        for name, receiver in sorted(receivers.items()):
            path = out_dir / OUTPUT_FILES.get(name, name)
            if not path.is_file():
                continue  # another party holds this output
            if name == "intersection" and self._get(job_id).label_party != self.member:
                continue  # every party has the keys; the hub alone releases them
            data = path.read_bytes()
            if name == "intersection":  # the keys only: never this node's feature values
                import pandas as pd

                frame = pd.read_csv(path, dtype={join_key: str}, usecols=[join_key])
                data = frame.to_csv(index=False).encode()
            sealed = seal_for(self.chain, receiver, job_id, name, data)
            target = job_dir / f"{name}.sealed"
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(sealed)
            outputs[name] = {"receiver": receiver, "sm3": sm3_digest(data).hex(), "size": len(data)}
        t = self._get(job_id)
        try:
            tx = record_receipt(self.chain, self.member, job_id, dataset, rows, result_hash, _epoch(t.started_at))
        except Exception:
            for name in outputs:  # no receipt, no output
                (job_dir / f"{name}.sealed").unlink(missing_ok=True)
            raise
        seal_receipt_s = time.perf_counter() - t_seal
        removed = self._cleanup(job_id, private)
        kept = self.model_dir(job_id)
        model_dir = str(kept) if t.model_from is None and (kept / "model.json").is_file() else None
        self._update(
            job_id, status="succeeded", stage="done", intersection_rows=rows, outputs_json=json.dumps(outputs),
            result_hash=result_hash.hex(), receipt_tx=tx, extract_dir=None, finished_at=utcnow(), model_dir=model_dir,
            audit={"actor": "node", "action": "task.succeed", "detail": {
                "rows": rows, "result_hash": result_hash.hex(), "receipt_tx": tx,
                "outputs": {n: {"receiver": o["receiver"], "sm3": o["sm3"]} for n, o in outputs.items()},
                "extract_deleted": removed,
                # where the time after the engine went: the party's own exit, then this node's sealing
                # and usage receipt on chain
                "party_exit_s": (round(run.exited_at - run.result_at, 3)
                                 if run.exited_at is not None and run.result_at is not None else None),
                "seal_receipt_s": round(seal_receipt_s, 3), "engine": run.engine}},
        )

    # ------------------------------------------------------------ stop and outputs

    def stop(self, job_id: str, actor: str) -> TaskStopped:
        """Stop the party (its whole process group); idempotent."""
        t = self._get(job_id)
        with self._lock:
            run = self._runs.get(job_id)
        if t.status == "ports":
            self._update(job_id, status="stopped", finished_at=utcnow(),
                         audit={"actor": actor, "action": "task.stop", "detail": {"was": "ports"}})
            return TaskStopped(status="stopped")
        if t.status != "running" or run is None:
            return TaskStopped(status=t.status)
        run.stop_requested = True
        self.audit.record(actor=actor, action="task.stop", target=job_id, detail={"was": "running"})
        run.spawned.wait(60)
        if run.proc is not None:
            stacks_then_kill(run.proc, self.settings.task_kill_grace_s)
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join(timeout=self.settings.task_kill_grace_s + 30)
        return TaskStopped(status=self._get(job_id).status)

    def stop_all(self) -> None:
        """Stop every party this node runs and the idle warm engine process (at shutdown)."""
        warm, self.warm = self.warm, None  # no task takes it from now on
        with self._lock:
            running = list(self._runs)
        for job_id in running:
            try:
                self.stop(job_id, "node")
            except Exception:  # noqa: BLE001 - keep stopping the others
                continue
        if warm is not None:
            warm.close()

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


def _party_job_id(job_id: str) -> str:
    """A job id fit for the engine (``[A-Za-z0-9_.-]``, at most 64 characters)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)
    return safe[:64]


def _remove_tree(path: str | None) -> bool:
    if not path:
        return True
    shutil.rmtree(path, ignore_errors=True)
    return not Path(path).exists()


def _is_party(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return PARTY_MODULE.encode() in cmdline
