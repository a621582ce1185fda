"""SecretFlow runner: stage times of a 3-party vertical job (PSI → training → joint prediction),
and of scoring again with the stored model parts (PSI → load → joint prediction).

    .venv/bin/python bench/bench_sf_runner.py [--rows 10000 50000] [--psi RR22 ECDH_SM2 ECDH_3PC]
        [--algorithms ss_lr ss_xgb sgb] [--epochs 5] [--rounds 5] [--no-predict]

Each size runs once with three real party processes on this machine (production
mode, gRPC over 127.0.0.1). Stage times are measured inside the label holder's
process; "wall" includes starting the three Python processes and importing
SecretFlow. "predict-only" rows score the same inputs again with the model parts the
training run stored (each party its own SPU shares / split nodes). Also prints the
model's AUC next to scikit-learn's logistic regression on the plaintext join.
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
from protocols.secretflow.spec import ModelParams, VerticalJobSpec  # noqa: E402
from protocols.secretflow.synthetic import make_vertical_data, plaintext_reference  # noqa: E402


def params_for(algorithm: str, args: argparse.Namespace) -> ModelParams:
    if algorithm == "ss_lr":
        return ModelParams(epochs=args.epochs)
    return ModelParams(algorithm=algorithm, num_boost_round=args.rounds, max_depth=args.depth)


def predict_only(spec: VerticalJobSpec, root: Path) -> VerticalJobSpec:
    raw = spec.model_dump()
    raw.update(
        job_id=spec.job_id + "-score",
        stages=["psi", "predict"],
        label_column=None,
        model={"algorithm": spec.model.algorithm},
    )
    for p in raw["parties"]:
        p["model_dir"] = p["output_dir"] / "model"
        p["output_dir"] = root / "scored" / p["name"]
    return VerticalJobSpec.model_validate(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000], help="rows per party")
    ap.add_argument("--overlap", type=float, default=0.6)
    ap.add_argument("--psi", nargs="+", default=["RR22"], choices=["RR22", "ECDH", "ECDH_SM2", "ECDH_3PC"])
    ap.add_argument("--algorithms", nargs="+", default=["ss_lr", "ss_xgb"], choices=["ss_lr", "ss_xgb", "sgb"])
    ap.add_argument("--epochs", type=int, default=5, help="SS-LR epochs")
    ap.add_argument("--rounds", type=int, default=5, help="trees (SS-XGB / SGB)")
    ap.add_argument("--depth", type=int, default=3, help="tree depth (SS-XGB / SGB)")
    ap.add_argument("--no-predict", action="store_true", help="skip the predict-only rows")
    ap.add_argument("--no-warmup", action="store_true", help="skip the small unreported warm-up job")
    args = ap.parse_args()

    console = Console(width=max(Console().width, 130))
    table = Table(
        title=f"3-party vertical jobs (SEMI2K; SS-LR {args.epochs} epochs; trees {args.rounds}×depth {args.depth})"
        f" — {os.cpu_count()} cores, one process per party"
    )
    for col in ("job", "PSI", "rows/party", "∩ rows", "PSI s", "train/load s", "pred s", "sum s", "wall s",
                "AUC sf", "AUC skl"):
        table.add_column(col, justify="right")
    if not args.no_warmup:  # first start-up pays for cold page caches; keep it out of the table
        with tempfile.TemporaryDirectory(prefix="bench-sf-") as tmp:
            warm = make_vertical_data(Path(tmp) / "data", n_rows=500, seed=1)
            run_vertical_job(warm.job_spec(Path(tmp) / "out", model=ModelParams(epochs=1)))

    def row(job: str, psi: str, n: int, result, wall: float, auc_skl: str) -> None:  # noqa: ANN001
        s = result.stages
        m = result.parties[result.label_party].metrics
        table.add_row(
            job, psi, f"{n:,}", f"{result.intersection_rows:,}", f"{s.psi:.2f}", f"{s.train + s.load:.2f}",
            f"{s.predict:.2f}", f"{s.psi + s.train + s.load + s.predict:.2f}", f"{wall:.1f}",
            f"{m.auc:.4f}" if m is not None else "-", auc_skl,
        )

    for algo, psi, n in [(a, p, n) for a in args.algorithms for p in args.psi for n in args.rows]:
        with tempfile.TemporaryDirectory(prefix="bench-sf-") as tmp:
            root = Path(tmp)
            data = make_vertical_data(root / "data", n_rows=n, overlap=args.overlap, seed=42)
            spec = data.job_spec(root / "out", psi_protocol=psi, model=params_for(algo, args), timeout_s=3600)
            t0 = time.perf_counter()
            result = run_vertical_job(spec)
            wall = time.perf_counter() - t0
            ref = plaintext_reference(spec)
            row(f"train {algo}", psi, n, result, wall, f"{ref.auc:.4f}")
            console.print(f"done train {algo} {psi} {n:,} rows/party in {wall:.1f}s", highlight=False)
            if not args.no_predict:
                t0 = time.perf_counter()
                scored = run_vertical_job(predict_only(spec, root))
                wall = time.perf_counter() - t0
                row(f"predict-only {algo}", psi, n, scored, wall, "")
                console.print(f"done predict-only {algo} {psi} {n:,} rows/party in {wall:.1f}s", highlight=False)
    console.print(table)
    console.print(
        "sum = PSI + train (incl. storing the model parts) or load + predict, timed inside the label holder; wall adds\n"
        "process start-up and imports. AUC sf = the model on secret shares (training set); AUC skl =\n"
        "scikit-learn logistic regression on the plaintext join. predict-only: PSI on the same inputs, load\n"
        "each party's stored part, joint prediction revealed to the label holder."
    )


if __name__ == "__main__":
    main()
