"""Gas and wall time per chain operation on a real anvil node (started here, stopped at exit).

Operations: deploy, admit a member (propose + approve, threshold 2 of 3; with and without a BLS
key, whose proof of possession is verified on chain), register a dataset, approve (one owner),
authorize with k approvals, authorize with one BLS aggregate of k owners (EIP-2537 on chain),
record a receipt, anchor an audit head; and the regulator's audit over the resulting history.

    .venv/bin/python bench/bench_chain.py [--k 1 2 3 5 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from contracts.anvil import AnvilNode  # noqa: E402
from contracts.audit import run_audit  # noqa: E402
from contracts.client import ChainClient  # noqa: E402
from contracts.models import MemberAdmission, Role, Terms, UsageReceipt  # noqa: E402
from protocols.crypto import bls  # noqa: E402


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Rows:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[list[int], list[float]]] = {}

    def timed(self, name: str, fn):  # noqa: ANN001, ANN201
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        gas = sum(r.gas_used for r in (result if isinstance(result, list) else [result]) if hasattr(r, "gas_used"))
        gases, times = self.rows.setdefault(name, ([], []))
        gases.append(gas)
        times.append(dt)
        return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 5, 8], help="approving departments")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    kmax = max(args.k)
    rows = Rows()
    with AnvilNode(accounts=12 + kmax) as node:
        w3 = node.web3()
        acc = w3.eth.accounts
        gov, coord, bank = acc[:3], acc[3], acc[4]
        depts = acc[5 : 5 + kmax]
        keys = [bls.keygen(h(f"dept-{i}")) for i in range(kmax)]
        client = rows.timed("deploy (3 contracts + bind)", lambda: _deploy(w3, acc[0], gov))
        client, deploy_txs = client
        rows.rows["deploy (3 contracts + bind)"][0][-1] = sum(t.gas_used for t in deploy_txs)

        def admit(account: str, role: Role, name: str, key: int | None = None):  # noqa: ANN202
            extra = {"bls_public_key": bls.sk_to_pk(key), "bls_pop": bls.pop_prove(key)} if key else {}
            adm = MemberAdmission(account=account, role=role, name=name, sm2_public_key=os.urandom(64), **extra)
            first = client.propose_add_member(gov[0], adm)
            second = client.approve_proposal(gov[1], first.proposal_id)
            return [first.tx, second.tx]

        rows.timed("admit member, no BLS key (propose+approve)", lambda: admit(coord, Role.COORDINATOR, "coord"))
        rows.timed("admit member, no BLS key (propose+approve)", lambda: admit(bank, Role.BANK, "bank"))
        for i, d in enumerate(depts):
            rows.timed("admit member + BLS key, PoP on chain", lambda d=d, i=i: admit(d, Role.DEPARTMENT, f"d{i}", keys[i]))
            rows.timed("register dataset", lambda d=d, i=i: client.register_dataset(d, h(f"ds-{i}"), h("schema"), 2))

        job = 0
        for k in args.k:
            for _ in range(args.repeat):
                job += 1
                t = _terms(w3, job, k, bank)
                approvals = rows.timed(f"approve x{k} (one tx per owner)", lambda t=t, k=k: [
                    client.approve(depts[i], t, [h(f"ds-{i}")]) for i in range(k)])
                del approvals
                rows.timed(f"authorize, {k} prior approval(s)", lambda t=t: client.authorize(coord, t))
                job += 1
                t = _terms(w3, job, k, bank)
                digest = client.approval_digest(t)
                t0 = time.perf_counter()
                agg = bls.aggregate([bls.sign(keys[i], digest) for i in range(k)])
                sign_time = time.perf_counter() - t0
                rows.rows.setdefault(f"  off-chain: {k} BLS signs + aggregate (py_ecc)", ([], []))[1].append(sign_time)
                rows.rows[f"  off-chain: {k} BLS signs + aggregate (py_ecc)"][0].append(0)
                rows.timed(f"authorize, one BLS aggregate of {k}", lambda t=t, agg=agg: client.authorize_with_bls(coord, t, agg))
                now = w3.eth.get_block("latest")["timestamp"]
                rows.timed("record receipt", lambda t=t, now=now: client.record_usage(depts[0], UsageReceipt(
                    job_id=t.job_id, dataset_id=h("ds-0"), row_count=1000, result_hash=h("r"),
                    started_at=now - 5, finished_at=now)))
        for n in range(1, args.repeat + 1):
            rows.timed("anchor audit head", lambda n=n: client.anchor_audit_head(depts[0], h(f"head{n}"), n * 10))
        t0 = time.perf_counter()
        report = run_audit(w3, client.deployment.registry)
        audit_time = time.perf_counter() - t0
        blocks = w3.eth.block_number

    table = Table(title=f"dcp chain on anvil ({node.binary.name}, default hardfork), median of runs")
    for col, j in (("operation", "left"), ("gas", "right"), ("wall ms", "right"), ("n", "right")):
        table.add_column(col, justify=j)
    for name, (gases, times) in rows.rows.items():
        gas = f"{int(statistics.median(gases)):,}" if any(gases) else "-"
        table.add_row(name, gas, f"{statistics.median(times) * 1000:.1f}", str(len(times)))
    table.add_row(
        f"audit ({report.authorizations_count} auth, {report.receipts_count} receipts, {blocks} blocks)",
        "-", f"{audit_time * 1000:.0f}", "1",
    )
    Console(width=120).print(table)
    if report.findings:
        print(f"unexpected audit findings: {report.findings}", file=sys.stderr)
        return 1
    return 0


def _deploy(w3, deployer: str, gov: list[str]):  # noqa: ANN001, ANN202
    client = ChainClient.deploy(w3, deployer, gov, 2)
    start = client.deployment.block_number
    txs = []
    for n in range(start, w3.eth.block_number + 1):
        for tx_hash in w3.eth.get_block(n)["transactions"]:
            r = w3.eth.get_transaction_receipt(tx_hash)
            txs.append(type("T", (), {"gas_used": r["gasUsed"]})())
    return client, txs


def _terms(w3, job: int, k: int, requester: str) -> Terms:  # noqa: ANN001
    now = w3.eth.get_block("latest")["timestamp"]
    return Terms(job_id=h(f"job-{job}"), manifest_hash=h(f"manifest-{job}"),
                 dataset_ids=tuple(h(f"ds-{i}") for i in range(k)), requester=requester,
                 expiry=now + 3600, max_runs=3)


if __name__ == "__main__":
    raise SystemExit(main())
