"""A usage receipt that is due while the chain is down loses nothing (#18.4): the node keeps it in its
database (the coordinator hands out no result until every receipt is on chain), and after the node itself restarts and the
chain (anvil, its state kept with ``--state``) comes back, the receipt reaches the chain once; the
reconciliation counts it as late, not missing."""

from __future__ import annotations

import time

from conftest import chain_node, vertical_spec

from nodes.services.chain import dataset_chain_id
from nodes.services.receipts import record_receipt
from protocols.crypto.approvals import job_key
from protocols.crypto.sm3 import sm3_digest

ANVIL_STATE = True  # this module's anvil dumps its state when stopped and loads it when started again


def test_a_receipt_due_while_the_chain_is_down_is_sent_when_it_returns(chain_kit, vertical_data, tmp_path,
                                                                       no_leaked_processes):
    kit = chain_kit
    kit.member("bank", "bank")
    kit.member("tax")
    kit.register_dataset("bank", "bank_2024")
    did = kit.register_dataset("tax", "tax_2024")
    _, terms = kit.publish(vertical_spec(["tax_vat_paid"]), "queued-1")
    kit.approve_as("tax", terms)
    kit.approve_as("bank", terms)
    kit.authorize(terms)
    tax_csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path
    work = tmp_path / "tax"

    with chain_node(kit, "tax", work, {"tax_2024": tax_csv.read_bytes()}, receipt_retry_s=0.3) as c:
        ctx = c.app.state.ctx
        kit.stop_chain()
        started = time.time() - 2
        assert record_receipt(ctx.chain, "tax", "queued-1", "tax_2024", 120, sm3_digest(b"r"), started) is None
        pending = ctx.chain.receipts.pending("queued-1")
        assert [(p.dataset, p.rows, p.state) for p in pending] == [("tax_2024", 120, "pending")]
        entries = c.get("/audit?limit=1000").json()
        assert [e["action"] for e in entries if e["action"].startswith("receipt.")] == ["receipt.pending"]
        time.sleep(1.0)  # the keeper retries meanwhile; nothing is lost or doubled
        assert len(ctx.chain.receipts.pending("queued-1")) == 1
        # the node shuts down while the chain is still down: its last flush fails, the row stays
    kit.start_chain()
    try:
        _after_restart(kit, work, did)
    finally:
        kit.stop_chain()  # the restarted anvil belongs to this test


def _after_restart(kit, work, did: bytes) -> None:  # noqa: ANN001
    assert kit.admin.runs(job_key("queued-1"), did) == 0  # the chain kept its state, and no receipt yet

    # the node comes back over the same database: the queued receipt goes out once
    with chain_node(kit, "tax", work, {}, receipt_retry_s=0.3) as c:
        ctx = c.app.state.ctx
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and kit.admin.runs(job_key("queued-1"), did) < 1:
            time.sleep(0.1)
        assert kit.admin.runs(job_key("queued-1"), did) == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ctx.chain.receipts.pending():
            time.sleep(0.1)
        assert ctx.chain.receipts.pending() == []
        recorded = [e for e in c.get("/audit?limit=1000").json() if e["action"] == "receipt.recorded"]
        assert len(recorded) == 1 and recorded[0]["detail"]["late"] is True
        assert recorded[0]["detail"]["dataset_id"] == dataset_chain_id("tax", "tax_2024").hex()
        report = c.get("/audit/reconcile").json()
        assert report["findings"] == [], report["findings"]
        assert (report["receipts_on_chain"], report["receipts_late"], report["receipts_pending"]) == (1, 1, 0)
        ctx.chain.receipts.flush()  # flushing again sends nothing twice
        assert kit.admin.runs(job_key("queued-1"), did) == 1
