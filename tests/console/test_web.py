"""The console's shared pieces: the pinned htmx file, the pagination helper, links that keep the
query, the request's language."""

from __future__ import annotations

import hashlib

import pytest
from starlette.requests import Request

from console.web import HTMX_SHA256, HTMX_SM3, STATIC, paginate, paginate_query, request_locale, url_with


def _request(query: str = "", cookie: str = "") -> Request:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return Request({"type": "http", "method": "GET", "path": "/receipts", "query_string": query.encode(),
                    "headers": headers, "root_path": ""})


def test_htmx_is_the_pinned_file() -> None:
    data = (STATIC / "htmx.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == HTMX_SHA256
    assert hashlib.new("sm3", data).hexdigest() == HTMX_SM3
    assert b'version:"2.0.11"' in data


def test_paginate_clamps_and_windows() -> None:
    items = list(range(95))
    p = paginate(items, 3, 10)
    assert (p.items, p.number, p.pages, p.first_index, p.last_index) == (list(range(20, 30)), 3, 10, 21, 30)
    assert p.has_previous and p.has_next
    assert p.window() == [1, 2, 3, 4, 5, None, 10]
    assert paginate(items, 999, 10).items == list(range(90, 95))  # a stale link lands on the last page
    assert paginate(items, 0, 10).number == 1
    empty = paginate([], 1, 10)
    assert (empty.pages, empty.total, empty.first_index, empty.items, empty.window()) == (1, 0, 0, [], [1])
    with pytest.raises(ValueError):
        paginate(items, 1, 0)


def test_paginate_query_reads_only_the_page() -> None:
    calls: list[tuple[int, int]] = []

    def fetch(offset: int, limit: int) -> list[int]:
        calls.append((offset, limit))
        return list(range(offset, min(offset + limit, 45)))

    p = paginate_query(45, 9, fetch, 20)
    assert (p.number, p.items, calls) == (3, list(range(40, 45)), [(40, 20)])
    assert paginate_query(0, 1, fetch, 20).items == [] and len(calls) == 1


def test_links_keep_the_query_and_drop_lang() -> None:
    r = _request("member=%E7%A8%8E&page=2&lang=en")
    assert url_with(r, page=3) == "/receipts?member=%E7%A8%8E&page=3"
    assert url_with(r, page=None, lang="zh-CN") == "/receipts?member=%E7%A8%8E&lang=zh-CN"
    assert url_with(r, "/usage/chart.svg") == "/usage/chart.svg?member=%E7%A8%8E&page=2"


def test_language_from_query_then_cookie_then_chinese() -> None:
    assert request_locale(_request()) == "zh_CN"
    assert request_locale(_request(cookie="dcp_lang=en")) == "en"
    assert request_locale(_request("lang=zh-CN", cookie="dcp_lang=en")) == "zh_CN"
    assert request_locale(_request("lang=fr")) == "zh_CN"
