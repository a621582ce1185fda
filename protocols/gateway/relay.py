"""The forwarding path: plaintext (the local engine's socket) ↔ 国密 TLS (the peer gateway's socket).

Once a link is admitted, both sockets are taken over from their asyncio streams by two small
protocols that call each other directly: bytes from the engine are encrypted into the TLS socket's
transport in the same callback that received them, and TLS records are decrypted straight into the
engine's transport — no task switch, future or buffer copy per message, which is what a small SPU or
gRPC message costs most in Python.  Flow control is the transports' own: when one side's write buffer
is full, the other side stops reading.  A half-close passes through (engine FIN → close_notify, peer's
close_notify or FIN → FIN to the engine); the relay ends when both directions have ended or either
socket is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from OpenSSL import SSL

from protocols.gateway.tls import CHUNK, TlsStream


class _Relay:
    def __init__(self, tls: TlsStream, plain: asyncio.Transport, count_out: Callable[[int], None],
                 count_in: Callable[[int], None]) -> None:
        self.tls = tls
        self.conn = tls.conn
        self.secure: asyncio.Transport = tls.writer.transport  # type: ignore[assignment]
        self.plain = plain
        self.count_out = count_out  # plaintext bytes engine -> peer
        self.count_in = count_in  # plaintext bytes peer -> engine
        self.plain_ended = False  # the engine sent FIN (we sent close_notify)
        self.secure_ended = False  # the peer sent close_notify or FIN (we sent FIN to the engine)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- engine -> peer
    def plain_data(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            view = memoryview(data)
            while view:
                view = view[self.conn.send(view):]
        except SSL.Error:
            self.finish()
            return
        self.count_out(len(data))
        self.flush()

    def plain_eof(self) -> None:
        self.plain_ended = True
        with contextlib.suppress(SSL.Error):
            self.conn.shutdown()
        self.flush()
        self.check()

    def flush(self) -> None:
        out = self.tls._pending_out()  # noqa: SLF001 — the TLS stream's own outgoing bytes
        if out and not self.secure.is_closing():
            self.secure.write(out)

    # -- peer -> engine
    def secure_data(self, data: bytes) -> None:
        if self.done.done():
            return
        self.conn.bio_write(data)
        self.drain()

    def secure_eof(self) -> None:
        self.conn.bio_shutdown()
        self.drain()
        if not self.secure_ended:  # FIN without close_notify: the peer is gone either way
            self.end_secure()

    def drain(self) -> None:
        parts = []
        while True:
            try:
                parts.append(self.conn.recv(CHUNK))
            except SSL.WantReadError:
                break
            except (SSL.ZeroReturnError, SSL.SysCallError):
                self.deliver(parts)
                self.end_secure()
                return
            except SSL.Error:
                self.finish()
                return
        self.deliver(parts)
        self.flush()  # e.g. a KeyUpdate answer

    def deliver(self, parts: list[bytes]) -> None:
        if parts and not self.plain.is_closing():
            data = b"".join(parts)
            self.plain.write(data)
            self.count_in(len(data))

    def end_secure(self) -> None:
        if self.secure_ended:
            return
        self.secure_ended = True
        if self.plain.can_write_eof() and not self.plain.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self.plain.write_eof()
        self.check()

    # -- both
    def check(self) -> None:
        if self.plain_ended and self.secure_ended:
            self.finish()

    def finish(self) -> None:
        for transport in (self.plain, self.secure):
            transport.close()
        if not self.done.done():
            self.done.set_result(None)


class _Side(asyncio.Protocol):
    """One socket of the relay; flow control pauses the other socket's reading."""

    def __init__(self, relay: _Relay, plain: bool) -> None:
        self.relay = relay
        self.plain = plain

    def data_received(self, data: bytes) -> None:
        (self.relay.plain_data if self.plain else self.relay.secure_data)(data)

    def eof_received(self) -> bool:
        (self.relay.plain_eof if self.plain else self.relay.secure_eof)()
        return True  # keep the socket open for the other direction

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.finish()

    def _other(self) -> asyncio.Transport:
        return self.relay.secure if self.plain else self.relay.plain

    def pause_writing(self) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):
            self._other().pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):
            self._other().resume_reading()


async def relay(tls: TlsStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                count_out: Callable[[int], None], count_in: Callable[[int], None]) -> None:
    """Forward between the engine's stream (``reader``/``writer``) and ``tls`` until both directions end."""
    plain: asyncio.Transport = writer.transport  # type: ignore[assignment]
    r = _Relay(tls, plain, count_out, count_in)
    plain.set_protocol(_Side(r, plain=True))
    r.secure.set_protocol(_Side(r, plain=False))
    # what the streams had already read before the hand-over
    if tls._rest:  # noqa: SLF001
        r.deliver([tls._rest])  # noqa: SLF001
        tls._rest = b""  # noqa: SLF001
    buffered = bytes(tls.reader._buffer)  # noqa: SLF001 — ciphertext the stream read but nobody fed
    tls.reader._buffer.clear()  # noqa: SLF001
    if buffered:
        r.conn.bio_write(buffered)
    r.drain()  # also records OpenSSL already holds
    if tls.reader.at_eof() or tls.reader._eof:  # noqa: SLF001
        r.secure_eof()
    early = bytes(reader._buffer)  # noqa: SLF001 — what the engine sent before the link was admitted
    reader._buffer.clear()  # noqa: SLF001
    if early:
        r.plain_data(early)
    if reader._eof:  # noqa: SLF001
        r.plain_eof()
    if plain.is_closing() or r.secure.is_closing():
        r.finish()  # a socket was lost before the hand-over: its connection_lost went to the stream
    for transport in (plain, r.secure):
        with contextlib.suppress(RuntimeError, AttributeError):
            transport.resume_reading()
    try:
        await r.done
    finally:
        r.finish()
