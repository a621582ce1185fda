"""A three-member federation in real processes: anvil, the contracts, a coordinator and three nodes
(each its own process, database and keys), real SecretFlow parties over gRPC.

One federation serves the module (starting it costs ~20 s); the destructive test (a node killed
mid-run) runs last. Every test asserts the final state, what is on chain, and that no engine
process is left behind."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from coordinator.manifest import dataset_chain_id
from coordinator.sdk import DcpClient, RemoteError
from federation.launcher import read_state, respawn, transport_for
from protocols.crypto.approvals import job_key
from protocols.crypto.keystore import load_keystore

from .fedkit import chain, federation, vertical_spec, wait_stage
from .fedkit import party_procs as _party_procs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    # per_owner: each department approves on chain from its own account (test_governance_e2e.py runs
    # the default, bls_aggregate)
    coordinator = {"node_timeout_s": 6.0, "poll_interval_s": 0.3, "authorization_mode": "per_owner"}
    with federation(tmp_path_factory.mktemp("fed"), 1500, 11, coordinator) as f:
        yield f


def spec(fed, **over) -> dict:
    return vertical_spec(fed, "pre-loan credit model for small enterprises (test)", **over)


def approve_all(fed, job_id, members=("bank", "tax", "power")):
    c, nodes = fed["client"], fed["state"].nodes
    for m in members:
        out = c.approve(job_id, m, nodes[m])
        assert out["status"] == "approved" and out["chain_ref"].startswith("0x")


def test_end_to_end_psi_sslr_receipts_and_clean_audit(fed):
    from contracts.audit import run_audit

    c, st = fed["client"], fed["state"]
    job = c.submit(spec(fed))
    approve_all(fed, job)
    final = c.wait(job, timeout=300)
    assert final.state.value == "SUCCEEDED", final.reason
    assert [e["to"] for e in final.events] == ["SUBMITTED", "PENDING_APPROVAL", "AUTHORIZED", "RUNNING", "SUCCEEDED"]
    assert final.approvals == {"bank": "approved", "tax": "approved", "power": "approved"}
    # on chain: the authorization with every owner as approver, one receipt per dataset
    ch = chain(fed)
    auth = ch.authorization(job_key(job))
    assert auth is not None and not auth.revoked_at
    assert set(auth.approvers) == {st.accounts[m] for m in ("bank", "tax", "power")}
    assert auth.coordinator == st.accounts["coordinator"]
    manifest = c.manifest(job)
    assert auth.terms.manifest_hash.hex() == manifest["manifest_hash"]
    for m in ("bank", "tax", "power"):
        assert ch.runs(job_key(job), dataset_chain_id(m, f"{m}_2024")) == 1
    # results: sealed to the bank's SM2 key; only its keystore opens them
    passphrase = st.passphrase_of("bank")
    metrics = json.loads(c.result(job, "metrics", st.keys_dir / "bank.keystore.json", passphrase))
    assert 0.6 < metrics["auc"] <= 1.0
    assert metrics["n_rows"] == fed["data"].true_intersection
    preds = c.result(job, "predictions", st.keys_dir / "bank.keystore.json", passphrase).decode()
    assert len(preds.strip().splitlines()) == fed["data"].true_intersection + 1
    from protocols.crypto.errors import CryptoError

    with pytest.raises(CryptoError):
        c.result(job, "metrics", st.keys_dir / "tax.keystore.json", passphrase)
    # the regulator's audit, from the chain alone, is clean
    report = run_audit(ch.w3, st.registry)
    assert report.clean, report
    assert not _party_procs(fed["root"])


def test_two_jobs_at_once_over_overlapping_nodes(fed):
    c = fed["client"]
    d = fed["data"]
    two = [p for p in d.parties if p.name in ("bank", "tax")]
    jobs = [
        c.submit(spec(fed)),
        c.submit(spec(fed, inputs=[{"member": p.name, "dataset": f"{p.name}_2024", "columns": p.features} for p in two])),
    ]
    approve_all(fed, jobs[0])
    approve_all(fed, jobs[1], ("bank", "tax"))
    finals = [c.wait(j, timeout=400) for j in jobs]
    assert [f.state.value for f in finals] == ["SUCCEEDED", "SUCCEEDED"], [f.reason for f in finals]
    ch = chain(fed)
    assert ch.runs(job_key(jobs[1]), dataset_chain_id("power", "power_2024")) == 0
    assert ch.runs(job_key(jobs[1]), dataset_chain_id("tax", "tax_2024")) == 1
    assert not _party_procs(fed["root"])


def test_rejection(fed, no_leaked_processes):
    c, nodes = fed["client"], fed["state"].nodes
    job = c.submit(spec(fed))
    c.approve(job, "bank", nodes["bank"])
    c.reject(job, "tax", nodes["tax"], "purpose not covered by our data-sharing agreement")
    final = c.wait(job, timeout=60)
    assert final.state.value == "REJECTED"
    assert final.reason == "tax rejected: purpose not covered by our data-sharing agreement"
    assert chain(fed).authorization(job_key(job)) is None


def test_expiry(fed, no_leaked_processes):
    c = fed["client"]
    job = c.submit(spec(fed, expires_in_s=3))
    final = c.wait(job, timeout=30)
    assert final.state.value == "EXPIRED"
    assert "expired" in final.reason
    assert chain(fed).authorization(job_key(job)) is None


def test_results_elsewhere_rejected_at_submission(fed, no_leaked_processes):
    c = fed["client"]
    with pytest.raises(RemoteError) as err:
        c.submit(spec(fed, outputs=[{"name": "predictions", "receiver": "tax"}]))
    assert err.value.status_code == 403 and err.value.error == "OutputNotToRequester"
    assert "results go only to the requester 'bank'" in err.value.remote_detail
    with pytest.raises(RemoteError) as err:
        bad = spec(fed)
        bad["inputs"][1]["columns"] = ["tax_vat_paid", "no_such_column"]
        c.submit(bad)
    assert err.value.error == "UnknownColumn"


def test_revocation_mid_wait(fed, no_leaked_processes):
    c, nodes = fed["client"], fed["state"].nodes
    job = c.submit(spec(fed))
    c.approve(job, "tax", nodes["tax"])
    # tax, over its own 国密 TLS identity and signing with its own key, cannot withdraw the bank's job
    st = fed["state"]
    tax_keys = load_keystore(st.keys_dir / "tax.keystore.json", st.passphrase_of("tax"))
    as_tax = DcpClient(st.coordinator_url, signer=tax_keys, transport=transport_for(st, "tax"))
    with pytest.raises(RemoteError) as err:
        as_tax.revoke(job, by="tax")
    assert err.value.error == "Forbidden" and "only the requester bank" in err.value.remote_detail
    assert c.status(job).state.value == "PENDING_APPROVAL"
    st = c.revoke(job, by="bank", reason="the loan application was withdrawn")
    assert st.state.value == "REVOKED"
    time.sleep(1.0)  # the scheduler must not move it on
    final = c.status(job)
    assert final.state.value == "REVOKED" and final.reason == "the loan application was withdrawn"
    assert chain(fed).authorization(job_key(job)) is None


def test_coordinator_killed_and_restarted_mid_run(fed):
    c, st = fed["client"], fed["state"]
    job = c.submit(spec(fed))
    approve_all(fed, job)
    wait_stage(c, job, lambda s: s.state.value == "RUNNING" and any(
        (t.get("stage") or "").startswith(("psi", "train")) for t in s.tasks.values()))
    os.killpg(read_state(st.work_dir).pids["coordinator"], signal.SIGKILL)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{st.coordinator_url}/health", timeout=2)
    time.sleep(2)
    respawn(st.work_dir, "coordinator")
    final = c.wait(job, timeout=300)
    assert final.state.value == "SUCCEEDED", final.reason
    assert [e["to"] for e in final.events][-2:] == ["RUNNING", "SUCCEEDED"]
    assert chain(fed).runs(job_key(job), dataset_chain_id("power", "power_2024")) == 1
    assert not _party_procs(fed["root"])


def test_node_killed_mid_run_fails_job_and_stops_the_others(fed):
    c, st = fed["client"], fed["state"]
    job = c.submit(spec(fed, model={"algorithm": "ss_lr", "params": {"epochs": 30, "batch_size": 64}}))
    approve_all(fed, job)
    wait_stage(c, job, lambda s: s.state.value == "RUNNING" and any(
        (t.get("stage") or "").startswith("train") for t in s.tasks.values()))
    t0 = time.monotonic()
    os.killpg(read_state(st.work_dir).pids["power"], signal.SIGKILL)
    final = c.wait(job, timeout=90)
    elapsed = time.monotonic() - t0
    assert final.state.value == "FAILED"
    assert "power" in final.reason or "failed" in final.reason
    assert elapsed < 60
    time.sleep(3)
    assert not _party_procs(fed["root"])
    ch = chain(fed)
    assert ch.runs(job_key(job), dataset_chain_id("tax", "tax_2024")) == 0
