"""The 国密 gateway's cost: bulk MB/s, CPU and round-trip latency through two gateways vs direct TCP.

Two gateway processes (``python -m protocols.gateway``, alice's and bob's) on loopback; alice's
"engine" (this process) sends ``--mb`` MB to bob's "engine" (a sink thread here) through alice's
route port → alice's gateway → 国密 TLS 1.3 (TLS_SM4_GCM_SM3) → bob's gateway → the sink; then the
same bytes straight to the sink.  CPU is each gateway process's user+system time over the transfer
(100 % = one core).  The round-trip rows send ``--rounds`` 64-byte request/responses on one
connection (the shape of a gRPC/brpc call).

    .venv/bin/python bench/bench_gateway.py [--mb 256] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.net import free_ports  # noqa: E402
from protocols.crypto import sm2  # noqa: E402
from protocols.gmtls.certs import write_credentials  # noqa: E402

CHUNK = 256 * 1024


def _sink(server: socket.socket, mode: str) -> None:
    """Accept connections forever: 'count' reads to EOF and answers the byte count; 'echo' echoes."""
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            if mode == "count":
                n = 0
                while data := conn.recv(CHUNK):
                    n += len(data)
                conn.sendall(n.to_bytes(8, "big"))
            else:
                while data := conn.recv(CHUNK):
                    conn.sendall(data)


def _start_gateway(tmp: Path, config: dict) -> tuple[subprocess.Popen, dict]:
    path = tmp / f"{config['member']}.gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "protocols.gateway", "--config", str(path)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError(f"gateway of {config['member']} did not start")
    return proc, json.loads(line)


def _bulk(port: int, total: int, procs: list[psutil.Process]) -> tuple[float, float, list[float]]:
    block = os.urandom(CHUNK)
    before = [p.cpu_times() for p in procs]
    me = psutil.Process().cpu_times()
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        sent = 0
        while sent < total:
            s.sendall(block)
            sent += len(block)
        s.shutdown(socket.SHUT_WR)
        got = int.from_bytes(s.recv(8), "big")
    wall = time.perf_counter() - t0
    assert got == sent, (got, sent)
    after = [p.cpu_times() for p in procs]
    mine = psutil.Process().cpu_times()
    cpus = [(a.user + a.system - b.user - b.system) / wall for a, b in zip(after, before, strict=True)]
    own = (mine.user + mine.system - me.user - me.system) / wall
    return sent / wall / 1e6, own, cpus


def _sm4_gcm_mb_s() -> float:
    """SM4-GCM encryption speed of the OpenSSL under pyOpenSSL (MB per CPU second): the gateway's floor,
    since each gateway encrypts or decrypts every byte once."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    data = os.urandom(32 * 1024 * 1024)
    enc = Cipher(algorithms.SM4(os.urandom(16)), modes.GCM(os.urandom(12))).encryptor()
    t0 = time.process_time()
    enc.update(data)
    enc.finalize()
    return len(data) / (time.process_time() - t0) / 1e6


def _rounds(port: int, rounds: int, procs: list[psutil.Process] | None = None) -> tuple[float, float]:
    """(µs per 64-byte round trip, CPU µs the ``procs`` spent per round trip)."""
    msg = b"x" * 64
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(msg)
        s.recv(64)  # the first round trip includes the gateways' handshake: not timed
        before = [p.cpu_times() for p in procs or []]
        t0 = time.perf_counter()
        for _ in range(rounds):
            s.sendall(msg)
            got = b""
            while len(got) < 64:
                got += s.recv(64 - len(got))
        wall = (time.perf_counter() - t0) / rounds * 1e6
        after = [p.cpu_times() for p in procs or []]
        cpu = sum(a.user + a.system - b.user - b.system for a, b in zip(after, before, strict=True))
        return wall, cpu / rounds * 1e6


def _connect_time(port: int, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"ping")
            s.recv(4)
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="MB per bulk transfer")
    parser.add_argument("--rounds", type=int, default=2000, help="64-byte round trips")
    args = parser.parse_args()
    total = args.mb * 1024 * 1024
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        keys = {m: sm2.generate_keypair() for m in ("alice", "bob")}
        paths = {m: write_credentials(tmp, m, k.private_key) for m, k in keys.items()}
        gw_a, gw_b, sink_port, echo_port, alice_fed = free_ports(5)
        members = {m: k.public_key.hex() for m, k in keys.items()}
        sinks = []
        for port, mode in ((sink_port, "count"), (echo_port, "echo")):
            srv = socket.socket()
            srv.bind(("127.0.0.1", port))
            srv.listen(16)
            threading.Thread(target=_sink, args=(srv, mode), daemon=True).start()
            sinks.append(srv)

        def config(me: str, listen: int, local: dict, peer: str, peer_port: int) -> dict:
            return {
                "member": me, "listen_port": listen, "cert": str(paths[me][0]), "key": str(paths[me][1]),
                "members": members,
                "jobs": {"bench": {"local_ports": local,
                                   "peers": {peer: {"host": "127.0.0.1", "port": peer_port,
                                                    "key": members[peer]}}}},
            }

        procs = []
        try:
            pa, ready_a = _start_gateway(tmp, config("alice", gw_a, {"bulk": alice_fed, "echo": alice_fed},
                                                     "bob", gw_b))
            procs.append(pa)
            pb, _ = _start_gateway(tmp, config("bob", gw_b, {"bulk": sink_port, "echo": echo_port},
                                               "alice", gw_a))
            procs.append(pb)
            route = ready_a["jobs"]["bench"]["bob"]
            ps = [psutil.Process(p.pid) for p in procs]

            _bulk(route["bulk"], 8 * 1024 * 1024, ps)  # warm up
            rows = []
            mbps_g, own_g, (cpu_a, cpu_b) = _bulk(route["bulk"], total, ps)
            mbps_d, own_d, _ = _bulk(sink_port, total, ps)
            (rtt_g, rtt_cpu), (rtt_d, _) = _rounds(route["echo"], args.rounds, ps), _rounds(echo_port, args.rounds)
            conn_g, conn_d = _connect_time(route["echo"], 50), _connect_time(echo_port, 50)
            gb = total / 1e9
            wall = total / 1e6 / mbps_g
            cpu_gb = [c * wall / gb for c in (cpu_a, cpu_b)]
            floor = _sm4_gcm_mb_s()
            rows.append(("bulk MB/s (wall, on this machine's load)", f"{mbps_g:,.0f}", f"{mbps_d:,.0f}",
                         f"{mbps_d / mbps_g:.0f}x"))
            rows.append(("CPU share of a core, alice's / bob's gateway", f"{cpu_a:.0%} / {cpu_b:.0%}", "-", ""))
            rows.append(("CPU s per GB, alice's / bob's gateway", f"{cpu_gb[0]:.1f} / {cpu_gb[1]:.1f}", "-", ""))
            rows.append(("MB/s ceiling, a core per gateway", f"{1000 / max(cpu_gb):,.0f}", "-", ""))
            rows.append(("SM4-GCM alone (same OpenSSL), MB/s per core", f"{floor:,.0f}", "-",
                         f"{1000 / floor / max(cpu_gb):.0%} of CPU"))
            rows.append(("CPU share, sender + sink process", f"{own_g:.0%}", f"{own_d:.0%}", ""))
            rows.append(("64 B round trip, µs", f"{rtt_g:,.0f}", f"{rtt_d:,.0f}", f"+{rtt_g - rtt_d:,.0f} µs"))
            rows.append(("gateways' CPU per round trip (4 traversals), µs", f"{rtt_cpu:,.0f}", "-", ""))
            rows.append(("new connection + 1 round trip, ms", f"{conn_g:.1f}", f"{conn_d:.2f}", ""))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for s in sinks:
                s.close()

    print(f"\n{args.mb} MB bulk, {args.rounds} round trips, loopback, {os.cpu_count()} cores "
          f"(load average {load:.1f}), TLS 1.3 TLS_SM4_GCM_SM3 / curveSM2 between two gateway processes\n")
    w = max(len(r[0]) for r in rows)
    print(f"| {'':{w}} | through gateways | direct TCP | cost |")
    print(f"|{'-' * (w + 2)}|-----------------:|-----------:|-----:|")
    for name, g, dct, cost in rows:
        print(f"| {name:{w}} | {g:>16} | {dct:>10} | {cost} |")


if __name__ == "__main__":
    main()
