"""The federated path's plumbing without processes: member preparation, job spec, result parsing, config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scenarios.bank_credit.baselines import holdout_mask, joined_frame
from scenarios.bank_credit.demo import (
    DEFAULT_CONFIG,
    DEFAULT_JOB,
    DemoConfigError,
    load_demo_config,
    resolve_job_template,
)
from scenarios.bank_credit.federated import (
    DEFAULT_DEPARTMENTS,
    ResultMismatchError,
    ScenarioRunError,
    calibrate,
    federated_scores,
    joined_rows,
    monitoring_blocks,
    plaintext_comparators,
    prepare_members,
    training_job_spec,
    white_list,
)
from scenarios.bank_credit.generator import generate
from scenarios.bank_credit.schema import KEY, LABEL


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    data = generate(4000, seed=5)
    prep = prepare_members(data, root / "prepared")
    return data, prep, joined_rows(prep)


def test_prepared_csvs_are_numeric_complete_and_graded(small):
    data, prep, _ = small
    assert prep.parties == ["bank_a", *DEFAULT_DEPARTMENTS]
    for m, p in prep.members.items():
        frame = pd.read_csv(p.csv_path, dtype={KEY: str})
        assert list(frame.columns) == [KEY, *p.features] + ([LABEL] if m == "bank_a" else [])
        assert len(frame) == len(data.table(m)) == p.rows
        x = frame[p.features].to_numpy()
        assert np.isfinite(x).all() and np.abs(x).max() <= 5.0 + 1e-9  # imputed, standardised, clipped
        assert p.columns[KEY]["grade"] == 1
        for f in p.features:  # every derived column carries its source column's grade
            src = next(ff.name for ff in p.preprocessor.features if f in [o.replace(".", "_").replace("=", "_eq_").lower()
                                                                        for o in ff.outputs])
            assert p.columns[f]["grade"] == data.schemas[m].column(src).sensitivity
    assert "tax_tax_credit_grade" in prep.members["tax"].features
    assert prep.members["bank_a"].has_label and not prep.members["tax"].has_label


def test_joined_rows_are_the_psi_intersection_and_the_split_is_the_baselines(small):
    data, prep, rows = small
    expected = joined_frame(data, "bank_a", list(DEFAULT_DEPARTMENTS), "inner")["bank_a"]
    assert list(rows.keys) == list(expected[KEY])
    assert np.array_equal(rows.y, expected[LABEL].to_numpy())
    assert np.array_equal(rows.test, holdout_mask(expected[KEY]))
    assert 0.2 < rows.test.mean() < 0.4


def test_comparators_show_uplift_and_monitoring_scores(small):
    data, prep, rows = small
    bank_only, central = plaintext_comparators(prep, rows, "holdout")
    assert central.auc_test > bank_only.auc_test + 0.03
    mon = monitoring_blocks(prep, data, rows.keys)
    s = central.scores(rows, "centralized", mon)
    assert s.score_monitoring is not None and len(s.score_monitoring) == len(rows.keys)
    assert np.all((s.score_monitoring >= 0) & (s.score_monitoring <= 1))


def _preds(rows, score, **extra) -> str:
    frame = pd.DataFrame({KEY: rows.keys, "score": score, LABEL: rows.y, **extra})
    return frame.sample(frac=1.0, random_state=1).to_csv(index=False)  # order must not matter


def test_federated_scores_align_calibrate_and_keep_the_ranking(small):
    _, prep, rows = small
    _, central = plaintext_comparators(prep, rows, "in-sample")
    squashed = 0.45 + 0.1 * central.score  # well ranked, badly scaled (what a few SS-LR epochs give)
    fed = federated_scores(_preds(rows, squashed), rows)
    assert fed.evaluation == "in-sample"
    assert fed.auc_test == pytest.approx(central.auc_test, abs=1e-9)
    assert abs(fed.score.mean() - rows.y.mean()) < 0.01  # calibrated to the bank's default rate
    split = np.where(rows.test, "test", "train")
    assert federated_scores(_preds(rows, squashed, split=split), rows).evaluation == "holdout"


def test_federated_scores_named_errors(small):
    _, _, rows = small
    good = np.full(len(rows.keys), 0.1) + 0.01 * rows.y
    with pytest.raises(ResultMismatchError, match="no 'score' column"):
        federated_scores(pd.DataFrame({KEY: rows.keys}).to_csv(index=False), rows)
    with pytest.raises(ResultMismatchError, match="keys differ"):
        federated_scores(_preds(rows, good).replace(rows.keys[0], "91330100MA00000000"), rows)
    wrong = pd.DataFrame({KEY: rows.keys, "score": good, LABEL: 1 - rows.y}).to_csv(index=False)
    with pytest.raises(ResultMismatchError, match="labels"):
        federated_scores(wrong, rows)
    with pytest.raises(ResultMismatchError, match="split differs"):
        federated_scores(_preds(rows, good, split=np.where(rows.test, "train", "test")), rows)
    with pytest.raises(ResultMismatchError, match="not probabilities"):
        federated_scores(_preds(rows, good * 20), rows)
    with pytest.raises(ResultMismatchError, match="backwards"):
        calibrate(1 - good, rows.y, np.ones(len(good), dtype=bool))
    with pytest.raises(ResultMismatchError, match="not a CSV"):
        federated_scores(b"", rows)


def test_white_list_is_the_low_pd_applicants(small):
    _, _, rows = small
    score = np.linspace(0.0, 0.2, len(rows.keys))
    wl = white_list(rows, score, 0.05)
    assert len(wl) == int((score <= 0.05).sum()) and wl["pd"].is_monotonic_increasing


def test_prepare_refuses_unknown_members(tmp_path):
    data = generate(300, seed=1)
    with pytest.raises(ScenarioRunError, match="departments"):
        prepare_members(data, tmp_path, departments=["tax", "weather"])
    with pytest.raises(ScenarioRunError, match="unknown bank"):
        prepare_members(data, tmp_path, bank="bank_z")


def test_job_spec_and_template_agree_and_validate(small, tmp_path):
    from coordinator.spec import parse_spec

    _, prep, rows = small
    spec = parse_spec(training_job_spec(prep, params={"epochs": 3}))
    assert spec.members == prep.parties and spec.label.column == LABEL
    catalog = [{"member": m, "dataset": p.dataset,
                "columns": [{"name": c} for c in [KEY, *p.features] + ([LABEL] if p.has_label else [])]}
               for m, p in prep.members.items()]
    resolved = parse_spec(resolve_job_template(DEFAULT_JOB, catalog, len(rows.keys), 0.3))
    assert {i.member: i.columns for i in resolved.inputs} == {i.member: i.columns for i in spec.inputs}
    assert resolved.model.params["epochs"] >= 5
    with pytest.raises(DemoConfigError, match="not in the federation's catalog"):
        resolve_job_template(DEFAULT_JOB, catalog[:2], 100, 0.3)


def test_demo_config_and_its_named_errors(tmp_path):
    cfg = load_demo_config(DEFAULT_CONFIG)
    assert cfg.bank == "bank_a" and cfg.departments == list(DEFAULT_DEPARTMENTS)
    assert {m.name for m in cfg.members if m.auto_approve} == {"bank_a", "social", "power"}
    fcfg = cfg.federation_config(tmp_path / "fed")
    assert [m.name for m in fcfg.members] == ["bank_a", *DEFAULT_DEPARTMENTS] and not fcfg.members[0].datasets
    bad = tmp_path / "bad.yaml"
    bad.write_text("members: [{name: bank_a, role: bank}, {name: tax, role: department}]\nbank: tax\n")
    with pytest.raises(DemoConfigError, match="not a member with role bank"):
        load_demo_config(bad)
    bad.write_text("members: [{name: bank_a, role: bank, auto_approve: maybe}]\n")
    with pytest.raises(DemoConfigError, match="members"):
        load_demo_config(bad)
    bad.write_text("members: [{name: bank_a, role: bank}, {name: bank_b, role: bank}]\n")
    with pytest.raises(DemoConfigError, match="at least one department"):
        load_demo_config(bad)
    bad.write_text("members: [\n")
    with pytest.raises(DemoConfigError, match="not valid YAML"):
        load_demo_config(bad)
    with pytest.raises(DemoConfigError, match="cannot read"):
        load_demo_config(tmp_path / "missing.yaml")


def test_run_stage_timeline_groups_the_label_holders_task_stages():
    from scenarios.bank_credit.demo import Clock, DemoResult, _record_run_stages

    res = DemoResult(n_enterprises=1, seed=1, out_dir=".", bank="bank_a", departments=["tax"])
    timeline = [(10.0, "extract"), (11.0, "connect"), (12.0, "validate:done"), (15.0, "psi:start"),
                (16.0, "psi:round"), (20.0, "train:start"), (30.0, "predict:start"), (31.0, "predict:done"),
                (32.0, "leave:done"), (33.0, "done")]
    _record_run_stages(Clock(res), timeline, t_auth=9.0, t_done=34.0)
    got = {s.stage: s.seconds for s in res.stages}
    assert got == {"run_setup": 2.0, "engine_start": 4.0, "psi": 5.0, "train": 10.0, "predict": 1.0,
                   "receipts": 3.0}
    assert res.seconds("train") == 10.0 and res.seconds("nothing") == 0.0


# ---------------------------------------------------------------- in-loan scoring and post-loan monitoring


def test_monitoring_snapshot_is_prepared_with_the_training_transform(small, tmp_path):
    from scenarios.bank_credit.federated import inner_keys, prepare_monitoring

    data, prep, rows = small
    mon = prepare_monitoring(data, prep, tmp_path / "mon")
    assert mon.parties == prep.parties
    for m, p in mon.members.items():
        assert p.dataset == f"{m}_2025_monitoring" and not p.has_label  # no outcome a year on
        assert p.features == prep.members[m].features
        frame = pd.read_csv(p.csv_path, dtype={KEY: str})
        assert LABEL not in frame.columns
    keys = inner_keys(mon)
    blocks = monitoring_blocks(prep, data, keys)  # the same transform applied by the evaluator
    bank = pd.read_csv(mon.members["bank_a"].csv_path, dtype={KEY: str}).set_index(KEY).loc[keys]
    assert np.allclose(bank[prep.members["bank_a"].features].to_numpy(), blocks["bank_a"], atol=1e-6)
    assert len(keys) > 0.5 * len(rows.keys)


def test_predict_job_spec_reuses_the_training_columns_without_the_label(small, tmp_path):
    from coordinator.spec import parse_spec
    from scenarios.bank_credit.federated import predict_job_spec, prepare_monitoring

    data, prep, _ = small
    mon = prepare_monitoring(data, prep, tmp_path / "mon")
    train = training_job_spec(prep)
    spec = predict_job_spec(train, "job-t1", mon, purpose="in-loan scoring of current borrowers")
    parsed = parse_spec(spec)
    assert parsed.kind == "vertical_predict" and parsed.model_from == "job-t1"
    assert parsed.label is not None and parsed.label.column is None
    assert parsed.label.dataset == "bank_a_2025_monitoring"
    assert [i.columns for i in parsed.inputs] == [i["columns"] for i in train["inputs"]]
    assert [i.dataset for i in parsed.inputs] == [mon.members[m].dataset for m in mon.parties]
    with pytest.raises(ScenarioRunError, match="no monitoring dataset"):
        predict_job_spec({**train, "inputs": [*train["inputs"], {"member": "housing", "dataset": "h",
                                                                  "columns": []}]}, "job-t1", mon, purpose="x")


def test_in_loan_scores_use_the_training_calibration_and_name_mismatches(small):
    from scenarios.bank_credit.federated import Calibration, scored_population

    _, _, rows = small
    keys = rows.keys[:200]
    raw = np.linspace(0.3, 0.7, 200)
    cal = Calibration(a=-2.0, b=3.0)
    csv = pd.DataFrame({KEY: keys, "score": raw}).sample(frac=1.0, random_state=2).to_csv(index=False)
    pop = scored_population(csv, cal, keys)
    assert list(pop.keys) == list(keys)
    expected = 1 / (1 + np.exp(-(-2.0 + 3.0 * np.log(raw / (1 - raw)))))
    assert np.allclose(pop.pd, expected) and np.all(np.diff(pop.pd) > 0)
    with pytest.raises(ResultMismatchError, match="cover 200 keys"):
        scored_population(csv, cal, rows.keys[:201])
    with pytest.raises(ResultMismatchError, match="no 'score' column"):
        scored_population(pd.DataFrame({KEY: keys}).to_csv(index=False), cal, keys)
    with pytest.raises(ResultMismatchError, match="not probabilities"):
        scored_population(pd.DataFrame({KEY: keys, "score": raw * 3}).to_csv(index=False), cal, keys)


def test_post_loan_watch_list_flags_high_and_doubled_pds():
    from scenarios.bank_credit.federated import ScoredPopulation, post_loan_summary, post_loan_watch_list

    keys = np.array([f"k{i}" for i in range(6)])
    now = np.array([0.30, 0.15, 0.16, 0.04, 0.02, 0.01])  # mean 0.113
    then = pd.Series([0.25, 0.20, 0.05, 0.03, 0.01, 0.02], index=keys)
    pop = ScoredPopulation(keys=keys, raw=now, pd=now)
    watch = post_loan_watch_list(pop, then, min_pd=0.2)
    # k0 is above the limit; k2 more than doubled and is above the mean; k4 doubled but stays low
    assert list(watch[KEY]) == ["k0", "k2"]
    assert list(watch["reason"]) == ["pd_above_limit", "pd_doubled"]
    assert list(watch["pd_origination"]) == [0.25, 0.05]
    y = pd.Series([1, 0, 1, 0, 0, 0], index=keys)
    s = post_loan_summary(pop, watch, then, 0.2, outcomes=y)
    assert (s.scored, s.high_risk, s.deteriorated) == (6, 2, 1)
    assert s.default_rate_high_risk == 1.0 and s.default_rate_rest == 0.0 and s.outcome_auc == 1.0
    assert s.mean_pd_now == pytest.approx(now.mean()) and s.mean_pd_origination == pytest.approx(then.mean())
    with pytest.raises(ResultMismatchError, match="no recorded outcome"):
        post_loan_summary(pop, watch, then, 0.2, outcomes=y.iloc[:5])
