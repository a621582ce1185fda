"""The node console as its listener serves it (``create_officer_console`` over a real node app, no
chain): officers sign in with password + TOTP, deep links survive the sign-in, and every attack is
refused with the state unchanged — a wrong or replayed code, guessing (lockout), an open redirect,
another node's session, a cross-site form, a steward confirming their own change, a reader of the
audit log without the role. The pages beyond the inbox read the node's own services."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from console.node import create_officer_console
from console.node.auth import COOKIE, MAX_FAILURES
from console.node.totp import SecondFactor, current_code
from nodes.models import ApprovalRecord
from nodes.services.officers import ChangeProposal
from tests.console.conftest import Desk, Officer, seeded_node

ORIGIN = {"Origin": "https://testserver"}
PASSWORD = "correct horse battery"


class Node:
    """A node app with its officers' console at ``/`` (the listener's view). Each test makes its own
    officers (:meth:`officer`): a TOTP step signs an officer in once, and tests share the node."""

    def __init__(self, app, name: str) -> None:  # noqa: ANN001
        self.app = app
        self.ctx = app.state.ctx
        self.name = name
        self.factor = SecondFactor(self.ctx.engine, f"dcp {name}")
        self.secrets: dict[str, str] = {}
        self.ctx.officers.scrypt_n = 2**12  # cheap hashes for the tests (the parameters go with each hash)
        self.console_app = create_officer_console(self.ctx, page_size=2)
        self._n = 0

    def officer(self, role: str, name: str | None = None, password: str = PASSWORD) -> str:
        """A new officer of ``role`` with a TOTP secret; its name."""
        self._n += 1
        name = name or f"{role}{self._n}"
        self.ctx.officers.add(name, [role], password)
        self.secrets[name] = self.factor.enroll(name)
        return name

    def client(self) -> TestClient:
        return TestClient(self.console_app, base_url="https://testserver")

    def sign_in(self, officer: str, nxt: str = "", code: str | None = None, password: str = PASSWORD,
                client: TestClient | None = None):  # noqa: ANN201
        c = client or self.client()
        return c.post("/login", headers=ORIGIN, follow_redirects=False, data={
            "name": officer, "password": password, "next": nxt,
            "code": code if code is not None else current_code(self.secrets[officer])})


@pytest.fixture(scope="module")
def tax(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One tax node for the module (each test uses its own officers or checks what it changed)."""
    app = seeded_node(tmp_path_factory.mktemp("tax"), Desk(Officer("unused")), jobs=("job-1", "job-2"))
    with TestClient(app):
        yield Node(app, "tax")


def _refusals(node: Node) -> int:
    from nodes.models import AuditEntry

    with Session(node.ctx.engine) as s:
        return len(s.exec(select(AuditEntry).where(AuditEntry.action == "console.login",
                                                   AuditEntry.outcome == "refused")).all())


def test_a_deep_link_survives_the_sign_in(tax: Node) -> None:
    c = tax.client()
    zhang = tax.officer("steward")
    r = c.get("/changes?status=confirmed&page=1", follow_redirects=False)
    assert r.status_code == 303
    target = "/changes?status=confirmed&page=1"
    assert r.headers["location"] == f"/login?next={quote(target, safe='')}"
    form = c.get(r.headers["location"]).text
    assert f'name="next" value="{target.replace("&", "&amp;")}"' in form and "动态口令" in form
    r = tax.sign_in(zhang, target, client=c)
    assert r.status_code == 303 and r.headers["location"] == target
    cookie = r.headers["set-cookie"]
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    assert cookie.startswith(f"{COOKIE}=")
    page = c.get(target)
    assert page.status_code == 200 and zhang in page.text and "双人复核" in page.text


def test_a_wrong_or_replayed_code_opens_nothing(tax: Node) -> None:
    before = _refusals(tax)
    li, c = tax.officer("approver"), tax.client()
    r = tax.sign_in(li, code="000000" if current_code(tax.secrets[li]) != "000000" else "111111", client=c)
    assert r.status_code == 401 and COOKIE not in r.headers.get("set-cookie", "")
    assert "用户名、密码或动态口令错误" in r.text
    assert c.get("/inbox", follow_redirects=False).status_code == 303
    code = current_code(tax.secrets[li])
    assert tax.sign_in(li, code=code).status_code == 303
    assert tax.sign_in(li, code=code).status_code == 401  # the step is spent
    assert tax.sign_in(li, code=code, password="wrong password!").status_code == 401
    assert _refusals(tax) == before + 3
    # the session a right password opened before the wrong code was ended on the node
    from nodes.services.officers import OfficerSession

    with Session(tax.ctx.engine) as s:
        sessions = s.exec(select(OfficerSession).where(OfficerSession.officer == li)).all()
    assert [x.revoked for x in sessions].count(False) == 1


def test_guessing_locks_the_name(tax: Node) -> None:
    sun, wang = tax.officer("auditor"), tax.officer("auditor")
    for _ in range(MAX_FAILURES):
        assert tax.sign_in(sun, password="not the password").status_code == 401
    r = tax.sign_in(sun)  # right password and code, but locked
    assert r.status_code == 429 and "15 分钟" in r.text and COOKIE not in r.headers.get("set-cookie", "")
    assert tax.sign_in(wang).status_code == 303  # another name is not locked


@pytest.mark.parametrize("nxt", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "inbox"])
def test_next_is_never_an_open_redirect(tax: Node, nxt: str) -> None:
    r = tax.sign_in(tax.officer("approver"), nxt)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_logout_ends_the_session_on_the_node(tax: Node) -> None:
    c = _signed_in(tax, tax.officer("approver"))
    token = c.cookies.get(COOKIE)
    assert c.get("/inbox").status_code == 200
    assert c.post("/logout", headers={"Origin": "https://evil.example"}).status_code == 403
    r = c.post("/logout", headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    replay = TestClient(tax.console_app, base_url="https://testserver", cookies={COOKIE: token})
    assert replay.get("/inbox", follow_redirects=False).status_code == 303  # the old cookie is dead


def test_another_nodes_officer_cannot_open_this_console(tax: Node, tmp_path: Path) -> None:
    """(Its browser twin, over the federation's real listeners, is in test_node_console_browser.)"""
    power_app = seeded_node(tmp_path / "power", Desk(Officer("unused")), jobs=())
    with TestClient(power_app):
        power = Node(power_app, "power")
        li = tax.officer("approver")
        power.officer("approver", name=li, password="power's own password")  # the same name on power
        tax_cookie = _signed_in(tax, li).cookies.get(COOKIE)
        # tax's session cookie at power's console: power cannot make its MAC, so: sign in first
        replay = TestClient(power.console_app, base_url="https://testserver", cookies={COOKIE: tax_cookie})
        r = replay.get("/inbox", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        # tax's officer's credentials (its password and its authenticator's code) at power's login
        r = power.sign_in(li, code=current_code(tax.secrets[li]))
        assert r.status_code == 401 and COOKIE not in r.headers.get("set-cookie", "")


def _signed_in(node: Node, officer: str) -> TestClient:
    c = node.client()
    assert node.sign_in(officer, client=c).status_code == 303
    return c


def _grade(node: Node, column: str) -> int:
    return next(c.grade for c in node.ctx.datasets.get("tax_2024").columns if c.name == column)


def test_a_grade_change_waits_for_a_second_steward(tax: Node) -> None:
    zhang, wang, li = (_signed_in(tax, tax.officer(r)) for r in ("steward", "steward", "approver"))
    assert not tax.ctx.officers.proposals("pending")
    before = _grade(tax, "vat_paid")
    new = 4 if before != 4 else 3
    page = zhang.get("/datasets/tax_2024?lang=en").text
    assert "Propose a grade change" in page and 'label for="grade"' in page
    assert li.post("/datasets/tax_2024/grades", headers=ORIGIN, data={"column": "vat_paid", "grade": new}
                   ).status_code == 403  # an approver is no steward
    assert zhang.post("/datasets/tax_2024/grades", data={"column": "vat_paid", "grade": new}).status_code == 403
    r = zhang.post("/datasets/tax_2024/grades", headers=ORIGIN, data={"column": "no_such", "grade": new})
    assert r.status_code == 422 and _grade(tax, "vat_paid") == before
    r = zhang.post("/datasets/tax_2024/grades", headers=ORIGIN, data={"column": "vat_paid", "grade": new},
                   follow_redirects=False)
    assert r.status_code == 303
    change = r.headers["location"]
    html = zhang.get(change + "?lang=en").text
    assert "Waiting for a second officer" in html and "You proposed this change" in html
    assert "Confirm as the second officer" not in html
    assert _grade(tax, "vat_paid") == before  # proposed, not applied
    r = zhang.post(change + "/confirm", headers=ORIGIN)
    assert r.status_code == 403 and 'role="alert"' in r.text and _grade(tax, "vat_paid") == before
    assert "vat_paid.grade" in wang.get("/changes?lang=en").text
    r = wang.post(change + "/confirm", headers=ORIGIN)
    assert r.status_code == 200 and _grade(tax, "vat_paid") == new
    assert "Confirmed" in r.text
    with Session(tax.ctx.engine) as s:
        p = s.exec(select(ChangeProposal).where(ChangeProposal.kind == "schema")).one()
    assert p.status == "confirmed" and p.proposed_by != p.decided_by


def test_a_policy_change_waits_for_a_second_steward(tax: Node) -> None:
    zhang, wang = (_signed_in(tax, tax.officer("steward")) for _ in range(2))
    version = tax.ctx.policy.current().version
    r = zhang.post("/policy", headers=ORIGIN, follow_redirects=False, data={
        "default_max_grade": 1, "min_group_size": 25, "negative_list": "health， religion",
        "allowed_requesters": "", "allowed_roles": "bank"})
    assert r.status_code == 303 and tax.ctx.policy.current().version == version
    html = wang.get(r.headers["location"] + "?lang=en").text
    assert "min_group_size" in html and "Confirm as the second officer" in html
    wang.post(r.headers["location"] + "/confirm", headers=ORIGIN)
    now = tax.ctx.policy.current()
    assert (now.version, now.min_group_size, now.negative_list) == (version + 1, 25, ["health", "religion"])


def test_audit_and_receipts_pages(tax: Node) -> None:
    li, zhao = _signed_in(tax, tax.officer("approver")), _signed_in(tax, tax.officer("auditor"))
    assert li.get("/audit").status_code == 403  # an approver does not read the audit log here
    html = zhao.get("/audit?lang=en").text
    assert "console.login" in html and "Verify the whole log" in html
    verified = zhao.get("/audit?verify=1&lang=en").text
    assert "Intact:" in verified
    assert 'rel="next"' in html  # more entries than a page of 2
    assert "No receipt yet" in zhao.get("/receipts?lang=en").text
    for path in ("/datasets", "/datasets/tax_2024", "/policy", "/changes", "/inbox"):
        page = li.get(path + "?lang=en")
        assert page.status_code == 200, path


def test_the_request_shows_code_and_the_difference_from_the_last_approved(tax: Node) -> None:
    li = _signed_in(tax, tax.officer("approver"))
    with Session(tax.ctx.engine) as s:
        pending = s.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == "job-2")).one()
        m = json.loads(pending.manifest_json)
        earlier = s.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == "job-1")).one()
        earlier.manifest_json = json.dumps(dict(m, job_id="job-1", purpose="an earlier purpose",
                                                inputs=[{"dataset": "tax_2024", "columns": ["uscc"]}]))
        earlier.status, earlier.decided_by = "approved", "director_li"
        code = "import pandas as pd\nprint(df.groupby('grade').size())  # <script>alert(1)</script>\n"
        pending.manifest_json = json.dumps(dict(m, engine={"kind": "sandbox", "code": code}))
        s.add(pending)
        s.add(earlier)
        s.commit()
        rid = pending.id
    html = li.get(f"/inbox/{rid}?lang=en").text
    assert "The code the job runs" in html and "<code>engine.code</code>" in html
    assert "print(df.groupby(&#39;grade&#39;).size())  # &lt;script&gt;" in html  # in full, escaped
    assert "Differences from job job-1" in html
    assert "an earlier purpose" in html and "+vat_paid" in html


def test_dcp_node_user_totp_enrols_a_code_the_console_accepts(tmp_path: Path) -> None:
    """``dcp node user totp`` on the node's host: prints the secret once (and its otpauth URI); a code
    of it signs the officer in; an unknown officer gets nothing."""
    import yaml
    from typer.testing import CliRunner

    from dcp.cli import build_app
    from nodes.app import create_app
    from nodes.settings import load_node_settings
    from tests.authkit import TEST_SCRYPT_N, secret_file

    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({"name": "tax", "work_dir": str(tmp_path / "work"),
                                   "officer_scrypt_n": TEST_SCRYPT_N}))

    def cli(*args: str) -> tuple[int, str]:
        out = CliRunner().invoke(build_app(), list(args))
        return out.exit_code, out.output

    pw = secret_file(tmp_path / "pw", PASSWORD)
    assert cli("node", "user", "add", "li", "-r", "approver", "-c", str(cfg), "--password-file", str(pw))[0] == 0
    code, out = cli("node", "user", "totp", "nobody", "-c", str(cfg))
    assert code == 1 and "no officer" in out
    code, out = cli("node", "user", "totp", "li", "-c", str(cfg))
    assert code == 0 and "otpauth://totp/dcp%20tax%3Ali?secret=" in out
    secret = out.split("secret (base32): ")[1].split()[0]
    with TestClient(create_app(load_node_settings(cfg))) as node:
        c = TestClient(create_officer_console(node.app.state.ctx), base_url="https://testserver")
        r = c.post("/login", headers=ORIGIN, follow_redirects=False,
                   data={"name": "li", "password": PASSWORD, "code": current_code(secret)})
        assert r.status_code == 303 and c.get("/inbox").status_code == 200


def test_the_requester_console_is_mounted_behind_the_same_sign_in(tax: Node) -> None:
    """On a bank's node the listener mounts the requester console at ``/requester``: a deep link to it
    goes through this console's sign-in and back; only an analyst opens it (the others get 403 and
    no link to it); and only a node whose member is a ``bank`` (or set so) mounts it. (The pages
    themselves, over a real coordinator: tests/console/test_requester_browser.py.)"""
    from types import SimpleNamespace

    from console.node.listener import is_requester
    from console.requester import RequesterDesk, create_requester_console
    from coordinator.sdk import DcpClient
    from protocols.crypto.keystore import generate_member_keys
    from protocols.identity import PeerEntry, StaticDirectory

    desk = RequesterDesk("tax", DcpClient("http://127.0.0.1:9"), generate_member_keys("tax"))  # no page here calls it
    app = create_officer_console(tax.ctx, page_size=2,
                                 requester=lambda officer: create_requester_console(desk, officer=officer))
    analyst, approver = tax.officer("analyst"), tax.officer("approver")
    c = TestClient(app, base_url="https://testserver")
    r = c.get("/requester/jobs?state=FAILED", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=" + quote("/requester/jobs?state=FAILED", safe="")
    assert c.post("/requester/new", headers=ORIGIN, data={"kind": "psi"}).status_code == 401
    r = c.post("/login", headers=ORIGIN, follow_redirects=False, data={
        "name": analyst, "password": PASSWORD, "next": "/requester/jobs?state=FAILED",
        "code": current_code(tax.secrets[analyst])})
    assert r.status_code == 303 and r.headers["location"] == "/requester/jobs?state=FAILED"
    assert 'href="/requester/jobs"' in c.get("/inbox").text  # the navigation links it for an analyst
    other = TestClient(app, base_url="https://testserver")
    tax.sign_in(approver, client=other)
    assert other.get("/requester/jobs").status_code == 403
    assert other.post("/requester/new", headers=ORIGIN, data={"kind": "psi"}).status_code == 403
    assert "/requester/" not in other.get("/inbox").text
    assert 'href="/requester/jobs"' not in TestClient(tax.console_app, base_url="https://testserver").get(
        "/login").text  # a node that is no requester: no mount, no link

    keys = {m: generate_member_keys(m) for m in ("bank", "tax")}
    members = StaticDirectory([PeerEntry(name=m, role="bank" if m == "bank" else "department",
                                         sm2_public_key=k.public.sm2_public_key) for m, k in keys.items()])

    def ctx(name: str, setting: bool | None = None) -> SimpleNamespace:
        return SimpleNamespace(settings=SimpleNamespace(name=name, requester_console=setting), members=members)

    assert is_requester(ctx("bank")) and not is_requester(ctx("tax")) and not is_requester(ctx("nobody"))
    assert is_requester(ctx("tax", True)) and not is_requester(ctx("bank", False))
