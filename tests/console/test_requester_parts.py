"""The requester console's parts without a federation: the spec a filled form makes, where a
coordinator error is shown, the report from a predictions table (and its refusals), and the demo's
console block."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from starlette.datastructures import FormData

from console.requester.forms import JobForm, error_field
from console.requester.report import ReportError, build_report
from coordinator.errors import InvalidJobSpec
from coordinator.spec import parse_spec


def _form(**over: object) -> FormData:
    items = [("kind", "vertical_train"), ("purpose", "pre-loan scoring"), ("join_key", "uscc"),
             ("dataset", "bank/bank_2024"), ("dataset", "tax/tax_2024"),
             ("columns:bank/bank_2024", "revenue"), ("columns:bank/bank_2024", "default"),
             ("columns:tax/tax_2024", "vat_paid"), ("label", "bank/bank_2024/default"),
             ("algorithm", "ss_lr"), ("epochs", "2"), ("batch_size", "128"), ("test_fraction", "0.3"),
             ("expires_in_h", "2"), ("max_runs", "1")]
    items = [(k, v) for k, v in items if k not in over] + [(k, v) for k, v in over.items() if v is not None]
    return FormData(items)


def test_a_filled_form_is_the_spec_the_coordinator_accepts() -> None:
    spec, errors = JobForm.from_form(_form()).to_spec("bank")
    assert errors == {}
    assert spec["inputs"] == [{"member": "bank", "dataset": "bank_2024", "columns": ["revenue"]},  # label dropped
                              {"member": "tax", "dataset": "tax_2024", "columns": ["vat_paid"]}]
    assert spec["label"] == {"member": "bank", "dataset": "bank_2024", "column": "default"}
    assert spec["model"] == {"algorithm": "ss_lr", "params": {"epochs": 2, "batch_size": 128, "test_fraction": 0.3}}
    assert (spec["expires_in_s"], spec["max_runs"]) == (7200, 1)
    parse_spec(spec)  # the coordinator's own parser takes it


def test_a_number_that_is_not_one_is_refused_before_sending() -> None:
    _, errors = JobForm.from_form(_form(epochs="two", max_runs="1.5x")).to_spec("bank")
    assert set(errors) == {"params", "max_runs"}


@pytest.mark.parametrize(("over", "field"), [
    ({"purpose": " "}, "purpose"),
    ({"join_key": None}, "join_key"),
    ({"label": None}, "label"),
    ({"dataset": None}, "datasets"),
    ({"kind": "no_such_kind"}, "kind"),
])
def test_each_coordinator_error_lands_next_to_its_field(over: dict, field: str) -> None:
    form = _form(**over)
    if over.get("dataset", "") is None:
        form = FormData([(k, v) for k, v in form.multi_items() if not k.startswith("columns:")])
    spec, _ = JobForm.from_form(form).to_spec("bank")
    if over.get("kind"):
        spec["kind"] = over["kind"]
    with pytest.raises(InvalidJobSpec) as exc:
        parse_spec(spec)
    assert error_field(str(exc.value)) == field, str(exc.value)


def test_catalog_errors_name_their_field() -> None:
    assert error_field("inputs: bank/bank_2024 has no join key 'x'") == "join_key"
    assert error_field("inputs: tax has no dataset 'nope' in the catalog") == "datasets"
    assert error_field("inputs: bank/bank_2024 has no label 'y'") == "label"
    assert error_field("tax's policy does not accept requests from 'bank'") == "form"


def _predictions(n: int = 400, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1)
    frame = pd.DataFrame({"uscc": [f"9131{i:014d}" for i in range(n)], "score": score, "default": y,
                          "split": np.where(np.arange(n) % 3 == 0, "test", "train")})
    return frame.to_csv(index=False).encode()


def test_the_report_of_a_predictions_table() -> None:
    rep = build_report(_predictions(), white_max_pd=0.1, watch_min_pd=0.8)
    test = pd.read_csv(io.BytesIO(_predictions()), dtype={"uscc": str}).query("split == 'test'")
    from scenarios.bank_credit.metrics import auc

    assert rep.evaluation == "holdout" and rep.summary.n_test == len(test)
    assert rep.summary.auc == pytest.approx(auc(test["default"], test["score"]))
    assert rep.summary.psi is not None and len(rep.summary.bands) >= 1
    white, watch = rep.white_list(), rep.watch_list()
    assert list(white.columns) == ["uscc", "pd"] and (white["pd"] <= 0.1).all() and white["pd"].is_monotonic_increasing
    assert (watch["pd"] >= 0.8).all() and watch["pd"].is_monotonic_decreasing
    assert white["uscc"].str.startswith("9131").all()  # keys stay text (leading digits kept)


@pytest.mark.parametrize("bad", [b"", b"uscc,score\n1,0.5\n", b"uscc,score,default\n1,1.5,0\n2,0.2,1\n",
                                 b"uscc,score,default\n1,0.3,0\n2,0.2,0\n", b"\xff\xfe\x00"])
def test_a_table_the_report_cannot_read_is_refused_by_name(bad: bytes) -> None:
    with pytest.raises(ReportError):
        build_report(bad)


def test_the_demo_prints_the_consoles_and_the_officers_logins(tmp_path: Path) -> None:
    from rich.console import Console

    from scenarios.bank_credit.demo import show_consoles

    files = {"bank_a": {"analyst": tmp_path / "analyst.password", "approver": tmp_path / "approver.password"},
             "tax": {"approver": tmp_path / "tax-approver.password"}}
    state = SimpleNamespace(nodes={"bank_a": "http://127.0.0.1:1", "tax": "http://127.0.0.1:2"},
                            officer_password_files=files)
    buf = io.StringIO()
    show_consoles(Console(file=buf, width=200), state, "http://127.0.0.1:3")
    out = buf.getvalue()
    assert "http://127.0.0.1:3/" in out and "bank_a http://127.0.0.1:1" in out
    # with the nodes' console listeners: the bank's requester console is on its listener
    state.consoles = {"bank_a": "https://127.0.0.1:11", "tax": "https://127.0.0.1:12"}
    buf = io.StringIO()
    show_consoles(Console(file=buf, width=200), state, None)
    out = buf.getvalue()
    assert "tax https://127.0.0.1:12/" in out and "bank_a https://127.0.0.1:11/requester/" in out
    assert "tax https://127.0.0.1:12/requester" not in out
    assert "analyst" in out and str(tmp_path / "tax-approver.password") in out
