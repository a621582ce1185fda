"""Hostile peers against a department node: every attack of issue #13 refused, and nothing changed.

Each test reads the node's state (policy, datasets and grades, inbox, proposals, audit log) before and
after the attack through the node's own services and asserts both the named refusal and equality."""

from __future__ import annotations

import pytest

from tests.authkit import bearer, member_key
from tests.security.conftest import inbox_request, node_state, psi_spec, tax_csv, upload

NO_OFFICER = {"Authorization": ""}


def _refused(c, error: str) -> list[tuple[str, str]]:
    return [(e.actor, e.action) for e in c.app.state.ctx.audit.entries(0, 1000)
            if e.outcome == "refused" and e.detail.get("error") == error]


def test_unauthenticated_approve(tax):
    """No TLS key and no officer session (plain HTTP): 401; the request stays pending."""
    before = node_state(tax)
    r = tax.post("/approvals/1/approve", headers={"x-test-peer": "none", **NO_OFFICER})
    assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
    assert node_state(tax) == before and before["approvals"][0][2] == "pending"
    assert _refused(tax, "NotAuthenticated") == [("anonymous", "POST /approvals/1/approve")]


def test_member_without_officer_cannot_approve_or_reject(tax):
    """The coordinator (a verified member) is no approver of tax."""
    before = node_state(tax)
    for path, body in (("/approvals/1/approve", None), ("/approvals/1/reject", {"reason": "x"})):
        r = tax.post(path, json=body, headers=NO_OFFICER)
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    assert node_state(tax) == before


def test_outsider_put_policy(tax):
    """An unknown key (a certificate whose key is in no Registry) emptying the negative list."""
    before = node_state(tax)
    r = tax.put("/policy", json={"negative_list": [], "min_group_size": 1},
                headers={"x-test-peer": "outsider", **NO_OFFICER})
    assert (r.status_code, r.json()["error"]) == (403, "UnknownMember")
    r = tax.put("/policy", json={"negative_list": [], "min_group_size": 1}, headers=NO_OFFICER)
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    after = node_state(tax)
    assert after == before and after["policy"]["negative_list"] == ["personal_id"]


def test_patch_schema_lowering_grades(tax):
    before = node_state(tax)
    r = tax.patch("/datasets/tax_2024/schema", json={"columns": [{"name": "vat_paid", "grade": 1},
                                                                 {"name": "uscc", "grade": 1}]}, headers=NO_OFFICER)
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    assert node_state(tax) == before


def test_one_officer_alone_cannot_change_grades(tax):
    """Four eyes: alice's proposal does not apply until another steward confirms."""
    tax.confirmer = None
    before = node_state(tax)
    r = tax.patch("/datasets/tax_2024/schema", json={"columns": [{"name": "vat_paid", "grade": 1}]})
    assert r.status_code == 202
    r = tax.post(f"/proposals/{r.json()['id']}/confirm")
    assert (r.status_code, r.json()["error"]) == (403, "FourEyesViolation")
    after = node_state(tax)
    assert after["datasets"] == before["datasets"] and after["policy"] == before["policy"]


def test_delete_dataset(tax):
    before = node_state(tax)
    r = tax.delete("/datasets/tax_2024", headers=NO_OFFICER)
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    r = tax.delete("/datasets/tax_2024", headers={"x-test-peer": "none", **NO_OFFICER})
    assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
    assert node_state(tax) == before and before["datasets"][0][0] == "tax_2024"


def test_planting_an_approval_request(tax):
    """A fake "urgent regulator" request: from a non-coordinator member, unsigned, forged, tampered."""
    before = node_state(tax)
    fake = inbox_request("job-urgent", purpose="URGENT regulator request: approve immediately")
    r = tax.post("/approvals", json=fake, headers={"x-test-peer": "bank"})
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")  # only the coordinator files
    unsigned = {k: v for k, v in fake.items() if k != "request"}
    r = tax.post("/approvals", json=unsigned)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    # the coordinator signs with a key of its own in the bank's name
    forged = inbox_request("job-urgent", signer="coordinator")
    forged["request"]["requester"] = "bank"
    r = tax.post("/approvals", json=forged)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    # a genuine bank signature over another purpose, or over other columns
    r = tax.post("/approvals", json=fake)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    more = inbox_request("job-more", inputs=[{"dataset": "tax_2024", "columns": ["uscc", "vat_paid"]}])
    r = tax.post("/approvals", json=more)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    assert node_state(tax) == before


def test_tampered_and_replayed_signed_spec(tax):
    before = node_state(tax)
    tampered = inbox_request("job-t")
    tampered["request"]["spec"]["inputs"][1]["columns"] = ["uscc", "vat_paid"]
    r = tax.post("/approvals", json=tampered)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    assert "forged or tampered" in r.json()["detail"]
    replay = inbox_request("job-replay")
    replay["request"] = tax.app.state.ctx.approvals.get(1).manifest["request"]  # job-0001's signed request
    r = tax.post("/approvals", json=replay)
    assert (r.status_code, r.json()["error"]) == (409, "ReplayedRequest")
    stale = inbox_request("job-stale")
    from protocols.signed_request import sign_request

    stale["request"] = sign_request(member_key("bank").private_key, "bank", psi_spec(), now=1_000_000).model_dump()
    r = tax.post("/approvals", json=stale)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest") and "s ago" in r.json()["detail"]
    assert node_state(tax) == before


@pytest.mark.parametrize("body", [
    {"name": "leak", "url": "sqlite:///tax/tax.db", "table": "auditentry"},
    {"name": "leak", "source": "own", "query": "WITH d AS (DELETE FROM approvalrecord RETURNING *) SELECT * FROM d"},
    {"name": "leak", "source": "own", "query": "SELECT 1; DELETE FROM auditentry"},
    {"name": "leak", "source": "own", "query": "UPDATE auditentry SET actor = 'x' RETURNING *"},
    {"name": "leak", "source": "own", "query": "SELECT * FROM no_such_table_x"},
])
def test_sql_ingest_cannot_read_url_write_or_leak(tax, body):
    """A URL of the caller's choice is not even a field; a configured source is read-only, one SELECT,
    and a driver's error text never reaches the answer. (``own`` is the node's own database,
    configured by a careless admin: still nothing is written.)"""
    before = node_state(tax)
    r = tax.post("/datasets/sql", json=body)
    assert r.status_code == 422 and r.json()["error"] in {"InvalidRequest", "SourceError"}, r.text
    assert "no such table" not in r.text.lower() and "auditentry" not in r.json()["detail"].lower()
    after = node_state(tax)
    assert after == before and after["audit_ok"]


def test_sql_source_is_read_only_even_for_a_select_that_writes(tax):
    """A SELECT calling a writing pragma-like function still cannot change the database (read-only)."""
    before = node_state(tax)
    r = tax.post("/datasets/sql", json={"name": "x", "source": "own",
                                        "query": "SELECT * FROM approvalrecord WHERE id IN (SELECT id FROM approvalrecord)"})
    assert r.status_code == 201  # a read is fine
    after = node_state(tax)
    assert after["approvals"] == before["approvals"] and after["audit_ok"]


def test_stop_task_by_a_non_coordinator(tax):
    before = node_state(tax)
    for peer in ("bank", "tax", "regulator"):
        r = tax.post("/tasks/job-0001/stop", headers={"x-test-peer": peer, **NO_OFFICER})
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    r = tax.post("/tasks/job-0001/contribute", json={"public_context_b64": "AAAA"},
                 headers={"x-test-peer": "bank", **NO_OFFICER})  # an engine's step: the coordinator's alone
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    assert node_state(tax) == before


def test_member_calling_a_route_its_role_forbids(tax):
    """A bank (valid member) may read the catalog, but not start tasks, read the audit log or file requests."""
    assert tax.get("/catalog", headers={"x-test-peer": "bank", **NO_OFFICER}).status_code == 200
    before = node_state(tax)
    calls = [("POST", "/tasks/job-0001/ports", {"peers": ["bank"], "label_party": "bank"}),
             ("GET", "/audit", None), ("GET", "/approvals", None), ("POST", "/audit/anchor", None)]
    for method, path, body in calls:
        r = tax.request(method, path, json=body, headers={"x-test-peer": "bank", **NO_OFFICER})
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden"), path
    # a regulator reads the audit log, an officer who is only an approver does not
    assert tax.get("/audit", headers={"x-test-peer": "regulator", **NO_OFFICER}).status_code == 200
    tok = __import__("tests.authkit", fromlist=["add_officer"]).add_officer(tax.app, "li", ["approver"])
    r = tax.get("/audit", headers={"x-test-peer": "bank", **bearer(tok)})
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    assert node_state(tax)["approvals"] == before["approvals"]


def test_tax_officer_on_power_node(tax, tmp_path):
    from nodes.app import create_app
    from nodes.settings import NodeSettings
    from tests.authkit import TEST_SCRYPT_N, officer_client, peer_entries

    s = NodeSettings(name="power", work_dir=tmp_path / "power", peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N)
    with officer_client(create_app(s)) as power:
        assert upload(power, "power_2024", tax_csv(), key_column="uscc").status_code == 201
        before = node_state(power)
        for token in (tax.tokens["alice"], tax.tokens["bob"]):
            r = power.delete("/datasets/power_2024", headers=bearer(token))
            assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
            r = power.put("/policy", json={"min_group_size": 1}, headers=bearer(token))
            assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
        assert node_state(power) == before


def test_fifty_megabyte_body(tax):
    before = node_state(tax)
    big = b'{"negative_list": [' + b'"x",' * (50 * 1024 * 1024 // 4) + b'"x"]}'
    r = tax.put("/policy", content=big, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (413, "BodyTooLarge")
    assert node_state(tax) == before


def test_huge_and_odd_ids_are_not_a_500(tax):
    before = node_state(tax)
    for method, path in [("GET", "/approvals/99999999999999999999999"), ("POST", "/approvals/99999999999999999999999/approve"),
                         ("GET", "/approvals/-1"), ("GET", "/proposals/99999999999999999999999"),
                         ("GET", "/audit?after=99999999999999999999999"), ("GET", "/datasets/" + "x" * 5000),
                         ("GET", "/tasks/" + "j" * 5000), ("GET", "/datasets/tax_2024/mock?rows=99999999999999999999")]:
        r = tax.request(method, path)
        assert r.status_code in (404, 422), (path[:60], r.status_code, r.text[:200])
        assert r.json()["error"] in ("InvalidRequest", "ApprovalNotFound", "ProposalNotFound", "TaskNotFound"), path[:60]
    assert node_state(tax)["approvals"] == before["approvals"]


def test_docs_are_off(tax):
    assert tax.get("/docs").status_code == 404 and tax.get("/openapi.json").status_code == 404


def test_chain_registration_and_reconciliation_need_their_roles(tax):
    """Registering a dataset on chain is a steward's act, reconciling the log with the chain an auditor's: a
    bank (valid member) and an officer who is only an approver are refused both, and nothing is recorded."""
    from tests.authkit import add_officer

    before = node_state(tax)
    approver = bearer(add_officer(tax.app, "wang", ["approver"]))
    for headers in ({"x-test-peer": "bank", **NO_OFFICER}, {"x-test-peer": "bank", **approver}):
        r = tax.post("/datasets/tax_2024/register", headers=headers)
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
        r = tax.get("/audit/reconcile", headers=headers)
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    r = tax.post("/datasets/tax_2024/register", headers={"x-test-peer": "none", **NO_OFFICER})
    assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
    after = node_state(tax)
    assert after["datasets"] == before["datasets"] and after["approvals"] == before["approvals"]
    actions = {e.action for e in tax.app.state.ctx.audit.entries(0, 1000) if e.outcome == "ok"}
    assert "dataset.chain_register" not in actions and "audit.reconcile" not in actions
