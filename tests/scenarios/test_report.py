"""The report: files written, numbers consistent with the metrics, targets and bad input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from scenarios.bank_credit.baselines import run_baselines
from scenarios.bank_credit.errors import ReportInputError
from scenarios.bank_credit.metrics import auc, ks
from scenarios.bank_credit.report import ModelScores, ReportSummary, build_report


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def baselines(fed20k):
    return run_baselines(fed20k, "bank_a")


def test_report_writes_plots_html_and_summary(baselines, tmp_path):
    bank = baselines.bank_only.scores("bank_only")
    cent = baselines.centralized.scores("centralized")
    # a third model whose scores are the centralized ones, slightly perturbed, plays the federated role
    rng = np.random.default_rng(0)
    fed = ModelScores(name="federated SS-LR", role="federated", y_test=cent.y_test,
                      score_test=np.clip(cent.score_test * np.exp(rng.normal(0, 0.05, len(cent.score_test))), 0, 1),
                      score_train=cent.score_train, score_monitoring=cent.score_monitoring)
    s = build_report([fed, bank, cent], tmp_path / "r", title="test report", notes=["note <b>escaped</b>"])

    for name in ("roc.png", "ks.png", "bands.png", "psi.png"):
        path = tmp_path / "r" / name
        assert path.stat().st_size > 15_000, name
        w, h = _png_size(path)
        assert w >= 500 and h >= 400, name
    html = (tmp_path / "r" / "report.html").read_text()
    for name in ("roc.png", "ks.png", "bands.png", "psi.png", "federated SS-LR", "bank-only LR", "centralized LR"):
        assert name in html
    assert f"{s.model('centralized LR').auc:.4f}" in html
    assert "note &lt;b&gt;escaped&lt;/b&gt;" in html
    again = ReportSummary.model_validate_json((tmp_path / "r" / "summary.json").read_text())
    assert again == s

    m = s.model("bank-only LR")
    assert m.auc == pytest.approx(auc(bank.y_test, bank.score_test))
    assert m.ks == pytest.approx(ks(bank.y_test, bank.score_test).ks)
    assert sum(b.count for b in m.bands) == m.n_test == len(bank.y_test)
    assert sum(b.bads for b in m.bands) == m.bads_test == int(bank.y_test.sum())
    c = s.model("centralized LR")
    assert c.psi is not None and c.psi > 0.05 and c.n_monitoring == len(cent.score_monitoring)
    assert s.centralized_uplift == pytest.approx(c.auc - m.auc)
    assert s.federated_uplift == pytest.approx(s.model("federated SS-LR").auc - m.auc)
    assert abs(s.federated_auc_gap) < 0.01
    assert all(s.targets.values()) and len(s.targets) == 2
    # the centralized model's low-points bands default far more often than its high-points bands
    rates = [b.default_rate for b in c.bands if b.count >= 50]
    assert rates[0] > 5 * rates[-1]


def test_targets_can_be_missed(baselines, tmp_path):
    bank = baselines.bank_only.scores("bank_only")
    cent = baselines.centralized.scores("centralized")
    weak = bank.model_copy(update={"name": "weak federated", "role": "federated"})
    s = build_report([weak, bank, cent], tmp_path / "r2")
    assert s.targets and not any(s.targets.values())
    assert "not met" in (tmp_path / "r2" / "report.html").read_text()
    assert s.federated_auc_gap == pytest.approx(s.model("centralized LR").auc - s.model("bank-only LR").auc)
    assert (tmp_path / "r2" / "psi.png").exists() and s.model("weak federated").psi is not None


def test_report_without_monitoring_has_no_psi(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    m = ModelScores(name="only", y_test=y, score_test=np.clip(0.3 * y + 0.5 * rng.random(400), 0, 1))
    s = build_report([m], tmp_path / "r3")
    assert s.model("only").psi is None and "psi" not in s.files
    assert not (tmp_path / "r3" / "psi.png").exists()
    assert json.loads((tmp_path / "r3" / "summary.json").read_text())["targets"] == {}


def _m(name="a", role="other", n=10, **kw) -> ModelScores:
    y = np.array([0, 1] * (n // 2))
    return ModelScores(name=name, role=role, y_test=y, score_test=np.linspace(0.01, 0.9, n), **kw)


@pytest.mark.parametrize(
    "models",
    [
        [],
        [_m("a"), _m("a")],
        [_m("a", "federated"), _m("b", "federated")],
        [ModelScores(name="a", y_test=np.array([0, 1, 0]), score_test=np.array([0.1, 0.2]))],
        [ModelScores(name="a", y_test=np.array([0, 1]), score_test=np.array([0.1, 1.2]))],
        [_m("a", score_train=np.array([0.1, 0.2]))],
    ],
)
def test_bad_report_input_is_refused(models, tmp_path):
    with pytest.raises(ReportInputError):
        build_report(models, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_unusable_labels_are_refused_before_anything_is_written(tmp_path):
    from scenarios.bank_credit.errors import MetricInputError

    one_class = ModelScores(name="a", y_test=np.zeros(5, dtype=int), score_test=np.full(5, 0.1))
    with pytest.raises(MetricInputError, match="both goods and bads"):
        build_report([one_class], tmp_path / "none")
    assert not (tmp_path / "none").exists()
