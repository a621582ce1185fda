"""The governance path end to end in a real federation (anvil, contracts, coordinator and three nodes
in their own processes, real SecretFlow parties) in the default ``bls_aggregate`` mode:

* the departments' nodes sign the chain's approval digest of the job's terms and send nothing to the
  chain; the coordinator aggregates their BLS signatures into one ``authorizeWithBls`` transaction,
  which the contract verifies with the EIP-2537 precompiles; the job runs, receipts land, the
  regulator's audit (which re-verifies the aggregate off chain) is clean;
* an aggregate that lacks one department's signature is refused (by the coordinator before sending,
  and by the chain with ``InvalidAggregateSignature``) and the job does not run;
* a department that revokes the authorization on chain with its own key mid-run stops the job:
  REVOKED, every party stopped, no usage receipt recorded."""

from __future__ import annotations

import json
import time

import pytest

from protocols.crypto.approvals import job_key
from protocols.manifest import dataset_chain_id

from .fedkit import chain, federation, http, party_procs, vertical_spec, wait_stage

pytestmark = pytest.mark.slow

MEMBERS = ("bank", "tax", "power")
PURPOSE = "pre-loan credit model for small enterprises (governance test)"


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    # authorization_mode is left at auto: every member admitted by dcp up has a BLS key -> bls_aggregate
    with federation(tmp_path_factory.mktemp("gov"), 800, 23, {"node_timeout_s": 6.0, "poll_interval_s": 0.3}) as f:
        yield f


def spec(fed, **over) -> dict:
    return vertical_spec(fed, PURPOSE, **over)


def signed_approval(fed, job: str, member: str) -> str:
    """The signed approval (JSON) in ``member``'s inbox: public, it is what the coordinator collects."""
    items = http(fed, "coordinator").get(f"{fed['state'].nodes[member]}/approvals", timeout=30).json()
    return json.dumps(next(i for i in items if i["job_id"] == job)["approval"])


def _terms(served: dict):
    from contracts.models import Terms

    return Terms.model_validate(served["terms"])


def test_bls_aggregate_authorization_end_to_end(fed):
    from contracts.audit import run_audit

    c, st = fed["client"], fed["state"]
    job = c.submit(spec(fed))
    served = c.manifest(job)
    assert served["authorization_mode"] == "bls_aggregate"
    for m in MEMBERS:
        out = c.approve(job, m, st.nodes[m])
        assert out["status"] == "approved" and out["chain_ref"] is None  # the node sent nothing to the chain
        assert out["approval"]["digest"] == chain(fed).approval_digest(_terms(served)).hex()
    final = c.wait(job, timeout=300)
    assert final.state.value == "SUCCEEDED", final.reason
    assert [e["to"] for e in final.events] == ["SUBMITTED", "PENDING_APPROVAL", "AUTHORIZED", "RUNNING", "SUCCEEDED"]
    ch = chain(fed)
    key = job_key(job)
    auth = ch.authorization(key)
    assert auth is not None and auth.via_bls and not auth.revoked_at
    assert set(auth.approvers) == {st.accounts[m] for m in MEMBERS}
    assert auth.coordinator == st.accounts["coordinator"]
    assert auth.digest == ch.approval_digest(auth.terms) and auth.terms.manifest_hash.hex() == served["manifest_hash"]
    # one aggregate on chain, no per-owner approval transactions for this job
    aggs = [e for e in ch.events("Authorizations", "AggregateApproval") if e.args["jobId"] == key]
    assert len(aggs) == 1 and set(aggs[0].args["approvers"]) == set(auth.approvers)
    assert not [e for e in ch.events("Authorizations", "Approved") if e.args["jobId"] == key]
    for m in MEMBERS:
        assert ch.runs(key, dataset_chain_id(m, f"{m}_2024")) == 1
    report = run_audit(ch.w3, st.registry)
    assert report.clean, report
    assert not party_procs(fed["root"])


def test_aggregate_missing_a_department_is_refused_and_nothing_runs(fed, no_leaked_processes):
    from contracts.errors import InvalidAggregateSignature
    from coordinator.authorization import AggregateIncomplete, aggregate_signature
    from protocols.crypto import bls

    c, st = fed["client"], fed["state"]
    job = c.submit(spec(fed))
    terms = _terms(c.manifest(job))
    for m in ("bank", "tax"):
        c.approve(job, m, st.nodes[m])
    signed = {m: signed_approval(fed, job, m) for m in ("bank", "tax")}
    as_coordinator = chain(fed, "coordinator")
    # the coordinator does not build an aggregate that lacks an owner's signature ...
    with pytest.raises(AggregateIncomplete, match="power"):
        aggregate_signature(as_coordinator, terms, signed)
    # ... and the chain refuses one anyway: the sum of the owners' registered keys does not match
    partial = bls.aggregate([bytes.fromhex(json.loads(s)["bls_sig"]) for s in signed.values()])
    with pytest.raises(InvalidAggregateSignature):
        as_coordinator.authorize_with_bls(st.accounts["coordinator"], terms, partial)
    # the same two signatures claimed with power's as well: still refused
    with pytest.raises(InvalidAggregateSignature):
        as_coordinator.authorize_with_bls(st.accounts["coordinator"], terms, bls.aggregate([partial, partial]))
    assert as_coordinator.authorization(job_key(job)) is None
    # nothing runs: the job waits for power, which rejects; no task ever started, no receipt
    assert c.status(job).state.value == "PENDING_APPROVAL"
    c.reject(job, "power", st.nodes["power"], "not for this purpose")
    final = c.wait(job, timeout=60)
    assert final.state.value == "REJECTED" and "AUTHORIZED" not in [e["to"] for e in final.events]
    assert {t["status"] for t in final.tasks.values()} == {"new"}
    assert as_coordinator.authorization(job_key(job)) is None
    for m in MEMBERS:
        assert as_coordinator.runs(job_key(job), dataset_chain_id(m, f"{m}_2024")) == 0
    # and a node asked to run it refuses on its own: there is no authorization on chain
    tax_feature = next(p for p in fed["data"].parties if p.name == "tax").features[0]
    as_coord = http(fed, "coordinator")  # the tasks routes are the coordinator's alone
    r = as_coord.post(f"{st.nodes['tax']}/tasks/{job}/ports", json={"peers": ["bank", "power"], "label_party": "bank"})
    assert r.status_code == 200, r.text  # tax approved the job, so it prepares ports ...
    body = {"job_id": job, "party": "tax", "cluster": {"host": "127.0.0.1", "parties": [r.json()["endpoint"]]},
            "join_key": "uscc", "label_party": "bank", "label_column": "default", "psi_protocol": "RR22",
            "model": {}, "inputs": [{"dataset": "tax_2024", "columns": ["uscc", tax_feature]}],
            "features": [tax_feature], "receivers": {"metrics": ["bank"]}, "timeout_s": 60}
    r = as_coord.post(f"{st.nodes['tax']}/tasks/{job}/start", json=body)
    assert (r.status_code, r.json()["error"]) == (403, "NotAuthorized"), r.text  # ... but never runs it
    assert "no authorization on chain" in r.json()["detail"]


def test_department_revokes_on_chain_mid_run(fed):
    c, st = fed["client"], fed["state"]
    job = c.submit(spec(fed, model={"algorithm": "ss_lr", "params": {"epochs": 40, "batch_size": 64}}))
    for m in MEMBERS:
        c.approve(job, m, st.nodes[m])
    wait_stage(c, job, lambda s: s.state.value == "RUNNING" and any(
        (t.get("stage") or "").startswith("train") for t in s.tasks.values()))
    tax = chain(fed, "tax")
    key = job_key(job)
    tx = tax.revoke(st.accounts["tax"], key)  # the tax department, with its own key, on chain
    final = c.wait(job, timeout=90)
    assert final.state.value == "REVOKED", final.reason
    assert "revoked on chain" in final.reason
    assert [e["to"] for e in final.events][-2:] == ["RUNNING", "REVOKED"]
    auth = tax.authorization(key)
    assert auth is not None and auth.revoked_at > 0
    revoked = [e for e in tax.events("Authorizations", "AuthorizationRevoked") if e.args["jobId"] == key]
    assert len(revoked) == 1 and revoked[0].args["by"] == st.accounts["tax"] and revoked[0].block_number == tx.block_number
    # the parties stop, and no receipt is ever recorded for the revoked job
    deadline = time.monotonic() + 30
    while party_procs(fed["root"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not party_procs(fed["root"])
    time.sleep(2)
    for m in MEMBERS:
        assert tax.runs(key, dataset_chain_id(m, f"{m}_2024")) == 0
        task = http(fed, "coordinator").get(f"{st.nodes[m]}/tasks/{job}", timeout=30).json()
        assert task["status"] in ("stopped", "failed") and task["receipt_tx"] is None, task
    assert not [e for e in tax.events("Receipts", "UsageRecorded") if e.args["jobId"] == key]
    assert c.status(job).state.value == "REVOKED"
