"""Receipts: only the owning node, only while the authorization is live and under its runs."""

from __future__ import annotations

import pytest

from contracts import errors as E

from .conftest import Federation, h


def test_record_usage_and_max_runs(fed: Federation) -> None:
    c = fed.client
    t = fed.authorized("tax.vat", "power.usage", max_runs=2)
    tax, power = fed.departments["tax"], fed.departments["power"]
    c.record_usage(tax, fed.receipt(t, "tax.vat"))
    c.record_usage(tax, fed.receipt(t, "tax.vat"))
    with pytest.raises(E.MaxRunsReached) as exc:
        c.record_usage(tax, fed.receipt(t, "tax.vat"))
    assert exc.value.error_args["maxRuns"] == 2
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 2
    # the limit is per dataset: power still has its runs
    c.record_usage(power, fed.receipt(t, "power.usage", row_count=7))
    assert c.runs(t.job_id, fed.datasets["power.usage"]) == 1
    recorded = c.events("Receipts", "UsageRecorded")
    assert [(e.args["node"], e.args["run"]) for e in recorded] == [(tax, 1), (tax, 2), (power, 1)]
    assert recorded[-1].args["rowCount"] == 7


def test_only_the_owner_records(fed: Federation) -> None:
    c = fed.client
    t = fed.authorized("tax.vat", "power.usage")
    with pytest.raises(E.NotDatasetOwner) as exc:
        c.record_usage(fed.departments["power"], fed.receipt(t, "tax.vat"))
    assert exc.value.error_args["account"] == fed.departments["power"]
    with pytest.raises(E.DatasetNotAuthorized):
        c.record_usage(fed.departments["court"], fed.receipt(t, "court.cases"))
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 0


def test_no_authorization_no_receipt(fed: Federation) -> None:
    t = fed.terms("tax.vat", job="never-authorized")
    with pytest.raises(E.UnknownAuthorization):
        fed.client.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat"))


def test_expired_authorization_rejects_receipts(fed: Federation) -> None:
    c = fed.client
    t = fed.authorized("tax.vat", expiry=fed.backend.now() + 100)
    c.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat"))
    fed.backend.advance_time(200)
    assert not c.is_live(t.job_id)
    with pytest.raises(E.AuthorizationExpired) as exc:
        c.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat"))
    assert exc.value.error_args["expiry"] == t.expiry
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 1


def test_revoked_authorization_rejects_receipts(fed: Federation) -> None:
    c = fed.client
    t = fed.authorized("tax.vat", "power.usage")
    c.revoke(fed.departments["power"], t.job_id)
    with pytest.raises(E.AuthorizationRevoked):
        c.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat"))
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 0


def test_receipt_times_are_checked(fed: Federation) -> None:
    c = fed.client
    t = fed.authorized("tax.vat")
    now = fed.backend.now()
    with pytest.raises(E.InvalidTimes):
        c.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat", started_at=now, finished_at=now - 5))
    with pytest.raises(E.InvalidTimes):
        c.record_usage(fed.departments["tax"], fed.receipt(t, "tax.vat", started_at=now, finished_at=now + 3600))


def test_audit_anchors_must_advance(fed: Federation) -> None:
    c = fed.client
    tax = fed.departments["tax"]
    assert c.latest_anchor(tax) is None
    c.anchor_audit_head(tax, h("head-10"), 10)
    c.anchor_audit_head(tax, h("head-25"), 25)
    with pytest.raises(E.AnchorNotAdvancing) as exc:
        c.anchor_audit_head(tax, h("head-20"), 20)
    assert exc.value.error_args == {"previousEntryCount": 25, "entryCount": 20}
    with pytest.raises(E.AnchorNotAdvancing):
        c.anchor_audit_head(tax, h("rewritten"), 25)
    a = c.latest_anchor(tax)
    assert a is not None and (a.head_hash, a.entry_count, a.sequence) == (h("head-25"), 25, 2)
