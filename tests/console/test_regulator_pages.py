"""The regulator console's pages, server side (FastAPI's test client over a real anvil): what each
search returns, pagination, the audit's finding, the job page, charts, languages and htmx
fragments."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from console.regulator import create_regulator_app
from tests.console.conftest import FILLER_JOBS, PAGE_SIZE, Scenario, hx


@pytest.fixture(scope="module")
def web(scenario: Scenario) -> Iterator[TestClient]:
    with TestClient(create_regulator_app(scenario.client, page_size=PAGE_SIZE)) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh_language(web: TestClient) -> None:
    """Each test starts without a language cookie (a ``?lang=`` sets one, as in a browser)."""
    web.cookies.clear()


def jobs_listed(html: str) -> list[str]:
    return re.findall(r'href="/jobs/(0x[0-9a-f]{64})"', html)


def test_default_language_is_chinese_and_english_is_switchable(web: TestClient) -> None:
    r = web.get("/receipts")
    assert r.status_code == 200
    assert '<html lang="zh-CN">' in r.text and "使用回执" in r.text and "Usage receipts" not in r.text
    assert r.headers["content-language"] == "zh-CN"
    r = web.get("/receipts?lang=en")
    assert '<html lang="en">' in r.text and "Usage receipts" in r.text and "使用回执" not in r.text
    assert r.cookies.get("dcp_lang") == "en"
    # the cookie keeps English on the next page; ?lang= switches back
    assert "Audit findings" in web.get("/findings").text
    assert "审计发现" in web.get("/findings?lang=zh-CN").text


def test_receipts_searched_by_job(web: TestClient, scenario: Scenario) -> None:
    job = hx(scenario.main_job)
    r = web.get("/receipts", params={"job": job[:14]})
    assert r.status_code == 200
    assert jobs_listed(r.text) == [job] * 3
    assert "358,500" in r.text  # 120,000 + 118,500 + 120,000 rows
    assert "3 条回执，共使用 358,500 行" in r.text


def test_receipts_searched_by_member_dataset_and_time(web: TestClient, scenario: Scenario) -> None:
    by_tax = jobs_listed(web.get("/receipts", params={"member": "税务"}).text)
    assert sorted(set(by_tax)) == sorted({hx(scenario.main_job), hx(scenario.early_job)})
    assert len(by_tax) == 3
    court = "0x" + scenario.datasets["court"].hex()
    assert jobs_listed(web.get("/receipts", params={"dataset": court[:10]}).text) == [hx(scenario.revoked_job)]
    # by address too, case-insensitively
    addr = scenario.accounts["court"].lower()
    assert jobs_listed(web.get("/receipts", params={"member": addr}).text) == [hx(scenario.revoked_job)]
    # a time window before anything was recorded is empty; one covering everything has all
    assert "没有符合条件的回执" in web.get("/receipts", params={"until": "2000-01-01"}).text
    r = web.get("/receipts", params={"since": "2000-01-01", "until": "2999-12-31", "lang": "en"})
    assert f"{3 + 1 + 1 + FILLER_JOBS} receipts" in r.text


def test_bad_date_is_refused_in_place(web: TestClient) -> None:
    r = web.get("/receipts", params={"since": "yesterday"})
    assert r.status_code == 400
    assert 'role="alert"' in r.text and "2026-12-31" in r.text


def test_authorizations_paginate(web: TestClient, scenario: Scenario) -> None:
    total = 3 + FILLER_JOBS
    pages = -(-total // PAGE_SIZE)
    seen: list[str] = []
    for n in range(1, pages + 1):
        html = web.get("/authorizations", params={"page": n, "lang": "en"}).text
        listed = list(dict.fromkeys(jobs_listed(html)))
        assert len(listed) == (PAGE_SIZE if n < pages else total - PAGE_SIZE * (pages - 1))
        assert f'aria-current="page" aria-label="Page {n}"' in html
        seen += listed
    assert len(set(seen)) == total
    assert {hx(j) for j in (scenario.main_job, scenario.revoked_job, scenario.early_job)} <= set(seen)
    # a page past the end lands on the last page
    last = web.get("/authorizations", params={"page": 999}).text
    assert list(dict.fromkeys(jobs_listed(last))) == seen[-(total - PAGE_SIZE * (pages - 1)):]


def test_revoked_authorization_shows_revoked(web: TestClient, scenario: Scenario) -> None:
    html = web.get(f"/jobs/{hx(scenario.revoked_job)}", params={"lang": "en"}).text
    assert "revoked" in html and "Revoked" in html
    assert scenario.names["tax"] in html  # revoked by tax


def test_findings_list_the_planted_finding_with_evidence(web: TestClient, scenario: Scenario) -> None:
    html = web.get("/findings", params={"lang": "en"}).text
    assert "Run too short" in html
    assert jobs_listed(html) == [hx(scenario.early_job)]
    assert re.search(r"run of 0 s \(started \d+, finished \d+\), shorter than 1 s", html)
    assert "1 finding<" in html or "1 finding " in html
    zh = web.get("/findings", params={"lang": "zh-CN"}).text
    assert "运行时间过短" in zh
    # the filter by kind: the other kinds have none
    assert "No findings" in web.get("/findings", params={"kind": "runs_beyond_maximum", "lang": "en"}).text


def test_job_page_is_the_whole_record(web: TestClient, scenario: Scenario) -> None:
    job = hx(scenario.main_job)
    html = web.get(f"/jobs/{job}", params={"lang": "en"}).text
    assert job in html and "live" in html
    assert scenario.names["bank"] in html and scenario.names["tax"] in html and scenario.names["power"] in html
    assert html.count(f'href="/jobs/{job}"') == 3  # its three receipts
    assert "The audit found nothing about this job." in html
    early = web.get(f"/jobs/{hx(scenario.early_job)}", params={"lang": "en"}).text
    assert "Run too short" in early


def test_unknown_job_is_404(web: TestClient) -> None:
    r = web.get("/jobs/0x" + "ab" * 32)
    assert r.status_code == 404 and "未找到" in r.text
    assert web.get("/jobs/not-a-hash").status_code == 404


def test_usage_chart_is_svg_with_each_series(web: TestClient, scenario: Scenario) -> None:
    r = web.get("/usage/chart.svg", params={"by": "department", "lang": "zh-CN"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    svg = r.text
    for who in ("tax", "power", "court"):
        assert scenario.names[who] in svg
    assert "运行次数（回执）" in svg
    page = web.get("/usage", params={"by": "department", "metric": "rows", "lang": "en"}).text
    assert 'src="/usage/chart.svg?by=department&amp;metric=rows&amp;lang=en"' in page
    assert "The numbers behind the chart" in page and "118500" in page


def test_htmx_request_gets_the_fragment(web: TestClient, scenario: Scenario) -> None:
    r = web.get("/receipts", params={"job": hx(scenario.main_job)}, headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert "<html" not in r.text and "<table>" in r.text
    assert len(jobs_listed(r.text)) == 3


def test_anchors_show_each_nodes_latest_head(web: TestClient, scenario: Scenario) -> None:
    html = web.get("/anchors", params={"lang": "en"}).text
    assert "0x" + __import__("hashlib").sha256(b"tax-log-head-2").hexdigest() in html
    assert "0x" + __import__("hashlib").sha256(b"power-log-head-1").hexdigest() in html
    assert "3 anchors" in html


def test_cli_refuses_a_chain_that_does_not_answer() -> None:
    import subprocess
    import sys

    from common.net import free_port

    port = free_port()
    r = subprocess.run([sys.executable, "-m", "console.regulator", "--rpc", f"http://127.0.0.1:{port}",
                        "--registry", "0x" + "11" * 20, "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no chain answers" in r.stderr


def test_index_reads_only_new_blocks_and_sees_a_new_receipt(scenario: Scenario) -> None:
    from console.regulator.index import ChainIndex, Search
    from contracts.models import UsageReceipt
    from tests.console.conftest import h

    index = ChainIndex(scenario.client)
    head = index.refresh()
    before = len(index.receipts)
    assert index.refresh() == head and len(index.receipts) == before  # nothing new: nothing re-read
    snap = scenario.backend.snapshot()
    try:
        now = scenario.backend.now()
        scenario.client.record_usage(scenario.accounts["power"], UsageReceipt(
            job_id=h(scenario.main_job), dataset_id=scenario.datasets["power"], row_count=777,
            result_hash=h("late result"), started_at=now - 60, finished_at=now))
        assert index.refresh() > head
        assert len(index.receipts) == before + 1
        rows = index.search_receipts(Search(job=hx(scenario.main_job)))
        assert [r.row_count for r in rows][0] == 777 and rows[0].run == 2
    finally:
        scenario.backend.revert(snap)
