"""What a job's links cost a gateway: at close each gateway reports the plaintext bytes it carried each way,
the connections it admitted and its loop thread's CPU seconds over the span the job was open (what
``bench/bench_bank_credit.py --gateways`` reads from the nodes' ``gateway.close`` audit entries)."""

from __future__ import annotations

import time

from common.net import free_port
from protocols.gateway import Gateway, JobReport
from tests.gateway.conftest import Engine, roundtrip, route

JOB = "job-report-1"


def test_each_gateway_reports_bytes_each_way_and_its_cpu_when_the_job_closes(people, registry, engines):
    reports: dict[str, list[JobReport]] = {"alice": [], "bob": []}
    gws = {m: Gateway("127.0.0.1", free_port(), people[m].creds, registry.__contains__, member=m,
                      on_close=reports[m].append).start() for m in ("alice", "bob")}
    try:
        a_sf, b_sf = Engine(), Engine()
        engines += [a_sf, b_sf]
        alice, bob = gws["alice"], gws["bob"]
        t0 = time.time()
        bob.open_job(JOB, {"sf": b_sf.port}, {"alice": route(alice, people["alice"])})
        routes = alice.open_job(JOB, {"sf": a_sf.port}, {"bob": route(bob, people["bob"])})
        payload = bytes(range(256)) * 8192  # 2 MiB, echoed back by bob's engine
        assert roundtrip(routes["bob"]["sf"], payload) == payload
        assert reports == {"alice": [], "bob": []}  # nothing is reported while the job is open
        assert alice.close_job(JOB) and bob.close_job(JOB)
        assert not alice.close_job(JOB)  # closing again: not open, no second report
    finally:
        for g in gws.values():
            g.stop()
    (a,), (b,) = reports["alice"], reports["bob"]
    assert a.job == b.job == JOB
    assert (a.sent, a.received, a.connections) == (len(payload), len(payload), 1)  # alice's engine dialled
    assert (b.sent, b.received, b.connections) == (len(payload), len(payload), 1)  # bob's engine echoed
    # 2 MiB each way through SM4-GCM costs each gateway measurable CPU, bounded by the time it was open
    for r in (a, b):
        assert 0 < r.cpu_s <= r.open_s + 0.05, r
        assert t0 - 1 <= r.opened_at <= r.closed_at <= time.time() + 1
    assert a.as_dict()["sent"] == len(payload) and set(a.as_dict()) >= {"received", "cpu_s", "open_s"}
