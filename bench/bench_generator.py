"""Generator throughput and peak memory for N = 20k, 100k, 1M enterprises.

Each run is a fresh subprocess (so peak RSS is that run's own): ``disk`` writes every
member CSV, the monitoring snapshot, the truth and the SM3/SHA-256 manifest without
keeping tables in memory (the chunked path); ``memory`` keeps all tables as DataFrames
and writes nothing.

    .venv/bin/python bench/bench_generator.py [--sizes 20000,100000,1000000] [--modes disk,memory]
                                              [--memory-max 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy, pandas, pyarrow  # noqa: F401 - imported before the baseline is taken
from scenarios.bank_credit.generator import generate
n, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
d = generate(n, seed=7, out_dir=Path(out) if mode == "disk" else None, keep_tables=mode == "memory")
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = sum(s.rows for s in d.schemas.values()) + sum(s.rows for s in d.monitoring_schemas.values())
size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) if mode == "disk" else 0
print(json.dumps({"n": n, "mode": mode, "secs": secs, "rows": rows, "bytes": size,
                  "peak_mb": peak / 1024, "base_mb": base / 1024}))
"""


def run(n: int, mode: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_gen_") as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), mode, str(Path(tmp) / "fed")], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,100000,1000000")
    ap.add_argument("--modes", default="disk,memory")
    ap.add_argument("--memory-max", type=int, default=100_000,
                    help="largest N for the in-memory mode (1M rows of pandas frames take ~3.4 GB)")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bank-credit generator (seed 7; 9 members × 2 snapshots + truth)")
    for col in ("enterprises", "mode", "seconds", "enterprises/s", "member rows/s", "written MB", "peak RSS MB",
                "Δ over imports MB"):
        table.add_column(col, justify="right")
    for n in (int(x) for x in args.sizes.split(",")):
        for mode in args.modes.split(","):
            if mode == "memory" and n > args.memory_max:
                continue
            r = run(n, mode)
            table.add_row(f"{n:,}", mode, f"{r['secs']:.2f}", f"{n / r['secs']:,.0f}", f"{r['rows'] / r['secs']:,.0f}",
                          f"{r['bytes'] / 1e6:,.0f}" if mode == "disk" else "-", f"{r['peak_mb']:,.0f}",
                          f"{r['peak_mb'] - r['base_mb']:,.0f}")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
