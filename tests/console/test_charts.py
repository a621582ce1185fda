"""The consoles' charts drawn by many request threads at once: each on its own matplotlib Figure
(no pyplot), under one drawing lock, so every chart comes out exactly as when drawn alone — text as
text in the CJK font list — and matplotlib's global settings are left as they were."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import matplotlib

from console.regulator.charts import usage_svg
from console.regulator.index import UsagePoint
from console.requester.report import _svg


def _series(k: int) -> dict[str, list[UsagePoint]]:
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    return {f"市税务局 {k}": [UsagePoint(start=t0 + timedelta(days=d), runs=d + k, rows=1000 * (d + k)) for d in range(6)],
            "市供电公司": [UsagePoint(start=t0 + timedelta(days=d), runs=2 * d, rows=500 * d) for d in range(6)]}


def _bars(k: int):  # noqa: ANN202
    def draw(ax) -> None:  # noqa: ANN001
        ax.bar(range(5), [k + i for i in range(5)])
        ax.set_xlabel("评分分段")
    return draw


def test_charts_drawn_at_once_are_the_charts_drawn_alone() -> None:
    before = {k: matplotlib.rcParams[k] for k in ("svg.fonttype", "font.family", "font.sans-serif", "svg.hashsalt")}
    jobs = [(lambda k=k: usage_svg(_series(k), "runs", "运行次数", "无数据")) for k in range(3)]
    jobs += [(lambda k=k: _svg(_bars(k))) for k in range(3)]
    alone = [job() for job in jobs]
    assert all(b'font-family' in svg and "运行次数".encode() in svg for svg in alone[:3])  # text kept as text
    assert all("评分分段".encode() in svg for svg in alone[3:])
    assert len(set(alone)) == len(alone)  # each chart its own
    got: dict[int, bytes] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs) * 2)

    def run(i: int) -> None:
        try:
            start.wait(30)
            got[i] = jobs[i % len(jobs)]()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs) * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert [got[i] for i in range(len(threads))] == alone + alone
    assert {k: matplotlib.rcParams[k] for k in before} == before  # the global settings as they were
