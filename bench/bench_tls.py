"""The cost of the 国密 channel: handshakes per second and p50/p99 of a small node-like API call over
国密 mutual TLS (TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3) next to plain HTTP, on loopback.

    .venv/bin/python bench/bench_tls.py [--connections 300] [--calls 2000]

One server process (uvicorn, a FastAPI app with a ``/tasks/{job}`` route answering a ~300-byte JSON
like a node's task status) listens on two free ports: plain HTTP and 国密 TLS (the same app). The
client (this process) measures

* new connections per second: a fresh connection per request (TCP connect + handshake + one call,
  ``Connection: close``) — for TLS the full mutual handshake (two SM2 signatures, two
  verifications, one SM2 key exchange on each side), one at a time;
* p50/p99 latency of the call on one pooled keep-alive connection (``--calls`` calls), which is what
  the coordinator's and the nodes' clients do.

The two channels are measured call by call in alternation, so the load of a shared machine weighs on
both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

SERVER = r"""
import sys, threading, uvicorn
from fastapi import FastAPI
from protocols.gmtls.certs import load_credentials
from protocols.gmtls.context import server_context
from protocols.identity import KeyDirectory, file_members
from protocols.gmtls.server import uvicorn_config

cert, key, known, plain_port, tls_port = sys.argv[1:6]
app = FastAPI()

@app.get("/tasks/{job_id}")
def task(job_id: str) -> dict:
    return {"job_id": job_id, "member": "tax", "state": "RUNNING", "stage": "psi", "progress": 0.42,
            "started_at": "2026-12-02T05:00:00+00:00", "updated_at": "2026-12-02T05:00:03+00:00",
            "outputs": [], "reason": None, "engine": "secretflow", "party": "tax", "rows": 100000}

directory = KeyDirectory(file_members(known), ttl_s=10.0)
ctx = server_context(load_credentials(cert, key), directory.is_known)
servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(plain_port), log_level="warning")),
           uvicorn.Server(uvicorn_config(app, "127.0.0.1", int(tls_port), ctx, log_level="warning"))]
threads = [threading.Thread(target=s.run, daemon=True) for s in servers]
for t in threads: t.start()
print("ready", flush=True)
sys.stdin.read()
for s in servers: s.should_exit = True
for t in threads: t.join(5)
"""


def _wait(url: str, client: object) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get(url).status_code == 200:  # type: ignore[attr-defined]
                return
        except Exception:  # noqa: BLE001 — not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _interleaved(clients: list[object], url_of: list[str], calls: int, close: bool) -> list[list[float]]:
    """Per channel, the latency (ms) of ``calls`` calls made alternately on each channel, so that the
    machine's load (shared cores) weighs on both alike; ``close``: a new connection per call."""
    headers = {"Connection": "close"} if close else {}
    out: list[list[float]] = [[] for _ in clients]
    for _ in range(calls):
        for i, (client, url) in enumerate(zip(clients, url_of, strict=True)):
            t = time.perf_counter()
            r = client.get(url, headers=headers)  # type: ignore[attr-defined]
            out[i].append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
    return out


def main() -> None:
    import httpx

    from common.net import free_ports
    from protocols.crypto import sm2
    from protocols.gmtls.certs import write_credentials
    from protocols.gmtls.client import GmTlsTransport

    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=300, help="new-connection calls per channel")
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_tls_"))
    server_keys, client_keys = sm2.generate_keypair(), sm2.generate_keypair()
    cert, key = write_credentials(tmp, "tax", server_keys.private_key)
    ccert, ckey = write_credentials(tmp, "coordinator", client_keys.private_key)
    known = tmp / "known.yaml"
    known.write_text(f"tax: {server_keys.public_key.hex()}\ncoordinator: {client_keys.public_key.hex()}\n")
    plain_port, tls_port = free_ports(2)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(cert), str(key), str(known), str(plain_port),
                             str(tls_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        from protocols.gmtls.certs import load_credentials

        creds = load_credentials(ccert, ckey)
        plain_url = f"http://127.0.0.1:{plain_port}/tasks/job-1"
        tls_url = f"https://127.0.0.1:{tls_port}/tasks/job-1"
        pins = {f"https://127.0.0.1:{tls_port}": server_keys.public_key}

        def plain_client() -> httpx.Client:
            return httpx.Client(timeout=10)

        def tls_client() -> httpx.Client:
            return httpx.Client(transport=GmTlsTransport(creds, pins), timeout=10)

        with plain_client() as c:
            _wait(plain_url, c)
        with tls_client() as c:
            _wait(tls_url, c)
        with plain_client() as plain, tls_client() as tls:
            clients, urls = [plain, tls], [plain_url, tls_url]
            _interleaved(clients, urls, 50, close=False)  # warm up
            fresh = _interleaved(clients, urls, args.connections, close=True)
            pooled = _interleaved(clients, urls, args.calls, close=False)
        rows = []
        for i, name in enumerate(("plain HTTP", "国密 TLS")):
            q = statistics.quantiles(pooled[i], n=100)
            rows.append((name, 1000 / statistics.fmean(fresh[i]), statistics.median(fresh[i]), q[49], q[98],
                         statistics.fmean(pooled[i])))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    table = Table(title="国密 TLS (TLS_SM4_GCM_SM3 / curveSM2 / sm2sig_sm3, mutual) vs plain HTTP, loopback")
    for col in ("channel", "new conn/s", "new conn p50 ms", "pooled p50 ms", "pooled p99 ms", "pooled mean ms"):
        table.add_column(col, justify="right" if col != "channel" else "left")
    for name, cps, fresh50, p50, p99, mean in rows:
        table.add_row(name, f"{cps:.0f}", f"{fresh50:.1f}", f"{p50:.2f}", f"{p99:.2f}", f"{mean:.2f}")
    Console().print(table)
    plain, tls = rows
    print(f"handshake ≈ {tls[2] - plain[2]:.1f} ms per new connection (p50; client and server on this machine, "
          f"load average {os.getloadavg()[0]:.1f}); pooled call p50 {tls[3] - plain[3]:+.2f} ms")

if __name__ == "__main__":
    main()
