"""HE protocols on TenSEAL: he_score rows/s and ciphertext bytes per row, secure_stats, and SecretFlow's
joint prediction on the same rows.

    .venv/bin/python bench/bench_he.py [--rows 100000] [--features 10] [--quick] [--no-sf]

Prints two tables. Every step runs in this one process, one after the other (in a federation the
departments score in parallel, each on its own node, so the end-to-end figure here is pessimistic).
The SecretFlow column runs the real multi-process runner (PSI → SS-LR, 1 epoch → joint prediction
revealed to the bank) on the synthetic three-party data with every row in the intersection, and reports
its prediction stage; he_score is then timed on the very same joined rows and features.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from protocols.he import score, stats  # noqa: E402
from protocols.he.context import ContextPair, make_context  # noqa: E402
from protocols.he.masks import MaskGroup, mask_keypair  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def he_score_best(*args: Any, repeat: int = 2, **kw: Any) -> dict[str, Any]:
    """The fastest of ``repeat`` runs (the machine is shared; the minimum is the least disturbed)."""
    return min((he_score_run(*args, **kw) for _ in range(repeat)), key=lambda r: r["total_s"])


def he_score_run(
    pair: ContextPair,
    blocks: dict[str, np.ndarray],
    weights: dict[str, np.ndarray],
    intercept: float,
    requester: str,
    masked: bool = False,
) -> dict[str, Any]:
    """One full he_score run; returns stage times, sizes and the error against plaintext logits."""
    n = next(iter(blocks.values())).shape[0]
    deps = [p for p in blocks if p != requester]
    mask: dict[str, tuple[MaskGroup, bytes]] = {}
    if masked:
        keys = {d: mask_keypair() for d in deps}
        group = MaskGroup(job_id="bench", members={d: k[1].hex() for d, k in keys.items()})
        mask = {d: (group, keys[d][0]) for d in deps}
    t: dict[str, float] = {}
    enc_w, t["encrypt_weights"] = timed(
        lambda: {d: score.encrypt_weights(pair.public, weights[d]) for d in deps}
    )
    parts = {}
    t["department_partial"] = 0.0
    for d in deps:
        parts[d], dt = timed(
            lambda d=d: score.partial_scores(pair.public, enc_w[d], blocks[d], d, mask=mask.get(d))
        )
        t["department_partial"] += dt
    own_plain = intercept + (blocks[requester] @ weights[requester] if requester in blocks else np.zeros(n))
    parts[requester], t["own_partial"] = timed(lambda: score.own_partial(pair.public, own_plain, requester))
    total, t["sum"] = timed(lambda: score.sum_partials(pair.public, list(parts.values())))
    got, t["decrypt"] = timed(lambda: score.decrypt_scores(pair.secret, total, n, context=pair.fingerprint))
    expected = intercept + sum(blocks[p] @ weights[p] for p in blocks)
    return {
        "n": n,
        "times": t,
        "total_s": sum(t.values()),
        "partial_bytes": max(len(p) for d, p in parts.items() if d != requester),
        "weights_bytes": sum(len(w) for w in enc_w.values()),
        "moved_bytes": sum(len(p) for p in parts.values()) + len(total),
        "max_err": float(np.abs(got - expected).max()),
        "departments": len(deps),
    }


def sf_same_rows(n_rows: int, work: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str]]:
    """Run SecretFlow PSI → SS-LR → predict; return its stage times and the joined, standardized rows."""
    import pandas as pd

    from protocols.secretflow.runner import run_vertical_job
    from protocols.secretflow.spec import ModelParams
    from protocols.secretflow.synthetic import make_vertical_data

    data = make_vertical_data(work / "data", n_rows=n_rows, overlap=1.0, seed=3)
    spec = data.job_spec(work / "out", model=ModelParams(epochs=1, batch_size=4096))
    res, wall = timed(lambda: run_vertical_job(spec))
    joined = None
    for p in data.parties:
        frame = pd.read_csv(p.csv_path, dtype={data.join_key: str})[[data.join_key, *p.features]]
        joined = frame if joined is None else joined.merge(frame, on=data.join_key)
    assert joined is not None
    blocks = {}
    for p in data.parties:
        x = joined[p.features].to_numpy(float)
        blocks[p.name] = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)  # as each party does locally
    st = res.stages
    return (
        {
            "predict_s": st.predict,
            "psi_s": st.psi,
            "train_s": st.train,
            "wall_s": wall,
            "rows": res.intersection_rows,
        },
        blocks,
        [p.name for p in data.parties],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="20k rows")
    ap.add_argument("--no-sf", action="store_true", help="skip the SecretFlow comparison")
    args = ap.parse_args()
    n = 20_000 if args.quick else args.rows
    f = args.features
    console = Console(width=200)
    rng = np.random.default_rng(0)
    pair, t_keys = timed(make_context)
    p = pair.params

    rows: list[tuple[str, ...]] = []

    def add(name: str, r: dict[str, Any], extra: str = "") -> None:
        t = r["times"]
        rows.append(
            (
                name,
                f"{r['n']:,}",
                f"{r['n'] / t['department_partial'] * r['departments']:,.0f}",
                f"{r['n'] / r['total_s']:,.0f}",
                f"{r['partial_bytes'] / r['n']:.1f}",
                f"{r['moved_bytes'] / r['n']:.1f}",
                f"{r['weights_bytes'] / 1e6:.2f}",
                f"{r['max_err']:.1e}",
                extra,
            )
        )

    # 1) one department holds all f features; the bank adds only the intercept
    x = rng.standard_normal((n, f))
    w = rng.normal(0, 1, f)
    one = he_score_best(pair, {"dept": x}, {"dept": w}, -1.0, requester="bank")
    add(f"he_score, 1 department × {f} features", one)
    # 2) f features split bank / two departments, unmasked and masked
    k = f // 3
    split = {"bank": x[:, :k], "tax": x[:, k : 2 * k + (f - 3 * k)], "power": x[:, 2 * k + (f - 3 * k) :]}
    wsplit = {"bank": w[:k], "tax": w[k : 2 * k + (f - 3 * k)], "power": w[2 * k + (f - 3 * k) :]}
    two = he_score_best(pair, split, wsplit, -1.0, requester="bank")
    add(f"he_score, bank+2 departments, {f} features", two)
    masked = he_score_best(pair, split, wsplit, -1.0, requester="bank", masked=True)
    add("  … with pairwise zero-sum masks", masked)

    sf_note = "not run (--no-sf)"
    if not args.no_sf:
        with tempfile.TemporaryDirectory(prefix="dcp-bench-he-") as tmp:
            sf, blocks, names = sf_same_rows(n, Path(tmp))
        m = sf["rows"]
        wsf = {p: rng.normal(0, 0.5, b.shape[1]) for p, b in blocks.items()}
        same = he_score_best(pair, blocks, wsf, -1.0, requester="bank")
        add(f"he_score on SecretFlow's rows ({sum(b.shape[1] for b in blocks.values())} features)", same)
        rows.append(
            (
                "SecretFlow vertical_predict (SS-LR, SEMI2K)",
                f"{m:,}",
                "—",
                f"{m / sf['predict_s']:,.0f}",
                "—",
                "—",
                "—",
                "(trained model)",
                f"predict stage {sf['predict_s']:.2f}s; PSI {sf['psi_s']:.1f}s, train {sf['train_s']:.1f}s",
            )
        )
        sf_note = f"SecretFlow run wall time {sf['wall_s']:.1f}s (3 party processes)"

    table = Table(
        title=f"he_score — CKKS N={p.poly_modulus_degree}, primes {list(p.coeff_mod_bit_sizes)}, scale 2^{p.scale_bits}"
    )
    for col in (
        "case",
        "rows",
        "dept rows/s",
        "end-to-end rows/s",
        "partial B/row",
        "all traffic B/row",
        "enc weights MB",
        "max |err|",
        "note",
    ):
        table.add_column(col, justify="left" if col in ("case", "note") else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(
        f"keys {t_keys * 1000:.0f} ms; public context {len(pair.public) / 1e6:.2f} MB (no relin/Galois keys), "
        f"secret context {len(pair.secret) / 1e6:.2f} MB; stage seconds (bank+2 depts): "
        + ", ".join(f"{k} {v:.2f}" for k, v in two["times"].items())
        + f". {sf_note}"
    )

    # secure_stats: three departments of n rows each, count/sum/mean/10-bin histogram
    q = stats.StatsQuery(
        job_id="bench",
        column="vat_paid",
        statistics=("count", "sum", "mean", "histogram"),
        bin_edges=tuple(np.linspace(0, 1e6, 11)),
        min_group_size=10,
    )
    cols = {d: np.clip(rng.lognormal(11, 1.0, n), 0, 1e6) for d in ("tax_a", "tax_b", "tax_c")}
    contribs = {}
    dept_t = []
    for d, v in cols.items():
        contribs[d], dt = timed(lambda d=d, v=v: stats.department_contribution(pair.public, q, v, d))
        dept_t.append(dt)
    total, t_sum = timed(lambda: stats.sum_contributions(pair.public, list(contribs.values())))
    res, t_dec = timed(lambda: stats.decrypt_stats(pair.secret, q, total))
    allv = np.concatenate(list(cols.values()))
    st = Table(title="secure_stats — count, sum, mean, 10-bin histogram")
    for col in (
        "departments × rows",
        "dept step ms",
        "sum ms",
        "decrypt ms",
        "bytes per contribution",
        "|sum err|",
        "counts exact",
    ):
        st.add_column(col, justify="right")
    exact_hist = np.histogram(allv, bins=np.asarray(q.bin_edges))[0].tolist()
    st.add_row(
        f"3 × {n:,}",
        f"{np.median(dept_t) * 1000:.1f}",
        f"{t_sum * 1000:.1f}",
        f"{t_dec * 1000:.1f}",
        f"{len(contribs['tax_a']):,}",
        f"{abs(res.sum - allv.sum()):.1e} of {allv.sum():.2e}",
        str(res.count == allv.size and res.histogram == [float(c) for c in exact_hist]),
    )
    console.print(st)


if __name__ == "__main__":
    main()
