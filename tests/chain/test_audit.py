"""The regulator's audit reads only the chain and recomputes; each violation it looks for is
constructed here — with the real contracts where they allow it, and with deliberately
dishonest contracts (contracts/src/testing/Rogue*.sol, same events, no checks) where they do not."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from contracts.audit import FindingKind, run_audit, verify_aggregate_offchain
from contracts.backends import ChainBackend
from contracts.build import load_artifact
from contracts.client import ChainClient, deploy_contract
from contracts.errors import DeploymentError
from contracts.models import Deployment, MemberAdmission, Role, Terms
from protocols.crypto import bls

from .conftest import Federation, h

K = FindingKind


def _audit(fed: Federation, **kw: int):
    return run_audit(fed.backend.w3, fed.client.deployment.registry, **kw)


def test_honest_history_is_clean(fed: Federation) -> None:
    c = fed.client
    t1 = fed.authorized("tax.vat", "power.usage", max_runs=2, job="job-a")
    c.record_usage(fed.departments["tax"], fed.receipt(t1, "tax.vat"))
    c.record_usage(fed.departments["tax"], fed.receipt(t1, "tax.vat"))
    c.record_usage(fed.departments["power"], fed.receipt(t1, "power.usage"))
    t2 = fed.authorized("court.cases", job="job-b")
    c.revoke(fed.departments["court"], t2.job_id)
    c.anchor_audit_head(fed.departments["tax"], h("h1"), 3)
    c.anchor_audit_head(fed.departments["tax"], h("h2"), 9)
    report = _audit(fed, page_size=3)  # small pages: paging must not lose events
    assert report.findings == []
    assert (report.authorizations_count, report.receipts_count, report.anchors_count) == (2, 3, 2)
    assert report.members == 5 and report.datasets == 3
    assert report.authorizations == c.deployment.authorizations


def test_honest_history_lists_every_job_and_receipt(fed: Federation) -> None:
    """Per job: manifest hash, approvers, runs used and every receipt with its times and block."""
    c = fed.client
    tax, power = fed.departments["tax"], fed.departments["power"]
    t1 = fed.authorized("tax.vat", "power.usage", max_runs=2, job="job-a", manifest="manifest-a")
    c.record_usage(tax, fed.receipt(t1, "tax.vat", started_ago=30, row_count=11))
    c.record_usage_batch(power, [fed.receipt(t1, "power.usage", started_ago=20, row_count=22),
                                 fed.receipt(t1, "power.usage", started_ago=10, row_count=33)])
    t2 = fed.authorized("court.cases", job="job-b", manifest="manifest-b")
    report = _audit(fed)
    assert report.clean and report.contracts_genuine and report.bls_verified_by == "chain"
    assert [j.job_id for j in report.jobs] == [t1.job_id, t2.job_id]
    j = report.jobs[0]
    assert (j.manifest_hash, j.approvers, j.via_bls, j.max_runs) == (h("manifest-a"), [tax, power], False, 2)
    assert j.runs_used == {"0x" + fed.datasets["tax.vat"].hex(): 1, "0x" + fed.datasets["power.usage"].hex(): 2}
    assert [(r.node, r.row_count, r.run, r.flags) for r in j.receipts] == [
        (tax, 11, 1, []), (power, 22, 1, []), (power, 33, 2, [])]
    r = j.receipts[1]
    assert r.finished_at - r.started_at == 20 and r.block_time >= r.finished_at and not r.late
    assert j.receipts[1].tx_hash == j.receipts[2].tx_hash  # one batch transaction
    assert report.jobs[1].receipts == [] and report.jobs[1].runs_used == {}
    narrowed = _audit(fed, job=t2.job_id)
    assert [j.job_id for j in narrowed.jobs] == [t2.job_id] and narrowed.receipts_count == 3


def test_run_too_short_and_times_that_disagree_with_the_block(fed: Federation) -> None:
    """A run of 0 s (times not measured) and a finish after its block are findings; the chain takes
    both (within its tolerance), the audit's own tolerance judges the second."""
    c = fed.client
    tax = fed.departments["tax"]
    t = fed.authorized("tax.vat", max_runs=3)
    now = fed.backend.now()
    c.record_usage(tax, fed.receipt(t, "tax.vat", started_at=now, finished_at=now))
    c.record_usage(tax, fed.receipt(t, "tax.vat", started_at=now, finished_at=now + 45))
    report = _audit(fed)
    assert [f.kind for f in report.findings] == [K.RECEIPT_RUN_TOO_SHORT]
    assert "run of 0 s" in report.findings[0].detail and report.findings[0].job_id == t.job_id
    strict = _audit(fed, clock_tolerance=5)
    assert [f.kind for f in strict.findings] == [K.RECEIPT_RUN_TOO_SHORT, K.RECEIPT_TIMES_DISAGREE_WITH_BLOCK]
    assert "after the block that recorded it" in strict.findings[1].detail
    flags = [r.flags for r in strict.jobs[0].receipts]
    assert flags == [[K.RECEIPT_RUN_TOO_SHORT], [K.RECEIPT_TIMES_DISAGREE_WITH_BLOCK]]
    assert strict.jobs[0].findings == 2
    assert _audit(fed, min_run_seconds=0).clean


def test_a_late_receipt_is_late_not_a_finding(fed: Federation) -> None:
    c = fed.client
    t = fed.authorized("tax.vat", expiry=fed.backend.now() + 7200)
    ran = fed.backend.now()
    fed.backend.advance_time(900)  # the chain was unreachable; the node sends the queued receipt now
    c.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat", started_at=ran, finished_at=ran + 20))
    report = _audit(fed)
    assert report.clean and report.late_receipts == 1
    r = report.jobs[0].receipts[0]
    assert r.late and r.late_s >= 880 and r.flags == []


def _rogue(backend: ChainBackend) -> tuple[ChainClient, dict[str, str], object, object]:
    """Real Registry, dishonest Authorizations/Receipts bound to it."""
    acc = backend.accounts
    w3 = backend.w3
    registry = deploy_contract(w3, "Registry", acc[0], acc[0:3], 2)
    rogue_auth = deploy_contract(w3, "RogueAuthorizations", acc[0], registry)
    rogue_receipts = deploy_contract(w3, "RogueReceipts", acc[0])
    reg = w3.eth.contract(address=registry, abi=load_artifact("Registry").abi)
    reg.functions.bind(rogue_auth, rogue_receipts).transact({"from": acc[0]})
    client = ChainClient(w3, Deployment(chain_id=w3.eth.chain_id, registry=registry,
                                        authorizations=rogue_auth, receipts=rogue_receipts))
    who = {"coordinator": acc[3], "bank": acc[4], "tax": acc[5], "power": acc[6]}
    for name, role in (("coordinator", Role.COORDINATOR), ("bank", Role.BANK), ("tax", Role.DEPARTMENT),
                       ("power", Role.DEPARTMENT)):
        client.admit(acc[0:3], MemberAdmission(account=who[name], role=role, name=name, sm2_public_key=os.urandom(64)))
    client.register_dataset(who["tax"], h("tax.vat"), h("schema"), 2)
    client.register_dataset(who["power"], h("power.usage"), h("schema"), 2)
    ra = w3.eth.contract(address=rogue_auth, abi=load_artifact("RogueAuthorizations").abi)
    rr = w3.eth.contract(address=rogue_receipts, abi=load_artifact("RogueReceipts").abi)
    return client, who, ra, rr


def test_audit_catches_what_dishonest_contracts_let_through(backend: ChainBackend) -> None:
    client, who, ra, rr = _rogue(backend)
    now = backend.now()
    terms = Terms(job_id=h("job-x"), manifest_hash=h("m"), dataset_ids=(h("tax.vat"), h("power.usage")),
                  requester=who["bank"], expiry=now + 1000, max_runs=1)
    # a bank writes an authorization nobody approved
    ra.functions.authorize(terms.as_tuple(), [who["tax"], who["power"]]).transact({"from": who["bank"]})
    t = backend.now()

    def receipt(sender: str, job: bytes, dataset: bytes, started: int, finished: int) -> None:
        rr.functions.recordUsage(job, dataset, 10, h("r"), started, finished).transact({"from": sender})

    receipt(who["tax"], terms.job_id, h("tax.vat"), t - 5, t)         # run 1: ok as a run …
    receipt(who["tax"], terms.job_id, h("tax.vat"), t - 5, t)         # run 2 of max 1
    receipt(who["power"], terms.job_id, h("tax.vat"), t - 5, t)       # power sends for tax's dataset (run 3)
    receipt(who["tax"], h("job-unknown"), h("tax.vat"), t - 5, t)     # no authorization at all
    ra.functions.revoke(terms.job_id).transact({"from": who["power"]})
    backend.advance_time(5)
    t2 = backend.now()
    receipt(who["power"], terms.job_id, h("power.usage"), t2 - 5, t2)  # after revocation
    other = Terms(job_id=h("job-y"), manifest_hash=h("m"), dataset_ids=(h("tax.vat"),), requester=who["bank"],
                  expiry=t2 + 1000, max_runs=9)
    ra.functions.authorize(other.as_tuple(), [who["tax"]]).transact({"from": who["bank"]})
    t3 = backend.now()
    receipt(who["tax"], other.job_id, h("tax.vat"), t3, t3)                # a run of 0 s
    receipt(who["tax"], other.job_id, h("tax.vat"), t3 - 5, t3 + 3600)     # finishes an hour after its block
    receipt(who["tax"], other.job_id, h("tax.vat"), t3 - 7200, t3)         # started 2 h before its authorization
    rr.functions.anchorAuditHead(h("head-10"), 10).transact({"from": who["tax"]})
    rr.functions.anchorAuditHead(h("head-5"), 5).transact({"from": who["tax"]})       # backwards
    rr.functions.anchorAuditHead(h("head-5b"), 10).transact({"from": who["power"]})
    rr.functions.anchorAuditHead(h("head-5c"), 10).transact({"from": who["power"]})   # same count, new head

    report = run_audit(backend.w3, client.deployment.registry)
    kinds = Counter(f.kind for f in report.findings)
    assert not report.contracts_genuine and report.bls_verified_by == "offchain"
    assert kinds == Counter({
        K.APPROVAL_MISSING: 3,                  # neither owner approved (job-x), nor tax (job-y)
        K.DIGEST_MISMATCH: 2,                   # the rogue contract did not even compute the digest
        K.AUTHORIZATION_BY_NON_COORDINATOR: 2,  # written by the bank
        K.RECEIPT_RUN_TOO_SHORT: 1,
        K.RECEIPT_TIMES_DISAGREE_WITH_BLOCK: 1,
        K.RUNS_BEYOND_MAXIMUM: 2,               # runs 2 and 3 of tax.vat
        K.RECEIPT_FROM_NON_OWNER: 1,            # power for tax.vat
        K.RECEIPT_WITHOUT_AUTHORIZATION: 1,     # job-unknown
        K.RECEIPT_OUTSIDE_AUTHORIZATION: 3,     # after revocation; finished after, started before job-y's window
        K.ANCHOR_WENT_BACKWARDS: 2,
    }), report.findings
    non_owner = next(f for f in report.findings if f.kind == K.RECEIPT_FROM_NON_OWNER)
    assert non_owner.account == who["power"] and non_owner.dataset_id == h("tax.vat")
    missing = {f.dataset_id for f in report.findings if f.kind == K.APPROVAL_MISSING}
    assert missing == {h("tax.vat"), h("power.usage")}


def test_bls_authorization_reverified_offchain(bls_fed: Federation) -> None:
    fed, c = bls_fed, bls_fed.client
    t = fed.terms("tax.vat", "power.usage")
    digest = c.approval_digest(t)
    sigs = {n: fed.bls[n].sign(digest) for n in ("tax", "power")}
    c.authorize_with_bls(fed.coordinator, t, bls.aggregate(list(sigs.values())))
    c.record_usage(fed.departments["power"], fed.receipt(t, "power.usage"))
    # genuine code: the chain's EIP-2537 verification is read from the events
    read = _audit(fed)
    assert read.findings == [] and read.bls_verified_by == "chain" and read.jobs[0].bls_verified_by == "chain"
    assert read.jobs[0].via_bls and read.jobs[0].approvers == [fed.departments["tax"], fed.departments["power"]]
    # on request every aggregate is verified again off chain
    again = _audit(fed, verify_bls=True)
    assert again.findings == [] and again.bls_verified_by == "offchain" and again.jobs[0].bls_verified_by == "offchain"
    keys = [c.member(fed.departments[n]).bls_public_key for n in ("tax", "power")]
    full = bls.to_eip2537_g2(bls.aggregate(list(sigs.values())))
    assert verify_aggregate_offchain(keys, digest, full)
    assert not verify_aggregate_offchain(keys, digest, bls.to_eip2537_g2(sigs["tax"]))
    assert not verify_aggregate_offchain(keys, digest + b"x", full)
    assert not verify_aggregate_offchain([b"\x01" * 128, keys[1]], digest, full)


def test_audit_refuses_a_non_registry(fed: Federation) -> None:
    with pytest.raises(DeploymentError):
        run_audit(fed.backend.w3, fed.outsider)
    with pytest.raises(DeploymentError):
        run_audit(fed.backend.w3, fed.client.deployment.receipts)
