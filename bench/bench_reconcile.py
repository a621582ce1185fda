"""Reconciliation of a node's audit log with the chain at scale (#18.3): a log of 100,000 entries
(``--entries``) of which one in ``--receipt-every`` records a usage receipt, on a real anvil (started
here, stopped at exit) holding those receipts (``recordUsageBatch`` of 100) and an anchor of the head
every ``--anchor-every`` entries, all from the node's member account.

It times what ``GET /audit/reconcile`` does on the node (read the log from SQLite, read the node's
receipts and anchors from the chain, reconcile), and the same with the log as the regulator's
``dcp audit reconcile`` reads it (JSON pages of 1,000 entries, decoded). The report must be clean.

    .venv/bin/python bench/bench_reconcile.py [--entries 100000] [--receipt-every 100] [--anchor-every 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlmodel import Session  # noqa: E402

from contracts.anvil import AnvilNode  # noqa: E402
from contracts.client import ChainClient  # noqa: E402
from contracts.models import MemberAdmission, Role, Terms, UsageReceipt  # noqa: E402
from nodes.db import init_db, make_engine  # noqa: E402
from nodes.models import AuditEntry  # noqa: E402
from nodes.services.audit import GENESIS, canonical_json, entry_body, entry_hash, now_ts  # noqa: E402
from nodes.services.reconcile import chain_records, db_entries, reconcile  # noqa: E402


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--receipt-every", type=int, default=100)
    ap.add_argument("--anchor-every", type=int, default=10_000)
    args = ap.parse_args()
    con = Console(width=160)
    with AnvilNode(accounts=10) as anvil, tempfile.TemporaryDirectory() as tmp:
        w3 = anvil.web3()
        acc = w3.eth.accounts
        client = ChainClient.deploy(w3, acc[0], acc[:3], 2)
        node, coord = acc[5], acc[3]
        client.admit(acc[:3], MemberAdmission(account=coord, role=Role.COORDINATOR, name="coordinator",
                                              sm2_public_key=os.urandom(64)))
        client.admit(acc[:3], MemberAdmission(account=node, role=Role.DEPARTMENT, name="tax",
                                              sm2_public_key=os.urandom(64)))
        dataset = h("tax.vat")
        client.register_dataset(node, dataset, h("schema"), 2)
        now = int(w3.eth.get_block("latest")["timestamp"])
        terms = Terms(job_id=h("job"), manifest_hash=h("m"), dataset_ids=(dataset,), requester=coord,
                      expiry=now + 86_400, max_runs=10**6)
        client.approve(node, terms)
        client.authorize(coord, terms)

        n_receipts = args.entries // args.receipt_every
        t0 = time.perf_counter()
        receipts = [UsageReceipt(job_id=terms.job_id, dataset_id=dataset, row_count=1000 + i,
                                 result_hash=h(f"r{i}"), started_at=now - 5, finished_at=now)
                    for i in range(n_receipts)]
        txs: list[str] = []
        for k in range(0, n_receipts, 100):
            tx = client.record_usage_batch(node, receipts[k:k + 100])
            txs.extend(["0x" + bytes(tx.tx_hash).hex()] * len(receipts[k:k + 100]))
        chain_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        engine = make_engine(f"sqlite:///{tmp}/node.db")
        init_db(engine)
        prev, batch, r_i, anchors = GENESIS, [], 0, 0
        with Session(engine) as session:
            for seq in range(1, args.entries + 1):
                detail: dict = {"dataset": "tax_2024", "rows": seq % 997}
                action = "dataset.read"
                if seq % args.receipt_every == 0 and r_i < n_receipts:
                    r = receipts[r_i]
                    action = "receipt.recorded"
                    detail = {"queue_id": r_i + 1, "dataset": "tax_2024", "job_key": r.job_id.hex(),
                              "dataset_id": r.dataset_id.hex(), "rows": r.row_count, "result_hash": r.result_hash.hex(),
                              "started_at": r.started_at, "finished_at": r.finished_at, "tx": txs[r_i], "late": False}
                    r_i += 1
                e = AuditEntry(seq=seq, ts=now_ts(), actor="node", action=action, target="job", outcome="ok",
                               detail=canonical_json(detail).decode(), prev_hash=prev, hash="")
                e.hash = entry_hash(prev, entry_body(e))
                prev = e.hash
                batch.append(e)
                if seq % args.anchor_every == 0:
                    client.anchor_audit_head(node, bytes.fromhex(e.hash), seq)
                    anchors += 1
                if len(batch) >= 10_000:
                    session.add_all(batch)
                    session.commit()
                    batch = []
            session.add_all(batch)
            session.commit()
        build_s = time.perf_counter() - t0

        # the node's route: its database and its chain client
        t0 = time.perf_counter()
        rec, anc, _ = chain_records(client, node)
        read_chain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        entries = list(db_entries(engine))
        read_log_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = reconcile("tax", node, entries, rec, anc)
        check_s = time.perf_counter() - t0
        # the regulator's command: the same log as JSON pages of 1,000 entries
        pages = [json.dumps([{**e, "detail": json.loads(e["detail"])} for e in entries[k:k + 1000]])
                 for k in range(0, len(entries), 1000)]
        t0 = time.perf_counter()
        remote = reconcile("tax", node, (e for p in pages for e in json.loads(p)), rec, anc)
        remote_s = time.perf_counter() - t0
        load = open("/proc/loadavg").read().split()[:3]

    table = Table(title=f"reconciliation of a node log with the chain (load {' '.join(load)})")
    for col in ("entries", "receipts", "anchors", "read chain s", "read log s", "reconcile s", "node total s",
                "regulator (JSON pages) s", "findings"):
        table.add_column(col, justify="right")
    table.add_row(f"{report.entries_checked:,}", f"{report.receipts_on_chain:,}", str(report.anchors_on_chain),
                  f"{read_chain_s:.2f}", f"{read_log_s:.2f}", f"{check_s:.2f}",
                  f"{read_chain_s + read_log_s + check_s:.2f}", f"{remote_s + read_chain_s:.2f}",
                  str(len(report.findings) + len(remote.findings)))
    con.print(table)
    con.print(f"(set-up: {n_receipts:,} receipts on chain in {chain_s:.1f} s, log built in {build_s:.1f} s)")
    assert report.clean and remote.clean, report.findings[:5] or remote.findings[:5]
    assert report.receipts_in_log == report.receipts_on_chain == n_receipts and report.anchors_checked == anchors
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
