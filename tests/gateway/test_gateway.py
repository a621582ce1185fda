"""The 国密 gateway between two (or three) members on real sockets: forwarding both ways, the suite on the
wire, and every refusal of the admission rule — each asserting that nothing reached the engine."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.gateway.conftest import Engine, Tap, ask, roundtrip, route

JOB = "job-7f3a"


def wait_for(predicate, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def open_pair(gateways, people, engines, *, bob_port=None, alice_to_bob_port=None):
    """Job JOB between alice and bob, each with links fed and spu; returns (alice's routes, bob's routes)."""
    a_fed, a_spu, b_fed = Engine(), Engine(), Engine()
    engines += [a_fed, a_spu, b_fed]
    if bob_port is None:
        engines.append(Engine())
    b_spu = bob_port or engines[-1].port
    alice, bob = gateways["alice"], gateways["bob"]
    bob_routes = bob.open_job(JOB, {"fed": b_fed.port, "spu": b_spu}, {"alice": route(alice, people["alice"])})
    alice_routes = alice.open_job(JOB, {"fed": a_fed.port, "spu": a_spu.port},
                                  {"bob": route(bob, people["bob"], alice_to_bob_port)})
    return alice_routes, bob_routes, (a_fed, a_spu, b_fed)


def test_bytes_flow_both_ways_through_two_gateways(gateways, people, engines):
    alice_routes, bob_routes, (a_fed, _a_spu, b_fed) = open_pair(gateways, people, engines)
    assert set(alice_routes) == {"bob"} and set(alice_routes["bob"]) == {"fed", "spu"}
    assert set(bob_routes) == {"alice"}
    payload = bytes(range(256)) * 4096  # 1 MiB
    assert roundtrip(alice_routes["bob"]["fed"], payload) == payload  # alice's engine -> bob's engine
    assert bytes(b_fed.received) == payload
    back = b"bob calls alice" * 1000
    assert roundtrip(bob_routes["alice"]["fed"], back) == back  # bob's engine -> alice's engine
    assert bytes(a_fed.received) == back
    t = gateways["alice"].traffic(JOB)
    assert (t.sent, t.received, t.connections) == (len(payload) + len(back), len(payload) + len(back), 2)
    assert gateways["alice"].refusals == [] and gateways["bob"].refusals == []


def test_the_gateway_link_negotiates_sm4_gcm_sm3_on_curve_sm2(gateways, people, engines, taps):
    tap = Tap(gateways["bob"].listen_port)
    taps.append(tap)
    alice_routes, _, _ = open_pair(gateways, people, engines, alice_to_bob_port=tap.port)
    assert roundtrip(alice_routes["bob"]["fed"], b"hello") == b"hello"
    # the ServerHello is the one plaintext handshake message: record 0x16, handshake type 2
    hello = bytes(tap.downstream)
    assert hello[0] == 0x16 and hello[5] == 0x02
    body = hello[9:]
    pos = 2 + 32
    pos += 1 + body[pos]
    suite = struct.unpack(">H", body[pos:pos + 2])[0]
    assert suite == 0x00C6  # TLS_SM4_GCM_SM3 (RFC 8998)
    exts = body[pos + 5:]
    i, group = 0, None
    while i + 4 <= len(exts):
        ext, n = struct.unpack(">HH", exts[i:i + 4])
        if ext == 51:
            group = struct.unpack(">H", exts[i + 4:i + 6])[0]
        i += 4 + n
    assert group == 0x0029  # curveSM2
    # TLS 1.3: everything after the ServerHello is application-data records (0x17)
    assert hello[5 + struct.unpack(">H", hello[3:5])[0]:][0] in (0x14, 0x17)


def test_a_tap_between_the_gateways_sees_no_plaintext(gateways, people, engines, taps):
    tap = Tap(gateways["bob"].listen_port)
    taps.append(tap)
    alice_routes, _, (_, _, b_fed) = open_pair(gateways, people, engines, alice_to_bob_port=tap.port)
    marker = b"USCC=91310000MA1FL8XQ2X;col=vat_paid;"
    payload = marker * 2000
    assert roundtrip(alice_routes["bob"]["fed"], payload) == payload
    assert bytes(b_fed.received) == payload
    wire = bytes(tap.upstream) + bytes(tap.downstream)
    assert len(tap.upstream) > len(payload) and len(tap.downstream) > len(payload)
    for needle in (marker, b"USCC", b"vat_paid", JOB.encode(), b'"link"', b"alice", b"bob"):
        assert needle not in wire, needle
    # job, from/to and link travel inside the TLS records too: the tap sees none of them above


def test_an_outsiders_key_is_refused_in_the_handshake(gateways, people, engines):
    alice_routes, _, (_, _, b_fed) = open_pair(gateways, people, engines)
    bob = gateways["bob"]
    before = bob.traffic(JOB)
    got = ask(people["mallory"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "bob", "link": "fed"})
    assert got.answer is None and "Error" in got.error
    refusals = wait_for(lambda: bob.refusals)
    assert refusals[-1].side == "inbound" and "not a registered member key" in refusals[-1].reason
    assert refusals[-1].job == ""  # refused before it could name a job
    assert b_fed.accepted == 0 and bob.traffic(JOB) == before and bob.jobs() == [JOB]


def test_an_outsiders_gateway_cannot_carry_its_engine_to_a_job(people, registry, gateways, engines):
    """mallory runs a gateway of her own that calls itself alice: bob's gateway refuses, her engine's
    connection is closed at once."""
    from common.net import free_port
    from protocols.gateway import Gateway

    _, _, (_, _, b_fed) = open_pair(gateways, people, engines)
    with Gateway("127.0.0.1", free_port(), people["mallory"].creds, lambda k: True, member="alice") as fake:
        routes = fake.open_job(JOB, {"fed": free_port()}, {"bob": route(gateways["bob"], people["bob"])})
        t0 = time.monotonic()
        assert roundtrip(routes["bob"]["fed"], b"let me in") == b""
        assert time.monotonic() - t0 < 5
        assert wait_for(lambda: fake.refusals)[-1].side == "outbound"
    assert "not a registered member key" in wait_for(lambda: gateways["bob"].refusals)[-1].reason
    assert b_fed.accepted == 0 and b_fed.received == b""


def test_a_registered_member_that_is_not_a_party_is_refused(gateways, people, engines):
    _, _, (_, _, b_fed) = open_pair(gateways, people, engines)
    bob = gateways["bob"]
    as_itself = ask(people["carol"], bob, people["bob"], {"job": JOB, "from": "carol", "to": "bob", "link": "fed"})
    assert as_itself.answer is not None and not as_itself.answer.ok
    assert "not a party" in as_itself.answer.reason
    as_alice = ask(people["carol"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "bob", "link": "fed"})
    assert as_alice.answer is not None and not as_alice.answer.ok and "not a party" in as_alice.answer.reason
    refusals = bob.refusals
    assert [r.job for r in refusals] == [JOB, JOB]
    assert {r.member_key for r in refusals} == {people["carol"].public_key.hex()}
    assert b_fed.accepted == 0 and bob.traffic(JOB).connections == 0


def test_a_party_cannot_claim_another_partys_name(gateways, people, engines):
    """In a three-party job, dave (a party) names alice as sender: his key is not alice's."""
    b_fed = Engine()
    engines.append(b_fed)
    bob = gateways["bob"]
    bob.open_job(JOB, {"fed": b_fed.port}, {"alice": route(gateways["alice"], people["alice"]),
                                            "dave": route(gateways["alice"], people["dave"])})
    got = ask(people["dave"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "bob", "link": "fed"})
    assert got.answer is not None and not got.answer.ok
    assert "claims to be 'alice' but proved the key of 'dave'" in got.answer.reason
    assert b_fed.accepted == 0


def test_a_party_asking_for_a_link_or_port_that_is_not_the_jobs_is_refused(gateways, people, engines):
    _, _, (_, _, b_fed) = open_pair(gateways, people, engines)
    bob = gateways["bob"]
    other = Engine()  # another job's engine link at bob
    engines.append(other)
    bob.open_job("job-other", {"psi": other.port}, {"carol": route(gateways["carol"], people["carol"])})
    for link in ("psi", str(other.port), "admin", "../fed"):
        got = ask(people["alice"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "bob", "link": link})
        assert got.answer is not None and not got.answer.ok, link
        assert f"link {link!r} is not one of job {JOB!r}'s links" == got.answer.reason
    wrong_target = ask(people["alice"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "carol",
                                                             "link": "fed"})
    assert wrong_target.answer is not None and "addressed to 'carol'" in wrong_target.answer.reason
    unknown_job = ask(people["alice"], bob, people["bob"], {"job": "job-other", "from": "alice", "to": "bob",
                                                            "link": "psi"})
    assert unknown_job.answer is not None and "not a party of job 'job-other'" in unknown_job.answer.reason
    assert len(bob.refusals) == 6
    assert other.accepted == 0 and b_fed.accepted == 0 and sorted(bob.jobs()) == sorted([JOB, "job-other"])


def test_a_connection_before_the_local_party_listens_is_closed_at_once_and_a_retry_works(
        gateways, people, engines):
    from common.net import free_port

    later = free_port()  # bob's spu link: not listening yet
    alice_routes, _, _ = open_pair(gateways, people, engines, bob_port=later)
    t0 = time.monotonic()
    assert roundtrip(alice_routes["bob"]["spu"], b"brpc hello") == b""
    assert time.monotonic() - t0 < 3
    assert "local party not listening on link 'spu'" in wait_for(lambda: gateways["bob"].refusals)[-1].reason
    outbound = wait_for(lambda: gateways["alice"].refusals)[-1]
    assert outbound.side == "outbound" and "local party not listening" in outbound.reason
    spu = Engine(later)
    engines.append(spu)
    assert roundtrip(alice_routes["bob"]["spu"], b"brpc hello") == b"brpc hello"
    assert spu.accepted == 1


def test_after_close_job_nothing_is_admitted(gateways, people, engines):
    alice_routes, _, (_, _, b_fed) = open_pair(gateways, people, engines)
    alice, bob = gateways["alice"], gateways["bob"]
    live = socket.create_connection(("127.0.0.1", alice_routes["bob"]["fed"]), timeout=10)
    live.sendall(b"ping")
    assert live.recv(4) == b"ping"
    assert bob.close_job(JOB) is True
    assert bob.jobs() == [] and bob.close_job(JOB) is False
    assert live.recv(4) == b""  # the job's live connection is cut
    live.close()
    got = ask(people["alice"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "bob", "link": "fed"})
    assert got.answer is not None and got.answer.reason == f"no job {JOB!r} is open at bob"
    assert roundtrip(alice_routes["bob"]["fed"], b"again") == b""  # alice's route still open, bob refuses
    assert b_fed.accepted == 1
    alice.close_job(JOB)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", alice_routes["bob"]["fed"]), timeout=5).close()


def test_grpc_calls_pass_through_the_gateways(gateways, people, engines):
    from concurrent import futures

    import grpc

    from common.net import free_port

    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler("dcp.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"echo:" + req),
        "Stream": grpc.stream_stream_rpc_method_handler(lambda reqs, ctx: (r[::-1] for r in reqs)),
    })
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        alice_routes, _, _ = open_pair(gateways, people, engines, bob_port=port)
        with grpc.insecure_channel(f"127.0.0.1:{alice_routes['bob']['spu']}") as channel:
            say = channel.unary_unary("/dcp.Echo/Say")
            assert say(b"x" * 300_000, timeout=20) == b"echo:" + b"x" * 300_000
            assert [say(f"call {i}".encode(), timeout=10) for i in range(20)][-1] == b"echo:call 19"
            stream = channel.stream_stream("/dcp.Echo/Stream")
            assert list(stream(iter([b"abc", b"def"]), timeout=10)) == [b"cba", b"fed"]
        assert gateways["bob"].traffic(JOB).connections == 1  # one HTTP/2 connection carried every call
    finally:
        server.stop(None)


@pytest.mark.slow
def test_an_spu_brpc_link_connects_through_the_gateways_once_the_late_party_listens(
        gateways, people, engines, taps, tmp_path, no_leaked_processes):
    """alice's SPU link starts first: every connection its brpc retries is closed at once while bob's
    party does not listen; once bob starts, the link connects and carries 1 MiB each way."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from common.net import free_ports

    root = Path(__file__).resolve().parents[2]
    a_port, b_port = free_ports(2)
    tap = Tap(gateways["bob"].listen_port)
    taps.append(tap)
    alice, bob = gateways["alice"], gateways["bob"]
    to_alice = bob.open_job(JOB, {"spu": b_port}, {"alice": route(alice, people["alice"])})["alice"]["spu"]
    to_bob = alice.open_job(JOB, {"spu": a_port}, {"bob": route(bob, people["bob"], tap.port)})["bob"]["spu"]
    marker = "SPU-LINK-PLAINTEXT-7731|"

    def party(rank: int, listen: int, peer: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tests.gateway.brpc_party", str(rank), str(listen),
                                 f"127.0.0.1:{peer}", marker], cwd=tmp_path,  # its spu.log goes there
                                env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)

    procs = [party(0, a_port, to_bob)]
    try:
        wait_for(lambda: any("local party not listening on link 'spu'" in r.reason for r in bob.refusals), 60)
        procs.append(party(1, b_port, to_alice))
        outs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    a, b = outs
    assert a["got_len"] == b["got_len"] == 1_048_576
    assert b["got_sha"] == a["sent_sha"] and a["got_sha"] == a["reversed_sha"]
    assert a["gathered"] == b["gathered"] == ["hello from 0", "hello from 1"]
    early = [r for r in bob.refusals if "not listening" in r.reason]
    assert early and all(r.job == JOB and r.link == "spu" for r in early)
    assert all(r.reason.startswith("local party not listening") for r in bob.refusals)
    assert marker.encode() not in bytes(tap.upstream) + bytes(tap.downstream)
    assert len(tap.upstream) > 1_048_576


def test_a_route_to_an_address_that_is_not_the_peers_gateway_is_refused(gateways, people, engines):
    """alice's route to bob points at carol's gateway (a wrong or hijacked address): the handshake pins
    bob's registered key, so alice's gateway refuses carol's and never sends the link request."""
    a_fed = Engine()
    engines.append(a_fed)
    alice, carol = gateways["alice"], gateways["carol"]
    hijacked = route(carol, people["bob"])  # bob's key, carol's address
    routes = alice.open_job(JOB, {"fed": a_fed.port}, {"bob": hijacked})
    t0 = time.monotonic()
    assert roundtrip(routes["bob"]["fed"], b"for bob only") == b""
    assert time.monotonic() - t0 < 5
    refused = wait_for(lambda: alice.refusals)[-1]
    assert refused.side == "outbound" and refused.member_key == people["bob"].public_key.hex()
    assert "is not the expected key" in refused.reason
    # carol's gateway saw a handshake that failed, never a link request for the job
    assert all(r.job == "" for r in wait_for(lambda: carol.refusals))
    assert carol.jobs() == [] and alice.traffic(JOB).connections == 0


def test_an_oversized_or_missing_link_request_is_refused(people, registry, engines):
    """A registered member that sends a frame longer than the limit, or nothing at all after the
    handshake, is cut off (bounded by handshake_timeout), and each refusal reaches on_refusal."""
    import socket as _socket

    from OpenSSL import SSL

    from common.net import free_port
    from protocols.gateway import Gateway
    from protocols.gmtls.context import client_connection, client_context

    seen = []
    b_fed = Engine()
    engines.append(b_fed)
    with Gateway("127.0.0.1", free_port(), people["bob"].creds, registry.__contains__, member="bob",
                 handshake_timeout=1.0, on_refusal=seen.append) as bob:
        bob.open_job(JOB, {"fed": b_fed.port}, {"alice": route(bob, people["alice"])})
        for frame in (struct.pack(">I", 1 << 20) + b"{", None):
            sock = _socket.create_connection(("127.0.0.1", bob.listen_port), timeout=10)
            sock.settimeout(None)  # blocking: the gateway closes within handshake_timeout
            conn = client_connection(client_context(people["alice"].creds), people["bob"].public_key, sock)
            conn.do_handshake()
            if frame is not None:
                conn.sendall(frame)
            t0 = time.monotonic()
            with pytest.raises((SSL.ZeroReturnError, SSL.SysCallError, SSL.Error)):
                while conn.recv(100):
                    pass
            assert time.monotonic() - t0 < 5
            sock.close()
        refusals = wait_for(lambda: len(bob.refusals) == 2 and bob.refusals)
        assert "control frame of 1048576 bytes" in refusals[0].reason
        assert "TimeoutError" in refusals[1].reason
        assert {r.member_key for r in refusals} == {people["alice"].public_key.hex()}
        assert seen == refusals
        assert b_fed.accepted == 0 and bob.traffic(JOB).connections == 0


def test_a_lagging_engine_gets_every_byte_in_order(gateways, people, engines):
    """bob's engine reads nothing for a second while alice's pushes 24 MiB (the relay's flow control
    pauses and resumes reading on both gateways): every byte arrives, in order, and is counted once."""
    import hashlib
    import threading

    from common.net import free_port

    port = free_port()
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen(1)
    digest = {}

    def slow_sink():
        conn, _ = server.accept()
        time.sleep(1.0)
        h, n = hashlib.sha256(), 0
        while data := conn.recv(1 << 16):
            h.update(data)
            n += len(data)
        digest["got"] = (n, h.hexdigest())
        conn.close()

    sink = threading.Thread(target=slow_sink, daemon=True)
    sink.start()
    try:
        alice_routes, _, _ = open_pair(gateways, people, engines, bob_port=port)
        payload = bytes(range(251)) * (24 * 1024 * 1024 // 251)
        with socket.create_connection(("127.0.0.1", alice_routes["bob"]["spu"]), timeout=60) as s:
            t0 = time.monotonic()
            s.sendall(payload[: 4 * 1024 * 1024])
            stalled = time.monotonic() - t0  # may already wait for the sink (buffers are bounded)
            s.sendall(payload[4 * 1024 * 1024:])
            s.shutdown(socket.SHUT_WR)
            sink.join(60)
        assert digest["got"] == (len(payload), hashlib.sha256(payload).hexdigest())
        assert gateways["alice"].traffic(JOB).sent == len(payload) == gateways["bob"].traffic(JOB).received
        assert stalled < 60
    finally:
        server.close()


def test_engine_connections_that_reset_at_once_leave_nothing_open(gateways, people, engines):
    alice_routes, _, (_, _, b_fed) = open_pair(gateways, people, engines)
    port = alice_routes["bob"]["fed"]
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(b"half a message")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        s.close()
    assert roundtrip(port, b"still fine") == b"still fine"
    wait_for(lambda: gateways["alice"].traffic(JOB).active == 0 and gateways["bob"].traffic(JOB).active == 0)
    assert b"still fine" in bytes(b_fed.received)
