"""Job spec parsing and validation: every mistake gets a named error with a precise message."""

from __future__ import annotations

import json

import pytest

from coordinator.errors import (
    EngineUnsupported,
    InvalidJobSpec,
    OutputNotToRequester,
    PolicyForbidden,
    UnknownColumn,
    UnknownDataset,
    UnknownJobKind,
    UnknownMember,
)
from coordinator.manifest import build_manifest, dataset_chain_id, manifest_sm3, node_request
from coordinator.spec import check_runnable, load_spec, load_spec_text, parse_spec
from coordinator.validation import check_against_catalog
from protocols.crypto.approvals import canonical_json as canonical_bytes
from tests.coordkit import CATALOG, POLICY, col  # noqa: F401 - CATALOG is shared with test_kinds_spec


def base() -> dict:
    return {
        "kind": "vertical_train",
        "requester": "bank",
        "purpose": "pre-loan credit model for small enterprises",
        "join_key": "uscc",
        "label": {"member": "bank", "dataset": "loans", "column": "default"},
        "inputs": [
            {"member": "bank", "dataset": "loans", "columns": ["bank_loan_amount"]},
            {"member": "tax", "dataset": "tax", "columns": ["tax_vat_paid", "tax_credit_grade"]},
        ],
        "model": {"algorithm": "ss_lr", "params": {"epochs": 2}},
        "expires_in_s": 3600,
    }


MEMBERS = {
    "bank": {"role": "bank", "active": True, "node_url": "http://b"},
    "tax": {"role": "department", "active": True, "node_url": "http://t"},
}


POLICIES = {"bank": POLICY, "tax": POLICY}


def test_valid_spec_defaults_outputs_to_requester():
    spec = parse_spec(base())
    assert [(o.name, o.receiver) for o in spec.outputs] == [("metrics", "bank"), ("predictions", "bank")]
    check_against_catalog(spec, MEMBERS, CATALOG, POLICIES)
    check_runnable(spec)


def test_yaml_and_json_files(tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(base()))
    (tmp_path / "s.json").write_text(json.dumps(base()))
    assert load_spec(tmp_path / "s.yaml") == load_spec(tmp_path / "s.json")
    with pytest.raises(InvalidJobSpec, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(InvalidJobSpec, match="not valid YAML"):
        load_spec_text("kind: [unclosed")


def test_unknown_kind():
    with pytest.raises(UnknownJobKind, match="unknown job kind 'train_everything'"):
        parse_spec({**base(), "kind": "train_everything"})


def test_purpose_required():
    raw = base()
    del raw["purpose"]
    with pytest.raises(InvalidJobSpec, match="^purpose: Field required"):
        parse_spec(raw)
    with pytest.raises(InvalidJobSpec, match="purpose: the purpose must say"):
        parse_spec({**base(), "purpose": "   "})


def test_bad_model_param_named():
    raw = base()
    raw["model"]["params"] = {"epochs": 0}
    with pytest.raises(InvalidJobSpec, match=r"^model\.epochs: Input should be greater"):
        parse_spec(raw)


def test_label_required_for_training_and_must_be_an_input():
    raw = base()
    del raw["label"]
    with pytest.raises(InvalidJobSpec, match="needs a label"):
        parse_spec(raw)
    raw = base()
    raw["label"]["dataset"] = "other"
    with pytest.raises(InvalidJobSpec, match="label's dataset bank/other is not among the inputs"):
        parse_spec(raw)


def test_outputs_only_to_requester():
    raw = {**base(), "outputs": [{"name": "predictions", "receiver": "tax"}]}
    with pytest.raises(OutputNotToRequester, match="'predictions' would go to 'tax'"):
        parse_spec(raw)


def test_unknown_output_name():
    with pytest.raises(InvalidJobSpec, match="has no output 'weights'"):
        parse_spec({**base(), "outputs": [{"name": "weights", "receiver": "bank"}]})


def test_unknown_member_dataset_column():
    spec = parse_spec(base())
    with pytest.raises(UnknownMember, match="'tax' is not an active member"):
        check_against_catalog(spec, {"bank": MEMBERS["bank"]}, CATALOG, POLICIES)
    with pytest.raises(UnknownDataset, match="tax has no dataset 'tax'"):
        check_against_catalog(spec, MEMBERS, {("bank", "loans"): CATALOG[("bank", "loans")]}, POLICIES)
    raw = base()
    raw["inputs"][1]["columns"] = ["tax_vat_paid", "tax_nope"]
    with pytest.raises(UnknownColumn, match="tax/tax has no column 'tax_nope'"):
        check_against_catalog(parse_spec(raw), MEMBERS, CATALOG, POLICIES)
    raw = {**base(), "join_key": "id"}
    with pytest.raises(UnknownColumn, match="no join key 'id'"):
        check_against_catalog(parse_spec(raw), MEMBERS, CATALOG, POLICIES)


def test_policy_forbidden_columns():
    raw = base()
    raw["inputs"][1]["columns"] = ["tax_secret"]
    with pytest.raises(PolicyForbidden, match="tax_secret has grade 4; tax's policy allows at most 3"):
        check_against_catalog(parse_spec(raw), MEMBERS, CATALOG, POLICIES)
    raw["inputs"][1]["columns"] = ["tax_case"]
    with pytest.raises(PolicyForbidden, match="negative-list category 'criminal'"):
        check_against_catalog(parse_spec(raw), MEMBERS, CATALOG, POLICIES)
    strict = {**POLICIES, "tax": {**POLICY, "allowed_roles": ["department"]}}
    with pytest.raises(PolicyForbidden, match="role 'bank'"):
        check_against_catalog(parse_spec(base()), MEMBERS, CATALOG, strict)


def test_engine_unsupported_is_named(monkeypatch):
    import engines.secretflow.coordinator as spec_mod  # the SecretFlow engine's table

    raw = base()
    raw["model"] = {"algorithm": "ss_xgb"}
    check_runnable(parse_spec(raw))  # the engine runs SS-XGB now
    monkeypatch.setattr(spec_mod, "RUNNABLE", spec_mod.RUNNABLE - {("vertical_train", "ss_xgb")})
    with pytest.raises(EngineUnsupported, match="vertical_train with ss_xgb"):
        check_runnable(parse_spec(raw))


def test_gm_mode_selects_sm2_ecdh():
    assert parse_spec({**base(), "gm_mode": True}).psi_protocol == "ECDH_SM2"
    with pytest.raises(InvalidJobSpec, match="gm_mode"):
        parse_spec({**base(), "gm_mode": True, "psi_protocol": "ECDH"})


def test_manifest_canonical_and_hash_stable():
    spec = parse_spec(base())
    from datetime import datetime, timezone

    exp = datetime(2030, 1, 1, tzinfo=timezone.utc)
    m1 = build_manifest(spec, "job-1", "bank", expiry=exp)
    m2 = build_manifest(parse_spec(json.loads(json.dumps(base()))), "job-1", "bank", expiry=exp)
    assert canonical_bytes(m1) == canonical_bytes(m2)
    assert b" " not in canonical_bytes(m1).replace(b"pre-loan credit model for small enterprises", b"")
    assert len(manifest_sm3(m1)) == 32 and manifest_sm3(m1) == manifest_sm3(m2)
    m3 = build_manifest(parse_spec({**base(), "purpose": "something else"}), "job-1", "bank", expiry=exp)
    assert manifest_sm3(m3) != manifest_sm3(m1)
    assert m1["inputs"][1]["dataset_id"] == dataset_chain_id("tax", "tax").hex()
    assert m1["inputs"][1]["columns"] == ["uscc", "tax_vat_paid", "tax_credit_grade"]
    assert m1["inputs"][0]["columns"] == ["uscc", "bank_loan_amount", "default"]


def test_node_request_is_the_nodes_own_slice_with_the_nodes_hash():
    from nodes.models import ApprovalRequestIn
    from nodes.services.approvals import manifest_of
    from protocols.crypto.approvals import manifest_hash

    m = build_manifest(parse_spec(base()), "job-2", "bank")
    req = node_request(m, "tax")
    assert [i["dataset"] for i in req["inputs"]] == ["tax"]
    assert req["receivers"] == {"metrics": ["bank"], "predictions": ["bank"]}
    assert manifest_hash(manifest_of(ApprovalRequestIn.model_validate(req))).hex() == req["manifest_hash"]
