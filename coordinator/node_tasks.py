"""Interim task execution for a node (the interface in /work/notes/requests_from_coordinator.md, B).

The node service (nodes/) is to own task execution; until it ships its ``/tasks`` routes,
:mod:`coordinator.nodehost` adds this router to the node app. It does what the node issue asks:
checks the authorization on chain itself, re-checks the approved slice and the node's policy,
extracts exactly the approved columns into a private directory, runs the SecretFlow party,
records the node's own usage receipt on chain, seals outputs to their receiver's SM2 key, and
deletes the extract — on failure too. Party processes die with the node (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session, select

from coordinator.manifest import dataset_chain_id
from dcp.net import free_ports
from dcp.settings import project_root

PARTY_MODULE = "protocols.secretflow.party"
OUTPUT_FILES = {"predictions": "predictions.csv", "metrics": "metrics.json", "intersection": "psi_output.csv"}


class TaskError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotAuthorized(TaskError):
    status_code = 403


class ColumnNotApproved(TaskError):
    status_code = 422


class TaskExists(TaskError):
    status_code = 409


class TaskNotFound(TaskError):
    status_code = 404


@dataclass
class Task:
    job_id: str
    endpoint: dict[str, Any]
    status: str = "ports"
    stage: str | None = None
    error: str | None = None
    intersection_rows: int | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    receipt_tx: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    proc: subprocess.Popen[str] | None = None
    work: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def out(self, party: str) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "party": party, "status": self.status, "stage": self.stage, "error": self.error,
            "intersection_rows": self.intersection_rows,
            "outputs": [{"name": n, "receiver": o["receiver"], "sm3": o["sm3"], "size": o["size"]}
                        for n, o in self.outputs.items()],
            "receipt_tx": self.receipt_tx, "started_at": self.started_at, "finished_at": self.finished_at,
        }


def _die_with_parent() -> None:
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class TaskRunner:
    """The tasks of one node (state lives in the app, not in a global)."""

    def __init__(self, ctx: Any, chain: Any, account: str, member: str) -> None:
        self.ctx = ctx
        self.chain = chain
        self.account = account
        self.member = member
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()
        self.root = Path(ctx.settings.work_dir) / "tasks"

    def _get(self, job_id: str) -> Task:
        t = self.tasks.get(job_id)
        if t is None:
            raise TaskNotFound(f"no task for job {job_id!r}")
        return t

    def ports(self, job_id: str, peers: list[str], label_party: str) -> dict[str, Any]:
        from protocols.secretflow.spec import PartyEndpoint, psi_peers

        with self.lock:
            if job_id in self.tasks:
                return {"host": self.ctx.settings.host, "endpoint": self.tasks[job_id].endpoint}
            names = sorted({*peers, self.member})
            mine = psi_peers(self.member, label_party, names)
            ports = free_ports(2 + len(mine), self.ctx.settings.host)
            ep = PartyEndpoint(name=self.member, sf_port=ports[0], spu_port=ports[1],
                               psi_ports=dict(zip(mine, ports[2:], strict=True)))
            self.tasks[job_id] = Task(job_id=job_id, endpoint=json.loads(ep.model_dump_json()))
            return {"host": self.ctx.settings.host, "endpoint": self.tasks[job_id].endpoint}

    def _approved_slice(self, job_id: str) -> dict[str, Any]:
        from nodes.models import ApprovalRecord

        with Session(self.ctx.engine) as session:
            rec = session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == job_id)).first()
        if rec is None or rec.status != "approved":
            raise NotAuthorized(f"this node has not approved job {job_id!r}")
        return json.loads(rec.manifest_json)

    def start(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        from contracts.models import UsageReceipt  # noqa: F401 - fail early if contracts are missing
        from nodes.models import JobCheck
        from protocols.crypto.approvals import job_key
        from protocols.secretflow.spec import ClusterSpec, ModelParams, PartyConfig, PartySpec

        t = self._get(job_id)
        with t.lock:
            if t.status != "ports":
                raise TaskExists(f"the task of job {job_id!r} is already {t.status}")
            approved = self._approved_slice(job_id)
            key = job_key(job_id)
            if not self.chain.is_live(key):
                raise NotAuthorized(f"job {job_id!r} has no live authorization on chain (missing, expired or revoked)")
            auth = self.chain.authorization(key)
            inputs = body["inputs"]
            for inp in inputs:
                if dataset_chain_id(self.member, inp["dataset"]) not in auth.terms.dataset_ids:
                    raise NotAuthorized(f"the authorization of {job_id!r} does not cover dataset {inp['dataset']!r}")
                allowed = next((set(a["columns"]) for a in approved["inputs"] if a["dataset"] == inp["dataset"]), set())
                extra = sorted(set(inp["columns"]) - allowed)
                if extra:
                    raise ColumnNotApproved(f"columns {extra} of {inp['dataset']!r} are beyond the approved manifest")
            self.ctx.policy.enforce(JobCheck.model_validate(
                {k: approved.get(k) for k in ("kind", "requester", "requester_role", "purpose", "inputs",
                                              "aggregate_group_size")}))
            work = self.root / job_id.replace("/", "_")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, mode=0o700)
            t.work = work
            inp = inputs[0]
            csv = work / "input.csv"
            rows = self.ctx.datasets.extract_csv(inp["dataset"], inp["columns"], csv)
            self.ctx.audit.record(actor="coordinator", action="task.start", target=job_id,
                                  detail={"dataset": inp["dataset"], "columns": inp["columns"], "rows": rows})
            cfg = PartyConfig(
                job_id=job_id,
                cluster=ClusterSpec.model_validate({**body["cluster"], "recv_timeout_s": body.get("timeout_s", 600.0)}),
                me=PartySpec(name=self.member, input_csv=csv, output_dir=work / "out", features=body["features"]),
                join_key=body["join_key"], label_party=body["label_party"], label_column=body["label_column"],
                psi_protocol=body["psi_protocol"], model=ModelParams.model_validate(body.get("model") or {}),
            )
            (work / "party.json").write_text(cfg.model_dump_json())
            env = {**os.environ, "PYTHONPATH": str(project_root()), "TMPDIR": str(work)}
            t.proc = subprocess.Popen(
                [sys.executable, "-m", PARTY_MODULE, "--config", str(work / "party.json"), "--party", self.member],
                stdout=subprocess.PIPE, stderr=(work / "stderr.log").open("w"), stdin=subprocess.DEVNULL,
                text=True, cwd=work, env=env, preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
            t.status, t.started_at = "running", time.time()
            threading.Thread(target=self._follow, args=(t, inp["dataset"], body["receivers"]), daemon=True).start()
            return {"job_id": job_id, "status": "running"}

    def _follow(self, t: Task, dataset: str, receivers: dict[str, list[str]]) -> None:
        assert t.proc is not None and t.proc.stdout is not None and t.work is not None
        result: dict[str, Any] | None = None
        error: str | None = None
        for line in t.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "stage":
                t.stage = f"{msg.get('stage')}:{msg.get('status')}"
                if msg.get("intersection_rows") is not None:
                    t.intersection_rows = int(msg["intersection_rows"])
            elif msg.get("event") == "error":
                error = msg.get("message")
            elif msg.get("event") == "result":
                result = msg.get("result")
        rc = t.proc.wait()
        try:
            if t.status == "stopped":
                return
            if rc != 0 or result is None:
                tail = (t.work / "stderr.log").read_text(errors="replace").strip().splitlines()[-3:]
                t.error = error or f"party exited with {rc}: {' | '.join(tail)}"
                t.status = "failed"
                self.ctx.audit.record(actor="node", action="task.fail", target=t.job_id, outcome="refused",
                                      detail={"error": t.error[:300]})
                return
            self._finish(t, dataset, receivers, result)
        except Exception as exc:  # noqa: BLE001 - report, never hang the coordinator
            t.status, t.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            t.finished_at = t.finished_at or time.time()
            (t.work / "input.csv").unlink(missing_ok=True)  # the extract never outlives the task

    def _finish(self, t: Task, dataset: str, receivers: dict[str, list[str]], result: dict[str, Any]) -> None:
        from contracts.models import UsageReceipt
        from coordinator.chain import member_by_name
        from protocols.crypto.approvals import job_key
        from protocols.crypto.envelope import seal
        from protocols.crypto.sm3 import sm3_digest

        assert t.work is not None
        out_dir = t.work / "out"
        t.intersection_rows = int(result.get("intersection_rows") or 0)
        digests = []
        for name, who in sorted(receivers.items()):
            path = out_dir / OUTPUT_FILES.get(name, name)
            if not path.is_file():
                continue
            data = path.read_bytes()
            receiver = who[0]
            reg = member_by_name(self.chain, receiver)
            if reg is None:
                raise NotAuthorized(f"receiver {receiver!r} is not an active member")
            env = seal(bytes(reg.sm2_public_key), data, f"{t.job_id}/{name}".encode())
            (t.work / f"{name}.sealed").write_bytes(env)
            digest = sm3_digest(data)
            digests.append(digest)
            t.outputs[name] = {"receiver": receiver, "sm3": digest.hex(), "size": len(data)}
            path.unlink()  # only the sealed copy stays
        result_hash = sm3_digest(b"".join(digests) or json.dumps(result, sort_keys=True).encode())
        t.finished_at = time.time()
        # the contract wants finishedAt <= block.timestamp: never claim a time ahead of the chain
        chain_now = int(self.chain.w3.eth.get_block("latest")["timestamp"])
        finished = min(int(t.finished_at), chain_now)
        receipt = UsageReceipt(
            job_id=job_key(t.job_id), dataset_id=dataset_chain_id(self.member, dataset),
            row_count=t.intersection_rows, result_hash=result_hash,
            started_at=min(int(t.started_at or t.finished_at), finished), finished_at=finished,
        )
        tx = self.chain.record_usage(self.account, receipt)
        t.receipt_tx = "0x" + bytes(tx.tx_hash).hex()
        self.ctx.audit.record(actor="node", action="task.receipt", target=t.job_id,
                              detail={"rows": t.intersection_rows, "tx": t.receipt_tx})
        t.status = "succeeded"

    def stop(self, job_id: str) -> dict[str, Any]:
        t = self._get(job_id)
        if t.status == "running" and t.proc is not None:
            t.status, t.error = "stopped", "stopped by the coordinator"
            _kill(t.proc)
            self.ctx.audit.record(actor="coordinator", action="task.stop", target=job_id)
        elif t.status == "ports":
            t.status = "stopped"
        if t.work is not None:
            (t.work / "input.csv").unlink(missing_ok=True)
        return {"status": t.status}

    def stop_all(self) -> None:
        for job_id, t in list(self.tasks.items()):
            if t.status == "running":
                self.stop(job_id)

    def output(self, job_id: str, name: str) -> dict[str, Any]:
        t = self._get(job_id)
        if t.status != "succeeded" or name not in t.outputs or t.work is None:
            raise TaskNotFound(f"job {job_id!r} has no output {name!r} here")
        env = (t.work / f"{name}.sealed").read_bytes()
        o = t.outputs[name]
        return {"name": name, "receiver": o["receiver"], "sm3": o["sm3"],
                "envelope_b64": base64.b64encode(env).decode()}


def _kill(proc: subprocess.Popen[str], grace: float = 3.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def tasks_router(runner: TaskRunner) -> APIRouter:
    """The interim ``/tasks`` routes over ``runner``."""
    router = APIRouter(prefix="/tasks", tags=["tasks"])

    def guard(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except TaskError as exc:
            runner.ctx.audit.record(actor="coordinator", action="task.refuse", target=str(args[0]),
                                    outcome="refused", detail={"error": type(exc).__name__, "detail": exc.detail})
            return JSONResponse(status_code=exc.status_code, content={"error": type(exc).__name__, "detail": exc.detail})

    @router.post("/{job_id}/ports")
    def ports(job_id: str, body: dict[str, Any] = Body(...)) -> Any:
        return guard(runner.ports, job_id, list(body.get("peers", [])), str(body.get("label_party")))

    @router.post("/{job_id}", status_code=202)
    def start(job_id: str, request: Request, body: dict[str, Any] = Body(...)) -> Any:
        return guard(runner.start, job_id, body)

    @router.get("/{job_id}")
    def status(job_id: str) -> Any:
        return guard(lambda j: runner._get(j).out(runner.member), job_id)

    @router.post("/{job_id}/stop")
    def stop(job_id: str) -> Any:
        return guard(runner.stop, job_id)

    @router.get("/{job_id}/outputs/{name}")
    def output(job_id: str, name: str) -> Any:
        return guard(runner.output, job_id, name)

    return router
