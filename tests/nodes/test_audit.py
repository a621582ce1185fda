"""The SM3-chained audit log: tamper detection, anchors, retention that keeps verification working."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta, timezone

from conftest import csv_bytes, upload

from nodes.services.audit import GENESIS, AuditLog, FileAnchor, canonical_json
from tests.authkit import officer_client


def _sql(settings, stmt: str, *args) -> None:
    with sqlite3.connect(settings.work_dir / "tax.db") as conn:
        conn.execute(stmt, args)


def _fill(client, n: int = 6) -> None:
    """``n`` audit entries: policy versions set by the node's service (the API's four-eyes path
    writes two entries per change, a proposal and its confirmation)."""
    from nodes.models import Policy

    for i in range(n):
        client.app.state.ctx.policy.set(Policy(min_group_size=10 + i), actor="officer:alice@tax")


def test_entries_are_sm3_chained(client):
    _fill(client, 3)
    entries = client.get("/audit").json()
    assert [e["seq"] for e in entries] == [1, 2, 3]
    prev = GENESIS
    for e in entries:
        body = {k: e[k] for k in ("seq", "ts", "actor", "action", "target", "outcome", "detail", "prev_hash")}
        assert e["prev_hash"] == prev
        assert e["hash"] == hashlib.new("sm3", bytes.fromhex(prev) + canonical_json(body)).hexdigest()
        prev = e["hash"]
    v = client.get("/audit/verify").json()
    assert v["ok"] and v["checked"] == 3 and v["head_hash"] == prev
    assert client.get("/audit/head").json() == {"node": "tax", "seq": 3, "hash": prev}


def test_edit_detected(client, settings):
    _fill(client)
    _sql(settings, "update auditentry set detail = ? where seq = 4", json.dumps({"policy": "forged"}))
    v = client.get("/audit/verify").json()
    assert not v["ok"] and v["first_bad_seq"] == 4 and "edited" in v["reason"]


def test_edit_with_recomputed_hash_breaks_the_chain(client, settings):
    _fill(client)
    _sql(settings, "update auditentry set actor = 'mallory', hash = ? where seq = 3", "ab" * 32)
    v = client.get("/audit/verify").json()
    assert not v["ok"] and v["first_bad_seq"] == 3


def test_delete_detected(client, settings):
    _fill(client)
    _sql(settings, "delete from auditentry where seq = 2")
    v = client.get("/audit/verify").json()
    assert not v["ok"] and v["first_bad_seq"] == 2 and "missing" in v["reason"]


def test_truncation_and_rewrite_detected_by_anchor(client, settings, anchor):
    _fill(client, 4)
    a = client.post("/audit/anchor").json()
    assert a["seq"] == 4 and anchor.latest("tax") == (4, a["hash"])
    assert client.get("/audit/verify").json()["ok"]
    # drop the anchor's local record and the tail: the external anchor still catches it
    _sql(settings, "delete from auditanchorrecord")
    _sql(settings, "delete from auditentry where seq >= 4")
    v = client.get("/audit/verify").json()
    assert not v["ok"] and "truncated" in v["reason"]


def test_full_rewrite_detected_by_external_anchor(tmp_path):
    """An attacker who rewrites every hash consistently is caught only by the anchor — and is."""
    from nodes.db import init_db, make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(eng)
    anchor = FileAnchor(tmp_path / "anchors.jsonl")
    log = AuditLog("n", eng, anchor)
    for i in range(5):
        log.record(actor="a", action="x", detail={"i": i})
    log.anchor_now()
    # rebuild the whole chain with a forged entry 2 and consistent hashes
    forged = AuditLog("n", eng, None)
    with eng.begin() as c:
        c.exec_driver_sql("delete from auditentry")
        c.exec_driver_sql("delete from auditanchorrecord")
    for i in range(6):
        forged.record(actor="a", action="x", detail={"i": 99 if i == 2 else i})
    assert forged.verify().ok  # internally consistent...
    v = log.verify()
    assert not v.ok and "anchor" in v.reason  # ...but not what was anchored
    eng.dispose()


def test_retention_prunes_only_anchored_and_verification_survives(tmp_path):
    from nodes.db import init_db, make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(eng)
    log = AuditLog("n", eng, FileAnchor(tmp_path / "anchors.jsonl"))
    for i in range(5):
        log.record(actor="a", action="x", detail={"i": i})
    later = datetime.now(timezone.utc) + timedelta(days=200)
    # nothing anchored yet: nothing may be pruned even if old
    assert log.prune(180, now=later).pruned == 0
    a = log.anchor_now()  # anchors seq 6 (5 + the prune entry), then appends its own entry
    for i in range(3):
        log.record(actor="a", action="y", detail={"i": i})
    assert log.prune(180, now=datetime.now(timezone.utc)).pruned == 0  # too young
    out = log.prune(180, now=later)
    assert out.pruned == a.seq and out.boundary_seq == a.seq and out.boundary_hash == a.hash
    remaining = log.entries(limit=1000)
    assert remaining[0].seq == a.seq + 1 and remaining[0].prev_hash == a.hash
    v = log.verify()
    assert v.ok, v
    # tampering after pruning is still detected
    with eng.begin() as c:
        c.exec_driver_sql(f"update auditentry set actor = 'x' where seq = {a.seq + 2}")
    assert log.verify().first_bad_seq == a.seq + 2
    eng.dispose()


def test_anchor_without_backend_is_a_named_error(tmp_path):

    from nodes.app import create_app
    from nodes.settings import NodeSettings

    with officer_client(create_app(NodeSettings(name="n", work_dir=tmp_path))) as c:
        r = c.post("/audit/anchor")
        assert r.status_code == 502 and r.json()["error"] == "AnchorError"


def test_state_changes_and_refusals_are_logged(client, tax_frame):
    assert upload(client, "t1", csv_bytes(tax_frame), key_column="uscc").status_code == 201
    r = client.patch("/datasets/t1/schema", json={"columns": [{"name": "industry", "grade": 1}]})
    assert r.status_code == 200, r.text
    client.get("/datasets/t1/mock?rows=3")
    client.delete("/datasets/t1")
    client.get("/datasets/nope")
    client.put("/policy", json={"min_group_size": 0})
    log = client.get("/audit").json()
    assert [(e["actor"], e["action"], e["outcome"]) for e in log] == [
        ("officer:alice@tax via member:coordinator", "dataset.register", "ok"),
        ("officer:alice@tax via member:coordinator", "dataset.schema.propose", "ok"),
        ("officer:alice@tax confirmed by officer:bob@tax via member:coordinator", "dataset.schema_edit", "ok"),
        ("officer:alice@tax via member:coordinator", "dataset.mock", "ok"),
        ("officer:alice@tax via member:coordinator", "dataset.delete", "ok"),
        ("officer:alice@tax via member:coordinator", "GET /datasets/nope", "refused"),
        ("officer:alice@tax via member:coordinator", "PUT /policy", "refused"),
    ]
    assert client.get("/audit/verify").json()["ok"]


def test_state_changes_need_a_verified_officer(client, tax_frame):
    """A member without an officer session: 403 Forbidden; a forged token: 401 NotAuthenticated;
    each refusal audited under the verified member, nothing changed."""
    def policy() -> dict:
        return {k: v for k, v in client.get("/policy").json().items() if k != "updated_at"}

    before = policy()
    r = client.put("/policy", json={"min_group_size": 5}, headers={"Authorization": ""})
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    r = client.post(
        "/datasets/upload", files={"file": ("x.csv", csv_bytes(tax_frame))}, data={"name": "x"},
        headers={"Authorization": "Bearer dcp1.forged.token"})
    assert r.status_code == 401 and r.json()["error"] == "NotAuthenticated"
    assert policy() == before and before["version"] == 0
    assert client.get("/datasets").json() == []
    log = client.get("/audit").json()
    assert [(e["actor"], e["action"], e["outcome"]) for e in log] == [
        ("member:coordinator", "PUT /policy", "refused"),
        ("member:coordinator", "POST /datasets/upload", "refused"),
    ]
