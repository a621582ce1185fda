"""The node console in a real browser (Debian's Chromium through Playwright) against a real
federation (``dcp up``: anvil, the coordinator, the bank's, tax's and power's nodes over 国密 TLS, each
node serving its officers' console on its own HTTPS listener), in zh-CN and in en:

* tax's approver opens a deep link to a pending request, signs in (password + TOTP), reads the
  columns and their grades, approves — and the node's inbox holds the approval, signed;
* a steward's grade change waits for a second steward, who confirms it; the grade moves only then;
* an auditor verifies the audit log and sees its anchors and the receipts page;
* tax's approver cannot open power's console: its session is not power's, and its credentials do
  not sign in there.

The browser trusts each console's self-signed certificate by its SPKI pin
(``--ignore-certificate-errors-spki-list``), as an officer's managed browser would. With
``DCP_CONSOLE_SCREENSHOTS=docs/screenshots`` every page is saved there (the README shows them).

The federation is the session's one ``console_fed`` (shared with the requester console's module).
Processes: the federation's teardown (``tests.coordinator.fedkit.started``) fails the session if any
process it or the browser started is left alive; ``no_leaked_processes`` per test would count the
helper processes Chromium starts lazily for its first page.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from console.node.listener import spki_sha256
from tests.console.conftest import CHROMIUM_ARGS, chromium_path, sign_in_form

WORDS = {
    "zh-CN": {"name": "用户名", "password": "密码", "code": "动态口令（身份验证器应用）", "sign_in": "登录",
              "approve": "批准", "approved": "已批准", "wrong": "用户名、密码或动态口令错误。",
              "propose": "提出", "waiting": "待第二人确认",
              "confirm": "作为第二人确认", "confirmed": "已确认", "verify": "校验整个日志", "intact": "完整",
              "sign_out": "退出登录"},
    "en": {"name": "Officer name", "password": "Password", "code": "One-time code (authenticator app)",
           "sign_in": "Sign in", "approve": "Approve", "approved": "approved",
           "wrong": "Wrong name, password or one-time code.", "propose": "Propose", "waiting": "Waiting for a second officer", "confirm": "Confirm as the second officer",
           "confirmed": "Confirmed", "verify": "Verify the whole log", "intact": "Intact", "sign_out": "Sign out"},
}
#: The column whose grade each language's run changes (tax's synthetic features).
GRADE_COLUMN = {"zh-CN": 0, "en": 1}
SHOTS = os.environ.get("DCP_CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def fed(console_fed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The console browser modules' one federation (``console_fed``), with two jobs of the bank's
    waiting in tax's inbox (one per language's approval)."""
    from tests.coordinator.fedkit import http, vertical_spec

    f = console_fed
    state = f["state"]
    jobs = {lang: f["client"].submit(vertical_spec(f, f"pre-loan credit model ({lang})")) for lang in WORDS}
    from federation.launcher import officer_token

    api = http(f, "tax")
    token = officer_token(state, "tax", "auditor")
    ids: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(ids) < len(jobs) and time.monotonic() < deadline:
        inbox = api.get(f"{state.nodes['tax']}/approvals", headers={"Authorization": f"Bearer {token}"},
                        timeout=30).json()
        ids = {lang: r["id"] for r in inbox for lang, job in jobs.items() if r["job_id"] == job}
        time.sleep(0.3)
    assert len(ids) == len(jobs), f"the jobs never reached tax's inbox: {jobs}"
    yield {**f, "jobs": jobs, "request_ids": ids, "api": api, "token": token}
    api.close()


@pytest.fixture(scope="module")
def browser_pinned(fed: dict[str, Any]) -> Iterator[Browser]:
    """The system Chromium trusting exactly the tax and power consoles' certificates (SPKI pins)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        pytest.fail("no system Chromium: `apt-get install chromium fonts-noto-cjk` (requirements/debian.txt)")
    work = fed["state"].work_dir
    pins = ",".join(spki_sha256(work / "nodes" / m / "console" / "console.crt") for m in ("tax", "power"))
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=path, headless=True,
                               args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pins}"])
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture(scope="module", params=list(WORDS))
def lang(request: pytest.FixtureRequest) -> str:
    """The language of a pass over every flow (module scope: all flows in zh-CN, then all in en)."""
    return request.param


def sign_in(page: Page, fed: dict[str, Any], member: str, officer: str, lang: str,
            as_member: str | None = None) -> None:
    """Fill the sign-in form on ``page`` as ``officer`` of ``as_member`` (default: ``member``)."""
    sign_in_form(page, fed["state"], member, officer, lang, as_member)


def context(browser: Browser, lang: str) -> BrowserContext:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang)
    ctx.set_default_timeout(20_000)
    return ctx


def shot(page: Page, name: str) -> None:
    if SHOTS:
        from PIL import Image

        path = Path(SHOTS) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as img:
            small = img.convert("RGB").quantize(colors=64)
        small.save(path, optimize=True)


def tax_features(fed: dict[str, Any]) -> list[str]:
    return next(p.features for p in fed["data"].parties if p.name == "tax")


def test_tax_approver_signs_in_through_a_deep_link_and_approves(
        fed: dict[str, Any], browser_pinned: Browser, lang: str) -> None:
    w = WORDS[lang]
    console = fed["state"].consoles["tax"]
    rid = fed["request_ids"][lang]
    ctx = context(browser_pinned, lang)
    try:
        page = ctx.new_page()
        page.goto(f"{console}/inbox/{rid}?lang={lang}")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        shot(page, f"node-login-{lang}")
        sign_in(page, fed, "tax", "approver", lang)
        expect(page).to_have_url(re.compile(rf"/inbox/{rid}\?lang="))  # the deep link survived
        main = page.locator("main")
        for col in tax_features(fed):
            expect(main.locator("table").first).to_contain_text(col)
        grades = main.locator("table").first.locator("tbody tr td:nth-child(3)")
        assert [g.strip() for g in grades.all_inner_texts()] and all(g.strip() in "1234" for g in grades.all_inner_texts())
        expect(main).to_contain_text(fed["jobs"][lang])
        shot(page, f"node-request-{lang}")
        page.get_by_role("button", name=w["approve"], exact=True).click()
        expect(page.locator("#this-node-decision")).to_have_text(w["approved"])
        # the node's own inbox (its JSON API, over 国密 TLS) holds the signed approval
        got = fed["api"].get(f"{fed['state'].nodes['tax']}/approvals/{rid}",
                             headers={"Authorization": f"Bearer {fed['token']}"}, timeout=30).json()
        assert got["status"] == "approved" and got["decided_by"].startswith("officer:approver@tax"), got
        assert got["approval"] and got["approval"]["sm2_sig"]
        page.goto(f"{console}/inbox?lang={lang}")
        shot(page, f"node-inbox-{lang}")
        page.get_by_role("button", name=w["sign_out"]).click()
        expect(page).to_have_url(re.compile(r"/login"))
    finally:
        ctx.close()


def test_a_stewards_grade_change_waits_for_a_second_steward(
        fed: dict[str, Any], browser_pinned: Browser, lang: str) -> None:
    w = WORDS[lang]
    console = fed["state"].consoles["tax"]
    column = tax_features(fed)[GRADE_COLUMN[lang]]

    def grade() -> int:
        ds = fed["api"].get(f"{fed['state'].nodes['tax']}/datasets/tax_2024",
                            headers={"Authorization": f"Bearer {fed['token']}"}, timeout=30).json()
        return next(c["grade"] for c in ds["columns"] if c["name"] == column)

    before = grade()
    new = 1 if before != 1 else 3
    first, second = context(browser_pinned, lang), context(browser_pinned, lang)
    try:
        page = first.new_page()
        page.goto(f"{console}/datasets/tax_2024?lang={lang}")
        sign_in(page, fed, "tax", "steward", lang)
        expect(page).to_have_url(re.compile(r"/datasets/tax_2024"))
        shot(page, f"node-dataset-{lang}")
        page.locator("#column").select_option(column)  # labelled: <label for="column">
        page.locator("#grade").select_option(str(new))
        page.get_by_role("button", name=w["propose"], exact=True).click()
        expect(page).to_have_url(re.compile(r"/changes/\d+$"))
        change_url = page.url
        expect(page.locator("#change-status")).to_contain_text(w["waiting"])
        expect(page.get_by_role("button", name=w["confirm"])).to_have_count(0)  # not by its proposer
        shot(page, f"node-change-{lang}")
        assert grade() == before
        other = second.new_page()
        other.goto(change_url + f"?lang={lang}")
        sign_in(other, fed, "tax", "steward2", lang)
        expect(other).to_have_url(re.compile(r"/changes/\d+"))
        other.get_by_role("button", name=w["confirm"]).click()
        expect(other.locator("#change-status")).to_contain_text(w["confirmed"])
        assert grade() == new
        other.goto(f"{console}/changes?status=confirmed&lang={lang}")
        shot(other, f"node-changes-{lang}")
        other.goto(f"{console}/policy?lang={lang}")
        shot(other, f"node-policy-{lang}")
        other.goto(f"{console}/datasets?lang={lang}")
        shot(other, f"node-datasets-{lang}")
    finally:
        first.close()
        second.close()


def test_the_auditor_verifies_the_log(fed: dict[str, Any], browser_pinned: Browser, lang: str) -> None:
    w = WORDS[lang]
    ctx = context(browser_pinned, lang)
    try:
        page = ctx.new_page()
        page.goto(f"{fed['state'].consoles['tax']}/audit?lang={lang}")
        sign_in(page, fed, "tax", "auditor", lang)
        page.get_by_role("button", name=w["verify"]).click()
        expect(page).to_have_url(re.compile(r"verify=1"))
        expect(page.get_by_role("status")).to_contain_text(w["intact"])
        expect(page.locator("main")).to_contain_text("console.login")
        shot(page, f"node-audit-{lang}")
        page.goto(f"{fed['state'].consoles['tax']}/receipts?lang={lang}")
        shot(page, f"node-receipts-{lang}")
    finally:
        ctx.close()


def test_taxs_officer_cannot_open_powers_console(fed: dict[str, Any], browser_pinned: Browser, lang: str) -> None:
    w = WORDS[lang]
    consoles = fed["state"].consoles
    ctx = context(browser_pinned, lang)
    try:
        page = ctx.new_page()
        page.goto(f"{consoles['tax']}/inbox?lang={lang}")
        sign_in(page, fed, "tax", "admin", lang)
        expect(page).to_have_url(re.compile(r"/inbox"))
        # the same browser, signed in on tax, at power's console: tax's session opens nothing there
        page.goto(f"{consoles['power']}/inbox?lang={lang}")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        # and tax's officer's own name, password and code do not sign in at power
        sign_in(page, fed, "power", "admin", lang, as_member="tax")
        expect(page.get_by_role("alert")).to_have_text(w["wrong"])
        expect(page).to_have_url(re.compile(r"/login"))
        page.goto(f"{consoles['power']}/audit?lang={lang}")
        expect(page).to_have_url(re.compile(r"/login\?next="))
    finally:
        ctx.close()
