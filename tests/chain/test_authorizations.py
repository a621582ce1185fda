"""Authorizations: only coordinators write, only with every owner's approval of the exact terms."""

from __future__ import annotations

import pytest

from contracts import errors as E
from contracts.client import approval_digest

from .conftest import Federation, h


def test_authorize_with_k_approvals(fed: Federation) -> None:
    c = fed.client
    t = fed.terms("tax.vat", "power.usage", "court.cases")
    assert c.approval_digest(t) == bytes(c.authorizations.functions.approvalDigest(t.as_tuple()).call())
    fed.approve_all(t)
    c.authorize(fed.coordinator, t)
    a = c.authorization(t.job_id)
    assert a is not None
    assert a.terms == t and not a.via_bls and a.revoked_at == 0 and a.coordinator == fed.coordinator
    assert set(a.approvers) == set(fed.departments.values())
    assert a.digest == c.approval_digest(t)
    assert c.is_live(t.job_id)
    with pytest.raises(E.AuthorizationExists):
        c.authorize(fed.coordinator, t)


def test_bank_cannot_authorize(fed: Federation) -> None:
    t = fed.terms("tax.vat")
    fed.approve_all(t)
    with pytest.raises(E.NotCoordinator) as exc:
        fed.client.authorize(fed.bank, t)
    assert exc.value.error_args["account"] == fed.bank
    assert fed.client.authorization(t.job_id) is None


def test_authorization_needs_every_owner(fed: Federation) -> None:
    c = fed.client
    t = fed.terms("tax.vat", "power.usage")
    c.approve(fed.departments["tax"], t)
    with pytest.raises(E.ApprovalMissing) as exc:
        c.authorize(fed.coordinator, t)
    assert exc.value.error_args == {"datasetId": fed.datasets["power.usage"], "owner": fed.departments["power"]}
    assert c.authorization(t.job_id) is None


def test_department_cannot_approve_for_anothers_dataset(fed: Federation) -> None:
    c = fed.client
    t = fed.terms("tax.vat", "power.usage")
    with pytest.raises(E.NotDatasetOwner) as exc:
        c.approve(fed.departments["tax"], t, [fed.datasets["power.usage"]])
    assert exc.value.error_args == {"datasetId": fed.datasets["power.usage"], "account": fed.departments["tax"]}
    with pytest.raises(E.DatasetNotInTerms):
        c.approve(fed.departments["court"], t, [fed.datasets["court.cases"]])
    c.approve(fed.departments["tax"], t)
    with pytest.raises(E.ApprovalMissing):
        c.authorize(fed.coordinator, t)


def test_approval_cannot_be_replayed_for_another_manifest(fed: Federation) -> None:
    c = fed.client
    approved = fed.terms("tax.vat", manifest="manifest-A")
    fed.approve_all(approved)
    other_manifest = approved.model_copy(update={"manifest_hash": h("manifest-B")})
    with pytest.raises(E.ApprovalMissing):
        c.authorize(fed.coordinator, other_manifest)
    # nor for the same manifest with looser limits, or under another job id
    for change in ({"max_runs": 100}, {"expiry": approved.expiry + 86_400}, {"job_id": h("job-2")}):
        with pytest.raises(E.ApprovalMissing):
            c.authorize(fed.coordinator, approved.model_copy(update=change))
    c.authorize(fed.coordinator, approved)
    assert c.authorization(approved.job_id).terms.manifest_hash == h("manifest-A")


def test_digest_binds_chain_and_contract(fed: Federation) -> None:
    t = fed.terms("tax.vat")
    d = fed.client.approval_digest(t)
    assert approval_digest(t, fed.client.deployment.chain_id + 1, fed.client.deployment.authorizations) != d
    assert approval_digest(t, fed.client.deployment.chain_id, fed.client.deployment.registry) != d


def test_terms_validation(fed: Federation) -> None:
    c = fed.client
    with pytest.raises(E.InvalidExpiry):
        c.authorize(fed.coordinator, fed.terms("tax.vat", expiry=fed.backend.now() - 1))
    with pytest.raises(E.InvalidMaxRuns):
        c.authorize(fed.coordinator, fed.terms("tax.vat", max_runs=0))
    dup = fed.terms("tax.vat").model_copy(update={"dataset_ids": (fed.datasets["tax.vat"],) * 2})
    with pytest.raises(E.DuplicateDataset):
        c.authorize(fed.coordinator, dup)
    unknown = fed.terms("tax.vat").model_copy(update={"dataset_ids": (h("nope"),)})
    with pytest.raises(E.UnknownDataset):
        c.authorize(fed.coordinator, unknown)
    stranger = fed.terms("tax.vat").model_copy(update={"requester": fed.outsider})
    with pytest.raises(E.RequesterNotMember):
        c.authorize(fed.coordinator, stranger)


def test_revocation_rights(fed: Federation) -> None:
    c = fed.client
    t1 = fed.authorized("tax.vat", "power.usage", job="job-r1")
    with pytest.raises(E.NotAllowedToRevoke):
        c.revoke(fed.departments["court"], t1.job_id)
    with pytest.raises(E.NotAllowedToRevoke):
        c.revoke(fed.bank, t1.job_id)
    c.revoke(fed.departments["power"], t1.job_id)
    assert c.authorization(t1.job_id).revoked_at > 0 and not c.is_live(t1.job_id)
    with pytest.raises(E.AlreadyRevoked):
        c.revoke(fed.departments["tax"], t1.job_id)
    t2 = fed.authorized("court.cases", job="job-r2")
    c.revoke(fed.governors[2], t2.job_id)  # governance can revoke too
    assert not c.is_live(t2.job_id)
    with pytest.raises(E.UnknownAuthorization):
        c.revoke(fed.governors[0], h("no-such-job"))


def test_removed_owner_blocks_authorization(fed: Federation) -> None:
    c = fed.client
    t = fed.terms("tax.vat")
    fed.approve_all(t)
    c.remove(fed.governors, fed.departments["tax"])
    with pytest.raises(E.InactiveOwner):
        c.authorize(fed.coordinator, t)
