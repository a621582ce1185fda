"""SecretFlow in production mode with every engine link through the 国密 gateways: the cross-silo gRPC
(``sf``) and the SPU's brpc link (``spu``) of two parties, each told only 127.0.0.1 addresses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.net import free_ports
from protocols.gateway import addresses
from tests.gateway.conftest import Tap, route

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_secretflow_job_runs_through_the_gateways(gateways, people, taps, tmp_path, no_leaked_processes):
    tap = Tap(gateways["bob"].listen_port)  # alice's gateway -> [tap] -> bob's gateway
    taps.append(tap)
    ports = free_ports(4)
    local = {"alice": {"sf": ports[0], "spu": ports[1]}, "bob": {"sf": ports[2], "spu": ports[3]}}
    views = {}
    for me, peer in (("alice", "bob"), ("bob", "alice")):
        via = tap.port if peer == "bob" else None
        routes = gateways[me].open_job("sf-job", local[me], {peer: route(gateways[peer], people[peer], via)})
        views[me] = addresses(me, local[me], routes)
    assert views["alice"]["bob"] != views["bob"]["bob"]  # alice's engine never learns bob's real ports
    procs = {m: subprocess.Popen([sys.executable, "-m", "tests.gateway.sf_party", m, json.dumps(views[m])],
                                 cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},  # logs go there
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for m in views}
    outs = {}
    try:
        for m, p in procs.items():
            out, _ = p.communicate(timeout=450)
            assert p.returncode == 0, out[-2000:]
            outs[m] = next(json.loads(line) for line in out.splitlines() if line.startswith('{"me"'))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert outs["alice"]["dot"] == outs["bob"]["dot"] == pytest.approx(10050.0, abs=1e-2)
    assert outs["bob"]["sum_at_bob"] == 20100.0
    for m in ("alice", "bob"):
        t = gateways[m].traffic("sf-job")
        assert t.connections >= 2 and t.sent > 0 and t.received > 0  # both links carried traffic
        assert all("not listening" in r.reason for r in gateways[m].refusals)
    wire = bytes(tap.upstream) + bytes(tap.downstream)
    assert len(tap.upstream) > 1000
    for needle in (b"sf-job", b"alice", b"SEMI2K", b"SendData", b"application/grpc", b"user-agent"):
        assert needle not in wire, needle
