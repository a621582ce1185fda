"""he_score and secure_stats as federation jobs: wall time of each phase, measured through a real
local federation (anvil, contracts, coordinator, bank/tax/power node processes).

    .venv/bin/python bench/bench_he_jobs.py [--rows 2000] [--stats-rows 5000]

Phases come from the job's persisted events: approvals (submit -> AUTHORIZED, the approvals are made
by this script as fast as it can), run (RUNNING -> SUCCEEDED: the HE steps, relays, receipts).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.ids import random_uscc  # noqa: E402
from coordinator.sdk import DcpClient  # noqa: E402
from federation.launcher import FederationConfig, down, up  # noqa: E402
from protocols.secretflow.synthetic import make_vertical_data  # noqa: E402

GRADES = {"vertical_train": 3, "he_score": 3, "secure_stats": 3}


def _phase(events: list[dict], a: str, b: str) -> float:
    at = {e["to"]: datetime.fromisoformat(e["at"]) for e in events}
    return (at[b] - at[a]).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000, help="rows per party of the vertical data (he_score)")
    ap.add_argument("--stats-rows", type=int, default=5000, help="rows per department (secure_stats)")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_vertical_data(root / "data", n_rows=args.rows, overlap=0.6, seed=3)
        r = random.Random(1)
        members = []
        for p in data.parties:
            ds = [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": "uscc"}]
            if p.name != "bank":
                path = root / f"{p.name}_stats.csv"
                vals = np.random.default_rng(len(p.name)).integers(0, 100, args.stats_rows)
                pd.DataFrame({"uscc": [random_uscc(r) for _ in vals], "employees": vals}).to_csv(path, index=False)
                ds.append({"name": f"{p.name}_stats", "file": str(path), "key_column": "uscc"})
            members.append({"name": p.name, "role": "bank" if p.name == "bank" else "department", "datasets": ds,
                            "policy": {"max_grade": GRADES, "default_max_grade": 2,
                                       "privacy_budgets": {f"{p.name}_stats": 100.0}}})
        cfg = FederationConfig.model_validate({"work_dir": str(root / "fed"), "members": members, "scrypt_n": 2**12,
                                               "coordinator": {"poll_interval_s": 0.2}})
        t0 = time.perf_counter()
        state = up(cfg)
        console.print(f"federation up in {time.perf_counter() - t0:.1f}s")
        c = DcpClient(state.coordinator_url)
        rows = []
        try:
            def run(spec: dict, approvers: list[str], label: str) -> str:
                job = c.submit(spec)
                for m in approvers:
                    c.approve(job, m, state.nodes[m])
                final = c.wait(job, timeout=900, poll=0.2)
                assert final.state.value == "SUCCEEDED", final.reason
                rows.append((label, _phase(final.events, "SUBMITTED", "AUTHORIZED"),
                             _phase(final.events, "RUNNING", "SUCCEEDED")))
                return job

            psi = run({"kind": "vertical_train", "requester": "bank", "purpose": "bench", "join_key": "uscc",
                       "label": {"member": "bank", "dataset": "bank_2024", "column": "default"},
                       "inputs": [{"member": p.name, "dataset": f"{p.name}_2024", "columns": p.features}
                                  for p in data.parties],
                       "model": {"algorithm": "ss_lr", "params": {"epochs": 1, "batch_size": 512}}},
                      ["bank", "tax", "power"], f"vertical_train (PSI + 1 epoch), {data.true_intersection} rows")
            weights = {p.name: {f: 0.1 / (1 + i) for i, f in enumerate(p.features)} for p in data.parties}
            commit = httpx.put(f"{state.nodes['bank']}/models/bench", json={"intercept": -1.0, "weights": weights},
                               timeout=30).json()["commitment"]
            for masked in (False, True):
                run({"kind": "he_score", "requester": "bank", "purpose": "bench", "join_key": "uscc",
                     "inputs": [{"member": p.name, "dataset": f"{p.name}_2024", "columns": p.features}
                                for p in data.parties],
                     "he": {"aligned_by": psi, "model": "bench", "model_commitment": commit, "masked": masked}},
                    ["bank", "tax", "power"],
                    f"he_score, {data.true_intersection} rows, 3+3+3 features{', masked' if masked else ''}")
            for eps in (None, 1.0):
                he = {"statistics": ["count", "sum", "mean", "histogram"], "bin_edges": list(range(0, 101, 10)),
                      "min_group_size": 10, "lower": 0, "upper": 100, "epsilon": eps}
                run({"kind": "secure_stats", "requester": "bank", "purpose": "bench",
                     "inputs": [{"member": m, "dataset": f"{m}_stats", "columns": ["employees"]} for m in ("tax", "power")],
                     "he": he}, ["tax", "power"],
                    f"secure_stats, 2 x {args.stats_rows} rows, 10 bins, masked{', eps=1' if eps else ''}")
        finally:
            down(state.work_dir)
    table = Table(title="HE job kinds through the federation (2-core shared machine)")
    table.add_column("job")
    table.add_column("submit -> AUTHORIZED (s)", justify="right")
    table.add_column("RUNNING -> SUCCEEDED (s)", justify="right")
    for label, a, b in rows:
        table.add_row(label, f"{a:.2f}", f"{b:.2f}")
    console.print(table)
    print(json.dumps([{"job": r[0], "approve_s": round(r[1], 3), "run_s": round(r[2], 3)} for r in rows]))


if __name__ == "__main__":
    main()
