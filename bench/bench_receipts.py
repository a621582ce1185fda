"""Usage receipts per second through ``ChainClient`` on a real anvil node (started here, stopped
at exit), as a node records them: signed locally with the node's own key (not an unlocked account).

Rows: web3's general write path (estimate, build, sign with eth-account, wait), for reference;
the lean receipt path one receipt per transaction, sequential (each waits for its receipt) and
from 4 threads sharing one client (the nonce is counted locally, so they pipeline); single receipts
through the node's group commit (``NodeChain.record_usage`` from ``--recorders`` threads: what
arrives while a transaction is under way goes in the next ``recordUsageBatch``); and
``record_usage_batch`` with ``--batch`` receipts per transaction. Each row gives receipts/s,
JSON-RPC calls and client CPU per receipt; the load average is printed (the machine is shared).

    .venv/bin/python bench/bench_receipts.py [--n 600] [--batched 6000] [--batch 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from contracts.anvil import AnvilNode  # noqa: E402
from contracts.client import ChainClient  # noqa: E402
from contracts.models import MemberAdmission, Role, Terms, UsageReceipt  # noqa: E402

GOAL = 200.0


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class CountingProvider:
    """Counts JSON-RPC requests made through a web3 provider (wraps ``make_request``)."""

    def __init__(self, provider) -> None:  # noqa: ANN001
        self.calls = 0
        inner = provider.make_request

        def counted(method, params):  # noqa: ANN001, ANN202
            self.calls += 1
            return inner(method, params)

        provider.make_request = counted


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600, help="receipts per single-receipt row")
    ap.add_argument("--web3", type=int, default=40, help="receipts through web3's general path")
    ap.add_argument("--batched", type=int, default=6000, help="receipts in the batched row")
    ap.add_argument("--batch", type=int, default=100, help="receipts per batch transaction")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--grouped", type=int, default=3000, help="single receipts through the node's group commit")
    ap.add_argument("--recorders", type=int, default=32, help="threads recording through the node at once")
    ap.add_argument("--anvil-args", default="", help="extra anvil flags, e.g. '--prune-history 64'")
    args = ap.parse_args()
    load0 = os.getloadavg()
    rows: list[tuple[str, int, float, float, float, str]] = []
    with AnvilNode(accounts=6, extra_args=args.anvil_args.split()) as node:
        w3 = node.web3()
        acc = w3.eth.accounts
        admin = ChainClient.deploy(w3, acc[0], acc[:3], 2)
        dept = Account.create()
        w3.eth.send_transaction({"from": acc[0], "to": dept.address, "value": 10**21})
        admin.admit(acc[:3], MemberAdmission(account=acc[3], role=Role.COORDINATOR, name="coord",
                                             sm2_public_key=os.urandom(64)))
        admin.admit(acc[:3], MemberAdmission(account=acc[4], role=Role.BANK, name="bank",
                                             sm2_public_key=os.urandom(64)))
        admin.admit(acc[:3], MemberAdmission(account=dept.address, role=Role.DEPARTMENT, name="tax",
                                             sm2_public_key=os.urandom(64)))
        signed = ChainClient(w3, admin.deployment, signers={dept.address: dept})
        signed.register_dataset(dept.address, h("tax.vat"), h("schema"), 2)
        jobs = []
        for j in range(20):  # receipts spread over several authorizations, as in a real history
            now = w3.eth.get_block("latest")["timestamp"]
            t = Terms(job_id=h(f"job-{j}"), manifest_hash=h(f"m-{j}"), dataset_ids=(h("tax.vat"),),
                      requester=acc[4], expiry=now + 7200, max_runs=2**32 - 1)
            signed.approve(dept.address, t)
            admin.authorize(acc[3], t)
            jobs.append(t)
        counter = CountingProvider(w3.provider)

        def receipt(i: int) -> UsageReceipt:
            now = int(time.time())
            return UsageReceipt(job_id=jobs[i % len(jobs)].job_id, dataset_id=h("tax.vat"), row_count=1000 + i,
                                result_hash=h(f"r{i}"), started_at=now - 3, finished_at=now)

        def measure(name: str, n: int, fn) -> None:  # noqa: ANN001
            calls0, cpu0, t0 = counter.calls, time.process_time(), time.perf_counter()
            txs = fn()
            wall = time.perf_counter() - t0
            gas = f"{sum(t.gas_used for t in txs) / n:,.0f}" if txs else "-"
            rows.append((name, n, n / wall, (counter.calls - calls0) / n, (time.process_time() - cpu0) / n * 1e3, gas))

        def web3_path() -> None:
            for i in range(args.web3):
                r = receipt(i)
                signed._send(signed.receipts.functions.recordUsage(
                    r.job_id, r.dataset_id, r.row_count, r.result_hash, r.started_at, r.finished_at), dept.address)

        measure("web3 general path (estimate, eth-account, wait), sequential", args.web3, web3_path)
        measure("lean path, one receipt per tx, sequential", args.n,
                lambda: [signed.record_usage(dept.address, receipt(i)) for i in range(args.n)])

        def threaded() -> None:
            per = args.n // args.threads

            def worker(k: int) -> None:
                for i in range(per):
                    signed.record_usage(dept.address, receipt(k * per + i))

            ts = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        measure(f"lean path, one receipt per tx, {args.threads} threads", args.n // args.threads * args.threads,
                threaded)
        from nodes.services.chain import NodeChain

        node = NodeChain(signed, dept.address, "tax")

        def group_commit() -> None:
            """Single receipts as a busy node records them: ``--recorders`` threads (tasks ending at
            once), each calling the node's ``record_usage`` for one receipt at a time."""
            per = args.grouped // args.recorders

            def worker(k: int) -> None:
                for i in range(per):
                    node.record_usage(receipt(k * per + i))

            ts = [threading.Thread(target=worker, args=(k,)) for k in range(args.recorders)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        tx0 = node._receipts.transactions
        measure(f"node group commit: single receipts from {args.recorders} recorders (NodeChain.record_usage)",
                args.grouped // args.recorders * args.recorders, group_commit)
        grouped_txs = node._receipts.transactions - tx0
        nb = args.batched // args.batch
        measure(f"record_usage_batch, {args.batch} per tx, sequential", nb * args.batch,
                lambda: [signed.record_usage_batch(dept.address, [receipt(b * args.batch + i)
                                                                 for i in range(args.batch)]) for b in range(nb)])
        total = sum(signed.runs(t.job_id, h("tax.vat")) for t in jobs)
        blocks = w3.eth.block_number
    load1 = os.getloadavg()
    table = Table(title=f"usage receipts on anvil ({blocks} blocks, {total} receipts on chain); "
                        f"load average {load0[0]:.1f} -> {load1[0]:.1f} (2 cores, shared)")
    for col in ("path", "receipts", "receipts/s", "RPC calls/receipt", "client CPU ms/receipt", "gas/receipt",
                "goal ≥ 200/s"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, n, rate, calls, cpu, gas in rows:
        ok = "-" if name.startswith("web3") else ("met" if rate >= GOAL else f"missed ({rate / GOAL:.0%})")
        shown_calls = "-" if name.startswith("web3") else f"{calls:.2f}"  # web3 bypasses the counter
        table.add_row(name, str(n), f"{rate:.0f}", shown_calls, f"{cpu:.2f}", gas, ok)
    Console(width=140).print(table)
    print(f"node group commit: {grouped_txs} transactions for {args.grouped // args.recorders * args.recorders} "
          "receipts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
