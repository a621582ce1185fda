"""The node console's inbox (skeleton) mounted on a real node app: the tabs' counts match the
lists, a request reads as words with its columns' grades, and decisions go through the node's own
approvals service — refused without a reason, without the approver role, from another site, or
(for approval) without a chain; each refusal leaves the request as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from console.node import create_node_console
from nodes.app import create_app
from nodes.settings import NodeSettings
from tests.authkit import AsPeer
from tests.console.conftest import Desk, Officer, seeded_node

ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, Desk]]:
    """A real node (no chain) with a dataset, a policy, three requests, and its console mounted; the
    API is read as the coordinator's TLS peer would (the inbox is the coordinator's or an officer's)."""
    desk = Desk(Officer("director_li", frozenset({"approver"})))
    with TestClient(AsPeer(seeded_node(tmp_path / "node", desk, page_size=2))) as c:
        yield c, desk


def _status(c: TestClient, request_id: int) -> dict:
    return c.get(f"/approvals/{request_id}").json()


def test_unwired_login_refuses_everything(tmp_path: Path) -> None:
    app = create_app(NodeSettings(name="tax", work_dir=tmp_path / "node"))
    app.mount("/console", create_node_console(app.state.ctx.approvals))
    with TestClient(app) as c:
        for path in ("/console/", "/console/inbox", "/console/inbox/1"):
            r = c.get(path)
            assert r.status_code == 501 and "issue #13" in r.json()["detail"]
        assert c.post("/console/inbox/1/reject", data={"reason": "x"}, headers=ORIGIN).status_code == 501


def test_inbox_counts_match_lists_and_paginate(node: tuple[TestClient, Desk]) -> None:
    c, _ = node
    html = c.get("/console/inbox").text
    assert "待处理 (3)" in html and "已批准 (0)" in html
    assert "3 个申请" in html and html.count('href="/console/inbox/') == 2  # page size 2
    page2 = c.get("/console/inbox?page=2&lang=en").text
    assert "Pending (3)" in page2 and page2.count('href="/console/inbox/') == 1
    assert 'href="/console/static/console.css"' in page2  # links follow the mount point
    assert "No request here." in c.get("/console/inbox?status=rejected").text


def test_request_reads_as_words_with_grades(node: tuple[TestClient, Desk]) -> None:
    c, _ = node
    item = c.get("/approvals").json()[0]
    html = c.get(f"/console/inbox/{item['id']}", params={"lang": "en"}).text
    assert "bank_a (bank) asks to run a psi job with secretflow/psi-rr22." in html
    assert "find shared small-enterprise customers" in html
    assert "<code>uscc</code>" in html and "<code>vat_paid</code>" in html
    assert "Output intersection goes to bank_a." in html
    assert item["manifest_hash"] in html
    assert 'name="reason"' in html and "Approve" in html
    zh = c.get(f"/console/inbox/{item['id']}", params={"lang": "zh-CN"}).text
    assert "bank_a（bank）申请用 secretflow/psi-rr22 运行一个 psi 任务。" in zh


def test_reject_with_reason_records_the_officer(node: tuple[TestClient, Desk]) -> None:
    c, _ = node
    rid = c.get("/approvals").json()[0]["id"]
    r = c.post(f"/console/inbox/{rid}/reject", data={"reason": "purpose too broad"}, headers=ORIGIN,
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith(f"/console/inbox/{rid}")
    got = _status(c, rid)
    assert (got["status"], got["reason"], got["decided_by"]) == ("rejected", "purpose too broad", "director_li")
    html = c.get(f"/console/inbox/{rid}").text
    assert "purpose too broad" in html and "已拒绝" in html and 'name="reason"' not in html
    assert "已拒绝 (1)" in c.get("/console/inbox").text


def test_refusals_leave_the_request_pending(node: tuple[TestClient, Desk]) -> None:
    c, desk = node
    rid = c.get("/approvals").json()[0]["id"]
    before = _status(c, rid)
    # no reason
    r = c.post(f"/console/inbox/{rid}/reject", data={"reason": "  "}, headers=ORIGIN)
    assert r.status_code == 422 and "拒绝时必须填写理由" in r.text
    # another site's form
    r = c.post(f"/console/inbox/{rid}/reject", data={"reason": "x"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    # approving needs a chain this node does not have: the error is shown in place
    r = c.post(f"/console/inbox/{rid}/approve", headers=ORIGIN)
    assert r.status_code >= 400 and 'role="alert"' in r.text and "keystore" in r.text, r.text[-1500:]
    # an auditor reads but does not decide
    desk.officer = Officer("auditor_wang", frozenset({"auditor"}))
    html = c.get(f"/console/inbox/{rid}").text
    assert 'name="reason"' not in html
    assert c.post(f"/console/inbox/{rid}/reject", data={"reason": "x"}, headers=ORIGIN).status_code == 403
    assert _status(c, rid) == before
