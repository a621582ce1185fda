"""The node console's inbox in a real browser (Debian's Chromium through Playwright), zh-CN and en:
the approver opens the pending request, reads its columns and grades, rejects it with a reason
(typed from the keyboard), and sees the decision and the moved counts. Login is the test's stand-in
(:class:`tests.console.conftest.Desk`) until officers' accounts exist."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.conftest import Desk

WORDS = {
    "zh-CN": {"pending": "待处理", "rejected": "已拒绝", "reason": "拒绝理由", "reject": "拒绝",
              "asks": "bank_a（bank）申请用 secretflow/psi-rr22 运行一个 psi 任务。", "dataset": "数据集 tax_2024"},
    "en": {"pending": "Pending", "rejected": "Rejected", "reason": "Reason for rejecting", "reject": "Reject",
           "asks": "bank_a (bank) asks to run a psi job with secretflow/psi-rr22.", "dataset": "Dataset tax_2024"},
}
JOB = {"zh-CN": "job-1", "en": "job-2"}


@pytest.fixture(params=["zh-CN", "en"])
def lang(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def page(browser: Browser, node_console: tuple[str, Desk], lang: str) -> Iterator[Page]:
    url, _ = node_console
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale=lang)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    pg.goto(f"{url}/console/inbox?lang={lang}")
    try:
        yield pg
    finally:
        context.close()


def _shot(page: Page, name: str) -> None:
    target = os.environ.get("DCP_CONSOLE_SCREENSHOTS")
    if target:
        from PIL import Image

        path = Path(target) / f"{name}.png"
        page.screenshot(path=str(path))
        with Image.open(path) as img:
            small = img.convert("RGB").quantize(colors=64)
        small.save(path, optimize=True)


def test_approver_reads_the_request_and_rejects_it_with_a_reason(
    page: Page, node_console: tuple[str, Desk], lang: str
) -> None:
    url, desk = node_console
    w = WORDS[lang]
    tabs = page.get_by_role("navigation", name=re.compile("申请状态|Request status"))
    pending_before = int(re.search(r"\((\d+)\)", tabs.get_by_role("link", name=re.compile(w["pending"])).inner_text())[1])
    _shot(page, f"node-inbox-{lang}")
    page.get_by_role("link", name=JOB[lang], exact=True).click()
    expect(page).to_have_url(re.compile(r"/console/inbox/\d+$"))
    main = page.locator("main")
    expect(main).to_contain_text(w["asks"])
    expect(main.locator("table caption").first).to_have_text(w["dataset"])
    expect(main).to_contain_text("vat_paid")
    _shot(page, f"node-request-{lang}")
    reason = page.get_by_label(w["reason"])
    reason.click()
    page.keyboard.type("purpose too broad / 用途过宽")
    page.get_by_role("button", name=w["reject"], exact=True).click()
    expect(main).to_contain_text("purpose too broad / 用途过宽")
    expect(main).to_contain_text(desk.officer.name)
    expect(page.get_by_label(w["reason"])).to_have_count(0)  # decided: no more form
    page.goto(f"{url}/console/inbox")
    tabs = page.get_by_role("navigation", name=re.compile("申请状态|Request status"))
    expect(tabs.get_by_role("link", name=re.compile(w["pending"]))).to_contain_text(f"({pending_before - 1})")
    tabs.get_by_role("link", name=re.compile(w["rejected"])).click()
    expect(page).to_have_url(re.compile(r"status=rejected"))
    expect(page.locator("#results tbody")).to_contain_text(JOB[lang])
