"""Coordinator lifecycle timings on a real local federation (anvil + coordinator + 3 nodes).

Prints a table: federation start-up, then per data size the time from submission to the chain
authorization (approvals signed by the nodes and put on chain), from authorization to SUCCEEDED
(ports, dispatch, PSI + SS-LR in real party processes, receipts, sealed outputs), and in total."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from federation.launcher import FederationConfig, approve_as, down, requester_client, up
from protocols.secretflow.synthetic import make_vertical_data

SIZES = [int(a) for a in sys.argv[1:]] or [2000, 10000]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dcp-bench-coord-"))
    members = []
    datas = {n: make_vertical_data(root / f"data{n}", n_rows=n, overlap=0.6, seed=5) for n in SIZES}
    for i, p in enumerate(datas[SIZES[0]].parties):
        members.append({
            "name": p.name, "role": "bank" if p.name == "bank" else "department",
            "policy": {"max_grade": {"vertical_train": 3}},
            "datasets": [{"name": f"{p.name}_{n}", "file": str(datas[n].parties[i].csv_path), "key_column": "uscc"}
                         for n in SIZES],
        })
    cfg = FederationConfig.model_validate({"work_dir": str(root / "fed"), "members": members, "scrypt_n": 2**12,
                                           "coordinator": {"poll_interval_s": 0.2}})
    t0 = time.perf_counter()
    state = up(cfg)
    t_up = time.perf_counter() - t0
    rows = []
    try:
        c = requester_client(state, "bank")  # 国密 TLS, the bank signs its request
        for n in SIZES:
            d = datas[n]
            spec = {
                "kind": "vertical_train", "requester": "bank", "purpose": "benchmark", "join_key": "uscc",
                "label": {"member": "bank", "dataset": f"bank_{n}", "column": "default"},
                "inputs": [{"member": p.name, "dataset": f"{p.name}_{n}", "columns": p.features} for p in d.parties],
                "model": {"params": {"epochs": 5}}, "expires_in_s": 3600,
            }
            t1 = time.perf_counter()
            job = c.submit(spec)
            for m in ("bank", "tax", "power"):
                approve_as(state, job, m)  # each member's approver
            c.wait(job, until={"AUTHORIZED", "RUNNING", "SUCCEEDED", "FAILED"}, poll=0.1)  # type: ignore[arg-type]
            t2 = time.perf_counter()
            final = c.wait(job, timeout=1200, poll=0.2)
            t3 = time.perf_counter()
            rows.append((n, d.true_intersection, final.state.value, t2 - t1, t3 - t2, t3 - t1))
    finally:
        down(state.work_dir)
    print(f"federation up (anvil, deploy, 4 keystores + admissions, 3 nodes, ingest, coordinator): {t_up:.1f} s")
    print(f"{'rows/party':>10} {'overlap':>8} {'state':>10} {'submit->auth s':>15} {'auth->done s':>13} {'total s':>8}")
    for n, ov, st, a, b, tot in rows:
        print(f"{n:>10} {ov:>8} {st:>10} {a:>15.1f} {b:>13.1f} {tot:>8.1f}")


if __name__ == "__main__":
    main()
