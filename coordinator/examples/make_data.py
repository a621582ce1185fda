"""Write the example federation's synthetic data (bank, tax, power; seeded) next to this file."""

from __future__ import annotations

import sys
from pathlib import Path

from protocols.secretflow.synthetic import make_vertical_data

if __name__ == "__main__":
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    out = make_vertical_data(Path(__file__).resolve().parent / "data", n_rows=rows, overlap=0.6, seed=7)
    print(f"{len(out.parties)} files, {rows} rows each, true overlap {out.true_intersection}")
