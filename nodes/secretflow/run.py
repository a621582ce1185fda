"""One SecretFlow party at a node, from its extract to its sealed outputs: extract, run, collect.

A started task gets its own follower thread (:meth:`PartyRunner.launch`), so ``start`` answers at
once and the task's stage shows the progress (``extract`` → ``start`` → ``connect`` → the engine's
stages):

1. **extract**: exactly the approved columns, into a private directory (mode 0700);
2. **run**: ``python -m protocols.secretflow.party`` in its own process group (or the node's warm
   party, :class:`nodes.secretflow.processes.WarmEngine`); the follower (which spawned the process, so
   the party dies with it) reads the party's JSON progress lines; a party that outruns the job's time
   is stopped;
3. **collect**: on success each output this node holds is handed to the task port, which seals it to
   its receiver and records the usage receipt on chain (row count = intersection rows, result hash =
   SM3 over the SM3 digests of every output the party produced, in name order).

The extract and every plaintext output are deleted on success, failure and stop alike; a failed
extract or spawn fails the task (its status says why: ``the extract of <dataset> failed: DiskFull: …`` for a full disk).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.errors import DiskFull
from nodes.models import utcnow
from nodes.secretflow.plan import model_dir
from nodes.secretflow.processes import (
    PARTY_MODULE,
    WarmEngine,
    die_with_spawner,
    end_process,
    party_env,
    stacks_then_kill,
)
from nodes.services.datasets import DatasetService, ExtractCheck, ExtractRefused
from nodes.services.tasks import TaskService

log = logging.getLogger("dcp.node")

#: Output names of a job -> the party's file that holds it.
OUTPUT_FILES = {"predictions": "predictions.csv", "metrics": "metrics.json", "intersection": "psi_output.csv"}
_VALUE_LIKE = re.compile(r"(?<![A-Za-z0-9_.])(?=[A-Za-z0-9.]*\d)[A-Za-z0-9][A-Za-z0-9.]{5,}(?![A-Za-z0-9_])")


def scrub(text: str, limit: int = 500) -> str:
    """An engine message fit to leave the node: anything that looks like a cell value (IDs, codes,
    numbers of six or more characters) is masked; column names and error kinds stay."""
    return _VALUE_LIKE.sub("…", text)[:limit]


def extract_failure(dataset: str, exc: BaseException) -> str:
    """Why the extract of ``dataset`` failed, in words fit to leave the node (:func:`scrub`: no cell
    value): a database that cannot give the rows, a named node error, a file that cannot be written;
    anything else by its kind only."""
    from sqlalchemy.exc import DBAPIError

    from nodes.errors import NodeError

    dbapi = any(c.__name__ == "DatabaseError" for c in type(exc).__mro__)  # PEP 249: sqlite3, psycopg, …
    if isinstance(exc, DBAPIError) or dbapi:
        orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        first = str(orig).splitlines()[0] if str(orig) else ""
        why = f"this node could not read the dataset's stored rows ({type(orig).__name__}: {first})"
    elif isinstance(exc, NodeError):
        why = f"{type(exc).__name__}: {exc}"
    elif isinstance(exc, OSError):
        why = f"the extract could not be written ({exc.strerror or type(exc).__name__})"
    else:
        why = type(exc).__name__
    return scrub(f"the extract of {dataset} failed: {why}", 300)


@dataclass
class Run:
    """A live party of this node (in memory only; the row in NodeTask is the record)."""

    job_id: str
    port: Any  # the task's port (nodes.services.steps.TaskPort): it seals and records the receipt
    private: Path
    dataset: str
    columns: list[str]
    features: list[str]
    config: Any  # protocols.secretflow.spec.PartyConfig
    receivers: dict[str, str]
    timeout_s: float
    join_key: str
    hub: bool  # this node releases the intersection (the label holder)
    actor: str
    proc: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None
    spawned: threading.Event = field(default_factory=threading.Event)
    spawn_error: str | None = None
    stop_requested: bool = False
    timed_out: bool = False
    engine: str | None = None  # "warm": the node's pre-started party took the task; "cold": spawned for it
    result_at: float | None = None  # perf_counter when the party reported its result
    exited_at: float | None = None  # … and when its process had exited


class PartyRunner:
    """The SecretFlow parties of one node: each one's follower thread, and the node's warm party."""

    def __init__(self, tasks: TaskService, datasets: DatasetService) -> None:
        self.tasks = tasks
        self.datasets = datasets
        self.settings = tasks.settings
        self.member = tasks.member
        self.runs: dict[str, Run] = {}
        self.warm: WarmEngine | None = None
        self.gateway: Any = None  # the node's NodeGateway (nodes.secretflow.engine.SecretFlowNode.gateway)

    def busy(self) -> bool:
        """A party of this node is running (no warm party is started meanwhile)."""
        with self.tasks._lock:
            return bool(self.runs)

    def launch(self, run: Run) -> None:
        """Extract and start the party in the task's own thread (registered in :attr:`runs` by the caller)."""
        run.thread = threading.Thread(target=self._follow, args=(run,), name=f"task-{self.member}-{run.job_id}",
                                      daemon=True)
        run.thread.start()

    def fail(self, run: Run, error: str) -> None:
        """End the task ``failed``: the extract and any model part are deleted."""
        removed = self._cleanup(run)
        shutil.rmtree(model_dir(self.settings.work_dir, run.job_id), ignore_errors=True)  # no model part
        self.tasks._update(run.job_id, status="failed", error=error, extract_dir=None, finished_at=utcnow(),
                           audit={"actor": "node", "action": "task.fail",
                                  "detail": {"error": error[:300], "extract_deleted": removed}})

    # ------------------------------------------------------------ extract and run

    def _extract(self, run: Run) -> None:
        """Write exactly the approved columns and the party's config into the private directory."""
        t0 = time.perf_counter()
        csv = run.private / "input.csv"
        check = input_check(run.config)
        rows = self.datasets.extract_csv(run.dataset, run.columns, csv, check=check)
        csv.chmod(0o600)
        (run.private / "out").mkdir(mode=0o700)
        (run.private / "tmp").mkdir(mode=0o700)
        if check is not None:  # checked while written: the party reads only the header (issue #19 item 4)
            run.config = run.config.model_copy(update={"me": run.config.me.model_copy(update={"checked_rows": rows})})
        (run.private / "party.json").write_text(run.config.model_dump_json())
        self.tasks._update(run.job_id, stage="start", audit={"actor": run.actor, "action": "task.start", "detail": {
            "dataset": run.dataset, "columns": run.columns, "rows": rows, "features": run.features,
            "extract_dir": run.private.name, "extract_s": round(time.perf_counter() - t0, 3)}})

    def _follow(self, run: Run) -> None:
        try:
            self._follow_party(run)
        finally:
            warm = self.warm
            if warm is not None:  # the next warm process, once no task runs (unless on demand)
                warm.after_task()

    def _follow_party(self, run: Run) -> None:
        job_id, private = run.job_id, run.private
        if not run.stop_requested:
            try:
                self._extract(run)
            except ExtractRefused as exc:  # what the party would have refused, said as the party says it
                self.fail(run, scrub(f"INPUT_INVALID: input.csv: {exc}"))
                run.spawned.set()
                return
            except Exception as exc:  # noqa: BLE001 - the task fails with a named reason, never silently
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    exc = DiskFull("the node's disk is full: the extract did not fit")  # the node's own words
                self.fail(run, extract_failure(run.dataset, exc))
                run.spawned.set()
                return
        log_dir = self.tasks.job_dir(job_id)
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = party_env(private / "tmp")
        if run.stop_requested:  # stopped while the extract was written: never start
            self._stopped(run)
            run.spawned.set()
            return
        if self.warm is not None:
            run.proc = self._hand_to_warm(run, log_dir / "party.stderr.log")
        if run.proc is None:
            try:
                with (log_dir / "party.stderr.log").open("w") as err:
                    run.proc = subprocess.Popen(  # spawned by this thread: PDEATHSIG follows the follower
                        [sys.executable, "-m", PARTY_MODULE, "--config", str(private / "party.json"),
                         "--party", self.member],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                        cwd=private / "tmp", env=env, start_new_session=True,
                        preexec_fn=die_with_spawner,  # noqa: PLW1509 - one prctl call, no locks
                    )
                run.engine = "cold"
            except OSError as exc:
                run.spawn_error = f"{type(exc).__name__}: {exc.strerror}"
                self.fail(run, f"cannot start the party: {run.spawn_error}")
                run.spawned.set()
                return
        try:
            self.tasks._update(job_id, pid=run.proc.pid, stage="connect")
        except Exception:  # noqa: BLE001 - the pid is also in memory; the run goes on
            pass
        finally:
            run.spawned.set()
        timer = threading.Timer(run.timeout_s + 30.0, self._timeout, args=(run,))
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
                        self.tasks._update(job_id, **values)
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
                self._stopped(run)
            elif run.timed_out:
                self.fail(run, f"the party ran longer than {run.timeout_s:.0f}s and was stopped")
            elif rc != 0 or result is None:
                self.fail(run, scrub(error or f"the party exited with {rc}"))
            else:
                self._collect(run, result)
        except Exception as exc:  # noqa: BLE001 - never leave a task running silently
            self.fail(run, scrub(f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}"))

    def _hand_to_warm(self, run: Run, stderr: Path) -> subprocess.Popen[str] | None:
        """Give the task to the warm engine process (None, logged, when there is no usable one)."""
        assert self.warm is not None
        proc, why = self.warm.take()
        if proc is None:
            log.warning("node %s, job %s: %s; starting the party cold", self.member, run.job_id, why)
            return None
        handoff = {"config": str(run.private / "party.json"), "party": self.member, "cwd": str(run.private / "tmp"),
                   "env": {"TMPDIR": str(run.private / "tmp")}, "stderr": str(stderr)}
        try:
            fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the task's log, fresh
            os.close(fd)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(handoff) + "\n")
            proc.stdin.close()  # flushes; the party reads one line and nothing more
        except (OSError, ValueError) as exc:
            log.warning("node %s, job %s: the warm engine process %d did not take the task (%s); starting "
                        "the party cold", self.member, run.job_id, proc.pid, exc)
            end_process(proc)
            return None
        run.engine = "warm"
        return proc

    def _timeout(self, run: Run) -> None:
        if run.proc is not None and run.proc.poll() is None:
            run.timed_out = True
            stacks_then_kill(run.proc, self.settings.task_kill_grace_s)

    # ------------------------------------------------------------ the outcome

    def _cleanup(self, run: Run) -> bool:
        from protocols.secretflow.traces import remove_psi_traces

        remove_psi_traces(str(run.private))  # libpsi's /tmp traces of a party killed mid-PSI
        removed = remove_tree(str(run.private))
        with self.tasks._lock:
            self.runs.pop(run.job_id, None)
        if self.gateway is not None:  # every end (success, failure, stop) comes here: the job's routes close
            self.gateway.close_task(run.job_id)
        return removed

    def _stopped(self, run: Run) -> None:
        removed = self._cleanup(run)
        self.tasks._update(run.job_id, status="stopped", error="stopped on request", extract_dir=None,
                           finished_at=utcnow(), audit={"actor": "node", "action": "task.stopped",
                                                        "detail": {"extract_deleted": removed}})

    def _collect(self, run: Run, result: dict[str, Any]) -> None:
        """Hand the outputs this node holds to the task port (sealed, receipt on chain), keep the model part."""
        from protocols.crypto.sm3 import sm3_digest, sm3_file

        out_dir = run.private / "out"
        produced = sorted(p for p in out_dir.iterdir() if p.is_file())
        digests = {p.name: sm3_file(p) for p in produced}
        result_hash = sm3_digest(b"".join(bytes.fromhex(digests[n]) for n in sorted(digests)))
        rows = int(result.get("intersection_rows") or 0)
        outputs: dict[str, bytes] = {}
        for name in sorted(run.receivers):
            path = out_dir / OUTPUT_FILES.get(name, name)
            if not path.is_file():
                continue  # another party holds this output
            if name == "intersection" and not run.hub:
                continue  # every party has the keys; the hub alone releases them
            data = path.read_bytes()
            if name == "intersection":  # the keys only: never this node's feature values
                from protocols.secretflow.intersection import key_column

                keys = key_column(path, run.join_key)  # no pandas round-trip (issue #19 item 4)
                if keys is None:
                    import pandas as pd

                    keys = pd.read_csv(path, dtype={run.join_key: str}, usecols=[run.join_key]).to_csv(
                        index=False).encode()
                data = keys
            outputs[name] = data
        removed = self._cleanup(run)
        kept = model_dir(self.settings.work_dir, run.job_id)
        t = self.tasks._get(run.job_id)
        keep = str(kept) if t.model_from is None and (kept / "model.json").is_file() else None
        run.port.finish(outputs, rows, result_hash=result_hash, record={"extract_dir": None, "model_dir": keep}, detail={
            "extract_deleted": removed,
            # where the time after the engine went: the party's own exit (this node's sealing and usage
            # receipt on chain: seal_receipt_s)
            "party_exit_s": (round(run.exited_at - run.result_at, 3)
                             if run.exited_at is not None and run.result_at is not None else None),
            "engine": run.engine})

    # ------------------------------------------------------------ stop

    def stop(self, job_id: str, actor: str) -> None:
        """Stop the party (its whole process group) and wait for its follower to record it; idempotent."""
        with self.tasks._lock:
            run = self.runs.get(job_id)
        if run is None:
            return
        run.stop_requested = True
        self.tasks.audit.record(actor=actor, action="task.stop", target=job_id, detail={"was": "running"})
        run.spawned.wait(60)
        if run.proc is not None:
            stacks_then_kill(run.proc, self.settings.task_kill_grace_s)
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join(timeout=self.settings.task_kill_grace_s + 30)

    def stop_all(self) -> None:
        """Stop every party this node runs and the idle warm engine process (at shutdown)."""
        warm, self.warm = self.warm, None  # no task takes it from now on
        with self.tasks._lock:
            running = list(self.runs)
        for job_id in running:
            try:
                self.stop(job_id, "node")
            except Exception:  # noqa: BLE001 - keep stopping the others
                continue
        if warm is not None:
            warm.close()


def input_check(cfg: Any) -> ExtractCheck | None:
    """What the party checks of its input's cells, for the node to check while it writes the extract
    (None: leave it to the party — a prediction whose features come from the stored model part)."""
    if cfg is None or cfg.me.features is None:
        return None
    label = cfg.label_column if cfg.me.name == cfg.label_party and cfg.stages != ["psi"] else None
    return ExtractCheck(key=cfg.join_key, numeric=tuple(cfg.me.features), label=label or None)


def party_job_id(job_id: str) -> str:
    """A job id fit for the engine (``[A-Za-z0-9_.-]``, at most 64 characters)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)
    return safe[:64]


def remove_tree(path: str | None) -> bool:
    """Delete a directory tree; whether it is gone."""
    if not path:
        return True
    shutil.rmtree(path, ignore_errors=True)
    return not Path(path).exists()
