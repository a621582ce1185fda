"""The lifecycle table, persistence of transitions, and the HTTP API with named errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from coordinator.app import create_app
from coordinator.errors import IllegalTransition, JobNotFound
from coordinator.lifecycle import ALLOWED, can_transition
from coordinator.models import TERMINAL, CatalogEntry, JobEvent, JobState
from coordinator.service import Coordinator
from coordinator.settings import CoordinatorSettings
from protocols.signed_request import sign_request
from tests.authkit import AsPeer, member_key
from tests.coordkit import POLICY

from .test_spec import base


def signed(spec: dict, member: str = "bank", action: str = "submit") -> dict:
    return {"request": sign_request(member_key(member).private_key, member, spec, action=action).model_dump()}

S = JobState


def test_table_shape():
    assert set(ALLOWED) == set(JobState)
    for t in TERMINAL:
        assert not ALLOWED[t]
    assert can_transition(S.SUBMITTED, S.PENDING_APPROVAL)
    assert not can_transition(S.SUBMITTED, S.RUNNING)
    assert not can_transition(S.SUCCEEDED, S.RUNNING)
    assert can_transition(S.RUNNING, S.FAILED)


def test_transitions_persist_and_illegal_ones_fail(coord, tmp_path):
    from coordinator.spec import parse_spec

    job = coord.submit(parse_spec(base())).job_id
    assert coord.lifecycle.transition(job, S.PENDING_APPROVAL) == S.SUBMITTED
    with pytest.raises(IllegalTransition, match="cannot go from PENDING_APPROVAL to SUCCEEDED"):
        coord.lifecycle.transition(job, S.SUCCEEDED)
    with pytest.raises(IllegalTransition, match="is PENDING_APPROVAL, not AUTHORIZED"):
        coord.lifecycle.transition(job, S.RUNNING, expect=S.AUTHORIZED)
    coord.lifecycle.transition(job, S.REJECTED, "tax rejected: no")
    # a second coordinator over the same database sees exactly the stored history
    other = Coordinator(CoordinatorSettings(work_dir=tmp_path, worker=False))
    assert other.lifecycle.state(job) == S.REJECTED
    assert [(e.from_state, e.to_state) for e in other.lifecycle.events(job)] == [
        (None, "SUBMITTED"), ("SUBMITTED", "PENDING_APPROVAL"), ("PENDING_APPROVAL", "REJECTED")]
    assert other.get_job(job).reason == "tax rejected: no"
    with Session(other.engine) as s:
        assert len(list(s.exec(select(JobEvent).where(JobEvent.job_id == job)))) == 3
    other.close()
    with pytest.raises(JobNotFound):
        coord.lifecycle.transition("job-nope", S.FAILED)


def test_api_submit_status_and_named_errors(coord):
    app = create_app(coord.settings, coord)
    with TestClient(AsPeer(app, "bank")) as client:
        r = client.post("/jobs", json=signed(base()))
        assert r.status_code == 201, r.text
        job = r.json()["job_id"]
        assert r.json()["state"] == "SUBMITTED"
        st = client.get(f"/jobs/{job}").json()
        assert st["state"] == "SUBMITTED" and st["approvals"] == {"bank": "unsent", "tax": "unsent"}
        man = client.get(f"/jobs/{job}/manifest")
        assert man.status_code == 422 or man.status_code == 200  # no chain account yet for terms
        r = client.post("/jobs", json=signed({**base(), "kind": "nope"}))
        assert r.status_code == 422 and r.json()["error"] == "UnknownJobKind"
        r = client.post("/jobs", json=signed({**base(), "outputs": [{"name": "metrics", "receiver": "tax"}]}))
        assert r.status_code == 403 and r.json()["error"] == "OutputNotToRequester"
        raw = base()
        raw["inputs"][1]["columns"] = ["tax_secret"]
        r = client.post("/jobs", json=signed(raw))
        assert r.status_code == 403 and r.json()["error"] == "PolicyForbidden"
        assert "tax_secret has grade 4" in r.json()["detail"]
        assert client.get("/jobs/job-missing").json()["error"] == "JobNotFound"
        # an unsigned spec, another member's signature, a bank spec sent by tax: refused
        assert client.post("/jobs", json=base()).json()["error"] == "UnsignedRequest"
        assert client.post("/jobs", json=signed(base(), "tax")).json()["error"] == "Forbidden"
        r = client.post("/jobs", json=signed(base(), "tax"), headers={"x-test-peer": "tax"})
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
        r = client.post(f"/jobs/{job}/revoke", json=signed({"job_id": job, "reason": "x"}, "tax", "revoke"),
                        headers={"x-test-peer": "tax"})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden"
        r = client.post(f"/jobs/{job}/revoke", json={"by": "bank", "reason": "unsigned"})
        assert r.status_code == 403 and r.json()["error"] == "UnsignedRequest"
        r = client.post(f"/jobs/{job}/revoke",
                        json=signed({"job_id": job, "reason": "changed my mind"}, "bank", "revoke"))
        assert r.json()["state"] == "REVOKED" and r.json()["reason"] == "changed my mind"
        r = client.get(f"/jobs/{job}/results/metrics")
        assert r.status_code == 409 and r.json()["error"] == "ResultNotReady"
        assert [j["job_id"] for j in client.get("/jobs", params={"state": "REVOKED"}).json()] == [job]
        # no peer key (plain HTTP): 401
        r = client.get("/jobs", headers={"x-test-peer": "none"})
        assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")


def test_catalog_search(coord):
    app = create_app(coord.settings, coord)
    with TestClient(AsPeer(app, "bank")) as client:
        assert {(e["member"], e["dataset"]) for e in client.get("/catalog", params={"q": "vat"}).json()} == {
            ("tax", "tax")}
        assert [e["dataset"] for e in client.get("/catalog", params={"department": "bank"}).json()] == ["loans"]
        assert client.get("/catalog", params={"max_grade": 2}).json() == []
        assert len(client.get("/catalog").json()) == 2


def test_catalog_refresh_replaces_entries_and_takes_new_datasets(coord, monkeypatch):
    """A member publishes another dataset (next year's snapshot): the refresh replaces its entries."""

    class Node:
        def __init__(self, names: list[str]) -> None:
            self.names = names

        def catalog(self) -> list[dict]:
            return [{"name": n, "columns": [{"name": "uscc", "grade": 3}], "row_count": 5, "max_grade": 3}
                    for n in self.names]

        def policy(self) -> dict:
            return POLICY

    nodes = {"bank": Node(["loans"]), "tax": Node(["tax"])}
    monkeypatch.setattr(coord, "node", lambda member: nodes[member])
    assert coord.refresh_catalog() == {"bank": "ok", "tax": "ok"}
    nodes["bank"].names = ["loans", "loans_2025"]
    assert coord.refresh_catalog() == {"bank": "ok", "tax": "ok"}
    with Session(coord.engine) as s:
        got = sorted((e.member, e.dataset) for e in s.exec(select(CatalogEntry)))
    assert got == [("bank", "loans"), ("bank", "loans_2025"), ("tax", "tax")]


def test_the_job_list_pages_in_the_store(coord):
    """``GET /jobs?limit&offset&order&q``: one page, its total in ``X-Total-Count``; the page is read
    with a fixed number of queries however many jobs it holds (not one query per job), and without
    the jobs' specs and manifests."""
    from sqlalchemy import event

    from coordinator.spec import parse_spec

    jobs = [coord.submit(parse_spec({**base(), "purpose": f"pre-loan scoring, {('even', 'odd')[i % 2]} batch {i}"})).job_id
            for i in range(7)]
    coord.lifecycle.transition(jobs[2], S.REVOKED, "withdrawn")
    app = create_app(coord.settings, coord)
    with TestClient(AsPeer(app, "bank")) as client:
        r = client.get("/jobs", params={"limit": 3, "offset": 0, "order": "newest"})
        assert r.status_code == 200 and r.headers["X-Total-Count"] == "7"
        assert [j["job_id"] for j in r.json()] == jobs[::-1][:3]
        assert r.json()[0]["approvals"] == {"bank": "unsent", "tax": "unsent"} and r.json()[0]["events"]
        r = client.get("/jobs", params={"limit": 3, "offset": 6, "order": "newest"})
        assert [j["job_id"] for j in r.json()] == [jobs[0]]
        r = client.get("/jobs", params={"limit": 3, "offset": 30})
        assert r.json() == [] and r.headers["X-Total-Count"] == "7"  # past the end: empty, the total still right
        r = client.get("/jobs", params={"q": "EVEN Batch", "order": "oldest"})  # every word, any case
        assert [j["job_id"] for j in r.json()] == jobs[0::2] and r.headers["X-Total-Count"] == "4"
        r = client.get("/jobs", params={"q": "100%_", "limit": 5})  # LIKE wildcards are plain characters
        assert r.json() == [] and r.headers["X-Total-Count"] == "0"
        r = client.get("/jobs", params={"state": "REVOKED", "requester": "bank", "limit": 5})
        assert [j["job_id"] for j in r.json()] == [jobs[2]] and r.json()[0]["reason"] == "withdrawn"
        assert [j["job_id"] for j in client.get("/jobs").json()] == jobs  # no limit: every job, oldest first
        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"order": "random"}):
            assert client.get("/jobs", params=bad).status_code == 422, bad
        statements: list[str] = []

        def seen(conn, cursor, statement, *rest):  # noqa: ANN001, ANN002
            statements.append(statement)

        event.listen(coord.engine, "before_cursor_execute", seen)
        try:
            total, page = coord.page_jobs(requester="bank", limit=5, offset=1, newest_first=True)
        finally:
            event.remove(coord.engine, "before_cursor_execute", seen)
        assert total == 7 and [j.job_id for j in page] == jobs[::-1][1:6]
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) <= 5, selects  # the page, its count, and the page's approvals, tasks, events
        assert not any("spec_json" in s or "manifest_json" in s for s in selects)  # a job's big columns stay unread
