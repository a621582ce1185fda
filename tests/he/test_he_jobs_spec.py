"""he_score / secure_stats job specs at the coordinator: parsing, named errors, the manifest (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.errors import InvalidJobSpec
from coordinator.manifest import build_manifest, manifest_sm3, node_request
from coordinator.spec import check_runnable, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "coordinator" / "examples"
COMMIT = "ab" * 32


def stats(**he) -> dict:
    return {
        "kind": "secure_stats", "requester": "bank", "purpose": "employment profile (test)",
        "inputs": [{"member": "tax", "dataset": "tax_stats", "columns": ["employees"]},
                   {"member": "power", "dataset": "power_stats", "columns": ["employees"]}],
        "he": {"statistics": ["count", "histogram"], "bin_edges": [0, 10, 100], **he},
    }


def score(**he) -> dict:
    return {
        "kind": "he_score", "requester": "bank", "purpose": "scoring (test)", "join_key": "uscc",
        "inputs": [{"member": "bank", "dataset": "bank_2024", "columns": ["b1"]},
                   {"member": "tax", "dataset": "tax_2024", "columns": ["t1", "t2"]},
                   {"member": "power", "dataset": "power_2024", "columns": ["p1"]}],
        "he": {"aligned_by": "job-1", "model": "m", "model_commitment": COMMIT, **he},
    }


def test_examples_parse_and_are_runnable():
    for name, kind in (("he_score.yaml", "he_score"), ("secure_stats.yaml", "secure_stats")):
        spec = load_spec(EXAMPLES / name)
        assert spec.kind == kind and spec.outputs[0].receiver == "bank"
        check_runnable(spec)  # no EngineUnsupported for the HE kinds


def test_secure_stats_manifest_carries_the_query_and_only_the_column():
    spec = parse_spec(stats(min_group_size=20, epsilon=0.5, lower=0, upper=100, statistics=["count", "sum"],
                            bin_edges=None))
    m = build_manifest(spec, "job-abc", "bank")
    assert m["join_key"] is None and [i["columns"] for i in m["inputs"]] == [["employees"], ["employees"]]
    q = m["engine"]["he"]["query"]
    assert (q["job_id"], q["column"], q["min_group_size"], q["epsilon"]) == ("job-abc", "employees", 20, 0.5)
    assert m["engine"]["protocol"] == "he/ckks-secure_stats+masks"
    assert [o["name"] for o in m["outputs"]] == ["stats"]
    # the department's inbox slice is hashed exactly as before; the whole manifest changes with the query
    req = node_request(m, "tax")
    assert req["inputs"] == [{"dataset": "tax_stats", "columns": ["employees"]}]
    other = build_manifest(parse_spec(stats(min_group_size=5)), "job-abc", "bank")
    assert manifest_sm3(other) != manifest_sm3(m)


def test_he_score_manifest_columns_in_weight_order():
    m = build_manifest(parse_spec(score(n_rows=40)), "job-s", "bank")
    he = m["engine"]["he"]
    assert he["departments"] == {"tax": ["t1", "t2"], "power": ["p1"]} and he["requester_features"] == ["b1"]
    assert he["n_rows"] == 40 and m["engine"]["model_commitment"] == COMMIT
    assert [i["columns"] for i in m["inputs"]] == [["uscc", "b1"], ["uscc", "t1", "t2"], ["uscc", "p1"]]


@pytest.mark.parametrize("raw, error, words", [
    (score(min_departments=3), "TooFewDepartments", "needs 3"),
    (stats(min_group_size=0), "InvalidQuery", "min_group_size"),
    (stats(bin_edges=[5, 1]), "InvalidQuery", "strictly increasing"),
    (stats(epsilon=1.0, statistics=["sum"], bin_edges=None), "InvalidQuery", "clip bounds"),
    (stats(params={"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 40, 40, 60], "scale_bits": 40}),
     "ParametersBelowSecurity", "below 128-bit security"),
])
def test_protocol_rules_are_named_errors(raw, error, words):
    with pytest.raises(InvalidJobSpec) as err:
        parse_spec(raw)
    assert type(err.value).__name__ == "EngineSpecRefused" and err.value.name == error and words in err.value.detail
    assert err.value.status_code == 422


@pytest.mark.parametrize("mutate, words", [
    (lambda s: s.pop("he"), "he section"),
    (lambda s: s["he"].pop("aligned_by"), "he.aligned_by"),
    (lambda s: s["he"].update(model_commitment="xyz"), "he.model_commitment"),
    (lambda s: s["he"].update(weights=[1, 2]), "unknown field"),
    (lambda s: s.update(inputs=s["inputs"][1:]), "requester's own dataset"),
    (lambda s: s.pop("join_key"), "join_key"),
])
def test_he_score_structure_errors(mutate, words):
    raw = score()
    mutate(raw)
    with pytest.raises(InvalidJobSpec) as err:
        parse_spec(raw)
    assert words in err.value.detail


def test_secure_stats_needs_one_common_column():
    raw = stats()
    raw["inputs"][1]["columns"] = ["staff"]
    with pytest.raises(InvalidJobSpec, match="same single column"):
        parse_spec(raw)
    raw = stats()
    raw["he"] = None
    with pytest.raises(InvalidJobSpec, match="he section"):
        parse_spec(raw)


def test_other_kinds_refuse_an_he_section():
    raw = {"kind": "vertical_train", "requester": "bank", "purpose": "p", "join_key": "uscc",
           "label": {"member": "bank", "dataset": "b", "column": "y"},
           "inputs": [{"member": "bank", "dataset": "b", "columns": ["x"]},
                      {"member": "tax", "dataset": "t", "columns": ["z"]}], "he": {"masked": True}}
    with pytest.raises(InvalidJobSpec, match="he section"):
        parse_spec(raw)
    raw.pop("he")
    check_runnable(parse_spec(raw))
    raw["kind"] = "psi"
    raw.pop("label")
    check_runnable(parse_spec(raw))  # PSI alone runs on the SecretFlow party (stages ["psi"])
