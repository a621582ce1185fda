"""Department node throughput: CSV ingest (parse, infer, quality, store), catalog, mock, audit log;
then the chain-wired node on a real anvil: audit anchors, on-chain approval, the task's authorization
check, usage receipts, sealing outputs, and two-node SecretFlow runs driven through the node API.

Prints a table; sizes are modest so it runs in a few minutes on 2 cores (``--no-chain`` skips the
chain part, ``--no-runs`` the party runs).
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
    if "--no-chain" not in sys.argv:
        chain_section(table, runs="--no-runs" not in sys.argv)
    Console(width=150).print(table)
    _ = pd  # pandas is what the ingest runs on


def chain_section(table: Table, runs: bool = True) -> None:
    """Chain-wired node numbers (anvil on a free port, contracts deployed, real HTTP coordinator board)."""
    import threading
    from contextlib import ExitStack

    import uvicorn
    from conftest import TAX_FEATURES, ChainKit, JobBoard, chain_node, vertical_spec

    from common.net import free_port
    from contracts.anvil import AnvilNode
    from coordinator.manifest import node_request
    from protocols.crypto.envelope import seal
    from protocols.secretflow.synthetic import make_vertical_data

    board = JobBoard()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(board.app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        anvil = AnvilNode(accounts=10).start()
        stack.callback(anvil.stop)
        stack.callback(setattr, server, "should_exit", True)
        while not server.started:
            time.sleep(0.02)
        root = Path(tmp)
        (root / "keys").mkdir()
        kit = ChainKit(anvil, root / "keys", f"http://127.0.0.1:{port}", board)
        kit.member("bank", "bank")
        kit.member("tax")
        data = make_vertical_data(root / "data", n_rows=5000, overlap=0.6, seed=3)
        csv = {p.name: p.csv_path for p in data.parties}
        for m, d in (("bank", "bank_2024"), ("tax", "tax_2024")):
            kit.register_dataset(m, d)
        tax = stack.enter_context(chain_node(kit, "tax", root / "tax", {"tax_2024": csv["tax"].read_bytes()}))
        bank = stack.enter_context(chain_node(kit, "bank", root / "bank", {"bank_2024": csv["bank"].read_bytes()},
                                              role="bank"))
        n = 20
        _, dt = timed(lambda: [tax.post("/audit/anchor").raise_for_status() for _ in range(n)])
        table.add_row("audit anchor on chain (POST /audit/anchor, anvil)", f"{n} anchors", f"{dt:.2f}",
                      f"{dt / n * 1000:.0f} ms each")

        def approve(job: str, **over: int) -> tuple[dict, object, float]:
            manifest, terms = kit.publish(vertical_spec(TAX_FEATURES, **over), job)
            for member, c in (("tax", tax), ("bank", bank)):
                item = c.post("/approvals", json=node_request(manifest, member)).json()
                t0 = time.perf_counter()
                c.post(f"/approvals/{item['id']}/approve").raise_for_status()
                elapsed = time.perf_counter() - t0
            return manifest, terms, elapsed

        approvals = [approve(f"bench-appr-{i}")[2] for i in range(5)]
        table.add_row("inbox approve: SM2+BLS sign, fetch + check terms, approve tx", "5 approvals",
                      f"{sum(approvals):.2f}", f"{sum(approvals) / 5 * 1000:.0f} ms each")
        manifest, terms, _ = approve("bench-receipts", max_runs=50)
        kit.authorize(terms)
        ctx = tax.app.state.ctx
        from sqlmodel import Session, select

        from nodes.models import ApprovalRecord

        with Session(ctx.engine) as session:
            rec = session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == "bench-receipts")).one()
        _, dt = timed(lambda: [ctx.tasks.guard.check("bench-receipts", ["tax_2024"], rec) for _ in range(n)])
        table.add_row("task start: authorization checked on chain (6 reads)", f"{n} checks", f"{dt:.2f}",
                      f"{dt / n * 1000:.0f} ms each")
        from contracts.models import UsageReceipt
        from nodes.services.chain import dataset_chain_id
        from protocols.crypto.approvals import job_key

        def receipt() -> None:
            now = ctx.chain.chain_time()
            ctx.chain.record_usage(UsageReceipt(job_id=job_key("bench-receipts"),
                                                dataset_id=dataset_chain_id("tax", "tax_2024"), row_count=1000,
                                                result_hash=b"\x01" * 32, started_at=now - 5, finished_at=now))

        _, dt = timed(lambda: [receipt() for _ in range(10)])
        table.add_row("usage receipt on chain (recordUsage)", "10 receipts", f"{dt:.2f}", f"{dt / 10 * 1000:.0f} ms each")
        payload = b"uscc,score,default\n" + b"91330106MA2B3C4D5E,0.123456,0\n" * 100_000
        key = bytes.fromhex(kit.members["bank"][1].public.sm2_public_key)
        _, dt = timed(lambda: seal(key, payload, b"job/predictions"))
        table.add_row("seal an output to the receiver (SM2 + SM4-GCM)", f"{len(payload) / 1e6:.1f} MB", f"{dt:.3f}",
                      f"{len(payload) / 1e6 / dt:,.0f} MB/s")
        if not runs:
            return
        for rows_wanted in (1000, 5000):
            job = f"bench-run-{rows_wanted}"
            sub = make_vertical_data(root / f"d{rows_wanted}", n_rows=rows_wanted, overlap=0.6, seed=rows_wanted)
            subcsv = {p.name: p.csv_path for p in sub.parties}
            ds = f"r{rows_wanted}"
            for m in ("bank", "tax"):
                kit.register_dataset(m, f"{m}_{ds}")
            for m, c in (("bank", bank), ("tax", tax)):
                c.post("/datasets/upload", data={"name": f"{m}_{ds}", "key_column": "uscc"},
                       files={"file": ("d.csv", subcsv[m].read_bytes(), "text/csv")}).raise_for_status()
            spec = vertical_spec(TAX_FEATURES, tax_dataset=f"tax_{ds}")
            spec["inputs"][0]["dataset"] = spec["label"]["dataset"] = f"bank_{ds}"
            manifest, terms = kit.publish(spec, job)
            for member, c in (("tax", tax), ("bank", bank)):
                item = c.post("/approvals", json=node_request(manifest, member)).json()
                c.post(f"/approvals/{item['id']}/approve").raise_for_status()
            kit.authorize(terms)
            t0 = time.perf_counter()
            eps = {m: c.post(f"/tasks/{job}/ports", json={"peers": [o for o in ("bank", "tax") if o != m],
                                                          "label_party": "bank"}).json()
                   for m, c in (("bank", bank), ("tax", tax))}
            cluster = {"host": "127.0.0.1", "parties": [eps["bank"]["endpoint"], eps["tax"]["endpoint"]]}
            for m, c in (("bank", bank), ("tax", tax)):
                inp = next(i for i in manifest["inputs"] if i["member"] == m)
                body = {"job_id": job, "party": m, "cluster": cluster, "join_key": "uscc", "label_party": "bank",
                        "label_column": "default", "psi_protocol": "RR22", "model": manifest["engine"]["params"],
                        "inputs": [{"dataset": inp["dataset"], "columns": inp["columns"]}],
                        "features": inp["features"], "receivers": {"metrics": ["bank"], "predictions": ["bank"]},
                        "timeout_s": 600}
                c.post(f"/tasks/{job}/start", json=body).raise_for_status()
            t_started = time.perf_counter() - t0
            done = {}
            while len(done) < 2:
                for m, c in (("bank", bank), ("tax", tax)):
                    st = c.get(f"/tasks/{job}").json()
                    if st["status"] in ("succeeded", "failed", "stopped"):
                        done[m] = st
                time.sleep(0.2)
            total = time.perf_counter() - t0
            assert all(st["status"] == "succeeded" for st in done.values()), done
            inter = done["bank"]["intersection_rows"]
            table.add_row(f"two-node job via node API: checks+extract+start ({rows_wanted:,} rows/party)",
                          f"{inter:,} joined", f"{t_started:.2f}", "")
            table.add_row(f"two-node job via node API: to both receipts ({rows_wanted:,} rows/party, PSI+SS-LR 1 ep)",
                          f"{inter:,} joined", f"{total:.1f}", "")


if __name__ == "__main__":
    main()
