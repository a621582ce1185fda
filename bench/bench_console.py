"""Server time of the node console's inbox with 1,000 requests: the list (first page of the pending
tab, a deep page of every request) and one request's page — p50 and p95 (goal: p95 < 200 ms on the
2-core machine).

    .venv/bin/python bench/bench_console.py [--requests 1000] [--repeat 60]

A real node (``nodes.app.create_app``, SQLite, no chain) with a dataset and ``--requests`` approval
requests written straight into its store (700 ‰ pending, the rest approved or rejected), its
console mounted at ``/console`` with a signed-in approver. Server time is measured inside the app
(an ASGI middleware around the console), so the test client's own overhead is not counted; the
service calls alone are timed too, to show where the time goes: ``counts`` + ``page`` (what the
inbox reads: one page) against ``list`` (every request, as the JSON API reads them).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlmodel import Session  # noqa: E402

from console.node import create_node_console  # noqa: E402
from nodes.app import create_app  # noqa: E402
from nodes.models import ApprovalRecord, ApprovalRequestIn  # noqa: E402
from nodes.services.approvals import manifest_of  # noqa: E402
from nodes.settings import NodeSettings  # noqa: E402


@dataclass(frozen=True)
class Approver:
    name: str = "director_li"
    roles: frozenset[str] = frozenset({"approver"})


class ServerTimer:
    """ASGI middleware: how long the wrapped app took for each request (seconds)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.times: list[float] = []

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        t = time.perf_counter()
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
        session.commit()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=60)
    args = ap.parse_args()
    out = Console()
    table = Table("page", "requests in inbox", "p50 ms", "p95 ms", "max ms", title="node console: server time")
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(NodeSettings(name="tax", work_dir=Path(tmp) / "node"))
        ctx = app.state.ctx
        timer = ServerTimer(create_node_console(ctx.approvals, officer=lambda: Approver()))
        app.mount("/console", timer)
        with TestClient(app) as c:
            frame = pd.DataFrame({"uscc": [f"9131{i:014d}" for i in range(200)],
                                  "vat_paid": [float(i) for i in range(200)], "credit_grade": ["A"] * 200})
            buf = io.StringIO()
            frame.to_csv(buf, index=False)
            r = c.post("/datasets/upload", data={"name": "tax_2024", "key_column": "uscc"},
                       files={"file": ("t.csv", buf.getvalue().encode(), "text/csv")})
            assert r.status_code == 201, r.text
            seed(ctx.engine, args.requests)
            some_id = ctx.approvals.list("pending")[0].id
            pages = {
                "inbox, pending tab, page 1": "/console/inbox",
                "inbox, all, page 25": "/console/inbox?status=all&page=25",
                "inbox, htmx fragment": "/console/inbox?status=approved",
                "one request (manifest in words)": f"/console/inbox/{some_id}",
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
            }
            for label, call in calls.items():
                svc = []
                for _ in range(max(5, args.repeat // 4)):
                    t = time.perf_counter()
                    call()
                    svc.append((time.perf_counter() - t) * 1000)
                table.add_row(label, f"{args.requests:,}", f"{pct(svc, 50):.1f}", f"{pct(svc, 95):.1f}",
                              f"{max(svc):.1f}")
    out.print(table)


if __name__ == "__main__":
    main()
