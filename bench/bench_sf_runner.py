"""SecretFlow runner: stage times of a 3-party vertical job (PSI → SS-LR → joint prediction).

    .venv/bin/python bench/bench_sf_runner.py [--rows 10000 50000] [--psi RR22 ECDH_SM2 ECDH_3PC] [--epochs 5]

Each size runs once with three real party processes on this machine (production
mode, gRPC over 127.0.0.1). Stage times are measured inside the label holder's
process; "wall" includes starting the three Python processes and importing
SecretFlow. Also prints the SS-LR AUC next to scikit-learn's on the plaintext join.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from protocols.secretflow.runner import run_vertical_job  # noqa: E402
from protocols.secretflow.spec import ModelParams  # noqa: E402
from protocols.secretflow.synthetic import make_vertical_data, plaintext_reference  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000], help="rows per party")
    ap.add_argument("--overlap", type=float, default=0.6)
    ap.add_argument("--psi", nargs="+", default=["RR22"], choices=["RR22", "ECDH", "ECDH_SM2", "ECDH_3PC"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--no-warmup", action="store_true", help="skip the small unreported warm-up job")
    args = ap.parse_args()

    console = Console(width=max(Console().width, 120))
    table = Table(
        title=f"3-party vertical job (PSI, SS-LR {args.epochs} epochs, SEMI2K) — "
        f"{os.cpu_count()} cores, one process per party"
    )
    for col in (
        "PSI",
        "rows/party",
        "∩ rows",
        "PSI s",
        "train s",
        "pred s",
        "sum s",
        "wall s",
        "AUC sf",
        "AUC skl",
    ):
        table.add_column(col, justify="right")
    if not args.no_warmup:  # first start-up pays for cold page caches; keep it out of the table
        with tempfile.TemporaryDirectory(prefix="bench-sf-") as tmp:
            warm = make_vertical_data(Path(tmp) / "data", n_rows=500, seed=1)
            run_vertical_job(warm.job_spec(Path(tmp) / "out", model=ModelParams(epochs=1)))
    for psi, n in [(p, n) for p in args.psi for n in args.rows]:
        with tempfile.TemporaryDirectory(prefix="bench-sf-") as tmp:
            root = Path(tmp)
            data = make_vertical_data(root / "data", n_rows=n, overlap=args.overlap, seed=42)
            spec = data.job_spec(
                root / "out", psi_protocol=psi, model=ModelParams(epochs=args.epochs), timeout_s=3600
            )
            t0 = time.perf_counter()
            result = run_vertical_job(spec)
            wall = time.perf_counter() - t0
            ref = plaintext_reference(spec)
        s = result.stages
        table.add_row(
            psi,
            f"{n:,}",
            f"{result.intersection_rows:,}",
            f"{s.psi:.2f}",
            f"{s.train:.2f}",
            f"{s.predict:.2f}",
            f"{s.psi + s.train + s.predict:.2f}",
            f"{wall:.1f}",
            f"{result.metrics.auc:.4f}",
            f"{ref.auc:.4f}",
        )
        console.print(f"done {psi} {n:,} rows/party in {wall:.1f}s", highlight=False)
    console.print(table)
    console.print(
        "sum = PSI + train + predict, timed inside the label holder; wall adds process start-up and imports.\n"
        "AUC sf = SS-LR on secret shares (training set); AUC skl = scikit-learn on the plaintext join."
    )


if __name__ == "__main__":
    main()
