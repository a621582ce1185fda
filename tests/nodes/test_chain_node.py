"""A chain-wired node on a real anvil: approvals on chain (after checking the coordinator's terms),
audit anchors on chain (on demand and periodically, retention behind them), and task refusals
(no / expired / revoked authorization, columns beyond the manifest) — each named and audited."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import (
    BANK_FEATURES,
    TAX_FEATURES,
    chain_node,
    vertical_spec,
)

from common.net import free_port, free_ports
from coordinator.manifest import node_request
from nodes.errors import ConfigError
from nodes.services.chain import dataset_chain_id
from nodes.settings import NodeSettings
from protocols.crypto.approvals import job_key


@pytest.fixture
def tax_node(chain, vertical_data, tmp_path):
    tax_csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": tax_csv.read_bytes()}) as c:
        yield c


def _approve(kit, c, job_id: str, tax_columns: list[str], expires_in: int = 3600, authorize: bool = True):
    manifest, terms = kit.publish(vertical_spec(tax_columns), job_id, expires_in)
    item = c.post("/approvals", json=node_request(manifest, "tax"))
    assert item.status_code == 201, item.text
    r = c.post(f"/approvals/{item.json()['id']}/approve")
    assert r.status_code == 200, r.text
    kit.approve_as("bank", terms)
    if authorize:
        kit.authorize(terms)
    return manifest, terms


def _refused(c, job_id: str) -> list[dict]:
    return [e for e in c.get("/audit?limit=1000").json() if e["outcome"] == "refused" and e["target"] == job_id]


def _body(job_id: str, tax_ep: dict, columns: list[str], features: list[str], **over) -> dict:
    ports = free_ports(3)
    bank_ep = {"name": "bank", "sf_port": ports[0], "spu_port": ports[1], "psi_ports": {"tax": ports[2]}}
    body = {
        "job_id": job_id, "party": "tax", "cluster": {"host": "127.0.0.1", "parties": [bank_ep, tax_ep]},
        "join_key": "uscc", "label_party": "bank", "label_column": "default", "psi_protocol": "RR22",
        "model": {"epochs": 1, "batch_size": 64}, "inputs": [{"dataset": "tax_2024", "columns": columns}],
        "features": features, "receivers": {"metrics": ["bank"], "predictions": ["bank"]}, "timeout_s": 60,
    }
    body.update(over)
    return body


def _ports(c, job_id: str) -> dict:
    r = c.post(f"/tasks/{job_id}/ports", json={"peers": ["bank"], "label_party": "bank"})
    assert r.status_code == 200, r.text
    return r.json()["endpoint"]


# ---------------------------------------------------------------- approvals on chain


def test_approval_goes_on_chain_after_checking_terms(chain, tax_node):
    c = tax_node
    manifest, terms = _approve(chain, c, "job-appr-1", TAX_FEATURES[:2], authorize=False)
    rec = c.get("/approvals").json()[0]
    assert rec["status"] == "approved" and rec["chain_ref"].startswith("0x") and len(rec["chain_ref"]) == 66
    tax_addr = chain.members["tax"][1].public.chain_address
    did = dataset_chain_id("tax", "tax_2024")
    digest = chain.admin.approval_digest(terms)
    assert chain.admin.authorizations.functions.approvalOf(digest, did).call() == tax_addr
    receipt = chain.w3.eth.get_transaction_receipt(rec["chain_ref"])
    assert receipt["status"] == 1 and receipt["from"] == tax_addr
    entry = [e for e in c.get("/audit?limit=1000").json() if e["action"] == "approval.approve"][-1]
    assert entry["detail"]["chain_ref"] == rec["chain_ref"]
    assert entry["detail"]["job_manifest_hash"] == bytes(terms.manifest_hash).hex()
    # with the bank's approval too the coordinator can now write the authorization
    chain.authorize(terms)
    assert chain.admin.is_live(job_key("job-appr-1"))


def test_approval_refused_when_coordinator_terms_disagree(chain, tax_node):
    c = tax_node
    did = dataset_chain_id("tax", "tax_2024")

    def submit(job_id: str, tamper) -> tuple[dict, object]:  # noqa: ANN001
        manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job_id)
        item = c.post("/approvals", json=node_request(manifest, "tax")).json()
        tamper(chain.board.jobs[job_id])
        return item, terms

    # 1. the manifest served does not hash to the terms
    item, terms = submit("job-bad-hash", lambda j: j["manifest"].update(purpose="something else entirely"))
    r = c.post(f"/approvals/{item['id']}/approve")
    assert (r.status_code, r.json()["error"]) == (409, "ApprovalTermsMismatch"), r.text
    assert "hash" in r.json()["detail"]
    # 2. consistent hash, but the job manifest asks more of this node than the inbox showed
    def more_columns(j: dict) -> None:
        from coordinator.manifest import manifest_sm3, terms_of

        m = j["manifest"]
        next(i for i in m["inputs"] if i["member"] == "tax")["columns"].append("tax_revenue_growth")
        j["terms"] = json.loads(terms_of(m, j["terms"]["requester"]).model_dump_json())
        j["manifest_hash"] = manifest_sm3(m).hex()

    item2, _ = submit("job-more-cols", more_columns)
    r = c.post(f"/approvals/{item2['id']}/approve")
    assert (r.status_code, r.json()["error"]) == (409, "ApprovalTermsMismatch")
    assert "says something else" in r.json()["detail"]
    # 3. the terms name another account than the registered requester
    tax_addr = chain.members["tax"][1].public.chain_address
    item3, _ = submit("job-requester", lambda j: j["terms"].update(requester=tax_addr))
    r = c.post(f"/approvals/{item3['id']}/approve")
    assert (r.status_code, r.json()["error"]) == (409, "ApprovalTermsMismatch")
    assert "requester" in r.json()["detail"]
    # 4. the coordinator does not know the job
    item4, _ = submit("job-unknown", lambda j: chain.board.jobs.pop("job-unknown"))
    r = c.post(f"/approvals/{item4['id']}/approve")
    assert (r.status_code, r.json()["error"]) == (409, "ApprovalTermsMismatch")
    # nothing approved: still pending, nothing on chain, every refusal audited
    for it in (item, item2, item3, item4):
        assert c.get(f"/approvals/{it['id']}").json()["status"] == "pending"
        refused = _refused(c, str(it["id"]))
        assert [e["action"] for e in refused] == [f"POST /approvals/{it['id']}/approve"]
    digest = chain.admin.approval_digest(terms)
    assert chain.admin.authorizations.functions.approvalOf(digest, did).call() == "0x" + "0" * 40


def test_approval_needs_a_reachable_coordinator(chain, vertical_data, tmp_path):
    tax_csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path
    dead = f"http://127.0.0.1:{free_port()}"
    with chain_node(chain, "tax", tmp_path / "t", {"tax_2024": tax_csv.read_bytes()}, coordinator_url=dead) as c:
        manifest, _ = chain.publish(vertical_spec(TAX_FEATURES[:1]), "job-dead")
        item = c.post("/approvals", json=node_request(manifest, "tax")).json()
        r = c.post(f"/approvals/{item['id']}/approve")
        assert (r.status_code, r.json()["error"]) == (502, "CoordinatorUnavailable")
        assert c.get(f"/approvals/{item['id']}").json()["status"] == "pending"


# ---------------------------------------------------------------- audit anchors on chain


def test_anchor_on_demand_and_retention_behind_the_chain_anchor(chain, tax_node):
    c = tax_node
    tax_addr = chain.members["tax"][1].public.chain_address
    assert chain.admin.latest_anchor(tax_addr) is None
    a = c.post("/audit/anchor")
    assert a.status_code == 200, a.text
    out = a.json()
    assert out["ref"].startswith("0x") and chain.w3.eth.get_transaction_receipt(out["ref"])["status"] == 1
    on_chain = chain.admin.latest_anchor(tax_addr)
    assert (on_chain.entry_count, bytes(on_chain.head_hash).hex()) == (out["seq"], out["hash"])
    entries = {e["seq"]: e for e in c.get("/audit?limit=1000").json()}
    assert entries[out["seq"]]["hash"] == out["hash"]
    # more happens after the anchor; pruning (everything "old") stops at the chain's anchor
    c.put("/policy", json={"min_group_size": 20, "max_grade": {"vertical_train": 3}})
    ctx = c.app.state.ctx
    pruned = ctx.audit.prune(180, now=datetime.now(timezone.utc) + timedelta(days=200))
    assert pruned.boundary_seq == out["seq"] and pruned.pruned == out["seq"]
    assert c.get("/audit/verify").json()["ok"]
    assert min(e["seq"] for e in c.get("/audit?limit=1000").json()) == out["seq"] + 1
    # a log rewritten after the anchor is caught against the chain
    import sqlite3

    db = ctx.settings.resolved_database_url().removeprefix("sqlite:///")
    ctx.audit.anchor_now()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM auditanchorrecord")
        conn.execute("DELETE FROM auditentry WHERE seq = (SELECT MAX(seq) FROM auditentry)")
        conn.execute("DELETE FROM auditentry WHERE seq = (SELECT MAX(seq) FROM auditentry)")
    v = c.get("/audit/verify").json()
    assert not v["ok"] and "external anchor" in v["reason"]


def test_periodic_anchoring_lands_on_chain(chain, vertical_data, tmp_path):
    tax_csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path
    tax_addr = chain.members["tax"][1].public.chain_address
    with chain_node(chain, "tax", tmp_path / "p", {"tax_2024": tax_csv.read_bytes()}, anchor_interval_s=0.3) as c:
        deadline = time.monotonic() + 20
        first = None
        while time.monotonic() < deadline and first is None:
            first = chain.admin.latest_anchor(tax_addr)
            time.sleep(0.1)
        assert first is not None, "no periodic anchor within 20 s"
        entries = {e["seq"]: e for e in c.get("/audit?limit=1000").json()}
        assert entries[first.entry_count]["hash"] == bytes(first.head_hash).hex()
        # new activity is anchored by a later tick; an idle log is not re-anchored
        c.put("/policy", json={"min_group_size": 30, "max_grade": {"vertical_train": 3}})
        wanted = c.get("/audit/head").json()["seq"]
        deadline = time.monotonic() + 20
        later = first
        while time.monotonic() < deadline and later.entry_count < wanted:
            later = chain.admin.latest_anchor(tax_addr)
            time.sleep(0.1)
        assert later.entry_count >= wanted and later.sequence > first.sequence
        time.sleep(1.0)
        idle = chain.admin.latest_anchor(tax_addr)
        assert idle.sequence == later.sequence
        anchors = [e for e in c.get("/audit?limit=1000").json() if e["action"] == "audit.anchor"]
        assert len(anchors) == later.sequence and all(e["detail"]["ref"].startswith("0x") for e in anchors)
        assert c.get("/audit/verify").json()["ok"]


# ---------------------------------------------------------------- task refusals


def test_task_without_approval_or_authorization_is_refused(chain, tax_node):
    c = tax_node
    r = c.post("/tasks/job-never/ports", json={"peers": ["bank"], "label_party": "bank"})
    assert (r.status_code, r.json()["error"]) == (403, "NotAuthorized")
    # approved by the node (and on chain) but no authorization was written
    _approve(chain, c, "job-noauth", TAX_FEATURES[:2], authorize=False)
    ep = _ports(c, "job-noauth")
    assert _ports(c, "job-noauth") == ep  # idempotent
    cols = ["uscc", *TAX_FEATURES[:2]]
    r = c.post("/tasks/job-noauth/start", json=_body("job-noauth", ep, cols, TAX_FEATURES[:2]))
    assert (r.status_code, r.json()["error"]) == (403, "NotAuthorized"), r.text
    assert "no authorization on chain" in r.json()["detail"]
    assert c.get("/tasks/job-noauth").json()["status"] == "ports"
    assert [e["detail"]["error"] for e in _refused(c, "job-noauth")] == ["NotAuthorized"]
    assert not list(c.app.state.ctx.settings.tmp_dir().glob("task-*"))


def test_task_with_expired_authorization_is_refused(chain, tax_node):
    c = tax_node
    _approve(chain, c, "job-exp", TAX_FEATURES[:2], expires_in=120)
    ep = _ports(c, "job-exp")
    chain.advance(600)
    r = c.post("/tasks/job-exp/start", json=_body("job-exp", ep, ["uscc", *TAX_FEATURES[:2]], TAX_FEATURES[:2]))
    assert (r.status_code, r.json()["error"]) == (403, "NotAuthorized")
    assert "expired" in r.json()["detail"]
    assert [e["detail"]["error"] for e in _refused(c, "job-exp")] == ["NotAuthorized"]
    assert not list(c.app.state.ctx.settings.tmp_dir().glob("task-*"))


def test_task_with_revoked_authorization_is_refused(chain, tax_node):
    c = tax_node
    _, terms = _approve(chain, c, "job-rev", TAX_FEATURES[:2])
    ep = _ports(c, "job-rev")
    chain.admin.revoke(chain.governors[0], terms.job_id)
    r = c.post("/tasks/job-rev/start", json=_body("job-rev", ep, ["uscc", *TAX_FEATURES[:2]], TAX_FEATURES[:2]))
    assert (r.status_code, r.json()["error"]) == (403, "NotAuthorized")
    assert "revoked" in r.json()["detail"]
    assert [e["detail"]["error"] for e in _refused(c, "job-rev")] == ["NotAuthorized"]


def test_task_beyond_the_manifest_is_refused(chain, tax_node):
    c = tax_node
    _approve(chain, c, "job-cols", TAX_FEATURES[:2])
    ep = _ports(c, "job-cols")
    approved = ["uscc", *TAX_FEATURES[:2]]
    cases = [
        (_body("job-cols", ep, [*approved, "tax_revenue_growth"], TAX_FEATURES), 422, "ColumnNotApproved"),
        (_body("job-cols", ep, approved, TAX_FEATURES), 422, "ColumnNotApproved"),  # a feature not extracted
        (_body("job-cols", ep, approved, TAX_FEATURES[:2], inputs=[{"dataset": "tax_gaps", "columns": approved}]),
         403, "NotAuthorized"),  # a dataset the authorization does not cover
        (_body("job-cols", ep, approved, TAX_FEATURES[:2], receivers={"predictions": ["tax"]}), 422, "TaskMismatch"),
        (_body("job-cols", ep, approved, TAX_FEATURES[:2], party="power"), 422, "TaskMismatch"),
        (_body("job-cols", {**ep, "sf_port": ep["sf_port"] + 1}, approved, TAX_FEATURES[:2]), 422, "TaskMismatch"),
    ]
    for body, status, error in cases:
        r = c.post("/tasks/job-cols/start", json=body)
        assert (r.status_code, r.json()["error"]) == (status, error), (body["inputs"], r.text)
    assert [e["detail"]["error"] for e in _refused(c, "job-cols")] == [e for _, _, e in cases]
    assert c.get("/tasks/job-cols").json()["status"] == "ports"
    assert not list(c.app.state.ctx.settings.tmp_dir().glob("task-*"))
    # the bank's columns are never this node's to give
    assert BANK_FEATURES[0] not in json.dumps(c.get("/tasks/job-cols").json())


def test_unknown_tasks_are_named(client, tax_dataset):
    r = client.post("/tasks/j/stop")
    assert (r.status_code, r.json()["error"]) == (404, "TaskNotFound")
    assert client.get("/tasks/j/outputs/metrics").json()["error"] == "TaskNotFound"


# ---------------------------------------------------------------- settings


def test_chain_settings(tmp_path, kit):
    dep = tmp_path / "federation.state.json"
    dep.write_text(json.dumps({"rpc_url": kit.anvil.url, "registry": kit.registry}))
    s = NodeSettings(name="tax", work_dir=tmp_path / "n", chain_deployment_file=dep)
    assert s.chain_target() == (kit.anvil.url, kit.registry)
    assert NodeSettings(name="x", work_dir=tmp_path).chain_target() is None
    with pytest.raises(ConfigError):
        NodeSettings(name="x", work_dir=tmp_path, chain_rpc_url=kit.anvil.url).chain_target()
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError):
        NodeSettings(name="x", work_dir=tmp_path, chain_deployment_file=bad).chain_target()
    pf = tmp_path / "pass"
    pf.write_text("s3cret\n")
    pf.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        NodeSettings(name="x", work_dir=tmp_path, keystore_passphrase_file=pf).passphrase()
    pf.chmod(0o600)
    assert NodeSettings(name="x", work_dir=tmp_path, keystore_passphrase_file=pf).passphrase() == "s3cret"
    # a chain-wired node without keys does not start
    from nodes.app import create_app
    from nodes.errors import KeysUnavailable

    with pytest.raises(KeysUnavailable):
        create_app(s)


def test_slice_bound_to_the_job_manifest_hash(chain, tax_node):
    """With ``job_manifest_hash`` in the request the signed slice names the whole job manifest, and
    the node approves on chain only terms carrying exactly that hash."""
    c = tax_node
    for job, good in (("job-bound-ok", True), ("job-bound-bad", False)):
        manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
        body = node_request(manifest, "tax")
        body.pop("manifest_hash")
        body["job_manifest_hash"] = bytes(terms.manifest_hash).hex() if good else "ab" * 32
        item = c.post("/approvals", json=body)
        assert item.status_code == 201, item.text
        assert item.json()["manifest"]["job_manifest_hash"] == body["job_manifest_hash"]
        r = c.post(f"/approvals/{item.json()['id']}/approve")
        if good:
            assert r.status_code == 200 and r.json()["status"] == "approved"
        else:
            assert (r.status_code, r.json()["error"]) == (409, "ApprovalTermsMismatch")
            assert "another job manifest" in r.json()["detail"]
