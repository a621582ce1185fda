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


def test_run_started_before_authorization(fed: Federation) -> None:
    """The contract cannot know when a node really started; the audit compares with the chain."""
    c = fed.client
    t = fed.authorized("tax.vat")
    now = fed.backend.now()
    c.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat", started_at=now - 7200, finished_at=now))
    report = _audit(fed)
    assert [f.kind for f in report.findings] == [K.RECEIPT_OUTSIDE_AUTHORIZATION]
    f = report.findings[0]
    assert f.job_id == t.job_id and f.dataset_id == fed.datasets["tax.vat"] and f.account == fed.departments["tax"]
    assert "before the authorization" in f.detail
    # a node clock 2 h off is forgiven only with that tolerance
    assert _audit(fed, clock_tolerance=7300).findings == []


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

    receipt(who["tax"], terms.job_id, h("tax.vat"), t, t)             # run 1: ok as a run …
    receipt(who["tax"], terms.job_id, h("tax.vat"), t, t)             # run 2 of max 1
    receipt(who["power"], terms.job_id, h("tax.vat"), t, t)           # power sends for tax's dataset (run 3)
    receipt(who["tax"], h("job-unknown"), h("tax.vat"), t, t)         # no authorization at all
    ra.functions.revoke(terms.job_id).transact({"from": who["power"]})
    backend.advance_time(5)
    t2 = backend.now()
    receipt(who["power"], terms.job_id, h("power.usage"), t2, t2)     # after revocation
    rr.functions.anchorAuditHead(h("head-10"), 10).transact({"from": who["tax"]})
    rr.functions.anchorAuditHead(h("head-5"), 5).transact({"from": who["tax"]})       # backwards
    rr.functions.anchorAuditHead(h("head-5b"), 10).transact({"from": who["power"]})
    rr.functions.anchorAuditHead(h("head-5c"), 10).transact({"from": who["power"]})   # same count, new head

    report = run_audit(backend.w3, client.deployment.registry)
    kinds = Counter(f.kind for f in report.findings)
    assert kinds == Counter({
        K.APPROVAL_MISSING: 2,                  # neither owner approved
        K.DIGEST_MISMATCH: 1,                   # the rogue contract did not even compute the digest
        K.AUTHORIZATION_BY_NON_COORDINATOR: 1,  # written by the bank
        K.RUNS_BEYOND_MAXIMUM: 2,               # runs 2 and 3 of tax.vat
        K.RECEIPT_FROM_NON_OWNER: 1,            # power for tax.vat
        K.RECEIPT_WITHOUT_AUTHORIZATION: 1,     # job-unknown
        K.RECEIPT_OUTSIDE_AUTHORIZATION: 1,     # after revocation
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
    assert _audit(fed).findings == []
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
