"""The job kinds the engine runs now (psi alone, SS-XGB / SGB training, vertical_predict with a stored
model): spec validation, the manifest the departments approve, the node's slice, and the named errors
of a predict job whose training job is unknown or whose columns differ (no processes)."""

from __future__ import annotations

import pytest

from coordinator.errors import EngineUnsupported, InvalidJobSpec, PolicyForbidden
from coordinator.manifest import build_manifest, manifest_sm3, node_request, used_columns
from coordinator.spec import KIND_STAGES, RUNNABLE, check_runnable, parse_spec
from coordinator.validation import (
    PredictColumnsMismatch,
    UnknownTrainingJob,
    check_against_catalog,
    check_model_from,
)
from engines.secretflow.coordinator import hub_of

from .test_spec import CATALOG, MEMBERS, POLICIES, base


def predict(**over: object) -> dict:
    raw = {**base(), "kind": "vertical_predict", "model_from": "job-train1", "model": {"algorithm": "ss_lr"}}
    raw.pop("expires_in_s")
    raw.update(over)
    return raw


def psi(**over: object) -> dict:
    raw = {k: v for k, v in base().items() if k not in ("label", "model")}
    raw["kind"] = "psi"
    raw["inputs"] = [{"member": "bank", "dataset": "loans", "columns": []}, {"member": "tax", "dataset": "tax"}]
    raw.update(over)
    return raw


def training(state: str = "SUCCEEDED", **over: object) -> dict:
    return {"kind": "vertical_train", "state": state, "spec": parse_spec({**base(), **over})}


# ------------------------------------------------------------------ psi


def test_psi_only_is_accepted_and_runs_the_psi_stage():
    spec = parse_spec(psi())
    check_runnable(spec)
    with pytest.raises(PolicyForbidden, match="at most 2 for psi"):  # the owners' grade limits apply per kind
        check_against_catalog(spec, MEMBERS, CATALOG, POLICIES)
    psi_ok = {m: {**p, "max_grade": {"psi": 3}} for m, p in POLICIES.items()}
    check_against_catalog(spec, MEMBERS, CATALOG, psi_ok)
    assert [(o.name, o.receiver) for o in spec.outputs] == [("intersection", "bank")]
    assert KIND_STAGES["psi"] == ["psi"]
    m = build_manifest(spec, "job-psi1", "bank")
    assert m["engine"]["protocol"] == "secretflow/psi-RR22" and m["engine"]["algorithm"] is None
    assert m["label"] is None and "model_from" not in m
    assert [i["columns"] for i in m["inputs"]] == [["uscc"], ["uscc"]]  # the join key only
    assert hub_of(m) == "bank"  # the requester holds the intersection
    assert node_request(m, "tax")["receivers"] == {"intersection": ["bank"]}


def test_psi_hub_is_first_member_when_requester_brings_no_data():
    m = build_manifest(parse_spec(psi()), "job-psi2", "bank")
    m["requester"] = "regulator"
    assert hub_of(m) == "bank"


def test_psi_refuses_a_label_and_a_missing_join_key():
    with pytest.raises(InvalidJobSpec, match="psi job has no label"):
        parse_spec(psi(label={"member": "bank", "dataset": "loans", "column": "default"}))
    with pytest.raises(InvalidJobSpec, match="needs a join_key"):
        parse_spec(psi(join_key=None))
    with pytest.raises(InvalidJobSpec, match="has no output 'predictions'"):
        parse_spec(psi(outputs=[{"name": "predictions", "receiver": "bank"}]))


# ------------------------------------------------------------------ training with every learner


@pytest.mark.parametrize("algorithm", ["ss_lr", "ss_xgb", "sgb"])
def test_every_learner_is_runnable(algorithm):
    params = {"num_boost_round": 3, "max_depth": 3} if algorithm != "ss_lr" else {"epochs": 2}
    spec = parse_spec({**base(), "model": {"algorithm": algorithm, "params": {**params, "test_fraction": 0.3}}})
    check_runnable(spec)
    m = build_manifest(spec, "job-t1", "bank")
    assert m["engine"]["algorithm"] == algorithm
    assert m["engine"]["params"]["test_fraction"] == 0.3
    assert m["engine"]["protocol"].endswith("+" + algorithm)
    assert ("vertical_train", algorithm) in RUNNABLE


@pytest.mark.parametrize(
    ("algorithm", "params", "match"),
    [
        ("ss_xgb", {"epochs": 3}, "do not apply to algorithm 'ss_xgb'"),
        ("sgb", {"max_depth": 99}, "max_depth"),
        ("ss_lr", {"num_boost_round": 3}, "do not apply to algorithm 'ss_lr'"),
        ("ss_xgb", {"learning_rate": 2.0}, "learning_rate of a tree model"),
        ("ss_lr", {"test_fraction": 1.5}, "test_fraction"),
        ("sgb", {"algorithm": "ss_lr"}, "contradicts algorithm 'sgb'"),
        ("ss_lr", {"no_such_param": 1}, "no_such_param"),
    ],
)
def test_params_are_checked_with_the_engine_for_every_algorithm(algorithm, params, match):
    with pytest.raises(InvalidJobSpec, match=match):
        parse_spec({**base(), "model": {"algorithm": algorithm, "params": params}})


# ------------------------------------------------------------------ vertical_predict


def test_predict_spec_manifest_and_slice_name_the_training_job():
    spec = parse_spec(predict())
    check_runnable(spec)
    check_model_from(spec, training())
    assert [o.name for o in spec.outputs] == ["predictions"]
    m = build_manifest(spec, "job-p1", "bank")
    assert m["model_from"] == "job-train1"
    assert m["engine"]["protocol"] == "secretflow/psi-RR22+ss_lr-predict"
    assert used_columns(spec, "bank") == ["uscc", "bank_loan_amount", "default"]
    for member in ("bank", "tax"):
        req = node_request(m, member)
        assert req["model_from"] == "job-train1"  # what each department signs names the training job
    # another training job is another manifest and another slice for the departments
    other = build_manifest(parse_spec(predict(model_from="job-train2")), "job-p1", "bank")
    other["expiry"], other["expiry_unix"] = m["expiry"], m["expiry_unix"]
    assert manifest_sm3(other) != manifest_sm3(m)
    assert node_request(other, "tax")["manifest_hash"] != node_request(m, "tax")["manifest_hash"]


def test_the_slices_of_other_kinds_do_not_change():
    m = build_manifest(parse_spec(base()), "job-t1", "bank")
    assert "model_from" not in m and "model_from" not in node_request(m, "tax")


def test_predict_of_current_borrowers_needs_no_label_column():
    """In-loan scoring: the outcome is not known yet; the label holder's dataset has no label column."""
    spec = parse_spec(predict(label={"member": "bank", "dataset": "loans"}))
    assert spec.label is not None and spec.label.column is None
    check_model_from(spec, training())
    check_against_catalog(spec, MEMBERS, {**CATALOG, ("bank", "loans"): {
        k: v for k, v in CATALOG[("bank", "loans")].items() if k != "default"}},
        {m: {**p, "max_grade": {"vertical_predict": 3}} for m, p in POLICIES.items()})
    assert used_columns(spec, "bank") == ["uscc", "bank_loan_amount"]  # no label column is touched
    m = build_manifest(spec, "job-p2", "bank")
    assert m["label"] == {"member": "bank", "dataset": "loans", "column": None}
    assert hub_of(m) == "bank"  # the scores still go to the label holder
    # training cannot do without it
    with pytest.raises(InvalidJobSpec, match="needs the label's column"):
        parse_spec({**base(), "label": {"member": "bank", "dataset": "loans"}})


def test_model_from_belongs_to_predict_only():
    with pytest.raises(InvalidJobSpec, match="model_from"):
        parse_spec(predict(model_from=None))
    with pytest.raises(InvalidJobSpec, match="model_from"):
        parse_spec({**base(), "model_from": "job-train1"})
    with pytest.raises(InvalidJobSpec, match="needs a label"):
        parse_spec(predict(label=None))
    with pytest.raises(InvalidJobSpec, match="test_fraction"):
        parse_spec(predict(model={"algorithm": "ss_lr", "params": {"test_fraction": 0.2}}))


def test_unknown_or_unusable_training_job_is_named():
    spec = parse_spec(predict())
    with pytest.raises(UnknownTrainingJob, match="there is no job 'job-train1'"):
        check_model_from(spec, None)
    with pytest.raises(UnknownTrainingJob, match="is FAILED"):
        check_model_from(spec, training("FAILED"))
    with pytest.raises(UnknownTrainingJob, match="is a psi job"):
        check_model_from(spec, {"kind": "psi", "state": "SUCCEEDED", "spec": parse_spec(psi())})
    with pytest.raises(UnknownTrainingJob, match="requested by 'tax'"):
        check_model_from(spec, training(requester="tax", outputs=[]))
    assert UnknownTrainingJob.status_code == 422


def test_predict_columns_must_equal_the_training_columns():
    tr = training()
    cols = base()["inputs"]
    swapped = [cols[0], {**cols[1], "columns": ["tax_credit_grade", "tax_vat_paid"]}]
    with pytest.raises(PredictColumnsMismatch, match="tax's columns"):
        check_model_from(parse_spec(predict(inputs=swapped)), tr)
    fewer = [cols[0], {**cols[1], "columns": ["tax_vat_paid"]}]
    with pytest.raises(PredictColumnsMismatch, match="differ from the training job's"):
        check_model_from(parse_spec(predict(inputs=fewer)), tr)
    with pytest.raises(PredictColumnsMismatch, match="algorithm"):
        check_model_from(parse_spec(predict(model={"algorithm": "sgb"})), tr)
    three = training(inputs=[*cols, {"member": "power", "dataset": "power", "columns": ["kwh"]}])
    with pytest.raises(PredictColumnsMismatch, match="has parts at"):
        check_model_from(parse_spec(predict()), three)
    assert PredictColumnsMismatch.status_code == 422


def test_the_predict_dataset_may_be_a_fresh_population():
    # same columns on another dataset (a later snapshot) is what scoring a fresh population means
    inputs = [{**i, "dataset": i["dataset"] + "_2025"} for i in base()["inputs"]]
    spec = parse_spec(predict(inputs=inputs, label={"member": "bank", "dataset": "loans_2025", "column": "default"}))
    check_model_from(spec, training())


def test_runnable_lists_every_kind_of_the_engine(monkeypatch):
    import engines.secretflow.coordinator as spec_mod  # the SecretFlow engine's table

    assert {k for k, _ in RUNNABLE} == {"psi", "vertical_train", "vertical_predict"}
    monkeypatch.setattr(spec_mod, "RUNNABLE", RUNNABLE - {("psi", None)})
    with pytest.raises(EngineUnsupported, match="psi is a valid job"):
        check_runnable(parse_spec(psi()))


def test_exact_sigmoid_on_more_than_three_parties_is_refused_at_submission():
    inputs = [*base()["inputs"], *({"member": m, "dataset": m, "columns": ["x"]} for m in ("power", "court", "social"))]
    with pytest.raises(InvalidJobSpec, match="sig_type 'real' is unreliable on the SPU with 5 parties"):
        parse_spec({**base(), "inputs": inputs, "model": {"algorithm": "ss_lr", "params": {"sig_type": "real"}}})
    parse_spec({**base(), "inputs": inputs})  # the default link is fine
    parse_spec({**base(), "model": {"algorithm": "ss_lr", "params": {"sig_type": "real"}}})  # two parties: fine
