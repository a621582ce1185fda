"""The requester's console (a bank's node) in a real browser (Debian's Chromium through Playwright),
in Chinese and in English, over one real federation (anvil, the contracts, the coordinator, the
bank's, tax's and power's nodes in their own processes, 国密 mutual TLS, SecretFlow parties):

* the bank's analyst fills the job form, signs and submits, watches the job to SUCCEEDED (htmx
  polling while the departments' approvers approve) and opens the report: AUC, KS, the charts, the
  white and watch lists (the predictions opened with the bank's key, here);
* a job a department rejects shows the reason on its page; so does a job that fails in the run after
  every approval (tax's node cannot read its dataset's rows), on its page and in the job list;
* an invalid form shows the coordinator's error next to its field, and no job was made;
* from the job's page, the regulator console finds the job's authorization and receipts on chain;
* refusals: an officer without the analyst role, a cross-site form POST, another member's job.

The console is the one the bank's node serves at ``/requester`` on its officers' console listener
(``dcp up``'s federation, shared with the node console's module: ``console_fed``), behind the
listener's real sign-in: the analyst opens a deep link, signs in with password + TOTP, and lands on
it. The browser trusts the bank console's self-signed certificate by its SPKI pin.

Screenshots go to a temporary directory, or to ``$DCP_CONSOLE_SCREENSHOTS`` (e.g. ``docs/console``)."""

from __future__ import annotations

import os
import re
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from console.node.listener import spki_sha256
from tests.console.conftest import (
    CHROMIUM_ARGS,
    ROOT,
    Served,
    chromium_path,
    fresh_code,
    officer_password,
    sign_in_form,
)

pytestmark = pytest.mark.slow
MEMBERS = ("bank", "tax")

WORDS = {
    "zh-CN": {"new": "新建任务", "purpose": "用途（计算的目的；每个数据方都会看到）", "join": "连接键（各方据以对齐记录的字段）",
              "label": "标签（模型学习的结果，在本行数据中）", "submit": "签名并提交", "succeeded": "成功",
              "rejected": "已拒绝", "failed": "失败", "why": "原因：", "report": "打开报告", "catalog": "数据目录", "keywords": "关键词",
              "search": "搜索", "regulator": "本任务在链上的授权与回执（监管控制台）", "white": "下载白名单",
              "receipts": "条回执"},
    "en": {"new": "New job", "purpose": "Purpose (what the computation is for; every data owner reads it)",
           "join": "Join key (the column the parties match rows on)",
           "label": "Label (the outcome the model learns, in our own data)", "submit": "Sign and submit",
           "succeeded": "Succeeded", "rejected": "Rejected", "failed": "Failed", "why": "Why:", "report": "Open the report",
           "catalog": "Catalog", "keywords": "Keywords", "search": "Search",
           "regulator": "This job's authorization and receipts on the chain (regulator console)",
           "white": "Download the white list", "receipts": "receipts"},
}


@pytest.fixture(scope="module")
def fed(console_fed: dict[str, Any]) -> dict[str, Any]:
    """The console browser modules' one federation; its client acts as the bank (the approvers'
    decisions go through it)."""
    return console_fed


@pytest.fixture(scope="module")
def browser(fed: dict[str, Any]) -> Iterator[Browser]:
    """The system Chromium trusting exactly the bank console's certificate (its SPKI pin)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        pytest.fail("no system Chromium: `apt-get install chromium fonts-noto-cjk` (requirements/debian.txt)")
    pin = spki_sha256(bank_cert(fed))
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=path, headless=True,
                               args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"])
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


def bank_cert(fed: dict[str, Any]) -> Path:
    return fed["state"].work_dir / "nodes" / "bank" / "console" / "console.crt"


@pytest.fixture(scope="module")
def regulator(fed: dict[str, Any]) -> Iterator[Served]:
    """``python -m console.regulator`` over the federation's chain."""
    st = fed["state"]
    port = fed["regulator_port"]  # where the bank's node was told the regulator console is
    proc = subprocess.Popen([sys.executable, "-m", "console.regulator", "--rpc", st.rpc_url, "--registry", st.registry,
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/static/console.css", proc)
        yield Served(url=url, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@dataclass
class BankConsole:
    """The requester console on the bank node's console listener, and the analyst's signed-in
    browser state (its session cookie, from one real sign-in)."""

    url: str
    login_url: str
    storage: dict[str, Any]
    cert: Path

    def cookies(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.storage["cookies"]}


@pytest.fixture(scope="module")
def bank_console(fed: dict[str, Any], regulator: Served, browser: Browser) -> Iterator[BankConsole]:
    """The analyst signs in once, through a deep link to the requester console: the listener sends
    the browser to its sign-in (password + TOTP), then back to the page asked for."""
    root = fed["state"].consoles["bank"]
    url = f"{root}/requester"
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    try:
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{url}/jobs?state=SUCCEEDED&lang=zh-CN")
        expect(page).to_have_url(re.compile(r"/login\?next=%2Frequester%2Fjobs"))
        sign_in_form(page, fed["state"], "bank", "analyst", "zh-CN")
        expect(page).to_have_url(re.compile(r"/requester/jobs\?state=SUCCEEDED&lang=zh-CN$"))  # the deep link survived
        # the node console's navigation links the requester console for an analyst
        page.goto(f"{root}/inbox?lang=zh-CN")
        page.get_by_role("navigation", name=re.compile(".")).first.get_by_role("link", name="需求方控制台").click()
        expect(page).to_have_url(re.compile(r"/requester/jobs$"))
        yield BankConsole(url=url, login_url=f"{root}/login", storage=ctx.storage_state(), cert=bank_cert(fed))
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("DCP_CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _shot(page: Page, shots: Path, name: str, lang: str) -> None:
    """A full-page screenshot reduced to a 64-colour palette."""
    from PIL import Image

    path = shots / f"requester-{name}-{lang}.png"
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def _page(browser: Browser, bank: BankConsole, lang: str) -> Page:
    """A new browser context with the analyst's session, at the job list in ``lang``."""
    url = bank.url
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang, accept_downloads=True,
                                  storage_state=bank.storage)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.goto(f"{url}/jobs?lang={lang}")
    expect(pg.locator("html")).to_have_attribute("lang", lang)
    return pg


def _fill_training_job(page: Page, lang: str, purpose: str, join_key: str = "uscc") -> None:
    """Fill the job form: every member's dataset (all its published columns), the bank's label."""
    w = WORDS[lang]
    page.get_by_role("navigation", name=re.compile(".")).first.get_by_role("link", name=w["new"]).click()
    page.get_by_label(w["purpose"]).fill(purpose)
    page.get_by_label(w["join"]).fill(join_key)
    for member in MEMBERS:
        page.locator(f"input[name=dataset][value='{member}/{member}_2024']").check()
    page.get_by_label(w["label"]).select_option("bank/bank_2024/default")


def _approve(fed: dict[str, Any], job: str, members: tuple[str, ...] = MEMBERS) -> None:
    c, nodes = fed["client"], fed["state"].nodes
    for m in members:
        assert c.approve(job, m, nodes[m])["status"] == "approved"


def _job_id(page: Page) -> str:
    m = re.search(r"/jobs/([^/?#]+)$", page.url.split("?")[0])
    assert m, page.url
    return m.group(1)


def test_analyst_submits_watches_to_succeeded_and_opens_the_report(
        bank_console: BankConsole, fed: dict[str, Any], regulator: Served, browser: Browser,
        shots: Path) -> None:
    url = bank_console.url
    lang = "zh-CN"
    w = WORDS[lang]
    page = _page(browser, bank_console, lang)
    try:
        # the catalog: searching narrows it to one owner's dataset
        page.get_by_role("navigation", name=re.compile(".")).first.get_by_role("link", name=w["catalog"]).click()
        page.get_by_label(w["keywords"]).fill("tax")
        page.get_by_role("button", name=w["search"]).click()
        expect(page.locator("#results tbody tr")).to_have_count(1)
        expect(page.locator("#results")).to_contain_text("tax_2024")
        _shot(page, shots, "catalog", lang)

        _fill_training_job(page, lang, "小微企业贷前联合评分（控制台测试）")
        _shot(page, shots, "new-job", lang)
        page.get_by_role("button", name=w["submit"]).click()
        expect(page).to_have_url(re.compile(r"/jobs/[^/]+$"))
        job = _job_id(page)
        # the coordinator holds a job the bank signed: its requester and its purpose are the form's
        st = fed["client"].status(job)
        assert st.requester == "bank" and st.purpose == "小微企业贷前联合评分（控制台测试）"
        assert fed["client"].manifest(job)["manifest"]["inputs"][0]["columns"]  # the columns went along
        _approve(fed, job)
        # the page polls (htmx) until the job is final: no reload here
        expect(page.locator("#job-state")).to_have_text(w["succeeded"], timeout=240_000)
        expect(page.locator("#progress tbody").first).to_contain_text("tax")
        _shot(page, shots, "job", lang)

        page.get_by_role("link", name=w["report"]).click()
        expect(page.locator("#auc")).to_have_text(re.compile(r"^0\.\d{3}$"))
        auc = float(page.locator("#auc").inner_text())
        assert 0.5 < auc <= 1.0
        for img in page.locator("figure.chart img").all():  # every chart rendered (an SVG the browser drew)
            expect(img).to_have_js_property("complete", True, timeout=60_000)
            assert img.evaluate("i => i.naturalWidth") > 0
        with page.expect_download() as dl:
            page.locator("#white-list").click()
        text = Path(dl.value.path()).read_text()
        assert text.splitlines()[0] == "uscc,pd"
        _shot(page, shots, "report", lang)

        # the regulator: from the job's page to the job's authorization and receipts on chain
        page.goto(f"{url}/jobs/{job}")
        page.get_by_role("link", name=w["regulator"]).click()
        expect(page).to_have_url(re.compile(re.escape(regulator.url) + r"/jobs/0x[0-9a-f]{64}$"))
        expect(page.locator("main")).to_contain_text(w["receipts"])
        expect(page.locator("main table").last).to_contain_text("tax")
    finally:
        page.context.close()

    # the same job and its report, in English
    page = _page(browser, bank_console, "en")
    try:
        page.goto(f"{url}/jobs/{job}")
        expect(page.locator("#job-state")).to_have_text("Succeeded")
        page.get_by_role("link", name="Open the report").click()
        expect(page.locator("#auc")).to_have_text(f"{auc:.3f}")
        expect(page.locator("main")).to_contain_text("Score bands")
        _shot(page, shots, "report", "en")
        page.goto(f"{url}/jobs?lang=en")
        expect(page.locator("#results")).to_contain_text(job)
        _shot(page, shots, "jobs", "en")
    finally:
        page.context.close()


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_an_invalid_form_shows_the_coordinators_error_in_place(
        bank_console: BankConsole, fed: dict[str, Any], browser: Browser, lang: str, shots: Path) -> None:
    before = len(fed["client"].list(requester="bank"))
    page = _page(browser, bank_console, lang)
    try:
        _fill_training_job(page, lang, "test of a wrong join key", join_key="no_such_key")
        page.get_by_role("button", name=WORDS[lang]["submit"]).click()
        error = page.locator("#err-join_key")
        expect(error).to_contain_text("no join key 'no_such_key'")  # the coordinator's own words
        expect(page.get_by_label(WORDS[lang]["join"])).to_have_attribute("aria-invalid", "true")
        # what the analyst filled in is still there
        expect(page.get_by_label(WORDS[lang]["purpose"])).to_have_value("test of a wrong join key")
        expect(page.locator("input[name=dataset][value='tax/tax_2024']")).to_be_checked()
        # an empty purpose: the error sits next to the purpose
        page.get_by_label(WORDS[lang]["purpose"]).fill("   ")
        page.get_by_label(WORDS[lang]["join"]).fill("uscc")
        page.get_by_role("button", name=WORDS[lang]["submit"]).click()
        expect(page.locator("#err-purpose")).to_be_visible()
        expect(page.locator("#err-join_key")).to_have_count(0)
        if lang == "zh-CN":
            _shot(page, shots, "form-error", lang)
    finally:
        page.context.close()
    assert len(fed["client"].list(requester="bank")) == before  # nothing was submitted


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_job_that_ends_badly_shows_its_reason(
        bank_console: BankConsole, fed: dict[str, Any], browser: Browser, lang: str, shots: Path) -> None:
    url = bank_console.url
    page = _page(browser, bank_console, lang)
    try:
        _fill_training_job(page, lang, f"a job tax will refuse ({lang})")
        page.get_by_role("button", name=WORDS[lang]["submit"]).click()
        expect(page).to_have_url(re.compile(r"/jobs/[^/]+$"))
        job = _job_id(page)
        c, nodes = fed["client"], fed["state"].nodes
        c.reject(job, "tax", nodes["tax"], "purpose not covered by our data-sharing agreement")
        expect(page.locator("#job-state")).to_have_text(WORDS[lang]["rejected"], timeout=60_000)
        expect(page.locator("#job-reason")).to_contain_text(WORDS[lang]["why"])
        expect(page.locator("#job-reason")).to_contain_text("purpose not covered by our data-sharing agreement")
        # the job list, filtered by state, shows it with its reason
        page.goto(f"{url}/jobs?state=REJECTED")
        expect(page.locator("#results")).to_contain_text(job)
        expect(page.locator("#results")).to_contain_text("purpose not covered")
        if lang == "en":
            _shot(page, shots, "rejected", lang)
    finally:
        page.context.close()


@contextmanager
def _rows_gone(fed: dict[str, Any], member: str, dataset: str) -> Iterator[None]:
    """``member``'s node loses the stored rows of ``dataset`` (its table is renamed in the node's own
    SQLite database, behind the node's back — a damaged store); put back on exit."""
    db = fed["state"].work_dir / "nodes" / member / f"{member}.db"
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        (table,) = conn.execute("SELECT table_name FROM dataset WHERE name = ?", (dataset,)).fetchone()
        conn.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_away"')
        conn.commit()
    try:
        yield
    finally:
        with closing(sqlite3.connect(db, timeout=30)) as conn:
            conn.execute(f'ALTER TABLE "{table}_away" RENAME TO "{table}"')
            conn.commit()


def test_a_job_that_fails_in_the_engine_shows_its_reason(
        bank_console: BankConsole, fed: dict[str, Any], browser: Browser, shots: Path) -> None:
    """Approved by every owner, then failed at run time: tax's node cannot read its dataset's rows
    when it extracts them. The analyst watches the job to FAILED (zh-CN) with the engine's reason in
    words — which party, what failed — on its page and in the job list, in zh-CN and in en."""
    url = bank_console.url
    page = _page(browser, bank_console, "zh-CN")
    try:
        _fill_training_job(page, "zh-CN", "一个运行时失败的任务（控制台测试）")
        page.get_by_role("button", name=WORDS["zh-CN"]["submit"]).click()
        expect(page).to_have_url(re.compile(r"/jobs/[^/]+$"))
        job = _job_id(page)
        with _rows_gone(fed, "tax", "tax_2024"):
            _approve(fed, job)
            expect(page.locator("#job-state")).to_have_text(WORDS["zh-CN"]["failed"], timeout=180_000)
        st = fed["client"].status(job)
        assert set(st.approvals.values()) == {"approved"}  # it failed after approval, in the run
        reason = page.locator("#job-reason")
        expect(reason).to_contain_text(WORDS["zh-CN"]["why"])
        expect(reason).to_contain_text("tax's task failed: the extract of tax_2024 failed")
        expect(reason).to_contain_text("could not read the dataset's stored rows")
        assert "Traceback" not in reason.inner_text() and 'File "' not in reason.inner_text()
        expect(page.locator("#progress tbody").first).to_contain_text("the extract of tax_2024 failed")
        _shot(page, shots, "failed", "zh-CN")
    finally:
        page.context.close()
    page = _page(browser, bank_console, "en")
    try:
        page.goto(f"{url}/jobs/{job}")
        expect(page.locator("#job-state")).to_have_text(WORDS["en"]["failed"])
        expect(page.locator("#job-reason")).to_contain_text("Why: tax's task failed: the extract of tax_2024 failed")
        page.goto(f"{url}/jobs?state=FAILED")
        row = page.locator("#results tbody tr", has_text=job)
        expect(row).to_contain_text("Failed")
        expect(row).to_contain_text("the extract of tax_2024 failed")
        _shot(page, shots, "failed-list", "en")
    finally:
        page.context.close()


def test_the_demo_prints_this_federations_console_urls_and_logins(fed: dict[str, Any], regulator: Served) -> None:
    """What ``make demo`` prints after ``dcp up`` (``show_consoles`` over the real federation state):
    every node's console and the bank's requester console as https URLs, the member services' URLs
    https too (国密 TLS on every hop), and every officer's demo login with its 0600 password file."""
    import io

    from rich.console import Console

    from scenarios.bank_credit.demo import officer_logins, show_consoles

    st = fed["state"]
    assert st.gmtls and st.coordinator_url.startswith("https://")
    assert all(u.startswith("https://") for u in st.nodes.values()), st.nodes
    buf = io.StringIO()
    show_consoles(Console(file=buf, width=400), st, regulator.url)
    out = buf.getvalue()
    for member, url in st.consoles.items():
        assert url.startswith("https://") and f"{member} {url}/" in out
    assert f"bank {st.consoles['bank']}/requester/" in out and f"{regulator.url}/" in out
    assert "http://" not in out.replace(f"{regulator.url}/", "")  # only the regulator's read-only console is plain
    logins = officer_logins(st)
    assert {(m, n) for m, n, _, _ in logins} >= {("tax", "approver"), ("bank", "analyst"), ("power", "steward2")}
    for _member, _name, roles, path in logins:
        assert str(path) in out and roles and (path.stat().st_mode & 0o077) == 0


def test_refusals_change_nothing(bank_console: BankConsole, fed: dict[str, Any]) -> None:
    """Only a signed-in analyst uses the console; a form POST from another site is refused; an
    unknown job is not found. After each refusal, the bank has no more jobs than before. (And the
    list paginates.)"""
    url = bank_console.url
    origin = {"Origin": url.removesuffix("/requester")}
    c = fed["client"]
    before = len(c.list(requester="bank"))
    form = {"kind": "psi", "purpose": "cross-site", "join_key": "uscc", "dataset": ["bank/bank_2024", "tax/tax_2024"]}
    tls = {"base_url": url, "timeout": 30, "verify": ssl.create_default_context(cafile=str(bank_console.cert))}
    with httpx.Client(**tls) as anonymous:  # no session: a page goes to the sign-in, a form is refused
        r = anonymous.get("/jobs?page=2")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Frequester%2Fjobs%3Fpage%3D2"
        assert anonymous.post("/new", data=form, headers=origin).status_code == 401
    with httpx.Client(**tls, cookies=bank_console.cookies()) as http:
        r = http.post("/new", data=form, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.text
        r = http.post("/new", data=form)  # no Origin, no Referer: refused too
        assert r.status_code == 403
        # the job list paginates: newest first, two per page, the next one on page 2
        jobs = [j.job_id for j in sorted(c.list(requester="bank"), key=lambda j: j.created_at, reverse=True)]
        assert len(jobs) >= 3
        first, second = http.get("/jobs").text, http.get("/jobs", params={"page": 2}).text
        assert jobs[0] in first and jobs[1] in first and jobs[2] not in first and 'rel="next"' in first
        assert jobs[2] in second and jobs[0] not in second and 'rel="prev"' in second
        assert jobs[0] not in http.get("/jobs", params={"state": "SUCCEEDED"}).text
        assert http.get("/jobs/no-such-job").status_code == 404
        assert http.get("/jobs/no-such-job/report").status_code == 404
        assert http.get("/jobs/x/report/secret.svg").status_code == 422
    # a real officer of the bank's node, signed in for real, but not an analyst
    with httpx.Client(**{**tls, "base_url": bank_console.login_url.removesuffix("/login")}) as approver:
        r = approver.post("/login", headers=origin, data={
            "name": "approver", "password": officer_password(fed["state"], "bank", "approver"),
            "code": fresh_code(fed["state"], "bank", "approver"), "next": "/requester/jobs"})
        assert r.status_code == 303 and r.headers["location"] == "/requester/jobs"
        assert approver.get("/requester/jobs").status_code == 403
        assert approver.post("/requester/new", data=form, headers=origin).status_code == 403
        assert "/requester/" not in approver.get("/inbox").text  # no link to it in the navigation either
    assert len(c.list(requester="bank")) == before
