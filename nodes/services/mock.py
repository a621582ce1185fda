"""Desensitized mock data: same schema and rough distributions, no real cell values.

* ``uscc`` / ``resident_id`` columns: fresh, valid-looking fake codes (never one that occurs in the data);
* numeric columns: drawn from a normal fit of the column, clipped to its observed range and rounded
  like the source (integers stay integers);
* bool columns: Bernoulli with the observed share;
* date columns: uniform between the observed first and last date;
* text columns: grade-1 (public) low-cardinality values keep their labels, other text gets
  pseudonymous labels (``<column>_<k>``) with the observed frequencies; values rarer than the
  policy's minimum group size are merged into ``OTHER``.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import numpy as np
import pandas as pd

from common.ids import id_check_char, random_uscc
from nodes.models import ColumnMeta

_MAX_LABELS = 50


def _fake_resident_id(rng: random.Random) -> str:
    region = rng.choice(["110101", "310104", "330106", "440305", "510107"])
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
    body = region + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    return body + id_check_char(body)


def _decimals(values: pd.Series) -> int:
    best = 0
    for v in values.head(200):
        s = repr(float(v))
        if "e" not in s and "." in s:
            best = max(best, len(s.split(".")[1].rstrip("0")))
    return min(best, 6)


def _within(nrng: np.random.Generator, mu: float, sd: float, lo: float, hi: float, n: int) -> np.ndarray:
    """Normal draws strictly inside (lo, hi): rejection, not clipping (clipping would copy the real extremes)."""
    if hi <= lo:
        return np.full(n, lo)
    got = np.empty(0)
    for _ in range(20):
        d = nrng.normal(mu, sd, 2 * n)
        got = np.concatenate([got, d[(d > lo) & (d < hi)]])
        if len(got) >= n:
            return got[:n]
    return np.concatenate([got, nrng.uniform(lo, hi, n)])[:n]


def mock_frame(
    df: pd.DataFrame, metas: list[ColumnMeta], rows: int, seed: int, min_group_size: int
) -> pd.DataFrame:
    """A mock of ``df`` with ``rows`` rows; deterministic for a given seed."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    out: dict[str, list[object]] = {}
    for m in metas:
        s = df[m.name]
        present = s[s.notna()]
        null_share = 1 - len(present) / len(s) if len(s) else 0.0
        nulls = nrng.random(rows) < null_share
        if m.dtype in ("uscc", "resident_id"):
            real = set(present.astype(str))
            vals: list[object] = []
            while len(vals) < rows:
                code = random_uscc(rng) if m.dtype == "uscc" else _fake_resident_id(rng)
                if code not in real:
                    vals.append(code)
        elif m.dtype in ("int", "float") and len(present):
            x = present.astype(float).to_numpy()
            mu, sd = float(x.mean()), float(x.std()) or max(abs(float(x.mean())) * 0.1, 1.0)
            draw = _within(nrng, mu, sd, float(x.min()), float(x.max()), rows)
            if m.dtype == "int":
                vals = [int(round(v)) for v in draw]
            else:
                d = _decimals(present)
                vals = [round(float(v), d) for v in draw]
        elif m.dtype == "bool" and len(present):
            p = float(present.astype(bool).mean())
            vals = [bool(v) for v in nrng.random(rows) < p]
        elif m.dtype == "date" and len(present):
            ds = sorted(date.fromisoformat(str(v)) for v in present)
            span = (ds[-1] - ds[0]).days
            vals = [(ds[0] + timedelta(days=rng.randint(0, span))).isoformat() for _ in range(rows)]
        elif len(present):
            counts = present.astype(str).value_counts()
            public = m.grade <= 1 and len(counts) <= _MAX_LABELS
            labels: list[str] = []
            weights: list[float] = []
            other = 0
            for k, (label, n) in enumerate(counts.items()):
                if n < min_group_size or k >= _MAX_LABELS:
                    other += int(n)
                    continue
                labels.append(str(label) if public else f"{m.name}_{k + 1}")
                weights.append(float(n))
            if other:
                labels.append("OTHER")
                weights.append(float(other))
            vals = rng.choices(labels, weights=weights, k=rows)
        else:
            vals = [None] * rows
        out[m.name] = [None if n else v for v, n in zip(vals, nulls, strict=True)]
    return pd.DataFrame(out)
