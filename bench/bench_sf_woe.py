"""SecretFlow models on a 5-party federation: plain SS-LR, SS-LR on WOE bins (the points scorecard,
SPU or HEU binning), SS-XGB and SGB — train seconds and AUC at the same data.

    .venv/bin/python bench/bench_sf_woe.py [--rows 6000] [--features 12] [--jobs ss_lr woe_spu woe_heu ss_xgb sgb]

A bank (labels) and four departments (tax, social, power, court) each hold ``--rows`` rows
(90 % common) and ``--features`` columns of mixed kinds (amounts, grades, counts, 0/1 flags;
:func:`protocols.secretflow.synthetic.make_wide_vertical_data`). Every job runs five real party
processes (production mode, gRPC on 127.0.0.1) with a 30 % key-hash hold-out; times are measured
in the label holder's process. "AUC skl" is scikit-learn's logistic regression on the plaintext
join (raw columns standardized; for the WOE jobs: the same WOE columns the parties trained on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from protocols.secretflow.runner import run_vertical_job  # noqa: E402
from protocols.secretflow.spec import ModelParams, RunResult, VerticalJobSpec  # noqa: E402
from protocols.secretflow.synthetic import make_wide_vertical_data  # noqa: E402
from protocols.secretflow.woe import substitute  # noqa: E402

KEY = "uscc"


def params_for(job: str, args: argparse.Namespace) -> ModelParams:
    split = {"test_fraction": 0.3}
    if job == "ss_lr":
        return ModelParams(epochs=args.epochs, learning_rate=0.3, batch_size=512, **split)
    if job.startswith("woe"):
        return ModelParams(
            woe_bins=args.bins,
            woe_device=job.split("_")[1],
            epochs=args.epochs,
            learning_rate=0.5,
            batch_size=256,
            **split,
        )
    return ModelParams(algorithm=job, num_boost_round=args.rounds, max_depth=args.depth, **split)


def plaintext_auc(spec: VerticalJobSpec, result: RunResult, woe: bool) -> tuple[float, float]:
    """sklearn LR on the joined intersection rows (the parties' psi outputs), same split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    out = {p.name: p.output_dir for p in spec.parties}
    preds = pd.read_csv(out[spec.label_party] / "predictions.csv", dtype={KEY: str})
    blocks = []
    for name in sorted(out):
        own = pd.read_csv(out[name] / "psi_output.csv", dtype={KEY: str})
        feats = [c for c in own.columns if c not in (KEY, spec.label_column)]
        x = own[feats].to_numpy(dtype=float)
        if woe:
            rules = json.loads((out[name] / "model" / "woe_rules.json").read_text())
            x = substitute(rules, x, feats)
        else:
            x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        blocks.append(x)
    x = np.hstack(blocks)
    y = preds[spec.label_column].to_numpy()
    train = (preds["split"] == "train").to_numpy()
    p = LogisticRegression(max_iter=3000).fit(x[train], y[train]).predict_proba(x)[:, 1]
    return float(roc_auc_score(y[train], p[train])), float(roc_auc_score(y[~train], p[~train]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6_000, help="rows per party")
    ap.add_argument("--features", type=int, default=12, help="columns per party (5 parties)")
    ap.add_argument(
        "--jobs",
        nargs="+",
        default=["ss_lr", "woe_spu", "woe_heu", "ss_xgb", "sgb"],
        choices=["ss_lr", "woe_spu", "woe_heu", "ss_xgb", "sgb"],
    )
    ap.add_argument("--epochs", type=int, default=10, help="SS-LR epochs (plain and WOE)")
    ap.add_argument("--bins", type=int, default=8, help="WOE bins per column")
    ap.add_argument("--rounds", type=int, default=5, help="trees (SS-XGB / SGB)")
    ap.add_argument("--depth", type=int, default=3, help="tree depth (SS-XGB / SGB)")
    args = ap.parse_args()

    console = Console(width=max(Console().width, 130))
    table = Table(
        title=f"5-party vertical training, {args.rows:,} rows/party × {args.features} columns/party "
        f"(SS-LR {args.epochs} epochs; WOE {args.bins} bins; trees {args.rounds}×depth {args.depth})"
        f" — {os.cpu_count()} cores, one process per party"
    )
    for col in ("job", "∩ rows", "PSI s", "WOE s", "train s", "pred s", "wall s", "AUC train", "AUC test",
                "skl train", "skl test"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory(prefix="bench-sf-woe-") as tmp:
        data = make_wide_vertical_data(Path(tmp) / "data", n_rows=args.rows, features_per_party=args.features)
        for job in args.jobs:
            root = Path(tmp) / job
            spec = data.job_spec(root / "out", model=params_for(job, args), timeout_s=3600, work_dir=root / "work")
            t0 = time.perf_counter()
            result = run_vertical_job(spec)
            wall = time.perf_counter() - t0
            s, m = result.stages, result.metrics
            skl = ("", "")
            if job == "ss_lr" or job.startswith("woe"):
                a, b = plaintext_auc(spec, result, woe=job.startswith("woe"))
                skl = (f"{a:.4f}", f"{b:.4f}")
            table.add_row(
                job, f"{result.intersection_rows:,}", f"{s.psi:.2f}", f"{s.woe:.2f}" if s.woe else "-",
                f"{s.train:.2f}", f"{s.predict:.2f}", f"{wall:.1f}", f"{m.auc_train:.4f}", f"{m.auc_test:.4f}", *skl,
            )
            console.print(f"done {job} in {wall:.1f}s", highlight=False)
    console.print(table)
    console.print(
        "train s includes WOE binning and storing each party's model part; pred = joint prediction of every\n"
        "intersection row revealed to the bank (WOE jobs: PD and points). wall adds process start-up."
    )


if __name__ == "__main__":
    main()
