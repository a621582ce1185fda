"""Seeded synthetic vertical data: a bank (labels) and two departments (features).

Enterprises are keyed by valid USCC codes. Every party holds ``n_rows`` rows; a
fraction ``overlap`` of them are enterprises all three hold, the rest are shared
with exactly one other party or private, so each pairwise intersection is larger
than the three-way one (a PSI that stopped after one pair would be caught). The
bank's default label comes from a hidden logistic model over features of *all*
parties, so the departments' data genuinely lifts the model.

:func:`plaintext_reference` is the accuracy limit: scikit-learn's logistic
regression on the same joined, standardized data, in the clear.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from common.ids import random_uscc
from protocols.secretflow.spec import ModelParams, PartySpec, PsiProtocolName, VerticalJobSpec

JOIN_KEY = "uscc"
LABEL_PARTY = "bank"
LABEL_COLUMN = "default"

# party -> (column, hidden weight on its z-score)
_FEATURES: dict[str, list[tuple[str, float]]] = {
    "bank": [("bank_loan_amount", 0.35), ("bank_tenure_months", -0.45), ("bank_overdue_count", 0.55)],
    "tax": [("tax_vat_paid", -0.8), ("tax_credit_grade", 0.6), ("tax_revenue_growth", -0.5)],
    "power": [("power_kwh", -0.4), ("power_trend", -0.7), ("power_arrears_days", 0.65)],
}
_INTERCEPT = -1.0


class SyntheticParty(BaseModel):
    """One generated party file."""

    name: str
    csv_path: Path
    features: list[str]
    n_rows: int


class SyntheticVertical(BaseModel):
    """Three generated party files and the ground truth a test checks against."""

    parties: list[SyntheticParty]
    join_key: str = JOIN_KEY
    label_party: str = LABEL_PARTY
    label_column: str = LABEL_COLUMN
    true_intersection: int
    seed: int

    def job_spec(
        self,
        output_root: Path,
        psi_protocol: PsiProtocolName = "RR22",
        model: ModelParams | None = None,
        timeout_s: float = 600.0,
        work_dir: Path | None = None,
    ) -> VerticalJobSpec:
        """A job over these files, each party writing to ``output_root/<name>``."""
        return VerticalJobSpec(
            parties=[
                PartySpec(
                    name=p.name, input_csv=p.csv_path, output_dir=output_root / p.name, features=p.features
                )
                for p in self.parties
            ],
            join_key=self.join_key,
            label_party=self.label_party,
            label_column=self.label_column,
            psi_protocol=psi_protocol,
            model=model or ModelParams(),
            timeout_s=timeout_s,
            work_dir=work_dir,
        )


def _unique_usccs(rng: random.Random, n: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        code = random_uscc(rng)
        if code not in seen:
            seen.add(code)
            out.append(code)
    return out


def make_vertical_data(
    out_dir: Path, n_rows: int = 10_000, overlap: float = 0.6, seed: int = 7
) -> SyntheticVertical:
    """Write ``bank.csv``, ``tax.csv``, ``power.csv`` into ``out_dir`` (deterministic for a seed)."""
    if not 0 < overlap <= 1:
        raise ValueError("overlap must be in (0, 1]")
    if n_rows < 10:
        raise ValueError("n_rows must be at least 10")
    names = list(_FEATURES)
    common = round(overlap * n_rows)
    pair_share = (n_rows - common) // 4  # each party is in two pairs
    private = n_rows - common - 2 * pair_share
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    total = common + len(pairs) * pair_share + len(names) * private

    keys = _unique_usccs(random.Random(seed), total)
    gen = np.random.default_rng(seed)
    members: dict[str, list[int]] = {n: list(range(common)) for n in names}
    nxt = common
    for a, b in pairs:
        ids = list(range(nxt, nxt + pair_share))
        members[a] += ids
        members[b] += ids
        nxt += pair_share
    for n in names:
        members[n] += list(range(nxt, nxt + private))
        nxt += private
    assert nxt == total

    # latent standardized factors per enterprise, then raw, plausible-looking columns
    z = {col: gen.standard_normal(total) for cols in _FEATURES.values() for col, _ in cols}
    raw = {
        "bank_loan_amount": np.round(np.exp(12.5 + 0.8 * z["bank_loan_amount"]), 2),
        "bank_tenure_months": np.clip(np.round(36 - 20 * z["bank_tenure_months"]), 1, None),
        "bank_overdue_count": np.round(np.maximum(0, 1.2 + 1.2 * z["bank_overdue_count"])),
        "tax_vat_paid": np.round(np.exp(11 + 1.1 * z["tax_vat_paid"]), 2),
        "tax_credit_grade": np.clip(np.round(3 + 1.1 * z["tax_credit_grade"]), 1, 5),
        "tax_revenue_growth": np.round(0.05 + 0.2 * z["tax_revenue_growth"], 4),
        "power_kwh": np.round(np.exp(10 + 0.9 * z["power_kwh"]), 1),
        "power_trend": np.round(0.02 + 0.1 * z["power_trend"], 4),
        "power_arrears_days": np.round(np.maximum(0, 5 + 8 * z["power_arrears_days"])),
    }
    logit = _INTERCEPT + sum(w * z[col] for cols in _FEATURES.values() for col, w in cols)
    label = (gen.random(total) < 1 / (1 + np.exp(-logit))).astype(int)

    out_dir.mkdir(parents=True, exist_ok=True)
    parties: list[SyntheticParty] = []
    key_arr = np.array(keys)
    for n in names:
        idx = np.array(sorted(members[n], key=lambda i: keys[i]))
        gen.shuffle(idx)  # no party's file is in key order
        frame = pd.DataFrame({JOIN_KEY: key_arr[idx]})
        cols = [c for c, _ in _FEATURES[n]]
        for c in cols:
            frame[c] = raw[c][idx]
        if n == LABEL_PARTY:
            frame[LABEL_COLUMN] = label[idx]
        path = out_dir / f"{n}.csv"
        frame.to_csv(path, index=False)
        parties.append(SyntheticParty(name=n, csv_path=path, features=cols, n_rows=len(frame)))
    return SyntheticVertical(parties=parties, true_intersection=common, seed=seed)


class PlaintextReference(BaseModel):
    """scikit-learn on the plaintext join: what a centralized model would reach."""

    auc: float
    n_rows: int


def plaintext_reference(spec: VerticalJobSpec, standardize: bool = True) -> PlaintextReference:
    """Join every party's CSV in the clear and fit ``LogisticRegression``; AUC on the training set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    joined: pd.DataFrame | None = None
    feature_cols: list[str] = []
    for p in spec.parties:
        frame = pd.read_csv(p.input_csv, dtype={spec.join_key: str})
        cols = p.features or [c for c in frame.columns if c not in (spec.join_key, spec.label_column)]
        feature_cols += cols
        keep = [spec.join_key, *cols] + ([spec.label_column] if p.name == spec.label_party else [])
        frame = frame[keep]
        joined = frame if joined is None else joined.merge(frame, on=spec.join_key, how="inner")
    assert joined is not None
    x = joined[feature_cols].to_numpy(dtype=float)
    if standardize:
        x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    y = joined[spec.label_column].to_numpy()
    model = LogisticRegression(max_iter=1000).fit(x, y)
    return PlaintextReference(auc=float(roc_auc_score(y, model.predict_proba(x)[:, 1])), n_rows=len(joined))


WIDE_PARTIES = ("bank", "tax", "social", "power", "court")


def make_wide_vertical_data(
    out_dir: Path,
    n_rows: int = 6_000,
    features_per_party: int = 12,
    parties: tuple[str, ...] = WIDE_PARTIES,
    overlap: float = 0.9,
    seed: int = 11,
) -> SyntheticVertical:
    """A wider federation for benchmarks: ``parties`` (the first holds the label), each with
    ``features_per_party`` columns of mixed kinds — skewed amounts, 1..5 grades, counts and 0/1
    flags — and a label from a hidden logistic model over about half of all the columns.

    Every party holds ``n_rows`` rows; ``overlap`` of them are common to all parties, the rest
    are private to the party.
    """
    if not 0 < overlap <= 1:
        raise ValueError("overlap must be in (0, 1]")
    if n_rows < 10 or features_per_party < 1 or len(parties) < 2:
        raise ValueError("need n_rows >= 10, features_per_party >= 1 and at least two parties")
    common = round(overlap * n_rows)
    private = n_rows - common
    total = common + private * len(parties)
    keys = np.array(_unique_usccs(random.Random(seed), total))
    gen = np.random.default_rng(seed)
    logit = np.full(total, -1.6)
    cols: dict[str, dict[str, np.ndarray]] = {}
    for p in parties:
        cols[p] = {}
        for j in range(features_per_party):
            z = gen.standard_normal(total)
            kind = j % 4
            if kind == 0:
                v = np.round(np.exp(10 + 1.0 * z), 2)  # an amount
            elif kind == 1:
                v = np.clip(np.round(3 + 1.1 * z), 1, 5)  # a grade
            elif kind == 2:
                v = np.round(np.maximum(0, 1 + 1.5 * z))  # a count
            else:
                v = (z > 1.3).astype(float)  # a rare flag
            name = f"{p}_{('amount', 'grade', 'count', 'flag')[kind]}_{j}"
            cols[p][name] = v
            if gen.random() < 0.5:
                signal = (v - v.mean()) / (v.std() or 1.0) if kind != 0 else z
                logit += gen.choice([-1, 1]) * gen.uniform(0.15, 0.45) * signal
    label = (gen.random(total) < 1 / (1 + np.exp(-logit))).astype(int)

    out_dir.mkdir(parents=True, exist_ok=True)
    out: list[SyntheticParty] = []
    for i, p in enumerate(parties):
        idx = np.concatenate([np.arange(common), common + i * private + np.arange(private)])
        gen.shuffle(idx)
        frame = pd.DataFrame({JOIN_KEY: keys[idx], **{c: v[idx] for c, v in cols[p].items()}})
        if i == 0:
            frame[LABEL_COLUMN] = label[idx]
        path = out_dir / f"{p}.csv"
        frame.to_csv(path, index=False)
        out.append(SyntheticParty(name=p, csv_path=path, features=list(cols[p]), n_rows=len(frame)))
    return SyntheticVertical(parties=out, label_party=parties[0], true_intersection=common, seed=seed)
