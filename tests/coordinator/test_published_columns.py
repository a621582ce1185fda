"""``columns: published`` in a user's job spec (#18.6): the coordinator resolves it at submission to every
column the member publishes for the dataset, but the join key, the label and what the member's policy
keeps from such a job; the requester's node check accepts the signature over ``published``."""

from __future__ import annotations

import json

import pytest

from coordinator.errors import UnknownDataset
from coordinator.spec import parse_spec
from nodes.services.requests import _spec_columns

from .test_spec import base


def _published(**over) -> dict:
    spec = base()
    spec["inputs"] = [{"member": "bank", "dataset": "loans", "columns": "published"},
                      {"member": "tax", "dataset": "tax", "columns": "published"}]
    spec.update(over)
    return spec


def test_published_columns_resolve_against_the_catalog_and_policy(coord):
    spec = parse_spec(_published())
    assert spec.uses_published and spec.input_of("tax").columns == "published"
    out = coord.submit(spec)
    manifest = json.loads(coord.get_job(out.job_id).manifest_json)
    features = {i["member"]: i["features"] for i in manifest["inputs"]}
    # bank: all but the key and the label; tax: all but the key, the grade-4 column and the criminal category
    assert features == {"bank": ["bank_loan_amount"], "tax": ["tax_vat_paid", "tax_credit_grade"]}
    stored = json.loads(coord.get_job(out.job_id).spec_json)
    assert stored["inputs"][1]["columns"] == ["tax_vat_paid", "tax_credit_grade"]


def test_published_for_a_dataset_the_catalog_lacks_is_named(coord):
    spec = parse_spec(_published(inputs=[{"member": "bank", "dataset": "loans", "columns": "published"},
                                         {"member": "tax", "dataset": "nope", "columns": "published"}]))
    with pytest.raises(UnknownDataset, match="nope"):
        coord.submit(spec)


def test_a_node_reads_a_signed_published_as_any_column_of_that_dataset():
    spec = _published()
    assert _spec_columns(spec, "tax") == {"tax": None}
    assert _spec_columns(base(), "tax") == {"tax": {"uscc", "tax_vat_paid", "tax_credit_grade"}}
