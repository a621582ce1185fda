"""Registry: governance needs the threshold; non-members cannot write; inputs are validated."""

from __future__ import annotations

import os

import pytest

from contracts import errors as E
from contracts.models import MemberAdmission, Role

from .conftest import Federation, h


def _admission(account: str, role: Role = Role.DEPARTMENT, name: str = "housing fund") -> MemberAdmission:
    return MemberAdmission(account=account, role=role, name=name, sm2_public_key=os.urandom(64))


def test_admission_needs_the_threshold(fed: Federation) -> None:
    c, g = fed.client, fed.governors
    newcomer = fed.backend.accounts[10]
    first = c.propose_add_member(g[0], _admission(newcomer))
    assert (first.approvals, first.executed) == (1, False)
    assert c.member(newcomer) is None
    # below the threshold the newcomer cannot act as a member
    with pytest.raises(E.NotMember):
        c.register_dataset(newcomer, h("housing.ds"), h("schema"), 1)
    with pytest.raises(E.AlreadyApproved):
        c.approve_proposal(g[0], first.proposal_id)
    with pytest.raises(E.NotGovernor):
        c.approve_proposal(fed.outsider, first.proposal_id)
    second = c.approve_proposal(g[1], first.proposal_id)
    assert (second.approvals, second.executed) == (2, True)
    member = c.member(newcomer)
    assert member is not None and member.active and member.role == Role.DEPARTMENT
    with pytest.raises(E.ProposalAlreadyExecuted):
        c.approve_proposal(g[2], first.proposal_id)
    c.register_dataset(newcomer, h("housing.ds"), h("schema"), 1)
    assert c.dataset(h("housing.ds")).owner == newcomer


def test_non_governor_cannot_propose(fed: Federation) -> None:
    with pytest.raises(E.NotGovernor) as exc:
        fed.client.propose_add_member(fed.coordinator, _admission(fed.backend.accounts[10]))
    assert exc.value.error_args["account"] == fed.coordinator


def test_governance_changes_need_the_threshold(fed: Federation) -> None:
    c, g = fed.client, fed.governors
    new_gov = fed.backend.accounts[11]
    p = c.propose_add_governor(g[0], new_gov)
    assert not p.executed and new_gov not in c.governors()
    assert c.approve_proposal(g[2], p.proposal_id).executed
    assert new_gov in c.governors()
    t = c.propose_threshold(g[0], 3)
    assert not t.executed and c.threshold() == 2
    assert c.approve_proposal(new_gov, t.proposal_id).executed
    assert c.threshold() == 3
    # now two approvals are no longer enough
    r = c.propose_remove_governor(g[0], g[1])
    assert not c.approve_proposal(g[2], r.proposal_id).executed
    assert g[1] in c.governors()
    assert c.approve_proposal(new_gov, r.proposal_id).executed
    assert g[1] not in c.governors() and len(c.governors()) == 3
    # a threshold above the number of governors is refused
    with pytest.raises(E.InvalidThreshold):
        c.propose_threshold(g[0], 4)
    # removing another governor would leave fewer than the threshold
    with pytest.raises(E.InvalidThreshold):
        c.propose_remove_governor(g[0], g[2])


def test_removed_member_loses_write_access(fed: Federation) -> None:
    c = fed.client
    tax = fed.departments["tax"]
    out = c.remove(fed.governors, tax)
    assert out.executed
    m = c.member(tax)
    assert m is not None and not m.active and m.role == Role.DEPARTMENT
    with pytest.raises(E.NotMember):
        c.register_dataset(tax, h("tax.other"), h("schema"), 1)
    with pytest.raises(E.UnknownMember):
        c.propose_remove_member(fed.governors[0], tax)


def test_non_member_cannot_write(fed: Federation) -> None:
    c, x = fed.client, fed.outsider
    with pytest.raises(E.NotMember):
        c.register_dataset(x, h("x.ds"), h("schema"), 1)
    with pytest.raises(E.NotMember):
        c.anchor_audit_head(x, h("head"), 1)
    with pytest.raises(E.NotMember):
        c.approve(x, fed.terms("tax.vat"), [fed.datasets["tax.vat"]])
    t = fed.authorized("tax.vat")
    with pytest.raises(E.NotMember):
        c.record_usage(x, fed.receipt(t, "tax.vat"))
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 0


def test_admission_and_dataset_validation(fed: Federation) -> None:
    c, g = fed.client, fed.governors
    acct = fed.backend.accounts[12]
    with pytest.raises(E.InvalidSm2Key) as exc:
        c.propose_add_member(g[0], MemberAdmission(account=acct, role=Role.BANK, name="b", sm2_public_key=b"\x01" * 33))
    assert exc.value.error_args["length"] == 33
    with pytest.raises(E.InvalidRole):
        c.propose_add_member(g[0], _admission(acct, role=Role.NONE))
    with pytest.raises(E.MemberExists):
        c.propose_add_member(g[0], _admission(fed.bank, role=Role.BANK))
    tax = fed.departments["tax"]
    with pytest.raises(E.InvalidGrade):
        c.register_dataset(tax, h("tax.new"), h("schema"), 5)
    with pytest.raises(E.DatasetExists):
        c.register_dataset(fed.departments["power"], fed.datasets["tax.vat"], h("schema"), 1)
    with pytest.raises(E.NotDataHolder):
        c.register_dataset(fed.coordinator, h("coord.ds"), h("schema"), 1)
    with pytest.raises(E.InvalidDatasetId):
        c.register_dataset(tax, bytes(32), h("schema"), 1)
    # nothing half-written
    assert c.dataset(h("tax.new")) is None and c.member(acct) is None
    assert c.dataset(fed.datasets["tax.vat"]).owner == tax
