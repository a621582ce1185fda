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


def _recorded(fed: Federation) -> list:
    return fed.client.events("Receipts", "UsageRecorded")


def test_receipt_times_are_checked(fed: Federation) -> None:
    """Run times are the node's own; the chain takes them within TIME_TOLERANCE of its block, never
    a run that ends in the future or starts before its authorization."""
    c = fed.client
    tax = fed.departments["tax"]
    tolerance = c.receipts.functions.TIME_TOLERANCE().call()
    assert tolerance == 60
    t = fed.authorized("tax.vat", max_runs=5)
    created = c.authorization(t.job_id).created_at
    now = fed.backend.now()
    with pytest.raises(E.InvalidTimes) as exc:
        c.record_usage(tax, fed.receipt(t, "tax.vat", started_at=now, finished_at=now - 5))
    assert exc.value.error_args == {"startedAt": now, "finishedAt": now - 5}
    with pytest.raises(E.FinishedInFuture) as exc:
        c.record_usage(tax, fed.receipt(t, "tax.vat", started_at=now, finished_at=now + 3600))
    assert exc.value.error_args["finishedAt"] == now + 3600 and exc.value.error_args["blockTimestamp"] >= now
    with pytest.raises(E.StartedBeforeAuthorization) as exc:
        c.record_usage(tax, fed.receipt(t, "tax.vat", started_at=created - tolerance - 1, finished_at=now))
    assert exc.value.error_args == {"jobId": t.job_id, "startedAt": created - tolerance - 1, "createdAt": created}
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 0 and _recorded(fed) == []
    # within the tolerance: a node clock slightly ahead, a run that began as the authorization landed
    c.record_usage(tax, fed.receipt(t, "tax.vat", started_at=created - tolerance + 1, finished_at=now + 30))
    got = _recorded(fed)[-1].args
    assert (got["startedAt"], got["finishedAt"]) == (created - tolerance + 1, now + 30)
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 1


def test_batch_records_every_receipt_with_its_own_event(fed: Federation) -> None:
    c = fed.client
    tax = fed.departments["tax"]
    t1 = fed.authorized("tax.vat", "power.usage", max_runs=3, job="job-a")
    t2 = fed.authorized("tax.vat", max_runs=1, job="job-b")
    batch = [fed.receipt(t1, "tax.vat", started_ago=9, row_count=10),
             fed.receipt(t2, "tax.vat", started_ago=8, row_count=20),
             fed.receipt(t1, "tax.vat", started_ago=7, row_count=30)]
    tx = c.record_usage_batch(tax, batch)
    events = _recorded(fed)
    assert [(e.args["jobId"], e.args["rowCount"], e.args["run"]) for e in events] == [
        (t1.job_id, 10, 1), (t2.job_id, 20, 1), (t1.job_id, 30, 2)]
    assert {e.tx_hash for e in events} == {tx.tx_hash} and {e.args["node"] for e in events} == {tax}
    assert [e.args["startedAt"] for e in events] == [r.started_at for r in batch]
    assert (c.runs(t1.job_id, fed.datasets["tax.vat"]), c.runs(t2.job_id, fed.datasets["tax.vat"])) == (2, 1)


@pytest.mark.parametrize("case", ["max_runs", "future", "before_authorization", "not_owner", "unknown_job"])
def test_one_bad_receipt_refuses_the_whole_batch(fed: Federation, case: str) -> None:
    c = fed.client
    tax = fed.departments["tax"]
    t = fed.authorized("tax.vat", "power.usage", max_runs=2)
    created = c.authorization(t.job_id).created_at
    now = fed.backend.now()
    good = fed.receipt(t, "tax.vat")
    bad, name = {
        "max_runs": (good, "MaxRunsReached"),  # the batch's own earlier receipts count towards the maximum
        "future": (fed.receipt(t, "tax.vat", finished_at=now + 3600), "FinishedInFuture"),
        "before_authorization": (fed.receipt(t, "tax.vat", started_at=created - 3600), "StartedBeforeAuthorization"),
        "not_owner": (fed.receipt(t, "power.usage"), "NotDatasetOwner"),
        "unknown_job": (fed.receipt(fed.terms("tax.vat", job="never"), "tax.vat"), "UnknownAuthorization"),
    }[case]
    with pytest.raises(E.BatchItemRefused) as exc:
        c.record_usage_batch(tax, [good, good, bad] if case == "max_runs" else [good, bad, good])
    index = 2 if case == "max_runs" else 1
    assert exc.value.error_args["index"] == index
    assert exc.value.item_error is not None and exc.value.item_error.error_name == name
    assert f"receipt {index} of the batch was refused with {name}" in str(exc.value)
    # nothing of the batch was recorded
    assert c.runs(t.job_id, fed.datasets["tax.vat"]) == 0 and c.runs(t.job_id, fed.datasets["power.usage"]) == 0
    assert _recorded(fed) == []


def test_empty_and_oversized_batches(fed: Federation) -> None:
    from contracts.client import MAX_BATCH

    c = fed.client
    t = fed.authorized("tax.vat")
    with pytest.raises(E.EmptyBatch):
        c.record_usage_batch(fed.departments["tax"], [])
    with pytest.raises(E.InvalidInput):
        c.record_usage_batch(fed.departments["tax"], [fed.receipt(t, "tax.vat")] * (MAX_BATCH + 1))
    with pytest.raises(E.NotMember):
        c.record_usage_batch(fed.outsider, [fed.receipt(t, "tax.vat")])
    assert _recorded(fed) == []


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
