"""A chain-wired node's audit log reconciled with a real anvil (#18.3): receipts go through the node's
durable queue and each has its ``receipt.recorded`` entry; the node anchors at the end of a job and at
shutdown; the node's route and the regulator's command find an edited entry, a receipt the log does
not hold and a logged receipt the chain does not hold, each named; retention keeps 180 days."""

from __future__ import annotations

import sqlite3
import time

import pytest
from conftest import chain_node, vertical_spec
from typer.testing import CliRunner

from nodes.services.receipts import record_receipt
from nodes.services.reconcile import reconcile_remote
from protocols.crypto.approvals import job_key
from protocols.crypto.sm3 import sm3_digest


@pytest.fixture
def tax(chain, vertical_data, tmp_path):
    tax_csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": tax_csv.read_bytes()}) as c:
        yield c


def _authorized(kit, job_id: str) -> None:
    _, terms = kit.publish(vertical_spec(["tax_vat_paid"], max_runs=3), job_id)
    kit.approve_as("tax", terms)
    kit.approve_as("bank", terms)
    kit.authorize(terms)


def _kinds(report: dict) -> list[tuple[str, int | None]]:
    return [(f["kind"], f["seq"]) for f in report["findings"]]


def _wait_anchor(kit, account: str, at_least: int, timeout: float = 20.0):  # noqa: ANN202
    deadline = time.monotonic() + timeout
    a = kit.admin.latest_anchor(account)
    while time.monotonic() < deadline and (a is None or a.entry_count < at_least):
        time.sleep(0.1)
        a = kit.admin.latest_anchor(account)
    return a


def test_reconciliation_finds_an_edited_entry_and_missing_receipts(chain, tax):
    ctx = tax.app.state.ctx
    account = chain.members["tax"][1].public.chain_address
    _authorized(chain, "rec-1")
    tx = record_receipt(ctx.chain, "tax", "rec-1", "tax_2024", 180, sm3_digest(b"result"), time.time() - 3)
    assert tx is not None and tx.startswith("0x")
    logged = [e for e in tax.get("/audit?limit=1000").json() if e["action"] == "receipt.recorded"]
    assert [(e["target"], e["detail"]["tx"], e["detail"]["rows"]) for e in logged] == [("rec-1", tx, 180)]

    # the end of a job anchors the head on chain (no interval configured: anchor_interval_s=0)
    assert chain.admin.latest_anchor(account) is None
    ctx.tasks.audit.record(actor="node", action="task.succeed", target="rec-1", detail={"receipt_tx": tx})
    ended_at = ctx.audit.head().seq
    anchor = _wait_anchor(chain, account, ended_at)
    assert anchor is not None and anchor.entry_count >= ended_at

    clean = tax.get("/audit/reconcile")
    assert clean.status_code == 200, clean.text
    report = clean.json()
    assert report["findings"] == [] and report["receipts_on_chain"] == report["receipts_in_log"] == 1
    assert report["anchors_on_chain"] >= 1 and report["anchors_checked"] == report["anchors_on_chain"]
    assert report["entries_checked"] == report["head_seq"] >= ended_at

    # an edited log entry: found, naming it (the receipt it records now differs from the chain's too)
    db = ctx.settings.resolved_database_url().removeprefix("sqlite:///")
    seq = logged[0]["seq"]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE auditentry SET detail = replace(detail, '\"rows\":180', '\"rows\":18') WHERE seq = ?",
                     (seq,))
    found = tax.get("/audit/reconcile").json()
    assert ("entry_edited", seq) in _kinds(found) and ("receipt_differs", seq) in _kinds(found)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE auditentry SET detail = replace(detail, '\"rows\":18', '\"rows\":180') WHERE seq = ?",
                     (seq,))
    assert tax.get("/audit/reconcile").json()["findings"] == []

    # a receipt on chain that the node's log does not hold (sent around the node): named by its transaction
    from contracts.models import UsageReceipt
    from nodes.services.chain import dataset_chain_id

    now = chain.now()
    hidden = chain.client_of("tax").record_usage(account, UsageReceipt(
        job_id=job_key("rec-1"), dataset_id=dataset_chain_id("tax", "tax_2024"), row_count=7,
        result_hash=sm3_digest(b"hidden"), started_at=now - 2, finished_at=now))
    hidden_tx = "0x" + bytes(hidden.tx_hash).hex()
    # and a logged receipt the chain never recorded (the log is intact: the entry is what the node wrote)
    forged = ctx.audit.record(actor="node", action="receipt.recorded", target="rec-1", detail={
        "queue_id": 999, "dataset": "tax_2024", "job_key": job_key("rec-1").hex(),
        "dataset_id": dataset_chain_id("tax", "tax_2024").hex(), "rows": 5, "result_hash": "ab" * 32,
        "started_at": now - 5, "finished_at": now, "tx": "0x" + "cd" * 32, "late": False})
    report = tax.get("/audit/reconcile").json()
    kinds = {(f["kind"], f["seq"], f["tx"]) for f in report["findings"]}
    assert ("receipt_not_in_log", None, hidden_tx) in kinds
    assert ("receipt_not_on_chain", forged.seq, "0x" + "cd" * 32) in kinds
    assert not any(f["kind"].startswith("entry_") for f in report["findings"])

    # the regulator's command reads the log through the auditor route and the chain itself: same findings
    remote = reconcile_remote(tax, "", chain.admin, "tax")
    assert {(f.kind.value, f.seq, f.tx) for f in remote.findings} == kinds


def test_log_cut_behind_an_anchor_and_retention_floor(chain, tax):
    ctx = tax.app.state.ctx
    tax.put("/policy", json={"min_group_size": 20, "max_grade": {"vertical_train": 3}})
    a = tax.post("/audit/anchor").json()
    db = ctx.settings.resolved_database_url().removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # the newest entries, anchored, are deleted
        conn.execute("DELETE FROM auditentry WHERE seq >= ?", (a["seq"],))
    report = tax.get("/audit/reconcile").json()
    assert ("log_truncated", a["seq"]) in _kinds(report)
    # retention: fewer than 180 days is refused by name and nothing is pruned
    before = tax.get("/audit?limit=1000").json()
    with pytest.raises(Exception) as exc:
        ctx.audit.prune(30)
    assert type(exc.value).__name__ == "RetentionTooShort"
    assert tax.get("/audit?limit=1000").json()[: len(before)] == before


def test_the_node_anchors_at_shutdown(chain, vertical_data, tmp_path):
    account = chain.members["tax"][1].public.chain_address
    with chain_node(chain, "tax", tmp_path / "s", {}) as c:
        c.put("/policy", json={"min_group_size": 25, "max_grade": {"vertical_train": 3}})
        head = c.get("/audit/head").json()["seq"]
        assert chain.admin.latest_anchor(account) is None
    anchor = chain.admin.latest_anchor(account)
    assert anchor is not None and anchor.entry_count >= head


def test_reconcile_command_needs_a_node_it_can_find(tmp_path):
    from dcp.cli import build_app

    r = CliRunner().invoke(build_app(), ["audit", "reconcile", "--node", "tax", "--federation-dir", str(tmp_path)])
    assert r.exit_code == 2 and "federation" in r.output
