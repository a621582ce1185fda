"""Real party processes: PSI-only runs, the key-hash split, SS-LR / SS-XGB / SGB, stored models.

Every test starts one ``python -m protocols.secretflow.party`` per party (production mode,
gRPC on loopback) and checks values against what can be computed in the clear here.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from protocols.secretflow.errors import ModelInvalidError, PartyFailedError, SingleClassLabelError
from protocols.secretflow.runner import run_vertical_job
from protocols.secretflow.spec import ModelParams, ModelPart, VerticalJobSpec
from protocols.secretflow.split import auc_ks, holdout_mask
from protocols.secretflow.synthetic import SyntheticVertical, make_vertical_data

KEY = "uscc"


def true_overlap(spec: VerticalJobSpec) -> set[str]:
    keys = None
    for p in spec.parties:
        s = set(pd.read_csv(p.input_csv, dtype={KEY: str})[KEY])
        keys = s if keys is None else keys & s
    assert keys is not None
    return keys


def fresh_population(data: SyntheticVertical, root: Path, seed: int) -> dict[str, Path]:
    """New input files: about half of the old enterprises (the same ones at every party) plus new ones,
    rows shuffled and columns reordered — a later snapshot that a stored model must score."""
    make_vertical_data(root / "other", n_rows=600, overlap=0.8, seed=seed)
    files = {}
    for p in data.parties:
        old = pd.read_csv(p.csv_path, dtype={KEY: str})
        keep = old[old[KEY].map(lambda k: hashlib.sha256(k.encode()).digest()[0] % 2 == 0)]
        new = pd.read_csv(root / "other" / f"{p.name}.csv", dtype={KEY: str})
        frame = pd.concat([keep, new]).sample(frac=1.0, random_state=seed)
        frame = frame[list(reversed(frame.columns))]
        if p.name == data.label_party:
            frame = frame.drop(columns=[data.label_column])  # scoring needs no label
        path = root / "fresh" / f"{p.name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        files[p.name] = path
    return files


def predict_spec(train: VerticalJobSpec, root: Path, inputs: dict[str, Path], **update) -> VerticalJobSpec:
    """A predict-only job over ``inputs`` with the model parts that ``train`` stored."""
    raw = train.model_dump()
    raw.update(
        {
            "job_id": train.job_id + "-score",
            "stages": ["psi", "predict"],
            "label_column": None,
            "model": ModelParams(algorithm=train.model.algorithm).model_dump(exclude_unset=True),
            "work_dir": root / "work-score",
            **update,
        }
    )
    for p in raw["parties"]:
        p["model_dir"] = p["output_dir"] / "model"
        p["input_csv"] = inputs[p["name"]]
        p["output_dir"] = root / "scored" / p["name"]
    return VerticalJobSpec.model_validate(raw)


def scores(path: Path) -> pd.Series:
    return pd.read_csv(path, dtype={KEY: str}).set_index(KEY)["score"]


def check_split_and_metrics(spec: VerticalJobSpec, out: Path, metrics, fraction: float) -> pd.DataFrame:
    preds = pd.read_csv(out / "bank" / "predictions.csv", dtype={KEY: str})
    assert set(preds[KEY]) == true_overlap(spec)
    test = holdout_mask(preds[KEY].tolist(), fraction)
    assert preds["split"].tolist() == np.where(test, "test", "train").tolist()
    m = json.loads((out / "bank" / "metrics.json").read_text())
    y, s = preds["default"].to_numpy(), preds["score"].to_numpy()
    for name, mask in (("train", ~test), ("test", test)):
        auc, ks = auc_ks(y[mask], s[mask])
        assert m[f"auc_{name}"] == pytest.approx(auc) and m[f"ks_{name}"] == pytest.approx(ks)
        assert m[f"n_{name}"] == int(mask.sum()) > 0
    assert m["n_train"] + m["n_test"] == m["n_rows"] == len(preds)
    assert metrics.auc_test == pytest.approx(m["auc_test"])
    return preds


# ---------------------------------------------------------------- PSI only


@pytest.mark.slow
def test_psi_only_needs_no_label_and_gives_departments_keys_only(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=2_000, overlap=0.5, seed=21)
    raw = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=300).model_dump()
    raw.update(stages=["psi"], label_column=None, party_hosts={"tax": "127.0.0.2", "power": "127.0.0.3"})
    for p in raw["parties"]:
        p["features"] = ["bank_loan_amount"] if p["name"] == "bank" else []
    spec = VerticalJobSpec.model_validate(raw)
    result = run_vertical_job(spec)

    truth = true_overlap(spec)
    assert len(truth) == 1000
    frames = {n: pd.read_csv(tmp_path / "out" / n / "psi_output.csv", dtype={KEY: str}) for n in result.parties}
    assert list(frames["tax"].columns) == list(frames["power"].columns) == [KEY]  # keys only
    assert list(frames["bank"].columns) == [KEY, "bank_loan_amount"]  # no label: it was not asked for
    assert frames["tax"][KEY].tolist() == frames["bank"][KEY].tolist() == sorted(truth)
    for name, res in result.parties.items():
        assert res.intersection_rows == 1000 and res.metrics is None and res.model_dir is None
        assert res.stages.train == res.stages.predict == 0
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == ["psi_output.csv"]
    # the departments really listened on their own addresses
    tax_cfg = json.loads((tmp_path / "work" / "party-tax.json").read_text())
    hosts = {ep["name"]: ep["host"] for ep in tax_cfg["cluster"]["parties"]}
    assert hosts == {"bank": None, "tax": "127.0.0.2", "power": "127.0.0.3"}


# ---------------------------------------------------------------- SS-LR


def reconstruct_weights(model_dirs: list[Path]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Add the parties' SEMI2K shares (ring Z_2^64) of the SS-LR weights; also return each share alone.

    libspu serializes a share chunk as a small header followed by the ring elements (8 bytes each)."""
    total, alone = None, []
    for d in model_dirs:
        record = pickle.loads((d / "weights.share").read_bytes())
        (share,) = record["shares"]
        n = int(np.prod(record["meta"].shape))
        ring = np.frombuffer(share.share_chunks[0][-8 * n :], dtype=np.uint64)
        alone.append(ring.view(np.int64) / 2.0**18)
        total = ring.copy() if total is None else total + ring
    assert total is not None
    return total.view(np.int64) / 2.0**18, alone


@pytest.mark.slow
def test_sslr_split_stored_shares_and_prediction_on_a_fresh_population(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=2_500, overlap=0.6, seed=22)
    spec = data.job_spec(
        tmp_path / "out", model=ModelParams(epochs=3, test_fraction=0.3), work_dir=tmp_path / "work", timeout_s=300
    )
    result = run_vertical_job(spec)
    m = result.metrics
    assert m.algorithm == "ss_lr" and m.auc_train > 0.75 and m.auc_test > 0.7
    preds = check_split_and_metrics(spec, tmp_path / "out", m, 0.3)

    # each party stored its own share; only all shares together are the weights
    names = sorted(result.parties)  # the SPU's party order = the weight vector's block order
    dirs = [tmp_path / "out" / n / "model" for n in names]
    w, alone = reconstruct_weights(dirs)
    assert all(np.abs(a).max() > 1e6 for a in alone)  # a single share is noise
    parts = {n: ModelPart.model_validate_json((d / "model.json").read_text()) for n, d in zip(names, dirs, strict=True)}
    x = []
    for n in names:
        own = pd.read_csv(tmp_path / "out" / n / "psi_output.csv", dtype={KEY: str})
        x.append((own[parts[n].features].to_numpy() - parts[n].mean) / parts[n].std)
    z = np.hstack(x) @ w[:-1] + w[-1]
    sr = 0.5 + 0.5 * z / np.sqrt(1 + z * z)  # SS-LR's "sr" sigmoid
    assert np.abs(sr - preds["score"].to_numpy()).max() < 1e-3
    assert parts["tax"].mean != parts["bank"].mean and parts["tax"].model_id == spec.job_id
    assert oct((dirs[1] / "weights.share").stat().st_mode & 0o777) == "0o600"

    # a later snapshot, scored with the stored parts: the same scores for the same enterprises
    fresh = fresh_population(data, tmp_path, seed=23)
    scored = run_vertical_job(predict_spec(spec, tmp_path, fresh))
    assert scored.parties["bank"].metrics is None  # no labels were given
    assert scored.stages.train == 0 and scored.stages.load > 0 and scored.stages.predict > 0
    new = scores(tmp_path / "scored" / "bank" / "predictions.csv")
    old = scores(tmp_path / "out" / "bank" / "predictions.csv")
    both = new.index.intersection(old.index)
    assert len(both) > 300 and len(new) > len(both)  # old enterprises and new ones
    assert np.abs(new.loc[both] - old.loc[both]).max() < 2e-4  # fixed-point (18 bits) precision
    assert sorted(p.name for p in (tmp_path / "scored" / "tax").iterdir()) == ["psi_output.csv"]

    # parts of different models fail by name, before anything is computed
    part = json.loads((dirs[2] / "model.json").read_text())
    (dirs[2] / "model.json").write_text(json.dumps({**part, "model_id": "another-training-job"}))
    with pytest.raises(ModelInvalidError, match="different models") as info:
        run_vertical_job(predict_spec(spec, tmp_path, fresh, job_id="mismatch", work_dir=tmp_path / "w3"))
    assert "another-training-job" in str(info.value)
    assert scores(tmp_path / "scored" / "bank" / "predictions.csv").equals(new)  # the earlier output stays


# ---------------------------------------------------------------- SS-XGB and SGB


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ss_xgb", "sgb"])
def test_tree_models_train_split_store_and_score_again(tmp_path, no_leaked_processes, algorithm):
    data = make_vertical_data(tmp_path / "data", n_rows=2_000, overlap=0.6, seed=24)
    params = ModelParams(algorithm=algorithm, num_boost_round=3, max_depth=3, test_fraction=0.3)
    spec = data.job_spec(tmp_path / "out", model=params, work_dir=tmp_path / "work", timeout_s=400)
    result = run_vertical_job(spec)
    m = result.metrics
    assert m.algorithm == algorithm and m.auc_train > 0.75 and m.auc_test > 0.65
    check_split_and_metrics(spec, tmp_path / "out", m, 0.3)

    files = {n: sorted(str(p.relative_to(tmp_path / "out" / n / "model")) for p in
                       (tmp_path / "out" / n / "model").rglob("*") if p.is_file()) for n in result.parties}
    if algorithm == "ss_xgb":  # split nodes of its own features + a share of every tree's leaf weights
        expected = ["model.json", "tree0.share", "tree1.share", "tree2.share", "trees.json"]
        assert files == {n: expected for n in result.parties}
        tax_trees = json.loads((tmp_path / "out" / "tax" / "model" / "trees.json").read_text())
        assert len(tax_trees) == 3 and max(max(t["f"]) for t in tax_trees) < 3  # its own 3 features only
    else:  # SecureBoost: the label holder keeps the leaf weights, the departments their split trees
        assert files["bank"] == ["model.json", "sgb/common.json", "sgb/leaf_weight.json", "sgb/split_tree.json"]
        assert files["tax"] == files["power"] == ["model.json", "sgb/split_tree.json"]

    fresh = fresh_population(data, tmp_path, seed=25)
    run_vertical_job(predict_spec(spec, tmp_path, fresh))
    new = scores(tmp_path / "scored" / "bank" / "predictions.csv")
    old = scores(tmp_path / "out" / "bank" / "predictions.csv")
    both = new.index.intersection(old.index)
    assert len(both) > 300
    tolerance = 2e-4 if algorithm == "ss_xgb" else 1e-9  # SGB's leaves are plaintext at the label holder
    assert np.abs(new.loc[both] - old.loc[both]).max() < tolerance


# ---------------------------------------------------------------- named errors


@pytest.mark.slow
def test_one_class_labels_fail_with_a_named_error(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=400, seed=26)
    bank = tmp_path / "data" / "bank.csv"
    pd.read_csv(bank, dtype={KEY: str}).assign(default=0).to_csv(bank, index=False)
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=200)
    with pytest.raises(SingleClassLabelError) as info:
        run_vertical_job(spec)
    assert isinstance(info.value, PartyFailedError) and info.value.party == "bank"
    assert "labels 'default' are all one class" in str(info.value)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []  # nothing published
