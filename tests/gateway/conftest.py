"""Fixtures for the gateway tests: members' keys and credentials, engines on 127.0.0.1, running gateways,
a tapping relay, and a raw 国密 client that speaks the gateway's link protocol by hand (the attacker)."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from OpenSSL import SSL

from common.net import free_port
from protocols.crypto import sm2
from protocols.gateway import Gateway, LinkAnswer, LinkRequest, PeerRoute
from protocols.gateway.models import decode, encode_frame
from protocols.gmtls.certs import Credentials, credentials_for
from protocols.gmtls.context import client_connection, client_context


@dataclass(frozen=True)
class Member:
    name: str
    public_key: bytes
    private_key: bytes
    creds: Credentials


@pytest.fixture(scope="session")
def people() -> dict[str, Member]:
    """alice, bob, dave: parties; carol: registered member, no party; mallory: not registered."""
    out = {}
    for name in ("alice", "bob", "carol", "dave", "mallory"):
        pair = sm2.generate_keypair()
        out[name] = Member(name, pair.public_key, pair.private_key, credentials_for(pair.private_key, name))
    return out


@pytest.fixture()
def registry(people) -> set[bytes]:
    """The registered, active member keys (the Registry's view); mallory is not in it."""
    return {people[m].public_key for m in ("alice", "bob", "carol", "dave")}


class Engine:
    """A stand-in engine link on 127.0.0.1: echoes what it gets and counts the connections it accepted."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.accepted = 0
        self.received = bytearray()
        self._conns: list[socket.socket] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                self.received += data
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()
        for c in self._conns:
            c.close()


@pytest.fixture()
def engines() -> Iterator[list[Engine]]:
    """Make engines with ``engines.append(Engine())``; all are closed at the end."""
    made: list[Engine] = []
    yield made
    for e in made:
        e.close()


@pytest.fixture()
def gateways(people, registry) -> Iterator[dict[str, Gateway]]:
    """Running gateways for alice, bob and carol (each its own listener); stopped at the end."""
    gws = {m: Gateway("127.0.0.1", free_port(), people[m].creds, registry.__contains__, member=m).start()
           for m in ("alice", "bob", "carol")}
    yield gws
    for g in gws.values():
        g.stop()


def route(gw: Gateway, member: Member, port: int | None = None) -> PeerRoute:
    """The route to ``member``'s gateway (``port`` overrides, e.g. a tap in front of it)."""
    return PeerRoute(host="127.0.0.1", port=port or gw.listen_port, key=member.public_key)


class Tap:
    """A plain TCP relay between a gateway and its peer's gateway that keeps every byte it relays."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.upstream = bytearray()  # client gateway -> server gateway
        self.downstream = bytearray()  # server gateway -> client gateway
        self._socks: list[socket.socket] = []
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self._server.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            self._socks += [a, b]
            threading.Thread(target=self._copy, args=(a, b, self.upstream), daemon=True).start()
            threading.Thread(target=self._copy, args=(b, a, self.downstream), daemon=True).start()

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket, keep: bytearray) -> None:
        try:
            while data := src.recv(65536):
                keep += data
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()
        for s in self._socks:
            s.close()


@pytest.fixture()
def taps() -> Iterator[list[Tap]]:
    made: list[Tap] = []
    yield made
    for t in made:
        t.close()


@dataclass
class Attempt:
    """What a hand-made link request got: the gateway's answer, or the TLS error that ended it."""

    answer: LinkAnswer | None = None
    error: str = ""
    extra: list[bytes] = field(default_factory=list)


def ask(who: Member, gateway: Gateway, server: Member, request: dict) -> Attempt:
    """Handshake with ``gateway`` as ``who`` (pinning ``server``'s key) and send ``request`` as the link request."""
    sock = socket.create_connection(("127.0.0.1", gateway.listen_port), timeout=10)
    sock.setblocking(False)
    conn = client_connection(client_context(who.creds), server.public_key, sock)
    try:
        _retry(conn, conn.do_handshake)
        _retry(conn, lambda: conn.sendall(encode_frame(LinkRequest.model_validate(request))))
        head = _exactly(conn, 4)
        answer = decode(LinkAnswer, _exactly(conn, struct.unpack(">I", head)[0]))
        return Attempt(answer=answer)
    except (SSL.Error, OSError, ValueError) as exc:
        return Attempt(error=f"{type(exc).__name__}: {exc}")
    finally:
        sock.close()


def _retry(conn: SSL.Connection, step):
    """Run a pyOpenSSL call on a non-blocking socket, waiting (10 s at most) while it wants I/O."""
    end = time.monotonic() + 10
    while True:
        try:
            return step()
        except (SSL.WantReadError, SSL.WantWriteError):
            if time.monotonic() > end:
                raise TimeoutError("the gateway did not answer") from None
            select.select([conn.fileno()], [], [], 0.05)


def _exactly(conn: SSL.Connection, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            want = n - len(buf)
            data = _retry(conn, lambda: conn.recv(want))  # noqa: B023 — called at once
        except SSL.ZeroReturnError:
            data = b""
        if not data:
            raise ValueError(f"stream ended after {len(buf)} of {n} bytes")
        buf += data
    return buf


def roundtrip(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send ``payload`` to 127.0.0.1:``port``, half-close, and return everything that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = bytearray()
        while data := s.recv(65536):
            out += data
        return bytes(out)
