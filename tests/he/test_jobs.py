"""HE job specs: validation with named errors, and the release check on totals."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.he import score, stats
from protocols.he.errors import InvalidQuery, MissingContribution, TooFewDepartments
from protocols.he.jobs import HeScoreJobSpec, SecureStatsJobSpec, check_total, parse_job


def _score_spec(**kw):
    base = {
        "job_id": "s1",
        "requester": "bank",
        "departments": {"tax": ["vat"], "power": ["kwh", "trend"]},
        "n_rows": 20,
    }
    base.update(kw)
    return base


def test_parse_he_score():
    spec = parse_job("he_score", _score_spec())
    assert isinstance(spec, HeScoreJobSpec)
    assert spec.contributors == ["bank", "power", "tax"]
    assert spec.params.poly_modulus_degree == 8192


def test_one_department_is_refused_unless_policy_allows():
    with pytest.raises(TooFewDepartments, match="weighted score"):
        parse_job("he_score", _score_spec(departments={"tax": ["vat"]}))
    assert parse_job("he_score", _score_spec(departments={"tax": ["vat"]}, min_departments=1))


@pytest.mark.parametrize(
    "bad",
    [
        {"departments": {"bank": ["x"], "tax": ["y"]}},
        {"departments": {"tax": [], "power": ["y"]}},
        {"departments": {"tax": ["a", "a"], "power": ["y"]}},
        {"n_rows": 0},
        {"surprise": 1},
    ],
)
def test_bad_score_specs(bad):
    with pytest.raises(InvalidQuery):
        parse_job("he_score", _score_spec(**bad))


def test_unknown_kind():
    with pytest.raises(InvalidQuery, match="unknown"):
        parse_job("he_magic", {})


def test_check_total_score(pair):
    spec = parse_job("he_score", _score_spec(n_rows=20))
    parts = [score.own_partial(pair.public, np.ones(20), p) for p in ("bank", "tax", "power")]
    check_total(spec, score.sum_partials(pair.public, parts))
    with pytest.raises(MissingContribution, match="needs"):
        check_total(spec, score.sum_partials(pair.public, parts[:2]))
    other = parse_job("he_score", _score_spec(n_rows=21))
    with pytest.raises(MissingContribution, match="rows"):
        check_total(other, score.sum_partials(pair.public, parts))


def test_secure_stats_spec_and_total(pair):
    q = {"job_id": "st", "column": "vat", "statistics": ["count"], "min_group_size": 2}
    spec = parse_job(
        "secure_stats",
        {"job_id": "st", "requester": "bank", "departments": {"a": "d1", "b": "d2"}, "query": q},
    )
    assert isinstance(spec, SecureStatsJobSpec)
    parts = [stats.department_contribution(pair.public, spec.query, np.ones(5), p) for p in ("a", "b")]
    check_total(spec, stats.sum_contributions(pair.public, parts))
    with pytest.raises(MissingContribution):
        check_total(spec, stats.sum_contributions(pair.public, parts[:1]))
    with pytest.raises(InvalidQuery, match="job_id"):
        parse_job(
            "secure_stats",
            {"job_id": "zz", "requester": "bank", "departments": {"a": "d1", "b": "d2"}, "query": q},
        )
