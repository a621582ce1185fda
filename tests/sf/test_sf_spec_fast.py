"""Fast checks of the SecretFlow engine's new options: stages, model families, split, hosts, model parts."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from protocols.secretflow import party as party_mod
from protocols.secretflow.runner import build_party_configs
from protocols.secretflow.spec import (
    ClusterSpec,
    ModelParams,
    ModelPart,
    PartyConfig,
    PartyEndpoint,
    PartyExit,
    PartySpec,
    VerticalJobSpec,
)
from protocols.secretflow.split import auc_ks, holdout_mask
from protocols.secretflow.synthetic import make_vertical_data


def _spec(tmp_path, **kw) -> VerticalJobSpec:
    a = PartySpec(name="a", input_csv=tmp_path / "a.csv", output_dir=tmp_path / "a", **kw.pop("a", {}))
    b = PartySpec(name="b", input_csv=tmp_path / "b.csv", output_dir=tmp_path / "b", **kw.pop("b", {}))
    return VerticalJobSpec(parties=[a, b], join_key="id", label_party="a", **kw)


# ---------------------------------------------------------------- model parameters


def test_model_params_reject_parameters_of_the_other_family():
    with pytest.raises(ValidationError, match=r"\['epochs'\] do not apply to algorithm 'ss_xgb'"):
        ModelParams(algorithm="ss_xgb", epochs=3)
    with pytest.raises(ValidationError, match=r"\['max_depth'\] do not apply to algorithm 'ss_lr'"):
        ModelParams(max_depth=3)
    with pytest.raises(ValidationError, match="learning_rate of a tree model"):
        ModelParams(algorithm="sgb", learning_rate=1.5)
    with pytest.raises(ValidationError, match="algorithm"):
        ModelParams(algorithm="random_forest")
    # a serialized config carries every field and still validates (what a node hands its party)
    xgb = ModelParams(algorithm="ss_xgb", num_boost_round=4, test_fraction=0.25)
    assert ModelParams.model_validate_json(xgb.model_dump_json()) == xgb
    assert ModelParams.model_validate(json.loads(ModelParams().model_dump_json())).algorithm == "ss_lr"
    # the coordinator validates a job's params dict this way (the scenario's SS-LR params)
    ModelParams.model_validate({"epochs": 10, "learning_rate": 0.3, "batch_size": 512, "test_fraction": 0.3})


def test_stage_plans_are_checked(tmp_path):
    assert _spec(tmp_path, label_column="y").stages == ["psi", "train", "predict"]
    assert _spec(tmp_path, stages=["psi"]).label_column is None  # PSI needs no label
    with pytest.raises(ValidationError, match="is not one of"):
        _spec(tmp_path, label_column="y", stages=["train"])
    with pytest.raises(ValidationError, match="is not one of"):
        _spec(tmp_path, label_column="y", stages=["psi", "predict", "train"])
    with pytest.raises(ValidationError, match="training needs a label_column"):
        _spec(tmp_path, stages=["psi", "train"])
    with pytest.raises(ValidationError, match=r"needs model_dir for \['a', 'b'\]"):
        _spec(tmp_path, stages=["psi", "predict"])
    with pytest.raises(ValidationError, match="needs the train stage"):
        _spec(tmp_path, stages=["psi"], model=ModelParams(test_fraction=0.3))
    ok = _spec(
        tmp_path, stages=["psi", "predict"], a={"model_dir": tmp_path / "ma"}, b={"model_dir": tmp_path / "mb"}
    )
    assert ok.party("b").model_dir == tmp_path / "mb"


def test_old_party_config_json_still_validates(tmp_path):
    """Configs written before stages/hosts existed (as nodes build them) keep their meaning."""
    old = {
        "job_id": "j1",
        "cluster": {
            "host": "127.0.0.1",
            "parties": [
                {"name": "a", "sf_port": 1001, "spu_port": 1002, "psi_ports": {"b": 1003}},
                {"name": "b", "sf_port": 1004, "spu_port": 1005, "psi_ports": {"a": 1006}},
            ],
        },
        "me": {"name": "b", "input_csv": str(tmp_path / "b.csv"), "output_dir": str(tmp_path / "b")},
        "join_key": "id",
        "label_party": "a",
        "label_column": "y",
        "psi_protocol": "RR22",
        "model": {"epochs": 2},
    }
    cfg = PartyConfig.model_validate(old)
    assert cfg.stages == ["psi", "train", "predict"] and cfg.model.algorithm == "ss_lr"
    assert cfg.cluster.host_of("a") == "127.0.0.1" and cfg.me.model_dir is None


# ---------------------------------------------------------------- hosts


def test_party_hosts_put_each_party_on_its_own_address(tmp_path):
    data = make_vertical_data(tmp_path / "data", n_rows=50, seed=1)
    spec = data.job_spec(tmp_path / "out").model_copy(
        update={"party_hosts": {"tax": "127.0.0.2", "power": "127.0.0.3"}}
    )
    spec = VerticalJobSpec.model_validate(spec.model_dump())
    cluster = build_party_configs(spec)["bank"].cluster
    assert [cluster.host_of(n) for n in ("bank", "tax", "power")] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert cluster.endpoint("bank").host is None  # the cluster default
    with pytest.raises(ValidationError, match="loopback only"):
        VerticalJobSpec.model_validate({**spec.model_dump(), "party_hosts": {"tax": "10.0.0.2"}})
    with pytest.raises(ValidationError, match=r"unknown parties \['court'\]"):
        VerticalJobSpec.model_validate({**spec.model_dump(), "party_hosts": {"court": "127.0.0.9"}})
    ep = PartyEndpoint(name="x", host="node-x.example", sf_port=1, spu_port=2)
    assert ClusterSpec(parties=[ep]).host_of("x") == "node-x.example"


# ---------------------------------------------------------------- split and metrics


def test_holdout_mask_is_bit_identical_to_the_scenarios():
    from scenarios.bank_credit.baselines import holdout_mask as scenario_mask

    rng = random.Random(3)
    keys = ["".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(18)) for _ in range(3000)]
    for fraction, salt in ((0.3, "split"), (0.5, "other"), (0.05, "")):
        mine = holdout_mask(keys, fraction, salt)
        assert np.array_equal(mine, scenario_mask(keys, fraction, salt))
        assert abs(mine.mean() - fraction) < 0.03
    # the documented formula, spelled out
    k = keys[0]
    h = int.from_bytes(hashlib.sha256(b"split\x00" + k.encode()).digest()[:4], "big")
    assert holdout_mask([k], 0.3)[0] == (h < int(0.3 * 2**32))
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_mask(keys, 1.0)


def test_auc_ks_match_sklearn_and_refuse_one_class():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = y * 0.5 + rng.random(500)
    auc, ks = auc_ks(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s)) and ks == pytest.approx(max(tpr - fpr))
    assert 0 < ks < 1
    assert auc_ks(np.zeros(10), s[:10]) is None


# ---------------------------------------------------------------- input and model-part checks


def _config(tmp_path, **update) -> PartyConfig:
    data = make_vertical_data(tmp_path / "data", n_rows=50, seed=2)
    raw = data.job_spec(tmp_path / "out").model_dump()
    for p in raw["parties"]:
        p["model_dir"] = tmp_path / "models" / p["name"]
    return build_party_configs(VerticalJobSpec.model_validate({**raw, **update}))["tax"]


def test_psi_only_party_needs_no_features_and_no_label(tmp_path):
    cfg = _config(tmp_path, stages=["psi"], label_column=None)
    cfg = cfg.model_copy(update={"me": cfg.me.model_copy(update={"features": []})})
    assert party_mod.validate_input(cfg) == 50
    bank = build_party_configs(
        VerticalJobSpec.model_validate(
            {**make_vertical_data(tmp_path / "d2", n_rows=20, seed=1).job_spec(tmp_path / "o2").model_dump(),
             "stages": ["psi"], "label_column": None}
        )
    )["bank"]
    assert party_mod.validate_input(bank) == 20


def _write_part(model_dir, **kw) -> ModelPart:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "weights.share").write_bytes(b"share-bytes")
    fields = {
        "model_id": "train-1",
        "algorithm": "ss_lr",
        "party": "tax",
        "parties": ["bank", "power", "tax"],
        "label_party": "bank",
        "features": ["tax_vat_paid", "tax_credit_grade", "tax_revenue_growth"],
        "spu_protocol": "SEMI2K",
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
        "sig_type": "sr",
        "share_files": ["weights.share"],
        "files_sha256": {"weights.share": hashlib.sha256(b"share-bytes").hexdigest()},
        "created_at": "2026-01-01T00:00:00+00:00",
        **kw,
    }
    part = ModelPart.model_validate(fields)
    (model_dir / "model.json").write_text(part.model_dump_json())
    return part


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, None),
        ({"party": "power"}, "model part of 'power'"),
        ({"parties": ["bank", "tax"]}, "trained by"),
        ({"spu_protocol": "ABY3"}, "shares are ABY3"),
        ({"files_sha256": {"weights.share": "0" * 64}}, "missing or was modified"),
    ],
)
def test_stored_model_part_is_checked_before_joining(tmp_path, capsys, change, message):
    model_dir = tmp_path / "model-tax"
    part = _write_part(model_dir, **change)
    cfg = _config(tmp_path, stages=["psi", "predict"], label_column=None)
    cfg = cfg.model_copy(update={"me": cfg.me.model_copy(update={"model_dir": model_dir, "features": None})})
    if message is None:
        loaded = party_mod.load_model_part(cfg)
        assert loaded == part
        assert party_mod.feature_columns(cfg, ["uscc", "x"], loaded) == part.features  # the model's own
        return
    with pytest.raises(party_mod.ModelInvalidError, match=message):
        party_mod.load_model_part(cfg)
    cfg_path = tmp_path / "tax.json"
    cfg_path.write_text(cfg.model_dump_json())
    assert party_mod.main(["--config", str(cfg_path), "--party", "tax"]) == PartyExit.MODEL_INVALID
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["kind"] == "MODEL_INVALID" and message in last["message"]


def test_missing_model_part_and_feature_mismatch_are_named(tmp_path):
    cfg = _config(tmp_path, stages=["psi", "predict"], label_column=None)
    cfg = cfg.model_copy(update={"me": cfg.me.model_copy(update={"model_dir": tmp_path / "nowhere"})})
    with pytest.raises(party_mod.ModelInvalidError, match="no stored model part"):
        party_mod.load_model_part(cfg)
    _write_part(tmp_path / "m")
    cfg = cfg.model_copy(
        update={"me": cfg.me.model_copy(update={"model_dir": tmp_path / "m", "features": ["tax_vat_paid"]})}
    )
    with pytest.raises(party_mod.ModelInvalidError, match="the model uses features"):
        party_mod.load_model_part(cfg)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "m" / "model.json")  # not a model part at all
    with pytest.raises(party_mod.ModelInvalidError, match="is not a model part"):
        party_mod.load_model_part(cfg)


def test_cli_summary_line_without_and_with_metrics(tmp_path):
    from dcp.commands.sf import EXAMPLE_SPEC, load_spec, summary_line
    from protocols.secretflow.spec import LabelMetrics, PartyResult, RunResult, StageTimes

    def result(metrics: LabelMetrics | None) -> RunResult:
        parties = {
            n: PartyResult(party=n, input_rows=10, intersection_rows=7, output_files=[], stages=StageTimes(),
                           metrics=metrics if n == "bank" else None)
            for n in ("bank", "tax")
        }
        return RunResult(job_id="j", label_party="bank", psi_protocol="RR22", parties=parties, elapsed_s=3.0)

    assert summary_line(result(None)) == "intersection 7 rows · 3.0s in all"  # a PSI-only run
    m = LabelMetrics(auc=0.8, ks=0.5, n_rows=7, positive_rate=0.3, algorithm="ss_xgb", auc_train=0.85,
                     auc_test=0.7, n_test=2)
    line = summary_line(result(m))
    assert "ss_xgb AUC 0.8000 KS 0.5000" in line and "test AUC 0.7000 on 2 rows" in line
    # the example spec is a valid training job with a split; model_dir paths are relative to the file
    (tmp_path / "job.yaml").write_text(EXAMPLE_SPEC.replace(
        "output_dir: out/tax}", "output_dir: out/tax, model_dir: models/tax}"))
    spec = load_spec(tmp_path / "job.yaml")
    assert spec.model.test_fraction == 0.3 and spec.stages == ["psi", "train", "predict"]
    assert spec.party("tax").model_dir == tmp_path / "models" / "tax"
