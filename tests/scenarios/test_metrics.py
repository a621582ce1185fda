"""Credit metrics against hand-computed examples, sklearn and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from scenarios.bank_credit.errors import MetricInputError
from scenarios.bank_credit.metrics import (
    auc,
    ks,
    pd_to_points,
    psi,
    quantile_bands,
    roc_curve,
    score_bands,
    woe_binning,
    woe_transform,
)

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_auc_hand_computed():
    # pairs (bad, good): (0.35,0.1) ✓ (0.35,0.4) ✗ (0.8,0.1) ✓ (0.8,0.4) ✓ → 3/4
    assert auc(Y, S) == pytest.approx(0.75)
    # a tie counts one half: bads {0.5, 0.9}, goods {0.5, 0.2} → (0.5 + 1 + 1 + 1) / 4
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert auc([0, 1], [0.2, 0.1]) == 0.0
    assert auc([1, 0, 1, 0], [3, 3, 3, 3]) == 0.5


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5_000)
    s = np.round(rng.normal(0, 1, 5_000) + 0.7 * y, 1)  # rounded: many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 800)
    s = np.round(rng.random(800) + 0.3 * y, 2)
    ours = roc_curve(y, s)
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(ours.fpr, fpr)
    np.testing.assert_allclose(ours.tpr, tpr)
    np.testing.assert_allclose(ours.thresholds, thr[1:])
    assert np.trapz(ours.tpr, ours.fpr) == pytest.approx(auc(y, s))


def test_ks_hand_computed_with_threshold():
    # threshold 0.8: TPR 1/2, FPR 0 → 0.5 (first maximum); 0.4: 1/2, 1/2; 0.35: 1, 1/2 → 0.5; 0.1: 1, 1
    r = ks(Y, S)
    assert r.ks == pytest.approx(0.5)
    assert r.threshold == 0.8 and r.tpr == 0.5 and r.fpr == 0.0
    r = ks([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7])
    assert r.ks == 1.0 and r.threshold == 0.6


def test_ks_matches_two_sample_statistic():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 3_000)
    s = rng.normal(0, 1, 3_000) + 0.8 * y
    r = ks(y, s)
    assert r.ks == pytest.approx(ks_2samp(s[y == 1], s[y == 0]).statistic, abs=1e-12)
    assert r.tpr - r.fpr == pytest.approx(r.ks)
    assert ((s[y == 1] >= r.threshold).mean()) == pytest.approx(r.tpr)


def test_points_scale():
    # 600 points at odds 50:1 (PD 1/51); +20 points when the odds double, −20 when they halve
    p = pd_to_points([1 / 51, 1 / 101, 1 / 26])
    np.testing.assert_allclose(p, [600, 620, 580], atol=1e-9)
    assert pd_to_points([0.999999])[0] == 300 and pd_to_points([1e-12])[0] == 850
    assert (np.diff(pd_to_points(np.linspace(0.01, 0.9, 50))) < 0).all()  # riskier → fewer points
    with pytest.raises(MetricInputError):
        pd_to_points([1.2])


def test_score_bands_hand_computed():
    y = [1, 0, 0, 1, 0, 0, 0, 0]
    v = [310, 480, 520, 540, 610, 700, 720, 850]
    bands = score_bands(y, v, [300, 500, 600, 850])
    assert [b.count for b in bands] == [2, 2, 4]
    assert [b.bads for b in bands] == [1, 1, 0]
    assert [b.default_rate for b in bands] == [0.5, 0.5, 0.0]
    assert [b.share for b in bands] == [0.25, 0.25, 0.5]
    assert [b.cum_bad_share for b in bands] == [0.5, 1.0, 1.0]
    assert bands[2].upper == 850  # the last band includes its upper edge
    empty = score_bands([0, 1], [310, 320], [300, 400, 500])
    assert empty[1].count == 0 and empty[1].default_rate is None


def test_quantile_bands_are_deciles():
    rng = np.random.default_rng(3)
    pd_ = rng.random(1_000)
    y = (rng.random(1_000) < pd_).astype(int)
    bands = quantile_bands(y, pd_, 10)
    assert len(bands) == 10 and all(b.count == 100 for b in bands)
    rates = [b.default_rate for b in bands]
    assert rates[-1] > rates[0] + 0.5
    assert sum(b.bads for b in bands) == y.sum()


def test_psi_hand_computed():
    expected = [0.1, 0.2, 0.7, 0.9]  # cut at 0.5: shares 1/2, 1/2
    actual = [0.1, 0.6, 0.7, 0.9]  # shares 1/4, 3/4
    r = psi(expected, actual, edges=[0.5])
    want = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert r.psi == pytest.approx(want)
    assert [b.expected_share for b in r.bins] == [0.5, 0.5]
    assert [b.actual_share for b in r.bins] == [0.25, 0.75]
    assert r.verdict == "significant shift"
    assert psi(expected, expected, edges=[0.5]).psi == 0.0


def test_psi_deciles_and_shift_size():
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, 20_000)
    same = psi(base, rng.normal(0, 1, 20_000))
    small = psi(base, rng.normal(0.2, 1, 20_000))
    big = psi(base, rng.normal(0.8, 1, 20_000))
    assert len(same.bins) == 10
    assert all(b.expected_share == pytest.approx(0.1, abs=1e-3) for b in same.bins)
    assert same.psi < 0.01 < small.psi < 0.1 < 0.25 < big.psi
    assert same.verdict == "stable" and big.verdict == "significant shift"
    # an empty bin stays finite
    assert math.isfinite(psi([1, 2, 3, 4], [1, 1, 1, 1], edges=[1.5, 2.5, 3.5]).psi)


def test_woe_iv_hand_computed():
    x = [1, 1, 1, 1, 2, 2, 2, 2]
    y = [0, 0, 0, 1, 0, 1, 1, 1]
    b = woe_binning(x, y, edges=[1.5])
    # bin 1: 3 goods of 4, 1 bad of 4 → WOE ln(0.75/0.25) = ln 3; bin 2: −ln 3; IV = 2 · 0.5 · ln 3
    assert [x.woe for x in b.bins] == pytest.approx([math.log(3), -math.log(3)])
    assert b.iv == pytest.approx(math.log(3))
    assert b.strength == "very strong"
    assert [(x.lower, x.upper) for x in b.bins] == [(None, 1.5), (1.5, None)]
    # right-closed bins: 1.5 belongs to the first bin
    np.testing.assert_allclose(woe_transform(b, [0.0, 1.5, 1.6, 9.0]), [math.log(3), math.log(3), -math.log(3),
                                                                        -math.log(3)])


def test_woe_keeps_zero_inflated_and_binary_features_apart():
    x = np.array([0] * 90 + [1] * 6 + [3] * 4, dtype=float)  # mostly zero counts
    y = np.array([0] * 85 + [1] * 5 + [0, 1] * 3 + [1] * 4)
    b = woe_binning(x, y, n_bins=5)
    assert [(x.lower, x.upper, x.count) for x in b.bins] == [(None, 0.0, 90), (0.0, None, 10)]
    flag = woe_binning(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0, 0, 1, 1]), n_bins=5)
    assert [x.count for x in flag.bins] == [3, 1] and flag.iv > 0


def test_woe_missing_bin_and_smoothing():
    x = [1.0, 1.0, 2.0, 2.0, np.nan, np.nan]
    y = [0, 0, 0, 1, 1, 1]
    b = woe_binning(x, y, edges=[1.5])
    first, second, missing = b.bins
    assert missing.missing and missing.count == 2 and missing.bads == 2
    # bin 1 has no bads: counts become 2.5 goods, 0.5 bads of totals 3 goods, 3 bads
    assert first.woe == pytest.approx(math.log((2.5 / 3) / (0.5 / 3)))
    assert second.woe == pytest.approx(math.log((1 / 3) / (1 / 3)))
    assert missing.woe == pytest.approx(math.log((0.5 / 3) / (2.5 / 3)))
    assert woe_transform(b, [np.nan])[0] == pytest.approx(missing.woe)
    assert b.iv == pytest.approx(sum(x.iv for x in b.bins))


def test_woe_quantile_bins_rank_a_real_signal():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 5_000)
    y = (rng.random(5_000) < 1 / (1 + np.exp(-(-2 + 1.5 * x)))).astype(int)
    b = woe_binning(x, y, n_bins=5)
    assert len(b.bins) == 5
    assert all(b1.woe > b2.woe for b1, b2 in zip(b.bins[:-1], b.bins[1:], strict=True))  # higher x, more bads, lower WOE
    assert woe_binning(rng.normal(0, 1, 5_000), y, n_bins=5).iv < 0.02


@pytest.mark.parametrize(
    "call",
    [
        lambda: auc([0, 1, 1], [0.1, 0.2]),  # length mismatch
        lambda: auc([0, 2, 1], [0.1, 0.2, 0.3]),  # not binary
        lambda: auc([1, 1, 1], [0.1, 0.2, 0.3]),  # one class
        lambda: auc([0, 1], [0.1, float("nan")]),  # NaN score
        lambda: auc([], []),  # empty
        lambda: ks([0, 0], [0.1, 0.2]),
        lambda: score_bands([0, 1], [300, 900], [300, 850]),  # outside the edges
        lambda: score_bands([0, 1], [300, 400], [500, 300]),  # bad edges
        lambda: psi([], [1.0]),
        lambda: psi([1.0, 2.0], [1.0], edges=[2.0, 1.0]),
        lambda: woe_binning([1.0, 2.0, 3.0], [0, 1]),
        lambda: woe_binning([1.0, 2.0], [0, 0]),
    ],
)
def test_bad_metric_input_is_a_named_error(call):
    with pytest.raises(MetricInputError):
        call()
