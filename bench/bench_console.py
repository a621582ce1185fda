"""Server time of the node console's pages with 1,000 items: the inbox (first page of the pending
tab, a deep page of every request, the htmx fragment, one request's page), the node's job list (the
receipts of its tasks), the audit log and the four-eyes queue — p50 and p95 (goal: p95 < 200 ms on
the 2-core machine).

    .venv/bin/python bench/bench_console.py [--requests 1000] [--repeat 60] [--old-expiry]

``--old-expiry`` makes every read run the overdue-expiry pass as it did before it ran only when a
pending request is due (each read took the node's writer lock and walked every pending request),
for the before/after comparison.

A real node (``nodes.app.create_app``, SQLite, no chain) with a dataset and ``--requests`` approval
requests written straight into its store (700 ‰ pending, the rest approved or rejected), its
console mounted at ``/console`` with a signed-in approver. Server time is measured inside the app
(an ASGI middleware around the console), so the test client's own overhead is not counted; the
service calls alone are timed too, to show where the time goes: ``counts`` + ``page`` (what the
inbox reads: one page) against ``list`` (every request, as the JSON API reads them).

``--jobs`` (default 1,000): the requester's console (a bank's node) over a real coordinator app
(SQLite, served by uvicorn on a loopback port; plain HTTP, the caller named as the bank as the
国密 TLS listener would) holding that many of the bank's jobs, each with two parties' approvals,
tasks and four events: the job list's first and a deep page, a state filter, a word search, one
job's page; and the coordinator's ``GET /jobs`` itself: one page of 20 (what the console asks now)
against every job (what it asked before pagination).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlmodel import Session  # noqa: E402

from console.node import create_node_console  # noqa: E402
from nodes.app import create_app  # noqa: E402
from nodes.models import ApprovalRecord, ApprovalRequestIn, IngestOptions, NodeTask  # noqa: E402
from nodes.services.approvals import manifest_of  # noqa: E402
from nodes.settings import NodeSettings  # noqa: E402


@dataclass(frozen=True)
class Approver:
    name: str = "director_li"
    roles: frozenset[str] = frozenset({"approver", "steward", "auditor"})


class ServerTimer:
    """ASGI middleware: how long the wrapped app took for each request (seconds). ``before`` runs
    first in each request (inside the timing)."""

    def __init__(self, app, before=None) -> None:  # noqa: ANN001
        self.app = app
        self.before = before
        self.times: list[float] = []

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        t = time.perf_counter()
        if self.before is not None:
            self.before()
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.times.append(time.perf_counter() - t)


def seed(engine, n: int) -> None:  # noqa: ANN001
    rng = random.Random(0)
    now = datetime.now(timezone.utc)
    with Session(engine) as session:
        for i in range(n):
            req = ApprovalRequestIn(
                job_id=f"job-{i:05d}", kind=rng.choice(["psi", "vertical_train", "vertical_predict"]),
                protocol="secretflow/psi-rr22", requester=rng.choice(["bank_a", "bank_b", "bank_c"]),
                requester_role="bank", purpose=f"pre-loan credit model, batch {i}",
                inputs=[{"dataset": "tax_2024", "columns": ["uscc", "vat_paid", "credit_grade"]}],
                receivers={"model": ["bank_a"], "report": ["bank_a", "regulator"]},
                expiry=now + timedelta(days=30), max_runs=2)
            m = manifest_of(req)
            status = "pending" if i % 10 < 7 else ("approved" if i % 10 < 9 else "rejected")
            session.add(ApprovalRecord(
                job_id=req.job_id, requester=req.requester, kind=req.kind, manifest_json=json.dumps(m),
                manifest_hash=f"{i:064x}", expires_at=req.expiry, status=status,
                reason="purpose too broad" if status == "rejected" else None,
                decided_by=None if status == "pending" else "director_li",
                created_at=now - timedelta(minutes=n - i)))
            session.add(NodeTask(
                job_id=req.job_id, status="succeeded", endpoint_json="{}", receipt_tx=f"0x{i:064x}",
                datasets_json=json.dumps([{"dataset": "tax_2024", "columns": ["uscc", "vat_paid"], "rows": 120_000}]),
                result_hash=f"{i:064x}", started_at=now - timedelta(minutes=n - i),
                finished_at=now - timedelta(minutes=n - i - 1)))
        session.commit()


def seed_changes(ctx, n: int) -> None:  # noqa: ANN001
    """``n`` four-eyes proposals (grade changes) and as many audit entries."""
    from nodes.services.officers import OfficerIdentity

    who = OfficerIdentity(name="steward_zhang", roles=["steward"], node="tax", session="bench")
    for i in range(n):
        p = ctx.officers.propose("schema", "tax_2024", {"columns": [{"name": "vat_paid", "grade": 1 + i % 4}]}, who)
        ctx.audit.record(actor="officer:steward_zhang@tax", action="dataset.schema.propose", target="tax_2024",
                         detail={"proposal": p.id})


def seed_jobs(engine, n: int) -> None:  # noqa: ANN001
    """``n`` of the bank's jobs in the coordinator's store (each with a training job's spec and
    manifest, ~1 and ~6 KB), with bank's and tax's approval records, tasks and four transition events
    (60 % SUCCEEDED, 10 % each FAILED, REJECTED, RUNNING, PENDING_APPROVAL)."""
    from coordinator.models import ApprovalRecord as CoordApproval
    from coordinator.models import Job, JobEvent, TaskRecord

    rng = random.Random(1)
    now = datetime.now(timezone.utc)
    states = ["SUCCEEDED"] * 6 + ["FAILED", "REJECTED", "RUNNING", "PENDING_APPROVAL"]
    # a job's stored spec and manifest as large as a real training job's (the list must not read them)
    columns = [f"feature_{k:02d}" for k in range(24)]
    spec = json.dumps({"kind": "vertical_train", "inputs": [{"member": m, "dataset": f"{m}_2024", "columns": columns}
                                                             for m in ("bank", "tax", "power")], "model": {"params": {}}})
    manifest = json.dumps({"inputs": [{"member": m, "columns": [{"name": c, "grade": 2, "category": "finance"}
                                                                for c in columns]} for m in ("bank", "tax", "power")],
                           "receivers": {"predictions": ["bank"]}, "purpose": "pre-loan credit model " * 8})
    with Session(engine) as session:
        for i in range(n):
            job_id, state = f"job-{i:05d}", rng.choice(states)
            at = now - timedelta(minutes=n - i)
            reason = {"FAILED": "tax's task failed: the extract of tax_2024 failed (batch run)",
                      "REJECTED": "tax rejected: purpose too broad"}.get(state)
            session.add(Job(job_id=job_id, kind=rng.choice(["vertical_train", "psi"]), requester="bank",
                            purpose=f"pre-loan credit model, batch {i}", state=state, reason=reason,
                            spec_json=spec, manifest_json=manifest, manifest_hash=f"{i:064x}",
                            expires_at=now + timedelta(days=30), created_at=at, updated_at=at))
            for member in ("bank", "tax"):
                session.add(CoordApproval(job_id=job_id, member=member, request_hash=f"{i:064x}",
                                          status="rejected" if state == "REJECTED" and member == "tax" else "approved"))
                session.add(TaskRecord(job_id=job_id, member=member, status="succeeded", stage="done"))
            for a, b in ((None, "SUBMITTED"), ("SUBMITTED", "PENDING_APPROVAL"), ("PENDING_APPROVAL", "AUTHORIZED"),
                         ("AUTHORIZED", state)):
                session.add(JobEvent(job_id=job_id, from_state=a, to_state=b, at=at))
        session.commit()


def bench_job_list(n: int, repeat: int, table: Table) -> None:
    """The requester console's job list over a coordinator holding ``n`` of the bank's jobs."""
    import threading

    import uvicorn

    from common.net import free_port
    from console.requester import create_requester_console
    from console.requester.desk import RequesterDesk
    from coordinator.app import create_app as create_coordinator
    from coordinator.sdk import DcpClient
    from tests.authkit import AsPeer
    from tests.coordkit import seeded_coordinator

    with tempfile.TemporaryDirectory() as tmp:
        coord = seeded_coordinator(Path(tmp))
        seed_jobs(coord.engine, n)
        api_timer = ServerTimer(AsPeer(create_coordinator(coord.settings, coord), "bank"))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(api_timer, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.05)
            client = DcpClient(f"http://127.0.0.1:{port}")
            desk = RequesterDesk("bank", client, None)
            timer = ServerTimer(create_requester_console(desk, officer=lambda: Analyst(), page_size=20))
            rows: list[tuple[str, str, Any]] = [
                ("requester: job list, page 1", "/jobs", timer),
                ("requester: job list, page 40", "/jobs?page=40", timer),
                ("requester: job list, failed only", "/jobs?state=FAILED", timer),
                ("requester: job list, word search", "/jobs?q=batch+77", timer),
                ("requester: one job's page", f"/jobs/job-{n // 2:05d}", timer),
                ("coordinator: GET /jobs, one page of 20", "/jobs?requester=bank&limit=20&order=newest", api_timer),
                ("coordinator: GET /jobs, every job (before)", "/jobs?requester=bank", api_timer),
            ]
            with TestClient(timer) as c:
                for label, path, t in rows:
                    get = c.get if t is timer else (lambda p: client._send("GET", p))
                    assert get(path).status_code == 200  # warm
                    t.times.clear()
                    for _ in range(repeat if "every job" not in label else max(5, repeat // 4)):
                        assert get(path).status_code == 200
                    ms = [x * 1000 for x in t.times]
                    table.add_row(label, f"{n:,}", f"{pct(ms, 50):.1f}", f"{pct(ms, 95):.1f}", f"{max(ms):.1f}")
            client.close()
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            coord.close()


@dataclass(frozen=True)
class Analyst:
    name: str = "analyst_wang"
    roles: frozenset[str] = frozenset({"analyst"})


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="the node's inbox requests (0: skip the node console)")
    ap.add_argument("--repeat", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=1000, help="the bank's jobs at the coordinator (0: skip)")
    ap.add_argument("--old-expiry", action="store_true", help="every read runs the expiry pass (the old way)")
    args = ap.parse_args()
    out = Console()
    table = Table("page", "items", "p50 ms", "p95 ms", "max ms",
                  title="node console: server time" + (" (old expiry: every read)" if args.old_expiry else ""))
    if args.requests:
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(NodeSettings(name="tax", work_dir=Path(tmp) / "node"))
            ctx = app.state.ctx
            def old_way() -> None:
                ctx.approvals._due_known = False

            timer = ServerTimer(create_node_console(ctx.approvals, officer=lambda: Approver(), node=ctx),
                                before=old_way if args.old_expiry else None)
            app.mount("/console", timer)
            with TestClient(app) as c:
                frame = pd.DataFrame({"uscc": [f"9131{i:014d}" for i in range(200)],
                                      "vat_paid": [float(i) for i in range(200)], "credit_grade": ["A"] * 200})
                ctx.datasets.register(frame, IngestOptions(name="tax_2024", key_column="uscc"), "csv", "t.csv", "bench")
                seed(ctx.engine, args.requests)
                seed_changes(ctx, args.requests)
                some_id = ctx.approvals.list("pending")[0].id
                pages = {
                    "inbox, pending tab, page 1": "/console/inbox",
                    "inbox, all, page 25": "/console/inbox?status=all&page=25",
                    "inbox, htmx fragment": "/console/inbox?status=approved",
                    "one request (manifest in words)": f"/console/inbox/{some_id}",
                    "job list (receipts), page 1": "/console/receipts",
                    "job list (receipts), page 40": "/console/receipts?page=40",
                    "audit log, page 1": "/console/audit",
                    "four-eyes queue, page 1": "/console/changes",
                }
                for label, path in pages.items():
                    headers = {"HX-Request": "true"} if "htmx" in label else {}
                    assert c.get(path, headers=headers).status_code == 200  # warm
                    timer.times.clear()
                    for _ in range(args.repeat):
                        assert c.get(path, headers=headers).status_code == 200
                    ms = [t * 1000 for t in timer.times]
                    table.add_row(label, f"{args.requests:,}", f"{pct(ms, 50):.1f}", f"{pct(ms, 95):.1f}",
                                  f"{max(ms):.1f}")
                calls = {
                    "(service: counts + one page of 20)": lambda: (ctx.approvals.counts(),
                                                                   ctx.approvals.page("pending", 0, 20)),
                    "(service: list of every request)": ctx.approvals.list,
                "(service: one page of 20 and the total, GET /approvals?limit=20)":
                    lambda: ctx.approvals.find("pending", None, 0, 20, newest_first=True),
                }
                for label, call in calls.items():
                    svc = []
                    for _ in range(max(5, args.repeat // 4)):
                        t = time.perf_counter()
                        call()
                        svc.append((time.perf_counter() - t) * 1000)
                    table.add_row(label, f"{args.requests:,}", f"{pct(svc, 50):.1f}", f"{pct(svc, 95):.1f}",
                                  f"{max(svc):.1f}")
    if args.jobs:
        bench_job_list(args.jobs, args.repeat, table)
    out.print(table)
    with open("/proc/loadavg") as fh:
        out.print(f"load average: {fh.read().split()[:3]}")


if __name__ == "__main__":
    main()
