"""secure_stats end to end: exact aggregates, minimum group size, DP noise and budget, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from protocols.he import stats
from protocols.he.budget import PrivacyLedger
from protocols.he.errors import (
    CiphertextSizeMismatch,
    InvalidInput,
    InvalidQuery,
    MaskError,
    MinimumGroupSizeViolation,
    NoPrivacyBudget,
    PrivacyBudgetExceeded,
    QueryMismatch,
)
from protocols.he.masks import MaskGroup, mask_keypair
from protocols.he.stats import StatsQuery

EDGES = (0.0, 1e4, 1e5, 1e6, 1e7)


@pytest.fixture(scope="module")
def columns():
    """Monthly VAT paid (yuan) per enterprise at three departments' datasets, with NULLs."""
    rng = np.random.default_rng(11)
    out = {}
    for name, n in (("tax_sh", 800), ("tax_bj", 500), ("tax_gz", 300)):
        v = rng.lognormal(11, 1.2, n)
        v[rng.random(n) < 0.05] = np.nan
        out[name] = np.clip(v, 0, 9.9e6)
    return out


def query(**kw):
    base = dict(
        job_id="stats-1",
        column="vat_paid",
        statistics=("count", "sum", "mean", "histogram"),
        bin_edges=EDGES,
        min_group_size=5,
    )
    base.update(kw)
    return StatsQuery(**base)


def _exact(columns):
    allv = np.concatenate(list(columns.values()))
    allv = allv[~np.isnan(allv)]
    return allv


def test_exact_statistics_across_departments(pair, columns):
    q = query()
    contribs = [stats.department_contribution(pair.public, q, v, name) for name, v in columns.items()]
    total = stats.sum_contributions(pair.public, contribs)
    res = stats.decrypt_stats(pair.secret, q, total, context=pair.fingerprint)
    allv = _exact(columns)
    assert res.count == allv.size  # integers come back exact
    assert res.sum == pytest.approx(allv.sum(), rel=1e-9)
    assert res.mean == pytest.approx(allv.mean(), rel=1e-9)
    assert res.histogram == np.histogram(allv, bins=np.asarray(EDGES))[0].astype(float).tolist()
    assert res.contributors == sorted(columns)
    assert res.epsilon is None


def test_only_what_was_asked_is_released(pair, columns):
    q = query(statistics=("histogram",))
    assert q.length == 4
    contribs = [stats.department_contribution(pair.public, q, v, n) for n, v in columns.items()]
    res = stats.decrypt_stats(pair.secret, q, stats.sum_contributions(pair.public, contribs))
    assert res.count is None and res.sum is None and res.mean is None
    assert sum(res.histogram) == _exact(columns).size
    with pytest.raises(ValidationError, match="minimum necessary"):
        query(statistics=("count",))  # bin edges without a histogram


def test_small_bin_refused_and_nothing_released(pair, columns):
    q = query(min_group_size=5)
    base = columns["tax_gz"]
    v = np.concatenate([base[(base >= 1e4) & (base < 1e6)][:60], [2e6, 3e6]])  # bin [1e6, 1e7]: 2 rows
    n_big = 2
    with pytest.raises(MinimumGroupSizeViolation) as exc:
        stats.department_contribution(pair.public, q, v, "tax_gz")
    assert exc.value.cells == [f"bin[1e+06, 1e+07]={n_big}"]  # the empty first bin is fine
    v_two_small = np.concatenate([v, [10.0, 20.0]])
    with pytest.raises(MinimumGroupSizeViolation) as exc:
        stats.department_contribution(pair.public, q, v_two_small, "tax_gz")
    assert exc.value.cells == ["bin[0, 10000)=2", "bin[1e+06, 1e+07]=2"]


def test_empty_bins_are_allowed(pair):
    q = query(min_group_size=5)
    v = np.full(20, 5e4)  # every row in one bin, the others empty
    total = stats.sum_contributions(pair.public, [stats.department_contribution(pair.public, q, v, "a")])
    res = stats.decrypt_stats(pair.secret, q, total)
    assert res.histogram == [0.0, 20.0, 0.0, 0.0]


def test_too_few_rows_for_a_count(pair):
    q = query(statistics=("count", "mean"), bin_edges=None)
    with pytest.raises(MinimumGroupSizeViolation, match="rows=3"):
        stats.department_contribution(pair.public, q, [1.0, 2.0, 3.0], "a")


def test_department_policy_stricter_than_query(pair, columns):
    q = query(min_group_size=2, statistics=("count",), bin_edges=None)
    stats.department_contribution(pair.public, q, columns["tax_gz"][:40], "a")
    with pytest.raises(MinimumGroupSizeViolation, match="fewer than 50"):
        stats.department_contribution(pair.public, q, columns["tax_gz"][:40], "a", min_group_size=50)


def test_dp_noise_budget_and_retry(pair, columns, tmp_path):
    ledger = PrivacyLedger(tmp_path / "node.db")
    ledger.set_budget("vat", 1.0)
    q = query(epsilon=0.4, lower=0.0, upper=1e6, job_id="dp-1")
    v = columns["tax_sh"]

    def contrib(charge_id: str) -> bytes:
        rng = stats.noise_rng(b"node-secret", charge_id, "vat")
        return stats.department_contribution(
            pair.public, q, v, "tax_sh", ledger=ledger, dataset_id="vat", charge_id=charge_id, rng=rng
        )

    first = stats.decrypt_stats(pair.secret, q, stats.sum_contributions(pair.public, [contrib("dp-1#1")]))
    assert ledger.spent("vat") == pytest.approx(0.4)
    exact = v[~np.isnan(v)]
    assert first.count != exact.size  # noise is there (continuous Laplace: never exactly 0)
    assert abs(first.count - exact.size) < 200  # scale 1/(0.4/3) = 7.5; 200 is > 25 scales
    assert abs(first.sum - np.clip(exact, 0, 1e6).sum()) < 200 * 1e6 / (0.4 / 3) / 7.5
    # a retried run of the same charge pays nothing more and re-releases the same noise
    again = stats.decrypt_stats(pair.secret, q, stats.sum_contributions(pair.public, [contrib("dp-1#1")]))
    assert ledger.spent("vat") == pytest.approx(0.4)
    assert again.count == pytest.approx(first.count, abs=1e-4)
    contrib("dp-1#2")
    assert ledger.spent("vat") == pytest.approx(0.8)
    with pytest.raises(PrivacyBudgetExceeded, match="remaining ε=0.2"):
        contrib("dp-1#3")
    assert ledger.spent("vat") == pytest.approx(0.8)  # refused: nothing charged


def test_min_group_refusal_costs_no_budget(pair, tmp_path):
    ledger = PrivacyLedger(tmp_path / "node.db")
    ledger.set_budget("vat", 1.0)
    q = query(epsilon=0.5, lower=0.0, upper=1e6)
    with pytest.raises(MinimumGroupSizeViolation):
        stats.department_contribution(
            pair.public,
            q,
            [5e4] * 10 + [2e5],
            "a",
            ledger=ledger,
            dataset_id="vat",
            rng=np.random.default_rng(0),
        )
    assert ledger.spent("vat") == 0.0


def test_dp_needs_a_ledger_and_a_budget(pair, tmp_path):
    q = query(epsilon=0.5, lower=0.0, upper=1e6)
    with pytest.raises(InvalidQuery, match="ledger"):
        stats.department_contribution(pair.public, q, [5e4] * 10, "a")
    ledger = PrivacyLedger(tmp_path / "node.db")
    with pytest.raises(NoPrivacyBudget):
        stats.department_contribution(
            pair.public, q, [5e4] * 10, "a", ledger=ledger, dataset_id="nope", rng=np.random.default_rng(0)
        )


def test_dp_sum_needs_clip_bounds():
    with pytest.raises(ValidationError, match="clip bounds"):
        query(epsilon=1.0)
    with pytest.raises(InvalidQuery):
        stats.parse_query({"job_id": "x", "column": "c", "statistics": ["sum"], "epsilon": 1.0})


@pytest.mark.parametrize(
    "spec",
    [
        {"statistics": ["histogram"], "bin_edges": [1.0]},
        {"statistics": ["histogram"], "bin_edges": [2.0, 1.0]},
        {"statistics": ["histogram"], "bin_edges": [0.0, float("inf")]},
        {"statistics": ["count", "count"]},
        {"statistics": []},
        {"statistics": ["median"]},
        {"statistics": ["sum"], "lower": 1.0},
        {"statistics": ["sum"], "lower": 2.0, "upper": 1.0},
        {"statistics": ["count"], "epsilon": 0.0},
    ],
)
def test_bad_queries(spec):
    with pytest.raises(InvalidQuery):
        stats.parse_query({"job_id": "x", "column": "c", **spec})


def test_bad_values(pair):
    q = query(statistics=("count",), bin_edges=None)
    with pytest.raises(InvalidInput):
        stats.department_contribution(pair.public, q, [1.0, np.inf] * 10, "a")
    with pytest.raises(InvalidInput):
        stats.department_contribution(pair.public, q, [["a"]], "a")


def test_contributions_to_different_queries_are_not_summed(pair, columns):
    a = stats.department_contribution(pair.public, query(), columns["tax_sh"], "a")
    b = stats.department_contribution(pair.public, query(job_id="stats-2"), columns["tax_bj"], "b")
    with pytest.raises(QueryMismatch):
        stats.sum_contributions(pair.public, [a, b])
    with pytest.raises(QueryMismatch):
        stats.decrypt_stats(pair.secret, query(job_id="stats-2"), stats.sum_contributions(pair.public, [a]))


def test_wrongly_sized_contribution(pair):
    q = query(statistics=("count", "sum"), bin_edges=None)
    with pytest.raises(CiphertextSizeMismatch):
        stats.encrypt_contribution(pair.public, q, np.zeros(5), "a")


def test_masked_statistics(pair, columns):
    keys = {n: mask_keypair() for n in columns}
    group = MaskGroup(job_id="stats-1", members={n: k[1].hex() for n, k in keys.items()})
    q = query()
    contribs = [
        stats.department_contribution(pair.public, q, v, n, mask=(group, keys[n][0]))
        for n, v in columns.items()
    ]
    res = stats.decrypt_stats(pair.secret, q, stats.sum_contributions(pair.public, contribs))
    allv = _exact(columns)
    assert res.count == allv.size
    assert res.sum == pytest.approx(allv.sum(), rel=1e-7)
    with pytest.raises(MaskError):
        stats.sum_contributions(pair.public, contribs[:2])
