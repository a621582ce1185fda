"""Fixtures of the 国密 TLS tests: members with SM2 credentials, a key directory, and a real uvicorn
server over 国密 TLS in a thread on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, Request

from common.net import free_port
from protocols.crypto import sm2
from protocols.crypto.sm3 import sm3_digest
from protocols.gmtls.certs import Credentials, credentials_for
from protocols.identity import KeyDirectory, KnownMember


@dataclass
class Member:
    name: str
    keys: sm2.Sm2KeyPair
    creds: Credentials


def _member(name: str) -> Member:
    keys = sm2.generate_keypair()
    return Member(name, keys, credentials_for(keys.private_key, name))


@pytest.fixture(scope="module")
def members() -> dict[str, Member]:
    """Registered members (``coordinator``, ``tax``, ``bank``) and an outsider (``mallory``)."""
    return {n: _member(n) for n in ("coordinator", "tax", "bank", "mallory")}


@pytest.fixture
def registry(members: dict[str, Member]) -> list[KnownMember]:
    """The chain Registry's member list (mutable: a test may deactivate a member)."""
    return [KnownMember(m.name, m.keys.public_key) for n, m in members.items() if n != "mallory"]


@pytest.fixture
def directory(registry: list[KnownMember]) -> KeyDirectory:
    """A key directory over ``registry`` with a short TTL."""
    return KeyDirectory(lambda: list(registry), ttl_s=0.2, miss_interval_s=0.05)


@dataclass
class Served:
    url: str
    port: int
    member: Member
    directory: KeyDirectory
    trace: object
    hits: list[str]


def _app(hits: list[str]) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def count(request: Request, call_next):  # noqa: ANN001, ANN202 — every request the app saw
        hits.append(request.url.path)
        return await call_next(request)

    @app.get("/whoami")
    def whoami(request: Request) -> dict:
        key = request.scope.get("dcp.peer_sm2_public_key")
        return {"peer": key.hex() if key else None, "scheme": request.url.scheme}

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        body = await request.body()
        return {"n": len(body), "sm3": sm3_digest(body).hex()}

    return app


@pytest.fixture
def tls_server(members: dict[str, Member], directory: KeyDirectory) -> Iterator[Served]:
    """The ``tax`` node's stand-in: a FastAPI app under uvicorn over 国密 TLS, in a thread."""
    import uvicorn

    from protocols.gmtls.context import server_context, trace_handshakes
    from protocols.gmtls.server import uvicorn_config

    ctx = server_context(members["tax"].creds, directory.is_known)
    trace = trace_handshakes(ctx)
    port = free_port()
    hits: list[str] = []
    server = uvicorn.Server(uvicorn_config(_app(hits), "127.0.0.1", port, ctx, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield Served(f"https://127.0.0.1:{port}", port, members["tax"], directory, trace, hits)
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()
