"""The typed manifest (protocols.manifest.Manifest): the same content hashes exactly as the dict did
(nodes recompute the hash), and the engine section is checked by the engine's name."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from coordinator.manifest import build_manifest, manifest_sm3
from coordinator.spec import parse_spec
from protocols.manifest import CkksSection, Manifest, OtherEngineSection, SecretFlowSection

EXPIRY = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
LABEL = {"member": "bank", "dataset": "bank_2024", "column": "default"}
INPUTS = [{"member": "bank", "dataset": "bank_2024", "columns": ["b1", "b2"]},
          {"member": "tax", "dataset": "tax_2024", "columns": ["t1"]}]
SPECS = {
    "psi": {"kind": "psi", "requester": "bank", "purpose": "p", "join_key": "uscc", "inputs": INPUTS},
    "train": {"kind": "vertical_train", "requester": "bank", "purpose": "train 信用", "join_key": "uscc",
              "label": LABEL, "inputs": INPUTS, "timeout_s": 300,
              "model": {"algorithm": "ss_xgb", "params": {"num_boost_round": 3, "max_depth": 3, "test_fraction": 0.3}}},
    "predict": {"kind": "vertical_predict", "requester": "bank", "purpose": "score", "join_key": "uscc",
                "label": {"member": "bank", "dataset": "bank_2024"}, "inputs": INPUTS, "model_from": "job-t"},
    "stats": {"kind": "secure_stats", "requester": "bank", "purpose": "stats",
              "inputs": [{"member": "tax", "dataset": "tax_stats", "columns": ["employees"]},
                         {"member": "power", "dataset": "power_stats", "columns": ["employees"]}],
              "he": {"statistics": ["count", "histogram"], "bin_edges": [0, 10, 100]}},
    "score": {"kind": "he_score", "requester": "bank", "purpose": "scoring", "join_key": "uscc",
              "inputs": [{"member": "bank", "dataset": "bank_2024", "columns": ["b1"]},
                         {"member": "tax", "dataset": "tax_2024", "columns": ["t1", "t2"]},
                         {"member": "power", "dataset": "power_2024", "columns": ["p1"]}],
              "he": {"aligned_by": "job-1", "model": "m", "model_commitment": "ab" * 32, "n_rows": 40}},
}
#: The hashes main computed for these specs before the manifest was a model (dict + build_he_manifest).
BEFORE = {
    "psi": "f40fe7cb9aeb8ce72b75d99b8c604ec8c8823ba0032792e38c66e195bd1aff60",
    "train": "fe1ed0a92b811e42cfde430f44afbab75739eca151d7f5a2d33fde172f1154e0",
    "predict": "e7e0ef77370801f07656311b03ff1158d48cd76a3889396a43e2f1beef4e5e8d",
    "stats": "b15b52ef91ea7014c2a0d4dd75863fac35c45e8a51f61e963bf7d02dea484808",
    "score": "4d71e0f12ead039f95ec634cc2bf8a398683252f96aaf66ba042328b84590c7f",
}
SECTION = {"psi": SecretFlowSection, "train": SecretFlowSection, "predict": SecretFlowSection,
           "stats": CkksSection, "score": CkksSection}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_same_content_hashes_as_before(name):
    m = build_manifest(parse_spec(SPECS[name]), "job-fixed-1", "bank", expiry=EXPIRY)
    assert manifest_sm3(m).hex() == BEFORE[name]
    typed = Manifest.model_validate(m)
    assert type(typed.engine) is SECTION[name]
    assert typed.as_dict() == m and typed.sm3().hex() == BEFORE[name]
    assert ("model_from" in m) == (name == "predict")


def test_the_engine_section_is_checked_by_its_name():
    m = build_manifest(parse_spec(SPECS["train"]), "job-fixed-1", "bank", expiry=EXPIRY)
    broken = {**m, "engine": {k: v for k, v in m["engine"].items() if k != "psi_protocol"}}
    with pytest.raises(ValidationError, match="psi_protocol"):
        Manifest.model_validate(broken)
    smuggled = {**m, "engine": {**m["engine"], "extra": 1}}  # a known engine's section takes no extra field
    with pytest.raises(ValidationError, match="extra"):
        Manifest.model_validate(smuggled)
    plugin = Manifest.model_validate({**m, "engine": {"name": "toy", "protocol": "toy/constant", "constant": "42"}})
    assert isinstance(plugin.engine, OtherEngineSection)
    assert plugin.as_dict()["engine"] == {"name": "toy", "protocol": "toy/constant", "constant": "42"}
    with pytest.raises(ValidationError, match="nonsense"):
        Manifest.model_validate({**m, "nonsense": True})
