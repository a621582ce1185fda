"""The new job kinds in a real federation (anvil, contracts, coordinator, three node processes, real
SecretFlow parties over gRPC): SS-LR training with a hold-out, then ``vertical_predict`` of a fresh
population with the model parts each node kept from that training (``model_from``), and a PSI-only
job. Asserts the final states, the receipts on chain, and that the stored model scores the rows the
two populations share exactly as the training job scored them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from coordinator.manifest import dataset_chain_id
from coordinator.sdk import RemoteError
from protocols.crypto.approvals import job_key

from .fedkit import DiagnosingClient, chain, party_procs, started

pytestmark = pytest.mark.slow

KEY = "uscc"
POLICY = {"max_grade": {"vertical_train": 3, "vertical_predict": 3, "psi": 3}, "default_max_grade": 2}


def _fresh_population(data: Any, root: Path) -> dict[str, Path]:
    """A later snapshot: about half of the training enterprises (the same ones everywhere) plus new ones."""
    from protocols.secretflow.synthetic import make_vertical_data

    make_vertical_data(root / "other", n_rows=300, overlap=0.8, seed=29)
    files = {}
    for p in data.parties:
        old = pd.read_csv(p.csv_path, dtype={KEY: str})
        keep = old[old[KEY].map(lambda k: hashlib.sha256(k.encode()).digest()[0] % 2 == 0)]
        new = pd.read_csv(root / "other" / f"{p.name}.csv", dtype={KEY: str})
        path = root / "fresh" / f"{p.name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.concat([keep, new]).sample(frac=1.0, random_state=3).to_csv(path, index=False)
        files[p.name] = path
    return files


@contextmanager
def _federation(root: Path) -> Iterator[dict[str, Any]]:
    from protocols.secretflow.synthetic import make_vertical_data

    data = make_vertical_data(root / "data", n_rows=600, overlap=0.7, seed=17)
    fresh = _fresh_population(data, root)
    members = [
        {"name": p.name, "role": "bank" if p.name == "bank" else "department", "policy": POLICY,
         "datasets": [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": KEY},
                      {"name": f"{p.name}_2025", "file": str(fresh[p.name]), "key_column": KEY}]}
        for p in data.parties
    ]
    with started(root, members) as state:
        yield {"state": state, "data": data, "root": root, "client": DiagnosingClient(state.coordinator_url, root, state=state)}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    with _federation(tmp_path_factory.mktemp("kinds")) as f:
        yield f


def _inputs(fed: dict[str, Any], year: str) -> list[dict[str, Any]]:
    return [{"member": p.name, "dataset": f"{p.name}_{year}", "columns": p.features} for p in fed["data"].parties]


def _run(fed: dict[str, Any], spec: dict[str, Any], cli_approver: str | None = None) -> str:
    c, nodes = fed["client"], fed["state"].nodes
    job = c.submit(spec)
    for m in [i["member"] for i in spec["inputs"]]:
        if m == cli_approver:  # as a department would, with `dcp job approve`
            from typer.testing import CliRunner

            from dcp.cli import build_app

            out = CliRunner().invoke(build_app(), ["job", "approve", job, "--as", m,
                                                   "--federation-dir", str(fed["state"].work_dir)])
            assert out.exit_code == 0, out.output
            # bls_aggregate (the default): the node signs, the coordinator writes one aggregated authorization
            assert f"{m} approved {job} (signed (aggregated by the coordinator))" in out.output
            continue
        assert c.approve(job, m, nodes[m])["status"] == "approved"
    final = c.wait(job, timeout=300)
    assert final.state.value == "SUCCEEDED", final.reason
    return job


def _result(fed: dict[str, Any], job: str, name: str) -> bytes:
    st = fed["state"]
    return fed["client"].result(job, name, st.keys_dir / "bank.keystore.json", st.passphrase_of("bank"))


def _receipts(fed: dict[str, Any], job: str, year: str) -> dict[str, int]:
    ch = chain(fed)
    return {p.name: ch.runs(job_key(job), dataset_chain_id(p.name, f"{p.name}_{year}")) for p in fed["data"].parties}


def test_train_then_predict_a_fresh_population_with_the_stored_model(fed, no_leaked_processes):
    from contracts.audit import run_audit

    label = {"member": "bank", "dataset": "bank_2024", "column": "default"}
    train = _run(fed, {
        "kind": "vertical_train", "requester": "bank", "purpose": "pre-loan credit model (kinds test)",
        "join_key": KEY, "label": label, "inputs": _inputs(fed, "2024"),
        "model": {"algorithm": "ss_lr", "params": {"epochs": 2, "batch_size": 128, "test_fraction": 0.3}},
        "expires_in_s": 900,
    })
    trained = pd.read_csv(io.BytesIO(_result(fed, train, "predictions")), dtype={KEY: str}).set_index(KEY)
    assert set(trained["split"]) == {"train", "test"}

    predict_spec = {
        "kind": "vertical_predict", "requester": "bank", "purpose": "in-loan batch scoring (kinds test)",
        "join_key": KEY, "label": {**label, "dataset": "bank_2025"}, "inputs": _inputs(fed, "2025"),
        "model": {"algorithm": "ss_lr"}, "model_from": train, "expires_in_s": 900,
    }
    # the manifest the departments approve names the training job
    job = _run(fed, predict_spec)
    assert fed["client"].manifest(job)["manifest"]["model_from"] == train
    scored = pd.read_csv(io.BytesIO(_result(fed, job, "predictions")), dtype={KEY: str}).set_index(KEY)
    both = scored.index.intersection(trained.index)
    assert 50 < len(both) < len(scored)  # old enterprises and new ones
    assert (scored.loc[both, "score"] - trained.loc[both, "score"]).abs().max() < 2e-4  # fixed-point precision
    assert _receipts(fed, train, "2024") == {"bank": 1, "tax": 1, "power": 1}
    assert _receipts(fed, job, "2025") == {"bank": 1, "tax": 1, "power": 1}
    report = run_audit(chain(fed).w3, fed["state"].registry)
    assert report.clean, report

    # named errors at submission: an unknown training job, columns other than the model's
    c = fed["client"]
    with pytest.raises(RemoteError, match="UnknownTrainingJob"):
        c.submit({**predict_spec, "model_from": "job-0000000000000000"})
    fewer = _inputs(fed, "2025")
    fewer[1]["columns"] = fewer[1]["columns"][:-1]
    with pytest.raises(RemoteError, match="PredictColumnsMismatch"):
        c.submit({**predict_spec, "inputs": fewer})
    assert not party_procs(fed["root"])


def test_psi_only_job_returns_the_intersection_keys_to_the_requester(fed, no_leaked_processes):
    inputs = [{"member": p.name, "dataset": f"{p.name}_2024", "columns": []} for p in fed["data"].parties]
    job = _run(fed, {"kind": "psi", "requester": "bank", "purpose": "common customers (kinds test)",
                     "join_key": KEY, "inputs": inputs, "expires_in_s": 900}, cli_approver="tax")
    keys = pd.read_csv(io.BytesIO(_result(fed, job, "intersection")), dtype={KEY: str})
    assert list(keys.columns) == [KEY]  # the keys only, never a feature
    assert len(keys) == fed["data"].true_intersection
    expected = None
    for p in fed["data"].parties:
        mine = set(pd.read_csv(p.csv_path, dtype={KEY: str})[KEY])
        expected = mine if expected is None else expected & mine
    assert set(keys[KEY]) == expected
    assert _receipts(fed, job, "2024") == {"bank": 1, "tax": 1, "power": 1}
