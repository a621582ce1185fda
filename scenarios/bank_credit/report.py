"""The credit-risk report: models side by side, as a credit-risk team reads them.

Given, for several models (e.g. "federated SS-LR", "bank-only LR", "centralized LR"),
test labels and scores — and optionally training and monitoring scores — write into an
output directory:

* ``roc.png`` — ROC curves of all models;
* ``ks.png`` — cumulative bad/good curves per model with the KS point;
* ``bands.png`` — default rate per scorecard-points band;
* ``psi.png`` — score distributions of the training and monitoring populations;
* ``report.html`` — all of it with tables (images embedded by relative path);
* ``summary.json`` — the returned :class:`ReportSummary`.

Scores are PDs (higher = riskier); bands use scorecard points from
:func:`~scenarios.bank_credit.metrics.pd_to_points`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scenarios.bank_credit.errors import ReportInputError
from scenarios.bank_credit.metrics import (
    PsiBin,
    ScoreBand,
    auc,
    ks,
    pd_to_points,
    psi,
    roc_curve,
    score_bands,
)

Role = Literal["federated", "bank_only", "centralized", "other"]
POINT_EDGES: tuple[float, ...] = (300, 500, 530, 560, 590, 620, 650, 680, 850)
FEDERATED_GAP_TARGET = 0.01  # federated AUC within this of the centralized model's
CLEAR_UPLIFT = 0.02  # AUC gain over bank-only that counts as a clear uplift
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


class ModelScores(BaseModel):
    """One model's outputs on the shared test rows (and, optionally, training and monitoring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    role: Role = "other"
    y_test: np.ndarray = Field(repr=False)
    score_test: np.ndarray = Field(repr=False)
    score_train: np.ndarray | None = Field(default=None, repr=False)
    score_monitoring: np.ndarray | None = Field(default=None, repr=False)


class ModelSummary(BaseModel):
    """The numbers of one model."""

    name: str
    role: Role
    n_test: int
    bads_test: int
    default_rate_test: float
    auc: float
    ks: float
    ks_threshold_pd: float
    ks_threshold_points: float
    bands: list[ScoreBand]
    psi: float | None = None
    psi_verdict: str | None = None
    psi_bins: list[PsiBin] | None = None
    n_monitoring: int | None = None


class FeatureIvRow(BaseModel):
    """Information value of one feature, as the report lists it."""

    member: str
    column: str
    iv: float
    strength: str
    missing_rate: float


class ReportSummary(BaseModel):
    """Everything the report shows, as numbers (also written to ``summary.json``)."""

    title: str
    generated_at: str
    models: list[ModelSummary]
    federated_auc_gap: float | None = None  # centralized AUC − federated AUC
    federated_uplift: float | None = None  # federated AUC − bank-only AUC
    centralized_uplift: float | None = None  # centralized AUC − bank-only AUC
    targets: dict[str, bool] = {}
    files: dict[str, str] = {}
    notes: list[str] = []
    feature_iv: list[FeatureIvRow] = []
    post_loan: dict[str, str] = {}
    """Post-loan monitoring, as label → formatted value (empty when there was no re-scoring)."""

    def model(self, name: str) -> ModelSummary:
        """The summary of model ``name``."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def _validate(models: Sequence[ModelScores]) -> None:
    if not models:
        raise ReportInputError("no models to report on")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ReportInputError(f"model names must be unique: {names}")
    for role in ("federated", "bank_only", "centralized"):
        if sum(m.role == role for m in models) > 1:
            raise ReportInputError(f"more than one model has role {role!r}")
    for m in models:
        if len(m.y_test) != len(m.score_test):
            raise ReportInputError(f"{m.name}: {len(m.y_test)} labels but {len(m.score_test)} scores")
        for label, arr in (("test", m.score_test), ("train", m.score_train), ("monitoring", m.score_monitoring)):
            if arr is not None and len(arr) and (np.isnan(arr).any() or (arr < 0).any() or (arr > 1).any()):
                raise ReportInputError(f"{m.name}: {label} scores must be probabilities in [0, 1]")
        if (m.score_train is None) != (m.score_monitoring is None):
            raise ReportInputError(f"{m.name}: PSI needs both training and monitoring scores")


def summarise(m: ModelScores, edges: Sequence[float] = POINT_EDGES) -> ModelSummary:
    """AUC, KS, score bands and (when monitoring scores are given) PSI of one model."""
    y = np.asarray(m.y_test)
    k = ks(y, m.score_test)
    points = pd_to_points(m.score_test)
    out = ModelSummary(name=m.name, role=m.role, n_test=len(y), bads_test=int(y.sum()),
                       default_rate_test=float(y.mean()), auc=auc(y, m.score_test), ks=k.ks,
                       ks_threshold_pd=k.threshold, ks_threshold_points=float(pd_to_points([k.threshold])[0]),
                       bands=score_bands(y, points, edges))
    if m.score_train is not None and m.score_monitoring is not None:
        p = psi(pd_to_points(m.score_train), pd_to_points(m.score_monitoring))
        out.psi, out.psi_verdict, out.psi_bins = p.psi, p.verdict, p.bins
        out.n_monitoring = len(m.score_monitoring)
    return out


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib types stay internal
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _plot_roc(models: Sequence[ModelScores], summaries: Sequence[ModelSummary], path: Path) -> None:
    fig = _figure(6.0, 5.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, (m, s) in enumerate(zip(models, summaries, strict=True)):
        r = roc_curve(m.y_test, m.score_test)
        ax.plot(r.fpr, r.tpr, color=_COLOURS[i % len(_COLOURS)], lw=2, label=f"{m.name} (AUC {s.auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random (AUC 0.500)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (goods flagged)",
           ylabel="true positive rate (bads caught)", title="ROC — test population")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def _plot_ks(models: Sequence[ModelScores], summaries: Sequence[ModelSummary], path: Path) -> None:
    n = len(models)
    fig = _figure(4.6 * n, 4.4)
    for i, (m, s) in enumerate(zip(models, summaries, strict=True)):
        ax = fig.add_subplot(1, n, i + 1)
        y = np.asarray(m.y_test)
        order = np.argsort(-np.asarray(m.score_test), kind="mergesort")
        ys = y[order]
        share = np.arange(1, len(ys) + 1) / len(ys)
        cum_bad = np.cumsum(ys) / max(ys.sum(), 1)
        cum_good = np.cumsum(1 - ys) / max((1 - ys).sum(), 1)
        gap = cum_bad - cum_good
        j = int(np.argmax(gap))
        ax.plot(np.r_[0, share], np.r_[0, cum_bad], color="#d62728", lw=2, label="bads (cumulative)")
        ax.plot(np.r_[0, share], np.r_[0, cum_good], color="#1f77b4", lw=2, label="goods (cumulative)")
        ax.vlines(share[j], cum_good[j], cum_bad[j], color="black", lw=1.5, ls=":")
        ax.annotate(f"KS {s.ks:.3f}\nPD ≥ {s.ks_threshold_pd:.3f}", (share[j], (cum_bad[j] + cum_good[j]) / 2),
                    xytext=(8, 0), textcoords="offset points", fontsize=9, va="center")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="population share, riskiest first", title=m.name)
        if i == 0:
            ax.set_ylabel("cumulative share")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _band_label(b: ScoreBand) -> str:
    return f"{b.lower:.0f}–{b.upper:.0f}"


def _plot_bands(summaries: Sequence[ModelSummary], path: Path) -> None:
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    labels = [_band_label(b) for b in summaries[0].bands]
    width = 0.8 / len(summaries)
    x = np.arange(len(labels))
    top = max(100 * (b.default_rate or 0.0) for s in summaries for b in s.bands) or 1.0
    for i, s in enumerate(summaries):
        rates = [100 * (b.default_rate or 0.0) for b in s.bands]
        xs = x + (i - (len(summaries) - 1) / 2) * width
        ax.bar(xs, rates, width, color=_COLOURS[i % len(_COLOURS)], label=s.name)
        for xi, r, b in zip(xs, rates, s.bands, strict=True):  # rows per bar; "–" for an empty band
            ax.text(xi, r + 0.01 * top, f"n={b.count:,}" if b.count else "–", ha="center", va="bottom",
                    fontsize=7, rotation=90, color="#444")
    ax.set_ylim(0, top * 1.22)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=9)
    ax.set(xlabel="scorecard points band (higher = safer)", ylabel="default rate in band (%)",
           title="Default rate by score band — test population")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def _plot_psi(models: Sequence[ModelScores], summaries: Sequence[ModelSummary], path: Path) -> None:
    pairs = [(m, s) for m, s in zip(models, summaries, strict=True) if s.psi is not None]
    n = len(pairs)
    fig = _figure(4.6 * n, 4.2)
    for i, (m, s) in enumerate(pairs):
        ax = fig.add_subplot(1, n, i + 1)
        bins = np.linspace(300, 850, 56)
        train, mon = pd_to_points(m.score_train), pd_to_points(m.score_monitoring)
        ax.hist(train, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color="#1f77b4",
                label=f"training (n={len(train):,})")
        ax.hist(mon, bins=bins, density=True, histtype="step", lw=2, color="#d62728",
                label=f"monitoring (n={len(mon):,})")
        lo, hi = np.percentile(np.r_[train, mon], [0.5, 99.5])
        ax.set(xlim=(max(300, lo - 10), min(850, hi + 10)), xlabel="scorecard points",
               title=f"{m.name}\nPSI {s.psi:.3f} ({s.psi_verdict})")
        if i == 0:
            ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ s.title }}</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
        color: #222; line-height: 1.4; }
 table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.92em; }
 th, td { border: 1px solid #ccc; padding: 4px 9px; text-align: right; }
 th { background: #f2f2f2; } td.l, th.l { text-align: left; }
 .ok { color: #1a7f37; font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
 img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0 1em; }
 .small { color: #666; font-size: 0.85em; }
</style></head><body>
<h1>{{ s.title }}</h1>
<p class="small">Generated {{ s.generated_at }}. Scores are probabilities of default within 12 months;
points = scorecard points (600 at odds 50:1, 20 points to double the odds, 300–850).</p>
{% if s.notes %}<ul>{% for n in s.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}

<h2>Summary</h2>
<table><tr><th class="l">model</th><th class="l">role</th><th>test rows</th><th>defaults</th><th>default rate</th>
<th>AUC</th><th>KS</th><th>KS threshold (PD / points)</th><th>PSI train→monitoring</th></tr>
{% for m in s.models %}<tr><td class="l">{{ m.name }}</td><td class="l">{{ m.role }}</td><td>{{ "{:,}".format(m.n_test) }}</td>
<td>{{ m.bads_test }}</td><td>{{ "%.2f"|format(100 * m.default_rate_test) }}%</td><td>{{ "%.4f"|format(m.auc) }}</td>
<td>{{ "%.4f"|format(m.ks) }}</td><td>{{ "%.4f"|format(m.ks_threshold_pd) }} / {{ "%.0f"|format(m.ks_threshold_points) }}</td>
<td>{% if m.psi is not none %}{{ "%.4f"|format(m.psi) }} ({{ m.psi_verdict }}){% else %}—{% endif %}</td></tr>
{% endfor %}</table>

{% if s.targets %}<h2>Targets</h2><table>
{% for k, v in s.targets.items() %}<tr><td class="l">{{ k }}</td><td class="{{ 'ok' if v else 'bad' }}">{{ 'met' if v else 'not met' }}</td></tr>{% endfor %}
{% if s.centralized_uplift is not none %}<tr><td class="l">centralized AUC − bank-only AUC</td><td>{{ "%+.4f"|format(s.centralized_uplift) }}</td></tr>{% endif %}
{% if s.federated_uplift is not none %}<tr><td class="l">federated AUC − bank-only AUC</td><td>{{ "%+.4f"|format(s.federated_uplift) }}</td></tr>{% endif %}
{% if s.federated_auc_gap is not none %}<tr><td class="l">centralized AUC − federated AUC</td><td>{{ "%+.4f"|format(s.federated_auc_gap) }}</td></tr>{% endif %}
</table>{% endif %}

<h2>ROC</h2><img src="{{ s.files.roc }}" alt="ROC curves">
<h2>KS</h2><img src="{{ s.files.ks }}" alt="KS curves">
<h2>Score bands</h2><img src="{{ s.files.bands }}" alt="default rate by score band">
{% for m in s.models %}<h3>{{ m.name }}</h3>
<table><tr><th>points band</th><th>rows</th><th>share</th><th>defaults</th><th>default rate</th><th>cumulative share of defaults</th></tr>
{% for b in m.bands %}<tr><td>{{ "%.0f"|format(b.lower) }}–{{ "%.0f"|format(b.upper) }}</td><td>{{ "{:,}".format(b.count) }}</td>
<td>{{ "%.1f"|format(100 * b.share) }}%</td><td>{{ b.bads }}</td>
<td>{% if b.default_rate is not none %}{{ "%.2f"|format(100 * b.default_rate) }}%{% else %}—{% endif %}</td>
<td>{{ "%.1f"|format(100 * b.cum_bad_share) }}%</td></tr>{% endfor %}</table>
{% endfor %}

{% if s.feature_iv %}<h2>Information value of the features (training rows)</h2>
<p class="small">IV &lt; 0.02 useless, 0.02–0.1 weak, 0.1–0.3 medium, 0.3–0.5 strong, &gt; 0.5 very strong.</p>
<table><tr><th class="l">member</th><th class="l">column</th><th>IV</th><th class="l">strength</th><th>missing</th></tr>
{% for f in s.feature_iv %}<tr><td class="l">{{ f.member }}</td><td class="l">{{ f.column }}</td><td>{{ "%.3f"|format(f.iv) }}</td>
<td class="l">{{ f.strength }}</td><td>{{ "%.1f"|format(100 * f.missing_rate) }}%</td></tr>{% endfor %}</table>{% endif %}

{% if s.post_loan %}<h2>Post-loan monitoring (in-loan re-scoring of current borrowers)</h2>
<table>{% for k, v in s.post_loan.items() %}<tr><td class="l">{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}

{% if s.files.psi %}<h2>Population stability (training → monitoring)</h2><img src="{{ s.files.psi }}" alt="PSI">
<p class="small">PSI &lt; 0.1 stable, 0.1–0.25 moderate shift, &gt; 0.25 significant shift; bins are deciles of the
training scores.</p>
{% for m in s.models if m.psi_bins %}<h3>{{ m.name }} — PSI {{ "%.4f"|format(m.psi) }}</h3>
<table><tr><th>points from</th><th>to</th><th>training share</th><th>monitoring share</th><th>contribution</th></tr>
{% for b in m.psi_bins %}<tr><td>{% if b.lower is none %}−∞{% else %}{{ "%.1f"|format(b.lower) }}{% endif %}</td>
<td>{% if b.upper is none %}+∞{% else %}{{ "%.1f"|format(b.upper) }}{% endif %}</td>
<td>{{ "%.1f"|format(100 * b.expected_share) }}%</td><td>{{ "%.1f"|format(100 * b.actual_share) }}%</td>
<td>{{ "%.4f"|format(b.contribution) }}</td></tr>{% endfor %}</table>
{% endfor %}{% endif %}
</body></html>
"""


def build_report(models: Sequence[ModelScores], out_dir: Path, title: str = "Bank credit — joint model report",
                 notes: Sequence[str] = (), edges: Sequence[float] = POINT_EDGES,
                 feature_iv: Sequence[BaseModel] = (), post_loan: dict[str, str] | None = None) -> ReportSummary:
    """Compute every model's numbers, draw the plots and write ``report.html`` and ``summary.json``.

    ``feature_iv`` (e.g. from :func:`~scenarios.bank_credit.baselines.information_values`)
    adds a table of the features' information values; ``post_loan`` (label → value) a table of the
    post-loan monitoring.
    """
    import jinja2

    _validate(models)
    summaries = [summarise(m, edges) for m in models]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_role = {s.role: s for s in summaries}
    summary = ReportSummary(title=title, generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            models=summaries, notes=list(notes), post_loan=dict(post_loan or {}),
                            feature_iv=[FeatureIvRow.model_validate(f, from_attributes=True) for f in feature_iv])
    fed, bank, cent = by_role.get("federated"), by_role.get("bank_only"), by_role.get("centralized")
    if cent and bank:
        summary.centralized_uplift = cent.auc - bank.auc
    if fed and bank:
        summary.federated_uplift = fed.auc - bank.auc
        summary.targets[f"federated AUC beats bank-only by ≥ {CLEAR_UPLIFT}"] = summary.federated_uplift >= CLEAR_UPLIFT
    if fed and cent:
        summary.federated_auc_gap = cent.auc - fed.auc
        summary.targets[f"federated AUC within {FEDERATED_GAP_TARGET} of centralized"] = (
            abs(summary.federated_auc_gap) <= FEDERATED_GAP_TARGET)
    if cent and bank and not fed:
        summary.targets[f"centralized AUC beats bank-only by ≥ {CLEAR_UPLIFT}"] = summary.centralized_uplift >= CLEAR_UPLIFT

    files = {"roc": "roc.png", "ks": "ks.png", "bands": "bands.png"}
    _plot_roc(models, summaries, out_dir / files["roc"])
    _plot_ks(models, summaries, out_dir / files["ks"])
    _plot_bands(summaries, out_dir / files["bands"])
    if any(s.psi is not None for s in summaries):
        files["psi"] = "psi.png"
        _plot_psi(models, summaries, out_dir / files["psi"])
    files["html"] = "report.html"
    files["summary"] = "summary.json"
    summary.files = files
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(_HTML).render(s=summary.model_copy(update={"files": {"psi": "", **files}}))
    (out_dir / files["html"]).write_text(html, "utf-8")
    (out_dir / files["summary"]).write_text(summary.model_dump_json(indent=2) + "\n", "utf-8")
    return summary

