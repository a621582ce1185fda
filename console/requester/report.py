"""A training job's report, from the ``predictions`` output the bank's key opened on the bank's node:
ROC and AUC, KS, scorecard-point bands, PSI (the training rows against the hold-out rows), and the
white list / watch list the bank acts on.

The numbers are the credit-risk report's own (:func:`scenarios.bank_credit.report.summarise` over
:mod:`scenarios.bank_credit.metrics`); the charts are SVG drawn by matplotlib like the regulator
console's (:mod:`console.regulator.charts`): text stays text, in the page's CJK font.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from console.regulator.charts import drawing, svg_of
from scenarios.bank_credit.metrics import RocCurve, ks, pd_to_points, roc_curve
from scenarios.bank_credit.report import ModelScores, ModelSummary, summarise

#: The predictions' key column (the join key the bank's job used) is the CSV's first column.
SCORE, LABEL, SPLIT = "score", "__label__", "split"
#: Default list thresholds (probability of default): white list at or below, watch list at or above.
WHITE_MAX_PD = 0.05
WATCH_MIN_PD = 0.30


class ReportError(ValueError):
    """The output is not a predictions table this report can read (named reason)."""


@dataclass(frozen=True)
class JobReport:
    """What the report page shows."""

    key: str
    summary: ModelSummary
    roc: RocCurve
    evaluation: Literal["holdout", "in-sample"]
    n_rows: int
    frame: pd.DataFrame
    white_max_pd: float
    watch_min_pd: float

    def white_list(self) -> pd.DataFrame:
        """Applicants whose PD is at most ``white_max_pd``, lowest first."""
        keep = self.frame[self.frame[SCORE] <= self.white_max_pd]
        return keep[[self.key, SCORE]].rename(columns={SCORE: "pd"}).sort_values("pd", kind="stable")

    def watch_list(self) -> pd.DataFrame:
        """Borrowers whose PD is at least ``watch_min_pd``, highest first."""
        keep = self.frame[self.frame[SCORE] >= self.watch_min_pd]
        return keep[[self.key, SCORE]].rename(columns={SCORE: "pd"}).sort_values("pd", ascending=False, kind="stable")


def build_report(predictions_csv: bytes, white_max_pd: float = WHITE_MAX_PD,
                 watch_min_pd: float = WATCH_MIN_PD) -> JobReport:
    """The report of a training job's ``predictions`` (key, score, label, and split when the engine
    held rows out)."""
    try:
        frame = pd.read_csv(io.BytesIO(predictions_csv), dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(f"the predictions are not a CSV table: {type(exc).__name__}") from None
    key = str(frame.columns[0]) if len(frame.columns) else ""
    # the label column carries the job's label's name; anything else besides key, score, points, split
    label = next((c for c in frame.columns[1:] if c not in (SCORE, SPLIT, "points")), None)
    if frame.empty or SCORE not in frame.columns or label is None:
        raise ReportError(f"the predictions need a {SCORE!r} and a label column (have: {list(frame.columns)})")
    frame = frame.rename(columns={label: LABEL})
    try:
        frame[SCORE] = frame[SCORE].astype(np.float64)
        frame[LABEL] = frame[LABEL].astype(np.float64).astype(np.int64)
    except ValueError:
        raise ReportError("the predictions' scores or labels are not numbers") from None
    score = frame[SCORE].to_numpy()
    if not np.isfinite(score).all() or (score < 0).any() or (score > 1).any():
        raise ReportError("the predictions' scores are not probabilities")
    test = (frame[SPLIT] == "test").to_numpy() if SPLIT in frame.columns else np.ones(len(frame), dtype=bool)
    evaluation: Literal["holdout", "in-sample"] = "holdout" if SPLIT in frame.columns and test.any() else "in-sample"
    if not test.any():
        test = np.ones(len(frame), dtype=bool)
    y = frame[LABEL].to_numpy()
    if len(set(y[test].tolist())) < 2:
        raise ReportError("the evaluated rows hold only one class: no ROC or KS")
    train = ~test
    scores = ModelScores(name="federated", role="federated", y_test=y[test], score_test=score[test],
                         score_train=score[train] if train.any() else None,
                         score_monitoring=score[test] if train.any() else None)
    return JobReport(key=key, summary=summarise(scores), roc=roc_curve(y[test], score[test]), evaluation=evaluation,
                     n_rows=len(frame), frame=frame, white_max_pd=white_max_pd, watch_min_pd=watch_min_pd)


# ---------------------------------------------------------------- charts (SVG)


def _svg(draw, width: float = 5.4, height: float = 4.0) -> bytes:  # noqa: ANN001 - a callback on an Axes
    """One chart on its own Figure, under the consoles' one drawing lock (:func:`console.regulator.charts.drawing`:
    matplotlib's settings are global, so two request threads drawing at once would undo each other's)."""
    from matplotlib.figure import Figure

    with drawing():
        fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
        ax = fig.add_subplot()
        draw(ax)
        ax.grid(True, alpha=0.3)
        return svg_of(fig)


def roc_svg(rep: JobReport, labels: dict[str, str]) -> bytes:
    """The ROC curve with its AUC."""

    def draw(ax) -> None:  # noqa: ANN001
        ax.plot(rep.roc.fpr, rep.roc.tpr, linewidth=1.8, label=f"AUC = {rep.summary.auc:.3f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set_xlabel(labels["fpr"])
        ax.set_ylabel(labels["tpr"])
        ax.legend(loc="lower right", frameon=False)

    return _svg(draw)


def ks_svg(rep: JobReport, labels: dict[str, str]) -> bytes:
    """Cumulative shares of bads and goods by score, and the KS gap."""
    test = rep.frame[SPLIT].eq("test").to_numpy() if rep.evaluation == "holdout" else np.ones(rep.n_rows, dtype=bool)
    y, s = rep.frame[LABEL].to_numpy()[test], rep.frame[SCORE].to_numpy()[test]
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    share = np.arange(1, len(ys) + 1) / len(ys)
    bads, goods = np.cumsum(ys) / max(1, ys.sum()), np.cumsum(1 - ys) / max(1, (1 - ys).sum())
    k = ks(y, s)

    def draw(ax) -> None:  # noqa: ANN001
        ax.plot(share, bads, label=labels["bads"], linewidth=1.6)
        ax.plot(share, goods, label=labels["goods"], linewidth=1.6)
        i = int(np.argmax(bads - goods))
        ax.vlines(share[i], goods[i], bads[i], colors="black", linestyles=":", label=f"KS = {k.ks:.3f}")
        ax.set_xlabel(labels["share"])
        ax.set_ylabel(labels["cumulative"])
        ax.legend(loc="lower right", frameon=False)

    return _svg(draw)


def bands_svg(rep: JobReport, labels: dict[str, str]) -> bytes:
    """Default rate per scorecard-points band."""
    bands = rep.summary.bands

    def draw(ax) -> None:  # noqa: ANN001
        names = [f"{b.lower:.0f}–{b.upper:.0f}" for b in bands]
        ax.bar(names, [(b.default_rate or 0.0) * 100 for b in bands], color="#1f77b4")
        ax.set_xlabel(labels["points"])
        ax.set_ylabel(labels["rate"])
        ax.tick_params(axis="x", labelrotation=45, labelsize="small")

    return _svg(draw, width=6.4)


def psi_svg(rep: JobReport, labels: dict[str, str]) -> bytes:
    """Score distributions of the training rows and the hold-out rows (PSI bins)."""
    bins = rep.summary.psi_bins or []

    def draw(ax) -> None:  # noqa: ANN001
        x = np.arange(len(bins))
        ax.bar(x - 0.2, [b.expected_share * 100 for b in bins], width=0.4, label=labels["train"])
        ax.bar(x + 0.2, [b.actual_share * 100 for b in bins], width=0.4, label=labels["test"])
        ax.set_xticks(x, [str(i + 1) for i in x])
        ax.set_xlabel(labels["bin"])
        ax.set_ylabel(labels["share_pct"])
        ax.legend(frameon=False)

    return _svg(draw)


def points_of(pd_value: float) -> float:
    """Scorecard points of a probability of default."""
    return float(pd_to_points([pd_value])[0])
