"""The requester's console (a bank's node) in a real browser (Debian's Chromium through Playwright),
in Chinese and in English, over one real federation (anvil, the contracts, the coordinator, the
bank's, tax's and power's nodes in their own processes, 国密 mutual TLS, SecretFlow parties):

* the bank's analyst fills the job form, signs and submits, watches the job to SUCCEEDED (htmx
  polling while the departments' approvers approve) and opens the report: AUC, KS, the charts, the
  white and watch lists (the predictions opened with the bank's key, here);
* a job a department rejects shows the reason on its page;
* an invalid form shows the coordinator's error next to its field, and no job was made;
* from the job's page, the regulator console finds the job's authorization and receipts on chain;
* refusals: an officer without the analyst role, a cross-site form POST, another member's job.

The console is the app the bank's node mounts on its console listener; the officers' login of that
listener is another branch's (console/node), so here the dependency resolves the officer the test
signed in — a real session of a real officer account on the bank's node (``/officers/me``).

Screenshots go to a temporary directory, or to ``$DCP_CONSOLE_SCREENSHOTS`` (e.g. ``docs/console``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from common.net import free_port
from tests.console.conftest import ROOT, Served

pytestmark = pytest.mark.slow
MEMBERS = ("bank", "tax")
#: Jobs per list page (the module makes three, so the list has two pages).
PAGE_SIZE = 2

WORDS = {
    "zh-CN": {"new": "新建任务", "purpose": "用途（计算的目的；每个数据方都会看到）", "join": "连接键（各方据以对齐记录的字段）",
              "label": "标签（模型学习的结果，在本行数据中）", "submit": "签名并提交", "succeeded": "成功",
              "rejected": "已拒绝", "why": "原因：", "report": "打开报告", "catalog": "数据目录", "keywords": "关键词",
              "search": "搜索", "regulator": "本任务在链上的授权与回执（监管控制台）", "white": "下载白名单",
              "receipts": "条回执"},
    "en": {"new": "New job", "purpose": "Purpose (what the computation is for; every data owner reads it)",
           "join": "Join key (the column the parties match rows on)",
           "label": "Label (the outcome the model learns, in our own data)", "submit": "Sign and submit",
           "succeeded": "Succeeded", "rejected": "Rejected", "why": "Why:", "report": "Open the report",
           "catalog": "Catalog", "keywords": "Keywords", "search": "Search",
           "regulator": "This job's authorization and receipts on the chain (regulator console)",
           "white": "Download the white list", "receipts": "receipts"},
}


@dataclass(frozen=True)
class Officer:
    name: str
    roles: frozenset[str]


@dataclass
class BankLogin:
    """Who is signed in at the bank's console: a real session token of an officer account on the
    bank's node, resolved by the node itself (``GET /officers/me`` over 国密 TLS as the bank)."""

    state: Any
    token: str = ""
    cache: dict[str, Officer] = field(default_factory=dict)

    def sign_in(self, officer: str) -> None:
        from federation.launcher import officer_token

        self.token = officer_token(self.state, "bank", officer)

    def officer(self) -> Officer:
        from fastapi import HTTPException

        from federation.launcher import client_for

        if self.token not in self.cache:
            with client_for(self.state, "bank") as http:
                r = http.get(f"{self.state.nodes['bank']}/officers/me", timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"})
            if r.status_code != 200:
                raise HTTPException(status_code=401, detail="not signed in")
            me = r.json()
            self.cache[self.token] = Officer(me["name"], frozenset(me["roles"]))
        return self.cache[self.token]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One federation for the whole module: the bank and tax (600 synthetic rows), and its client
    acting as the bank (the approvers' decisions go through it)."""
    from protocols.crypto.keystore import load_keystore
    from protocols.secretflow.synthetic import make_vertical_data
    from tests.coordinator.fedkit import POLICY, DiagnosingClient, started

    root = tmp_path_factory.mktemp("requester-fed")
    data = make_vertical_data(root / "data", n_rows=600, overlap=0.7, seed=5)
    members = [{"name": p.name, "role": "bank" if p.name == "bank" else "department", "policy": POLICY,
                "datasets": [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": "uscc"}]}
               for p in data.parties if p.name in MEMBERS]
    with started(root, members, {"node_timeout_s": 6.0, "poll_interval_s": 0.3}) as state:
        bank = load_keystore(state.keys_dir / "bank.keystore.json", state.passphrase_of("bank"))
        yield {"state": state, "root": root, "client": DiagnosingClient(state.coordinator_url, root, signer=bank,
                                                                         state=state)}


@pytest.fixture(scope="module")
def regulator(fed: dict[str, Any]) -> Iterator[Served]:
    """``python -m console.regulator`` over the federation's chain."""
    st = fed["state"]
    port = free_port()
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


@pytest.fixture(scope="module")
def bank_console(fed: dict[str, Any], regulator: Served) -> Iterator[tuple[str, BankLogin]]:
    """The requester's console of the bank (its keys, its 国密 TLS identity), served by uvicorn on a
    free port, with the bank's analyst signed in."""
    import uvicorn

    from console.requester import RequesterDesk, create_requester_console

    login = BankLogin(fed["state"])
    login.sign_in("analyst")
    desk = RequesterDesk.from_federation(fed["state"], "bank", regulator_url=regulator.url)
    app = create_requester_console(desk, officer=login.officer, page_size=PAGE_SIZE, poll_s=0.5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait(f"http://127.0.0.1:{port}/static/console.css")
        yield f"http://127.0.0.1:{port}", login
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        desk.client.close()


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


def _page(browser: Browser, url: str, lang: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang, accept_downloads=True)
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
        bank_console: tuple[str, BankLogin], fed: dict[str, Any], regulator: Served, browser: Browser,
        shots: Path) -> None:
    url, _ = bank_console
    lang = "zh-CN"
    w = WORDS[lang]
    page = _page(browser, url, lang)
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
    page = _page(browser, url, "en")
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
        bank_console: tuple[str, BankLogin], fed: dict[str, Any], browser: Browser, lang: str, shots: Path) -> None:
    url, _ = bank_console
    before = len(fed["client"].list(requester="bank"))
    page = _page(browser, url, lang)
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
        bank_console: tuple[str, BankLogin], fed: dict[str, Any], browser: Browser, lang: str, shots: Path) -> None:
    url, _ = bank_console
    page = _page(browser, url, lang)
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


def test_refusals_change_nothing(bank_console: tuple[str, BankLogin], fed: dict[str, Any]) -> None:
    """Only an analyst uses the console; a form POST from another site is refused; an unknown job is
    not found. After each refusal, the bank has no more jobs than before. (And the list paginates.)"""
    url, login = bank_console
    c = fed["client"]
    before = len(c.list(requester="bank"))
    form = {"kind": "psi", "purpose": "cross-site", "join_key": "uscc", "dataset": ["bank/bank_2024", "tax/tax_2024"]}
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/new", data=form, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.text
        r = http.post("/new", data=form)  # no Origin, no Referer: refused too
        assert r.status_code == 403
        login.sign_in("approver")  # a real officer of the bank's node, but not an analyst
        try:
            assert http.get("/jobs").status_code == 403
            assert http.post("/new", data=form, headers={"Origin": url}).status_code == 403
        finally:
            login.sign_in("analyst")
        # the job list paginates: newest first, two per page, the third on page 2
        jobs = [j.job_id for j in sorted(c.list(requester="bank"), key=lambda j: j.created_at, reverse=True)]
        assert len(jobs) == 3
        first, second = http.get("/jobs").text, http.get("/jobs", params={"page": 2}).text
        assert jobs[0] in first and jobs[1] in first and jobs[2] not in first and 'rel="next"' in first
        assert jobs[2] in second and jobs[0] not in second and 'rel="prev"' in second
        assert jobs[0] not in http.get("/jobs", params={"state": "SUCCEEDED"}).text
        assert http.get("/jobs/no-such-job").status_code == 404
        assert http.get("/jobs/no-such-job/report").status_code == 404
        assert http.get("/jobs/x/report/secret.svg").status_code == 422
    assert len(c.list(requester="bank")) == before
