"""The two authorization modes side by side on a real local federation (anvil + coordinator + 3 nodes).

For ``per_owner`` and ``bls_aggregate`` it runs the same small SS-LR job and prints, per mode: the
time of the three departments' approvals (each node checks the coordinator's terms and signs the
approval digest; per_owner also sends an ``approve`` transaction), the time from the last approval
to AUTHORIZED, the chain transactions and gas the authorization cost, and submission to SUCCEEDED.
Also the off-chain approval crypto: SM2 + BLS sign (node), verify (coordinator), aggregate.

    .venv/bin/python bench/bench_governance.py [ROWS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from federation.launcher import FederationConfig, approve_as, down, requester_client, up  # noqa: E402
from protocols.crypto.approvals import job_key  # noqa: E402
from protocols.secretflow.synthetic import make_vertical_data  # noqa: E402

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
MODES = ("per_owner", "bls_aggregate")


def _auth_gas(state, job: str) -> tuple[int, int]:  # noqa: ANN001
    """(transactions, gas) of the authorization of ``job``: owners' approve txs plus the authorize tx."""
    from coordinator.chain import connect

    ch = connect(state.rpc_url, state.registry)
    key = job_key(job)
    txs = {e.tx_hash for e in ch.events("Authorizations", "Approved") if e.args["jobId"] == key}
    txs |= {e.tx_hash for e in ch.events("Authorizations", "AuthorizationCreated") if e.args["jobId"] == key}
    return len(txs), sum(ch.w3.eth.get_transaction_receipt(t)["gasUsed"] for t in txs)


def run_mode(mode: str, root: Path, data) -> dict[str, float]:  # noqa: ANN001
    members = [
        {"name": p.name, "role": "bank" if p.name == "bank" else "department",
         "policy": {"max_grade": {"vertical_train": 3}},
         "datasets": [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": "uscc"}]}
        for p in data.parties
    ]
    cfg = FederationConfig.model_validate({
        "work_dir": str(root / mode), "members": members, "scrypt_n": 2**12,
        "coordinator": {"poll_interval_s": 0.2, "authorization_mode": mode},
    })
    state = up(cfg)
    try:
        c = requester_client(state, "bank")  # 国密 TLS, the bank signs its request
        spec = {
            "kind": "vertical_train", "requester": "bank", "purpose": f"governance bench ({mode})",
            "join_key": "uscc", "label": {"member": "bank", "dataset": "bank_2024", "column": "default"},
            "inputs": [{"member": p.name, "dataset": f"{p.name}_2024", "columns": p.features} for p in data.parties],
            "model": {"algorithm": "ss_lr", "params": {"epochs": 1, "batch_size": 256}},
        }
        t0 = time.perf_counter()
        job = c.submit(spec)
        t1 = time.perf_counter()
        for p in data.parties:
            approve_as(state, job, p.name)  # each member's approver
        t2 = time.perf_counter()
        while c.status(job).state.value in ("SUBMITTED", "PENDING_APPROVAL"):
            time.sleep(0.05)
        t3 = time.perf_counter()
        final = c.wait(job, timeout=600)
        t4 = time.perf_counter()
        if final.state.value != "SUCCEEDED":
            raise SystemExit(f"{mode}: job ended {final.state.value}: {final.reason}")
        txs, gas = _auth_gas(state, job)
        return {"approvals": t2 - t1, "to_authorized": t3 - t2, "txs": txs, "gas": gas, "total": t4 - t0}
    finally:
        down(state.work_dir)


def crypto_rows() -> list[tuple[str, str]]:
    from protocols.crypto import approvals, bls, keystore

    keys = [keystore.generate_member_keys(f"dept{i}") for i in range(3)]
    digest, mh = bytes(range(32)), bytes(32)
    t = time.perf_counter()
    signed = [approvals.sign_approval(k, "job-bench", mh, digest) for k in keys]
    sign = (time.perf_counter() - t) / len(keys)
    t = time.perf_counter()
    for k, a in zip(keys, signed, strict=True):
        approvals.verify_approval(a, job_id="job-bench", manifest_hash=mh, digest=digest, signer=k.public)
    verify = (time.perf_counter() - t) / len(keys)
    t = time.perf_counter()
    bls.aggregate([bytes.fromhex(a.bls_sig) for a in signed])
    agg = time.perf_counter() - t
    return [("sign one approval (SM2 + BLS, node)", f"{sign * 1e3:.0f} ms"),
            ("verify one approval (SM2 + BLS, coordinator)", f"{verify * 1e3:.0f} ms"),
            ("aggregate 3 BLS signatures (coordinator)", f"{agg * 1e3:.1f} ms")]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dcp-bench-gov-"))
    data = make_vertical_data(root / "data", n_rows=ROWS, overlap=0.6, seed=5)
    results = {m: run_mode(m, root, data) for m in MODES}
    t = Table(title=f"authorization modes, 3 owners, SS-LR on {ROWS} rows (real federation on anvil)")
    t.add_column("")
    for m in MODES:
        t.add_column(m, justify="right")
    t.add_row("3 approvals in the nodes' inboxes", *(f"{results[m]['approvals']:.2f} s" for m in MODES))
    t.add_row("last approval -> AUTHORIZED", *(f"{results[m]['to_authorized']:.2f} s" for m in MODES))
    t.add_row("authorization transactions", *(str(results[m]["txs"]) for m in MODES))
    t.add_row("authorization gas (all its txs)", *(f"{results[m]['gas']:,}" for m in MODES))
    t.add_row("submission -> SUCCEEDED", *(f"{results[m]['total']:.1f} s" for m in MODES))
    console = Console()
    console.print(t)
    c = Table(title="approval crypto (BLS12-381 via blspy, SM2 via the native backend)")
    c.add_column("operation")
    c.add_column("time", justify="right")
    for row in crypto_rows():
        c.add_row(*row)
    console.print(c)


if __name__ == "__main__":
    main()
