"""SS-LR on WOE-binned features and its points scorecard (``ModelParams.woe_bins``).

The fast tests check the parameters, the scorecard formula and the substitution (against
SecretFlow's own ``apply_binning_rules``); the slow ones start real party processes and check
every WOE value, the AUC, the points and a later scoring run against what is computed here in
the clear.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from protocols.secretflow.runner import run_vertical_job
from protocols.secretflow.spec import ModelParams, ModelPart, PartySpec, Scorecard, VerticalJobSpec
from protocols.secretflow.synthetic import make_vertical_data
from protocols.secretflow.woe import (
    WoeRulesError,
    bin_index,
    check_rules,
    points_table,
    row_points,
    substitute,
)

from .test_sf_models import fresh_population, predict_spec

KEY = "uscc"

NUMERIC = {"name": "a", "type": "numeric", "split_points": [1.0, 2.5, 4.0], "woe": [-1.0, -0.2, 0.3, 1.1]}
CATEGORICAL = {"name": "b", "type": "string", "categories": ["0.0", "1.0"], "woe": [-0.4, 0.9]}
RULES = {"features": [NUMERIC, CATEGORICAL]}


# ---------------------------------------------------------------- parameters and formula


def test_woe_params_and_their_named_errors(tmp_path):
    m = ModelParams(woe_bins=8)
    assert m.sig_type == "sr" and m.scorecard == Scorecard(base_points=600, base_odds=50, pdo=20)
    assert ModelParams.model_validate_json(m.model_dump_json()) == m  # what a node hands its party
    assert ModelParams().scorecard is None
    # the coordinator validates a job's params dict this way
    p = ModelParams.model_validate(
        {"woe_bins": 10, "woe_device": "heu", "score_pdo": 40, "points_tables": True, "sig_type": "real"}
    )
    assert p.scorecard is not None and p.scorecard.pdo == 40 and p.points_tables
    with pytest.raises(ValidationError, match="woe_bins"):
        ModelParams(woe_bins=1)
    with pytest.raises(ValidationError, match=r"\['woe_bins'\] do not apply to algorithm 'ss_xgb'"):
        ModelParams(algorithm="ss_xgb", woe_bins=5)
    with pytest.raises(ValidationError, match=r"do not apply to algorithm 'sgb'"):
        ModelParams(algorithm="sgb", points_tables=True)
    with pytest.raises(ValidationError, match="points_tables needs sig_type 'real'"):
        ModelParams(woe_bins=5, points_tables=True)
    ModelParams(woe_bins=5, points_tables=True, sig_type="real")
    with pytest.raises(ValidationError, match=r"\['points_tables', 'score_pdo'\] need woe_bins"):
        ModelParams(points_tables=True, score_pdo=30)
    with pytest.raises(ValidationError, match="woe_method"):
        ModelParams(woe_bins=5, woe_method="kmeans")
    with pytest.raises(ValidationError, match="score_base_odds"):
        ModelParams(woe_bins=5, score_base_odds=0)
    # a job spec carries them too
    parties = [PartySpec(name=n, input_csv=tmp_path / f"{n}.csv", output_dir=tmp_path / n) for n in "abcd"]
    with pytest.raises(ValidationError, match="do not apply to algorithm 'ss_xgb'"):
        VerticalJobSpec(
            parties=parties,
            join_key="id",
            label_party="a",
            label_column="y",
            model={"algorithm": "ss_xgb", "woe_bins": 4},
        )
    # the SPU's exact sigmoid is refused beyond 3 parties (it returns garbage with 5), by name
    real = {"woe_bins": 4, "sig_type": "real"}
    with pytest.raises(ValidationError, match="sig_type 'real' is unreliable on the SPU with 4 parties"):
        VerticalJobSpec(parties=parties, join_key="id", label_party="a", label_column="y", model=real)
    VerticalJobSpec(parties=parties[:3], join_key="id", label_party="a", label_column="y", model=real)
    # ... but a stored model trained that way still scores (prediction reveals log-odds, no sigmoid)
    VerticalJobSpec(
        parties=[p.model_copy(update={"model_dir": tmp_path}) for p in parties],
        join_key="id",
        label_party="a",
        stages=["psi", "predict"],
        model=real,
    )


def test_scorecard_scaling():
    card = Scorecard(base_points=600, base_odds=50, pdo=20)
    # 600 points at good:bad odds 50:1, i.e. PD = 1/51; each doubling of the odds adds 20 points
    assert card.points(math.log(1 / 50)) == pytest.approx(600)
    assert card.points(math.log(1 / 100)) == pytest.approx(620)
    assert card.points(math.log(1 / 25)) == pytest.approx(580)
    assert card.points(0.0) == pytest.approx(600 - 20 * math.log(50) / math.log(2))
    logits = np.linspace(-6, 6, 50)
    assert np.all(np.diff(card.points(logits)) < 0)  # more risk, fewer points


# ---------------------------------------------------------------- substitution and tables


def test_substitution_follows_secretflow_rules_and_names_bad_rules():
    import pyarrow as pa
    from secretflow.preprocessing.binning.vert_bin_substitution import apply_binning_rules

    a = np.array([-5.0, 1.0, 1.0001, 2.5, 3.0, 4.0, 4.5, 100.0])
    b = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    x = np.column_stack([a, b])
    got = substitute(RULES, x, ["a", "b"])
    sf_rules = {
        "variables": [
            {**NUMERIC, "filling_values": NUMERIC["woe"], "else_filling_value": 0.0},
            {**CATEGORICAL, "filling_values": CATEGORICAL["woe"], "else_filling_value": 0.0},
        ]
    }
    table = pa.table({"a": a, "b": pa.array([repr(float(v)) for v in b])})
    want = apply_binning_rules(sf_rules, table).to_table()
    assert np.allclose(got[:, 0], want["a"].to_numpy(), atol=1e-6)  # SecretFlow casts to float32
    assert np.allclose(got[:, 1], want["b"].to_numpy(), atol=1e-6)
    assert bin_index(NUMERIC, a).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # left-open, right-closed
    # an unseen category carries no evidence; a one-bin column is its single WOE (not its raw value)
    assert substitute(RULES, np.array([[0.0, 7.0]]), ["a", "b"])[0, 1] == 0.0
    one = {"features": [{"name": "c", "type": "numeric", "split_points": [], "woe": [0.0]}]}
    assert substitute(one, np.array([[3.0], [9.0]]), ["c"]).tolist() == [[0.0], [0.0]]

    with pytest.raises(WoeRulesError, match=r"cover \['a', 'b'\], the features are \['b', 'a'\]"):
        check_rules(RULES, ["b", "a"])
    with pytest.raises(WoeRulesError, match="3 WOE values for 4 bins"):
        check_rules({"features": [{**NUMERIC, "woe": [0.0, 1.0, 2.0]}]}, ["a"])
    with pytest.raises(WoeRulesError, match="not sorted"):
        check_rules({"features": [{**NUMERIC, "split_points": [3.0, 1.0, 4.0]}]}, ["a"])
    with pytest.raises(WoeRulesError, match="malformed"):
        check_rules({"variables": []}, ["a"])


def test_points_tables_add_up_to_the_scorecard():
    card = Scorecard(base_points=600, base_odds=20, pdo=40)
    w, bias = np.array([0.8, 1.3]), -0.7
    x = np.array([[0.5, 1.0], [3.0, 0.0], [9.0, 1.0]])
    logit = bias + substitute(RULES, x, ["a", "b"]) @ w
    table = points_table(RULES, w, card, bias)
    assert table["base_points"] == pytest.approx(card.offset - card.factor * bias)
    assert table["features"][0]["bins"][0] == {
        "woe": -1.0,
        "points": pytest.approx(card.factor * 0.8),
        "lower": None,
        "upper": 1.0,
    }
    assert table["features"][1]["bins"][1]["category"] == "1.0"
    assert np.allclose(row_points(table, RULES, x), card.points(logit))
    # a department's table has no base points: its rows' points are its own bins' only
    dept = points_table(RULES, w, card, None)
    assert "base_points" not in dept
    assert np.allclose(row_points(dept, RULES, x) + table["base_points"], card.points(logit))


# ---------------------------------------------------------------- real parties


def _plaintext_woe(x: np.ndarray, y: np.ndarray, rule: dict) -> tuple[list[float], list[int]]:
    """WOE of every bin of one column, computed in the clear (SecretFlow's +0.5 smoothing for pure bins)."""
    idx = bin_index(rule, x)
    pos_all, neg_all = y.sum(), len(y) - y.sum()
    woes, counts = [], []
    for b in range(len(rule["woe"])):
        pos = float(y[idx == b].sum())
        neg = float((idx == b).sum()) - pos
        if pos == 0 or neg == 0:
            pos, neg = pos + 0.5, neg + 0.5
        woes.append(math.log((pos / pos_all) / (neg / neg_all)))
        counts.append(int((idx == b).sum()))
    return woes, counts


def _woe_matrix(out: Path, names: list[str]) -> tuple[np.ndarray, dict[str, dict]]:
    """Every party's intersected rows with its own stored rules substituted, side by side (SPU order)."""
    xs, rules = [], {}
    for n in names:
        rules[n] = json.loads((out / n / "model" / "woe_rules.json").read_text())
        feats = [r["name"] for r in rules[n]["features"]]
        own = pd.read_csv(out / n / "psi_output.csv", dtype={KEY: str})
        xs.append(own[feats].to_numpy(dtype=float))
    return np.hstack(xs), rules


@pytest.mark.slow
def test_woe_scorecard_trains_like_plaintext_and_scores_again_from_stored_parts(
    tmp_path, no_leaked_processes
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    data = make_vertical_data(tmp_path / "data", n_rows=2_000, overlap=0.6, seed=31)
    params = ModelParams(
        woe_bins=6,
        sig_type="real",
        epochs=20,
        batch_size=128,
        learning_rate=0.5,
        test_fraction=0.3,
        points_tables=True,
    )
    spec = data.job_spec(tmp_path / "out", model=params, work_dir=tmp_path / "work", timeout_s=400)
    result = run_vertical_job(spec)
    out = tmp_path / "out"
    assert result.stages.woe > 0 and result.stages.train > result.stages.woe

    preds = pd.read_csv(out / "bank" / "predictions.csv", dtype={KEY: str})
    assert list(preds.columns) == [KEY, "score", "points", "default", "split"]
    y, train = preds["default"].to_numpy(), (preds["split"] == "train").to_numpy()
    names = sorted(result.parties)

    # 1. every party's bins: WOE and counts exactly as computed in the clear on the train rows
    raw, rules = _woe_matrix(out, names)
    col = 0
    n_categorical = 0
    for n in names:
        for rule in rules[n]["features"]:
            woes, counts = _plaintext_woe(raw[train, col], y[train], rule)
            assert rule["woe"] == pytest.approx(woes, abs=1e-9) and rule["counts"] == counts
            assert 2 <= len(rule["woe"]) <= 6
            n_categorical += rule["type"] == "string"
            col += 1
    assert n_categorical >= 1  # tax_credit_grade (grades 1..5) is binned by category
    assert (out / "bank" / "model" / "woe_iv.json").exists()
    ivs = json.loads((out / "bank" / "model" / "woe_iv.json").read_text())["features"]
    assert {f["name"] for f in ivs} == {f for p in data.parties for f in p.features}
    for n in ("tax", "power"):
        files = {p.name for p in (out / n / "model").iterdir()}
        assert files == {"model.json", "weights.share", "woe_rules.json", "points_table.json"}
        part = ModelPart.model_validate_json((out / n / "model" / "model.json").read_text())
        assert part.mean is None and part.woe_rules == "woe_rules.json" and part.scorecard == params.scorecard

    # 2. AUC within 0.02 of a plaintext logistic regression on the same WOE columns
    x = np.hstack(
        [
            substitute(rules[n], raw[:, sl], [r["name"] for r in rules[n]["features"]])
            for n, sl in zip(names, _slices(rules, names), strict=True)
        ]
    )
    ref = LogisticRegression(C=1e6, max_iter=5000).fit(x[train], y[train])
    ref_pd = ref.predict_proba(x)[:, 1]
    m = result.metrics
    assert m.auc_train == pytest.approx(roc_auc_score(y[train], ref_pd[train]), abs=0.02)
    assert m.auc_test == pytest.approx(roc_auc_score(y[~train], ref_pd[~train]), abs=0.03)
    assert m.auc_train > 0.78
    assert preds["score"].mean() == pytest.approx(y[train].mean(), abs=0.05)  # calibrated PD

    # 3. points: the formula, monotone decreasing in the PD, and the sum of the parties' own tables
    card = params.scorecard
    assert card is not None
    pd_, pts = preds["score"].to_numpy(), preds["points"].to_numpy()
    assert np.allclose(pts, card.offset - card.factor * np.log(pd_ / (1 - pd_)), atol=1e-6)
    order = np.argsort(pd_)
    assert np.all(np.diff(pts[order]) <= 1e-9)
    assert 450 < np.median(pts) < 560
    tables = {n: json.loads((out / n / "model" / "points_table.json").read_text()) for n in names}
    assert "base_points" in tables["bank"] and "base_points" not in tables["tax"]
    total = sum(
        row_points(tables[n], rules[n], raw[:, sl])
        for n, sl in zip(names, _slices(rules, names), strict=True)
    )
    assert np.abs(total - pts).max() < 0.05  # fixed-point weights (18 fractional bits)
    # the weights a department saw: WOE points towards risk, so a useful WOE column has a positive
    # weight (as in the plaintext model); the points of its riskiest bin are its lowest
    assert all(w > 0 for w in ref.coef_[0])
    for f in tables["tax"]["features"]:
        assert f["weight"] > 0.2
        worst = int(np.argmax([b["woe"] for b in f["bins"]]))
        assert f["bins"][worst]["points"] == min(b["points"] for b in f["bins"])

    # 4. a later snapshot, scored with the stored parts: the same PD and points for the same enterprises
    fresh = fresh_population(data, tmp_path, seed=32)
    scored = run_vertical_job(predict_spec(spec, tmp_path, fresh))
    assert scored.stages.train == 0 and scored.stages.woe == 0 and scored.stages.load > 0
    new = pd.read_csv(tmp_path / "scored" / "bank" / "predictions.csv", dtype={KEY: str}).set_index(KEY)
    old = preds.set_index(KEY)
    assert list(new.columns) == ["score", "points"]
    both = new.index.intersection(old.index)
    assert len(both) > 300 and len(new) > len(both)
    assert np.abs(new.loc[both, "score"] - old.loc[both, "score"]).max() < 1e-4
    assert np.abs(new.loc[both, "points"] - old.loc[both, "points"]).max() < 0.01
    assert sorted(p.name for p in (tmp_path / "scored" / "tax").iterdir()) == ["psi_output.csv"]


def _slices(rules: dict[str, dict], names: list[str]) -> list[slice]:
    out, start = [], 0
    for n in names:
        k = len(rules[n]["features"])
        out.append(slice(start, start + k))
        start += k
    return out


@pytest.mark.slow
def test_woe_on_heu_with_equal_range_bins(tmp_path, no_leaked_processes):
    """The label as HEU ciphertexts under the bank's key; the "sr" link: points from the model's PD."""
    data = make_vertical_data(tmp_path / "data", n_rows=1_200, overlap=0.7, seed=33)
    params = ModelParams(woe_bins=4, woe_device="heu", woe_method="eq_range", epochs=5, batch_size=128)
    spec = data.job_spec(tmp_path / "out", model=params, work_dir=tmp_path / "work", timeout_s=400)
    result = run_vertical_job(spec)
    out = tmp_path / "out"
    preds = pd.read_csv(out / "bank" / "predictions.csv", dtype={KEY: str})
    y = preds["default"].to_numpy()
    names = sorted(result.parties)
    raw, rules = _woe_matrix(out, names)
    col = 0
    for n in names:
        for rule in rules[n]["features"]:
            woes, counts = _plaintext_woe(raw[:, col], y, rule)  # no split: every row trains
            assert rule["woe"] == pytest.approx(woes, abs=1e-9) and rule["counts"] == counts
            col += 1
        assert not (out / n / "model" / "points_table.json").exists()
    assert result.metrics.auc > 0.7
    card = params.scorecard
    assert card is not None
    pd_ = np.clip(preds["score"].to_numpy(), 1e-6, 1 - 1e-6)
    assert np.allclose(preds["points"], card.points(np.log(pd_ / (1 - pd_))), atol=1e-6)
    order = np.argsort(pd_)
    assert np.all(np.diff(preds["points"].to_numpy()[order]) <= 1e-9)
