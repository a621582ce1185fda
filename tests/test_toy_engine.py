"""The next engine is an addition: a toy engine registered from the test suite only
(``tests/toy_engine.py``, loaded by every process through ``DCP_ENGINES``) runs through submission,
the departments' approvals, the authorization on chain (anvil), the nodes' one step route with its
authorization guard, sealing and usage receipts, and the coordinator's one running step — with no
coordinator or node module that names it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from coordinator.manifest import dataset_chain_id
from federation.launcher import client_for
from protocols.crypto.approvals import job_key

from .coordinator.fedkit import DiagnosingClient, chain, started
from .toy_engine import ANSWER, KIND

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _data(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    keys = [f"91{i:016d}" for i in range(20)]
    out = {}
    for name, col in (("bank", "loans"), ("tax", "vat")):
        out[name] = root / f"{name}.csv"
        pd.DataFrame({"uscc": keys, col: range(20)}).to_csv(out[name], index=False)
    return out


def test_a_toy_engine_runs_through_the_whole_job_path(tmp_path, monkeypatch, no_leaked_processes):
    for module in ("coordinator", "nodes"):  # nothing of the coordinator or the nodes names the toy
        assert not any(KIND in p.read_text() or "toy_engine" in p.read_text()
                       for p in (ROOT / module).rglob("*.py")), module
    monkeypatch.setenv("DCP_ENGINES", "tests.toy_engine")
    files = _data(tmp_path / "data")
    policy = {"max_grade": {KIND: 3}, "default_max_grade": 2}
    members = [{"name": m, "role": "bank" if m == "bank" else "department", "policy": policy,
                "datasets": [{"name": f"{m}_2024", "file": str(f), "key_column": "uscc"}]}
               for m, f in files.items()]
    with started(tmp_path, members) as state:
        c = DiagnosingClient(state.coordinator_url, tmp_path, state=state)  # the bank, over 国密 TLS
        spec = {"kind": KIND, "requester": "bank", "purpose": "a constant, to prove the engine contract",
                "join_key": "uscc", "inputs": [{"member": "bank", "dataset": "bank_2024", "columns": ["loans"]},
                                               {"member": "tax", "dataset": "tax_2024", "columns": []}],
                "expires_in_s": 900}
        job = c.submit(spec)
        manifest = c.manifest(job)["manifest"]
        assert manifest["engine"] == {"name": "toy", "protocol": "toy/constant", "constant": "42"}
        for m in ("bank", "tax"):
            assert c.approve(job, m, state.nodes[m])["status"] == "approved"
        final = c.wait(job, timeout=180)
        assert final.state.value == "SUCCEEDED", final.reason
        assert {m: t["status"] for m, t in final.tasks.items()} == {"bank": "succeeded", "tax": "succeeded"}
        got = c.result(job, "answer", state.keys_dir / "bank.keystore.json", state.passphrase_of("bank"))
        assert got == ANSWER
        ch = chain({"state": state})
        assert {m: ch.runs(job_key(job), dataset_chain_id(m, f"{m}_2024")) for m in ("bank", "tax")} == {
            "bank": 1, "tax": 1}
        runs = {m: ch.runs(job_key(job), dataset_chain_id(m, f"{m}_2024")) for m in ("bank", "tax")}
        tax = state.nodes["tax"]
        as_coordinator = client_for(state, "coordinator")  # the step route is the coordinator's alone
        # a member that is not the coordinator may not drive a step
        bank = client_for(state, "bank").post(f"{tax}/tasks/{job}/answer", json={"note": "again"}, timeout=30)
        assert (bank.status_code, bank.json()["error"]) == (403, "Forbidden"), bank.text
        # a finished task is never run again: the same answer, no second receipt
        again = as_coordinator.post(f"{tax}/tasks/{job}/answer", json={"note": "again"}, timeout=30)
        assert again.status_code == 200 and again.json()["status"] == "succeeded"
        # a body the step's model does not take, a step the engine does not have, a job never approved:
        # each refused by name, and nothing changes
        bad = as_coordinator.post(f"{tax}/tasks/{job}/answer", json={"note": "x", "rows": 10**6}, timeout=30)
        assert (bad.status_code, bad.json()["error"]) == (422, "TaskMismatch"), bad.text
        assert "rows" in bad.json()["detail"]
        nostep = as_coordinator.post(f"{tax}/tasks/{job}/exfiltrate", json={}, timeout=30)
        assert (nostep.status_code, nostep.json()["error"]) == (404, "StepNotFound"), nostep.text
        stranger = as_coordinator.post(f"{tax}/tasks/job-never-approved/answer", json={"note": "x"}, timeout=30)
        assert (stranger.status_code, stranger.json()["error"]) == (403, "NotAuthorized"), stranger.text
        assert {m: ch.runs(job_key(job), dataset_chain_id(m, f"{m}_2024")) for m in ("bank", "tax")} == runs
        assert as_coordinator.get(f"{tax}/tasks/{job}", timeout=30).json()["status"] == "succeeded"
        assert as_coordinator.get(f"{tax}/tasks/job-never-approved", timeout=30).status_code == 404
