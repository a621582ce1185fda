"""Preprocessing (the steps a federated party mirrors), the key-hash split, joins and the plaintext models."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scenarios.bank_credit.baselines import (
    CLIP_Z,
    FeatureSpec,
    Preprocessor,
    feature_specs,
    fit_lr,
    fit_preprocessor,
    holdout_mask,
    joined_frame,
    run_baselines,
    transform,
)
from scenarios.bank_credit.errors import PreprocessingError
from scenarios.bank_credit.metrics import auc
from scenarios.bank_credit.schema import DEPARTMENTS, KEY, LABEL, department_schema

SPECS = [
    FeatureSpec(name="amount", kind="numeric", transform="log1p"),
    FeatureSpec(name="grade", kind="ordinal", levels=["D", "C", "B", "A"]),
    FeatureSpec(name="kind", kind="onehot", levels=["x", "y", "z"]),
    FeatureSpec(name="flag", kind="numeric"),
]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "amount": [0.0, math.e - 1, np.nan, math.e**2 - 1],  # log1p → 0, 1, ?, 2
        "grade": ["D", "A", None, "B"],  # codes 0, 3, ?, 2
        "kind": ["x", "y", "z", None],
        "flag": [1, 0, 1, 0],
    })


def test_preprocessing_by_hand():
    pre = fit_preprocessor("m", _frame(), SPECS)
    amount, grade, kind, flag = pre.features
    assert amount.median == pytest.approx(1.0)  # median of log1p values 0, 1, 2
    assert amount.mean == pytest.approx(1.0)  # imputed: 0, 1, 1, 2
    assert amount.std == pytest.approx(math.sqrt(0.5))
    assert amount.missing_indicator and not flag.missing_indicator
    assert grade.median == 2.0 and grade.mean == pytest.approx(7 / 4)
    assert pre.output_names == ["m.amount", "m.amount__missing", "m.grade", "m.grade__missing", "m.kind=y",
                                "m.kind=z", "m.kind__missing", "m.flag"]
    x = transform(pre, _frame())
    assert x.shape == (4, 8)
    np.testing.assert_allclose(x[:, 0], (np.array([0, 1, 1, 2]) - 1) / math.sqrt(0.5))
    np.testing.assert_allclose(x[:, 1], [0, 0, 1, 0])
    np.testing.assert_allclose(x[:, 4:7], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(x[:, 7], [1, -1, 1, -1])
    # new rows use the training parameters; outliers are clipped
    new = pd.DataFrame({"amount": [1e30], "grade": ["C"], "kind": ["z"], "flag": [1]})
    z = transform(pre, new)
    assert z[0, 0] == CLIP_Z and z[0, 2] == pytest.approx((1 - 7 / 4) / grade.std)
    # the fitted preprocessor survives JSON (a party can publish it)
    assert Preprocessor.model_validate_json(pre.model_dump_json()) == pre


def test_preprocessing_errors_are_named():
    with pytest.raises(PreprocessingError, match="unknown levels"):
        transform(fit_preprocessor("m", _frame(), SPECS),
                  pd.DataFrame({"amount": [1.0], "grade": ["E"], "kind": ["x"], "flag": [0]}))
    with pytest.raises(PreprocessingError, match="unknown levels"):
        transform(fit_preprocessor("m", _frame(), SPECS),
                  pd.DataFrame({"amount": [1.0], "grade": ["A"], "kind": ["w"], "flag": [0]}))
    with pytest.raises(PreprocessingError, match="not in the frame"):
        fit_preprocessor("m", _frame().drop(columns="flag"), SPECS)
    with pytest.raises(PreprocessingError, match="no training rows"):
        fit_preprocessor("m", _frame().iloc[:0], SPECS)
    with pytest.raises(PreprocessingError, match="not numeric"):
        fit_preprocessor("m", _frame().assign(flag=["a", "b", "c", "d"]), SPECS)
    with pytest.raises(PreprocessingError, match="role 'attribute'"):
        feature_specs(department_schema("market"), ["legal_rep_id"])
    with pytest.raises(PreprocessingError, match="publishes no column"):
        feature_specs(department_schema("tax"), ["salary"])


def test_feature_specs_follow_the_schema():
    specs = {s.name: s for s in feature_specs(department_schema("tax"))}
    assert specs["vat_paid_12m"].transform == "log1p"
    assert specs["tax_credit_grade"].kind == "ordinal" and specs["tax_credit_grade"].levels == ["D", "C", "M", "B", "A"]
    market = [s.name for s in feature_specs(department_schema("market"))]
    assert "legal_rep_id" not in market and "district_code" not in market and KEY not in market


def test_split_is_a_pure_function_of_the_key():
    keys = [f"K{i}" for i in range(10_000)]
    m = holdout_mask(keys, 0.3)
    assert abs(m.mean() - 0.3) < 0.02
    assert (holdout_mask(list(reversed(keys)), 0.3) == m[::-1]).all()  # order does not matter
    assert (holdout_mask(keys[:100], 0.3) == m[:100]).all()  # nor which other keys are present
    assert (holdout_mask(keys, 0.3, salt="other") != m).any()
    with pytest.raises(PreprocessingError):
        holdout_mask(keys, 1.5)


def test_joins(fed20k):
    inner = joined_frame(fed20k, "bank_a", DEPARTMENTS, "inner")
    left = joined_frame(fed20k, "bank_a", DEPARTMENTS, "left")
    assert len(left["bank_a"]) == len(fed20k.table("bank_a"))
    assert 0.4 * len(left["bank_a"]) < len(inner["bank_a"]) < 0.8 * len(left["bank_a"])
    for m in DEPARTMENTS:
        assert (inner[m][KEY] == inner["bank_a"][KEY]).all()
        assert inner[m][KEY].isin(fed20k.table(m)[KEY]).all()
    # a left join leaves the housing columns empty for customers the fund does not know
    unknown = ~left["bank_a"][KEY].isin(fed20k.table("housing")[KEY])
    assert unknown.any() and left["housing"].loc[unknown, "hf_contributors"].isna().all()
    with pytest.raises(PreprocessingError):
        joined_frame(fed20k, "bank_z")
    with pytest.raises(PreprocessingError):
        joined_frame(fed20k, "bank_a", ["bank_a"])


@pytest.mark.parametrize("how", ["inner", "left"])
def test_government_data_lifts_the_model(fed20k, how):
    res = run_baselines(fed20k, "bank_a", how=how)
    bank, cent = res.bank_only, res.centralized
    assert bank.n_test == cent.n_test and (bank.y_test == cent.y_test).all()  # same rows
    assert 0.65 < bank.auc_test < 0.82
    assert res.uplift >= 0.05, (bank.auc_test, cent.auc_test)
    assert cent.ks_test > bank.ks_test + 0.05
    # centralized LR gets close to, but not beyond, the hidden model on the same rows
    loans = fed20k.truth_table("loans")
    truth = loans[loans["bank"] == "bank_a"].set_index(KEY)
    frames = joined_frame(fed20k, "bank_a", DEPARTMENTS, how)
    test = holdout_mask(frames["bank_a"][KEY])
    oracle = auc(truth.loc[frames["bank_a"][KEY][test], LABEL].to_numpy(),
                 truth.loc[frames["bank_a"][KEY][test], "pd_true"].to_numpy())
    assert cent.auc_test < oracle + 0.01
    assert cent.auc_test > oracle - 0.06
    # model features: bank-only uses only the bank's columns
    assert all(f.startswith("bank_a.") for f in bank.feature_names)
    assert {f.split(".")[0] for f in cent.feature_names} == {"bank_a", *DEPARTMENTS}
    # monitoring scores exist for the same customers one year later and are riskier on average
    assert cent.score_monitoring is not None and len(cent.score_monitoring) == len(frames["bank_a"])
    assert cent.score_monitoring.mean() > cent.score_train.mean()


def test_model_predict_reproduces_its_scores(fed20k):
    run = fit_lr("t", fed20k, "bank_b", ["tax", "court"], rows_from=["tax", "court"], monitoring=False)
    frames = joined_frame(fed20k, "bank_b", ["tax", "court"])
    test = holdout_mask(frames["bank_b"][KEY])
    np.testing.assert_allclose(run.predict(frames)[test], run.score_test)
    assert run.score_monitoring is None
    assert any(n.startswith("court.dishonest_debtor_flag") for n in run.feature_names)
    w = dict(zip(run.feature_names, run.coef, strict=True))
    assert w["court.dishonest_debtor_flag"] > 0  # the dishonest-debtor flag raises the PD


def test_information_values_rank_the_planted_signal(fed20k):
    from scenarios.bank_credit.baselines import information_values

    frames = joined_frame(fed20k, "bank_a", DEPARTMENTS, "inner")
    y = frames["bank_a"][LABEL].to_numpy()
    ivs = information_values(frames, fed20k.schemas, ["bank_a", *DEPARTMENTS], y,
                             rows=~holdout_mask(frames["bank_a"][KEY]))
    by = {f"{f.member}.{f.column}": f for f in ivs}
    assert len(by) == sum(len(fed20k.schemas[m].feature_columns) for m in ["bank_a", *DEPARTMENTS])
    assert [f.iv for f in ivs] == sorted((f.iv for f in ivs), reverse=True)
    for strong in ("court.dishonest_debtor_flag", "power.elec_trend_6m", "social.insured_trend_12m",
                   "tax.tax_arrears_amount", "bank_a.past_overdue_24m", "bank_a.credit_utilisation"):
        assert by[strong].iv > 0.2, (strong, by[strong].iv)
    assert by["market.individual_business"].iv < 0.02  # carries no planted signal
    assert by["court.dishonest_debtor_flag"].bins == 2 and by["market.industry_code"].bins == 8
