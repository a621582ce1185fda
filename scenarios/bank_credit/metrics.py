"""What a credit-risk team reads, computed from numpy arrays.

Conventions: ``y`` is 1 for a default ("bad"), 0 for a good; a *score* is risk-ordered
(higher = riskier, e.g. a PD) unless a function says otherwise. Scorecard *points*
(300–850, higher = safer) come from :func:`pd_to_points`.

* :func:`auc` — area under the ROC curve (Mann–Whitney, ties counted half);
* :func:`roc_curve` — FPR/TPR at every distinct threshold;
* :func:`ks` — Kolmogorov–Smirnov statistic max(TPR − FPR) and the threshold where it occurs;
* :func:`score_bands` / :func:`quantile_bands` — counts and default rates per band;
* :func:`psi` — population stability index between two score distributions;
* :func:`woe_binning` / :func:`woe_transform` — weight of evidence and information value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from scenarios.bank_credit.errors import MetricInputError

WOE_SMOOTHING = 0.5  # added to good and bad counts of a bin when either is zero


def _labels_scores(y: np.ndarray | Sequence[int], score: np.ndarray | Sequence[float], *, both_classes: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise MetricInputError("labels and scores must be one-dimensional")
    if len(y) != len(s):
        raise MetricInputError(f"{len(y)} labels but {len(s)} scores")
    if len(y) == 0:
        raise MetricInputError("no observations")
    if not np.isin(y, (0, 1)).all():
        raise MetricInputError(f"labels must be 0/1, found {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}")
    if np.isnan(s).any():
        raise MetricInputError(f"{int(np.isnan(s).sum())} scores are NaN")
    y = y.astype(np.int64)
    if both_classes and (y.sum() == 0 or y.sum() == len(y)):
        raise MetricInputError("both goods and bads are needed")
    return y, s


def auc(y: np.ndarray | Sequence[int], score: np.ndarray | Sequence[float]) -> float:
    """Area under the ROC curve: P(score of a random bad > score of a random good), ties count ½."""
    y, s = _labels_scores(y, score)
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0  # ranks are 1-based: mean of start+1 … end
    ranks[order] = np.repeat(avg, ends - starts)
    n_bad = int(y.sum())
    n_good = len(y) - n_bad
    return float((ranks[y == 1].sum() - n_bad * (n_bad + 1) / 2.0) / (n_bad * n_good))


class RocCurve(BaseModel):
    """Points of the ROC curve, from (0, 0) to (1, 1); ``thresholds[i]`` gives point i+1."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


def _cumulative(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (distinct scores, descending) and TPR/FPR when predicting bad for score ≥ threshold."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.concatenate([np.flatnonzero(np.diff(s_sorted)), [len(s) - 1]])  # last index of each distinct score
    bads = np.cumsum(y_sorted)[last]
    goods = (last + 1) - bads
    return s_sorted[last], bads / y.sum(), goods / (len(y) - y.sum())


def roc_curve(y: np.ndarray | Sequence[int], score: np.ndarray | Sequence[float]) -> RocCurve:
    """The ROC curve at every distinct score."""
    y, s = _labels_scores(y, score)
    thr, tpr, fpr = _cumulative(y, s)
    return RocCurve(fpr=[0.0, *fpr.tolist()], tpr=[0.0, *tpr.tolist()], thresholds=thr.tolist())


class KsResult(BaseModel):
    """KS statistic and where it is reached: predicting bad for score ≥ ``threshold``."""

    ks: float
    threshold: float
    tpr: float  # cumulative share of bads at or above the threshold
    fpr: float  # cumulative share of goods at or above the threshold


def ks(y: np.ndarray | Sequence[int], score: np.ndarray | Sequence[float]) -> KsResult:
    """Kolmogorov–Smirnov: the largest gap between the cumulative bad and good distributions."""
    y, s = _labels_scores(y, score)
    thr, tpr, fpr = _cumulative(y, s)
    i = int(np.argmax(tpr - fpr))
    return KsResult(ks=float(tpr[i] - fpr[i]), threshold=float(thr[i]), tpr=float(tpr[i]), fpr=float(fpr[i]))


def pd_to_points(pd_: np.ndarray | Sequence[float], base_points: float = 600.0, base_odds: float = 50.0,
                 pdo: float = 20.0, lo: float = 300.0, hi: float = 850.0) -> np.ndarray:
    """Scorecard points: ``base_points`` at good:bad odds ``base_odds``, +``pdo`` per doubling, clipped."""
    p = np.asarray(pd_, dtype=np.float64)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise MetricInputError("probabilities must lie in [0, 1]")
    p = np.clip(p, 1e-9, 1 - 1e-9)
    factor = pdo / math.log(2.0)
    offset = base_points - factor * math.log(base_odds)
    return np.clip(offset + factor * np.log((1 - p) / p), lo, hi)


class ScoreBand(BaseModel):
    """One band: ``lower`` ≤ value < ``upper`` (the last band includes its upper edge)."""

    lower: float
    upper: float
    count: int
    bads: int
    default_rate: float | None  # None for an empty band
    share: float  # share of all observations
    cum_bad_share: float  # share of all bads in this band and the bands before it


def score_bands(y: np.ndarray | Sequence[int], values: np.ndarray | Sequence[float], edges: Sequence[float]
                ) -> list[ScoreBand]:
    """Counts and default rates in bands of ``values`` cut at ascending ``edges`` (values outside are refused)."""
    y, v = _labels_scores(y, values, both_classes=False)
    e = np.asarray(edges, dtype=np.float64)
    if len(e) < 2 or not (np.diff(e) > 0).all():
        raise MetricInputError("edges must be at least two strictly increasing values")
    if (v < e[0]).any() or (v > e[-1]).any():
        raise MetricInputError(f"values outside [{e[0]}, {e[-1]}]")
    idx = np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)
    counts = np.bincount(idx, minlength=len(e) - 1)
    bads = np.bincount(idx, weights=y, minlength=len(e) - 1).astype(np.int64)
    total_bads = max(int(y.sum()), 1)
    cum = np.cumsum(bads) / total_bads
    return [ScoreBand(lower=float(e[i]), upper=float(e[i + 1]), count=int(counts[i]), bads=int(bads[i]),
                      default_rate=float(bads[i] / counts[i]) if counts[i] else None,
                      share=float(counts[i] / len(v)), cum_bad_share=float(cum[i]))
            for i in range(len(e) - 1)]


def quantile_edges(values: np.ndarray | Sequence[float], n_bins: int = 10) -> np.ndarray:
    """Edges of (up to) ``n_bins`` equal-count bins of ``values``; duplicates from ties are merged."""
    v = np.asarray(values, dtype=np.float64)
    if n_bins < 1:
        raise MetricInputError("n_bins must be positive")
    if len(v) == 0 or np.isnan(v).any():
        raise MetricInputError("quantile edges need non-empty, non-NaN values")
    return np.unique(np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1)))


def quantile_bands(y: np.ndarray | Sequence[int], values: np.ndarray | Sequence[float], n_bins: int = 10
                   ) -> list[ScoreBand]:
    """Score bands at the quantiles of ``values`` (deciles by default)."""
    edges = quantile_edges(values, n_bins)
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0] + 1.0])
    return score_bands(y, values, edges)


class PsiBin(BaseModel):
    """One bin of a PSI computation: ``lower`` ≤ score < ``upper``; None is an open end."""

    lower: float | None
    upper: float | None
    expected_share: float
    actual_share: float
    contribution: float


class PsiResult(BaseModel):
    """Population stability index and its bins; < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 significant."""

    psi: float
    bins: list[PsiBin]

    @property
    def verdict(self) -> str:
        """The customary reading of the PSI value."""
        return "stable" if self.psi < 0.1 else "moderate shift" if self.psi <= 0.25 else "significant shift"


def psi(expected: np.ndarray | Sequence[float], actual: np.ndarray | Sequence[float], n_bins: int = 10,
        edges: Sequence[float] | None = None, eps: float = 1e-4) -> PsiResult:
    """PSI = Σ (a − e)·ln(a / e) over bins (default: deciles of ``expected``, open-ended at both sides).

    Empty bins get share ``eps`` so the logarithm stays finite.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if len(e) == 0 or len(a) == 0:
        raise MetricInputError("both populations must be non-empty")
    if np.isnan(e).any() or np.isnan(a).any():
        raise MetricInputError("scores must not be NaN")
    cuts = np.asarray(edges, dtype=np.float64) if edges is not None else quantile_edges(e, n_bins)[1:-1]
    if len(cuts) and not (np.diff(cuts) > 0).all():
        raise MetricInputError("edges must be strictly increasing")
    bounds = np.concatenate([[-np.inf], cuts, [np.inf]])
    e_share = np.bincount(np.searchsorted(cuts, e, side="right"), minlength=len(bounds) - 1) / len(e)
    a_share = np.bincount(np.searchsorted(cuts, a, side="right"), minlength=len(bounds) - 1) / len(a)
    es, as_ = np.maximum(e_share, eps), np.maximum(a_share, eps)
    contrib = (as_ - es) * np.log(as_ / es)
    return PsiResult(psi=float(contrib.sum()), bins=[
        PsiBin(lower=None if i == 0 else float(bounds[i]), upper=None if i == len(bounds) - 2 else float(bounds[i + 1]),
               expected_share=float(e_share[i]),
               actual_share=float(a_share[i]), contribution=float(contrib[i])) for i in range(len(bounds) - 1)])


class WoeBin(BaseModel):
    """One bin of a WOE binning: ``lower`` < x ≤ ``upper`` (None: open end); ``missing`` marks the bin of NaNs."""

    lower: float | None
    upper: float | None
    missing: bool = False
    count: int
    goods: int
    bads: int
    woe: float
    iv: float


class WoeBinning(BaseModel):
    """Weight of evidence per bin (ln(%good / %bad)) and the information value of a feature."""

    bins: list[WoeBin]
    iv: float

    @property
    def strength(self) -> str:
        """The customary reading of the information value."""
        iv = self.iv
        return ("useless" if iv < 0.02 else "weak" if iv < 0.1 else "medium" if iv < 0.3
                else "strong" if iv < 0.5 else "very strong")


def woe_binning(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[int], n_bins: int = 5,
                edges: Sequence[float] | None = None) -> WoeBinning:
    """Bin ``x`` (quantile bins, or inner cut points ``edges``), missing values in a bin of their own.

    Bins are right-closed, ``(lower, upper]``, with open ends, so a value that fills many
    quantiles (a zero count, a 0/1 flag) stays in one bin and the values above it in others.
    WOE = ln(dist_good / dist_bad) with
    ``WOE_SMOOTHING`` added to both counts of a bin when either is zero;
    IV = Σ (dist_good − dist_bad) · WOE.
    """
    xv = np.asarray(x, dtype=np.float64)
    y, _ = _labels_scores(y, np.zeros(len(np.asarray(y))))
    if len(xv) != len(y):
        raise MetricInputError(f"{len(xv)} values but {len(y)} labels")
    miss = np.isnan(xv)
    if edges is None:
        observed = xv[~miss]
        cuts = (np.unique(np.quantile(observed, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])) if len(observed)
                else np.array([]))
        cuts = cuts[cuts < observed.max()] if len(observed) else cuts  # no empty top bin
    else:
        cuts = np.asarray(edges, dtype=np.float64)
        if len(cuts) and not (np.diff(cuts) > 0).all():
            raise MetricInputError("edges must be strictly increasing")
    bounds = np.concatenate([[-np.inf], cuts, [np.inf]])
    idx = np.searchsorted(cuts, np.where(miss, 0.0, xv), side="left")
    total_good, total_bad = int((y == 0).sum()), int(y.sum())
    groups: list[tuple[float | None, float | None, bool, np.ndarray]] = [
        (None if i == 0 else float(bounds[i]), None if i == len(bounds) - 2 else float(bounds[i + 1]), False,
         (~miss) & (idx == i)) for i in range(len(bounds) - 1)]
    if miss.any():
        groups.append((None, None, True, miss))
    bins = []
    for lower, upper, is_missing, mask in groups:
        goods, bads = int(((y == 0) & mask).sum()), int(((y == 1) & mask).sum())
        if mask.sum() == 0:
            continue
        g, b = float(goods), float(bads)
        if goods == 0 or bads == 0:
            g, b = g + WOE_SMOOTHING, b + WOE_SMOOTHING
        dg, db = g / total_good, b / total_bad
        woe = math.log(dg / db)
        bins.append(WoeBin(lower=lower, upper=upper, missing=is_missing, count=int(mask.sum()), goods=goods,
                           bads=bads, woe=woe, iv=(dg - db) * woe))
    return WoeBinning(bins=bins, iv=float(sum(b.iv for b in bins)))


def woe_transform(binning: WoeBinning, x: np.ndarray | Sequence[float]) -> np.ndarray:
    """Replace each value by the WOE of its bin (missing values: the missing bin, else 0)."""
    xv = np.asarray(x, dtype=np.float64)
    out = np.zeros(len(xv))
    miss = np.isnan(xv)
    for b in binning.bins:
        if b.missing:
            out[miss] = b.woe
            continue
        lo = -np.inf if b.lower is None else b.lower
        hi = np.inf if b.upper is None else b.upper
        out[~miss & (xv > lo) & (xv <= hi)] = b.woe
    return out
