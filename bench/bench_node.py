"""Department node throughput: CSV ingest (parse, infer, quality, store), catalog, mock, audit log.

Prints a table; sizes are modest so it runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "nodes"))
from conftest import csv_bytes, make_tax_frame  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from nodes.app import create_app  # noqa: E402
from nodes.db import init_db, make_engine  # noqa: E402
from nodes.services.audit import AuditLog  # noqa: E402
from nodes.settings import NodeSettings  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    table = Table("operation", "size", "seconds", "rate")
    with tempfile.TemporaryDirectory() as tmp:
        s = NodeSettings(name="bench", work_dir=Path(tmp) / "node")
        with TestClient(create_app(s)) as c:
            for n in (10_000, 100_000):
                data = csv_bytes(make_tax_frame(n, seed=n))
                r, dt = timed(lambda data=data, n=n: c.post(
                    "/datasets/upload", data={"name": f"t{n}", "key_column": "uscc"},
                    files={"file": ("t.csv", data, "text/csv")}))
                assert r.status_code == 201, r.text
                table.add_row("CSV ingest (7 cols, quality rules, SQLite)", f"{n:,} rows / {len(data) / 1e6:.1f} MB",
                              f"{dt:.2f}", f"{n / dt:,.0f} rows/s")
            _, dt = timed(lambda: c.get("/catalog").json())
            table.add_row("catalog (2 datasets)", "-", f"{dt:.3f}", "")
            _, dt = timed(lambda: c.get("/datasets/t100000/mock?rows=1000").json())
            table.add_row("mock data from 100k rows", "1,000 rows", f"{dt:.2f}", "")
            ctx = c.app.state.ctx
            _, dt = timed(lambda: ctx.datasets.extract_csv("t100000", ["uscc", "vat_paid"], Path(tmp) / "x.csv"))
            table.add_row("column extract to CSV", "100,000 rows x 2", f"{dt:.2f}", f"{100_000 / dt:,.0f} rows/s")
        eng = make_engine(f"sqlite:///{Path(tmp) / 'audit.db'}")
        init_db(eng)
        log = AuditLog("bench", eng)
        rng = random.Random(0)
        n = 2000

        def append() -> None:
            for i in range(n):
                log.record(actor="bench", action="x", target=str(i), detail={"v": rng.random()})

        _, dt = timed(append)
        table.add_row("audit append (own transaction each)", f"{n:,} entries", f"{dt:.2f}", f"{n / dt:,.0f} entries/s")
        v, dt = timed(log.verify)
        assert v.ok and v.checked == n
        table.add_row("audit verify (SM3 chain)", f"{n:,} entries", f"{dt:.3f}", f"{n / dt:,.0f} entries/s")
        eng.dispose()
    Console().print(table)
    _ = pd  # pandas is what the ingest runs on


if __name__ == "__main__":
    main()
