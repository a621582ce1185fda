"""The party's last step of a PSI-only job (issue #19 item 4): writing its intersection sorted by the
join key — the pandas round-trip it used to make (read, sort, select, write) against the byte sort of
``protocols/secretflow/intersection.py``, on a synthetic intersection of ``--rows`` rows (the key and
``--features`` float columns, as a node's extract has them), alternating, ``--repeat`` times each.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_psi_result.py [--rows 600000] [--features 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from protocols.secretflow.intersection import sorted_intersection  # noqa: E402


def pandas_path(src: Path, dest: Path, key: str, keep: list[str]) -> int:
    mine = pd.read_csv(src, dtype={key: str}).sort_values(key, kind="stable").reset_index(drop=True)
    mine[keep].to_csv(dest, index=False)
    return len(mine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--features", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    tmp = Path(tempfile.mkdtemp(prefix="bench_psi_result_"))
    src = tmp / "psi.csv"
    frame = pd.DataFrame({"uscc": [f"91{i:016d}" for i in rng.permutation(args.rows)]})
    for k in range(args.features):
        frame[f"f{k}"] = rng.random(args.rows)
    frame.to_csv(src, index=False)
    keep = list(frame.columns)
    load0 = os.getloadavg()
    times: dict[str, list[tuple[float, float]]] = {"pandas round-trip (before)": [], "byte sort (now)": []}
    for _ in range(args.repeat):
        for name, fn in (("pandas round-trip (before)", pandas_path), ("byte sort (now)", sorted_intersection)):
            c0, t0 = time.process_time(), time.perf_counter()
            assert fn(src, tmp / "out.csv", "uscc", keep) == args.rows
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    load1 = os.getloadavg()
    print(f"PSI result of {args.rows:,} rows × {args.features} features ({src.stat().st_size / 2**20:.0f} MiB), "
          f"load average {load0[0]:.1f} → {load1[0]:.1f}, median of {args.repeat}")
    print(f"{'path':<30} {'wall s':>8} {'CPU s':>8}")
    for name, ts in times.items():
        print(f"{name:<30} {statistics.median(t for t, _ in ts):>8.2f} {statistics.median(c for _, c in ts):>8.2f}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
