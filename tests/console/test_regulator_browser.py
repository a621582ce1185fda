"""The regulator's console in a real browser (Debian's Chromium through Playwright), in Chinese and
in English, against ``python -m console.regulator`` over a real anvil: finding a job's receipts by
searching, the usage chart, the planted audit finding, pagination, deep links, the keyboard.

Screenshots go to a temporary directory, or to ``$DCP_CONSOLE_SCREENSHOTS`` (e.g. ``docs/console``
to refresh the README's)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.conftest import FILLER_JOBS, PAGE_SIZE, Scenario, Served, hx

#: What each language calls the things the tests click and read.
WORDS = {
    "zh-CN": {"job": "任务标识", "member": "成员（名称或地址）", "search": "搜索", "next": "下一页",
              "receipts": "回执", "finding": "运行时间过短", "three": "3 条回执", "page": "第 {n} 页",
              "chart": "运行次数（回执）", "skip": "跳到正文", "live": "有效"},
    "en": {"job": "Job id", "member": "Member (name or address)", "search": "Search", "next": "Next",
           "receipts": "Receipts", "finding": "Run too short", "three": "3 receipts",
           "page": "Page {n}", "chart": "Runs (receipts)", "skip": "Skip to content", "live": "live"},
}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("DCP_CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(params=["zh-CN", "en"])
def lang(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def page(browser: Browser, regulator_console: Served, lang: str) -> Iterator[Page]:
    """A fresh browser context (no cookies) whose first visit chooses the language."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale=lang)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    pg.goto(f"{regulator_console.url}/?lang={lang}")
    expect(pg.locator("html")).to_have_attribute("lang", lang)
    try:
        yield pg
    finally:
        context.close()


def _shot(page: Page, shots: Path, name: str, lang: str) -> None:
    """Save a screenshot, reduced to a 64-colour palette (a tenth of the size, still legible)."""
    from PIL import Image

    path = shots / f"regulator-{name}-{lang}.png"
    page.screenshot(path=str(path))
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def test_regulator_finds_a_jobs_receipts_by_searching(
    page: Page, regulator_console: Served, scenario: Scenario, lang: str, shots: Path
) -> None:
    w = WORDS[lang]
    page.get_by_role("navigation", name=re.compile(".")).first.get_by_role("link", name=w["receipts"]).click()
    job = hx(scenario.main_job)
    page.get_by_label(w["job"]).fill(job[:16])
    page.get_by_label(w["job"]).press("Enter")  # submitted from the keyboard; htmx swaps the results
    expect(page).to_have_url(re.compile(r"/receipts\?.*job=" + job[:16]))
    results = page.locator("#results table tbody tr")
    expect(results).to_have_count(3)
    expect(page.locator("#results caption")).to_contain_text(w["three"])
    expect(page.locator("#results")).to_contain_text("358,500")
    for name in ("tax", "power"):
        expect(page.locator("#results")).to_contain_text(scenario.names[name])
    _shot(page, shots, "receipts", lang)
    # the job's page, then a reload of its URL: the same record
    page.locator("#results a[href^='/jobs/']").first.click()
    expect(page).to_have_url(f"{regulator_console.url}/jobs/{job}")
    expect(page.locator("main")).to_contain_text(job)
    expect(page.locator("main")).to_contain_text(w["live"])
    before = page.locator("main").inner_text()
    page.reload()
    assert page.locator("main").inner_text() == before
    _shot(page, shots, "job", lang)


def test_member_search_and_back_button(page: Page, regulator_console: Served, scenario: Scenario, lang: str) -> None:
    w = WORDS[lang]
    page.goto(f"{regulator_console.url}/receipts")
    page.get_by_label(w["member"]).fill("法院")
    page.get_by_role("button", name=w["search"]).click()
    expect(page.locator("#results table tbody tr")).to_have_count(1)
    expect(page.locator("#results")).to_contain_text(scenario.names["court"])
    assert "member=" in page.url
    page.go_back()  # htmx pushed the search into history: back is the unfiltered list
    expect(page).to_have_url(f"{regulator_console.url}/receipts")


def test_usage_chart_is_drawn(page: Page, regulator_console: Served, scenario: Scenario, lang: str,
                              shots: Path) -> None:
    page.goto(f"{regulator_console.url}/usage?by=department")
    chart = page.locator("#usage-chart")
    expect(chart).to_be_visible()
    page.wait_for_function("document.getElementById('usage-chart').complete")
    assert chart.evaluate("img => img.naturalWidth") > 100
    svg = page.request.get(regulator_console.url + chart.get_attribute("src")).text()
    assert WORDS[lang]["chart"] in svg and scenario.names["power"] in svg
    expect(page.locator("main table")).to_contain_text(scenario.names["power"])
    _shot(page, shots, "usage", lang)


def test_findings_page_lists_the_planted_finding(
    page: Page, regulator_console: Served, scenario: Scenario, lang: str, shots: Path
) -> None:
    page.goto(f"{regulator_console.url}/findings")
    rows = page.locator("#results table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(WORDS[lang]["finding"])
    expect(rows.first).to_contain_text("run of 0 s")  # the audit's evidence
    expect(rows.first.locator("a")).to_have_attribute("href", f"/jobs/{hx(scenario.early_job)}")
    _shot(page, shots, "findings", lang)
    rows.first.locator("a").click()
    expect(page.locator("main")).to_contain_text(WORDS[lang]["finding"])


def test_authorizations_paginate_and_pages_are_deep_links(
    page: Page, regulator_console: Served, lang: str, shots: Path
) -> None:
    w = WORDS[lang]
    total = 3 + FILLER_JOBS
    page.goto(f"{regulator_console.url}/authorizations")
    first = page.locator("#results tbody tr").all_inner_texts()
    assert len(first) == PAGE_SIZE
    _shot(page, shots, "authorizations", lang)
    page.locator("#results .pagination").get_by_role("link", name=w["next"]).click()
    expect(page).to_have_url(re.compile(r"page=2"))
    current = page.locator("#results .pagination a[aria-current='page']")
    expect(current).to_have_attribute("aria-label", w["page"].format(n=2))
    second = page.locator("#results tbody tr").all_inner_texts()
    assert len(second) == PAGE_SIZE and not set(second) & set(first)
    page.goto(f"{regulator_console.url}/authorizations?page=3")
    third = page.locator("#results tbody tr").all_inner_texts()
    assert len(third) == total - 2 * PAGE_SIZE and not set(third) & (set(first) | set(second))


def test_keyboard_reaches_the_content(page: Page, regulator_console: Served, lang: str) -> None:
    page.goto(f"{regulator_console.url}/receipts")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == WORDS[lang]["skip"]
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # every form control has a label
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(e => !e.labels || !e.labels.length).length")
    assert unlabelled == 0
