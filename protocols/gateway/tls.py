"""国密 TLS on asyncio streams: a pyOpenSSL connection on memory BIOs, driven by one event loop.

pyOpenSSL has no asyncio binding and OpenSSL's ``SSL`` object must not be used from two threads at
once, so the gateway keeps every TLS connection on its event loop: bytes from the socket go into the
connection's read BIO, what OpenSSL wants to send comes out of its write BIO and goes to the socket.
The contexts and the peer-key check are :mod:`protocols.gmtls.context`'s; nothing here chooses a suite.
"""

from __future__ import annotations

import asyncio
import contextlib

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

#: Bytes read from a socket per call (a TLS record carries at most 16 KiB; several fit).
CHUNK = 256 * 1024


class TlsClosed(Exception):
    """The TLS peer is gone: it closed the socket or sent an alert."""


class TlsStream:
    """One TLS connection (``conn``, made with memory BIOs) over an asyncio reader/writer pair."""

    def __init__(self, conn: SSL.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self._eof = False
        self._closed_notify = False
        self._rest = b""  # plaintext read past a control frame, handed out by the next recv

    def _buffered(self, bio: object) -> int:
        """Bytes waiting in one of the connection's memory BIOs (asking is cheaper than a WantReadError)."""
        return int(_lib.BIO_get_mem_data(bio, _ffi.NULL))

    def _pending_out(self) -> bytes:
        n = self._buffered(self.conn._from_ssl)  # noqa: SLF001 — pyOpenSSL's memory BIO, no public size
        if not n:
            return b""
        try:
            return self.conn.bio_read(n)
        except SSL.WantReadError:
            return b""

    async def _flush(self) -> None:
        data = self._pending_out()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _feed(self) -> bool:
        """Read more ciphertext from the socket into the connection; False at the socket's EOF."""
        if self._eof:
            return False
        data = await self.reader.read(CHUNK)
        if not data:
            self._eof = True
            self.conn.bio_shutdown()
            return False
        self.conn.bio_write(data)
        return True

    async def handshake(self) -> None:
        """Complete the handshake (the peer-key check runs inside it); TlsClosed or SSL.Error if it fails."""
        while True:
            try:
                self.conn.do_handshake()
            except SSL.WantReadError:
                await self._flush()
                if not await self._feed():
                    raise TlsClosed("the peer closed the connection during the handshake") from None
                continue
            except SSL.Error:
                with contextlib.suppress(ConnectionError, OSError):
                    await self._flush()  # send our alert, so the peer learns why
                raise
            await self._flush()
            return

    async def recv(self) -> bytes:
        """Next plaintext bytes (b"" once the peer sent close_notify or closed the socket)."""
        if self._rest:
            data, self._rest = self._rest, b""
            return data
        while True:
            try:
                data = self.conn.recv(CHUNK)
            except SSL.WantReadError:
                await self._flush()  # e.g. a KeyUpdate answer
                if not await self._feed():
                    return b""
                continue
            except SSL.ZeroReturnError:
                return b""
            except SSL.SysCallError:
                return b""
            parts = [data]
            size = len(data)
            while size < CHUNK:  # hand out every whole record already received, in one piece
                try:
                    more = self.conn.recv(CHUNK)
                except (SSL.WantReadError, SSL.ZeroReturnError, SSL.SysCallError):
                    break  # the next call sees the end again
                parts.append(more)
                size += len(more)
            await self._flush()
            return b"".join(parts) if len(parts) > 1 else data

    async def recv_exactly(self, n: int) -> bytes:
        """Exactly ``n`` plaintext bytes; TlsClosed if the stream ends before."""
        buf = bytearray()
        while len(buf) < n:
            data = await self.recv()
            if not data:
                raise TlsClosed(f"stream ended after {len(buf)} of {n} bytes")
            buf += data
        self._rest = bytes(buf[n:])
        return bytes(buf[:n])

    async def send(self, data: bytes) -> None:
        """Encrypt and send ``data`` (waits while the socket's buffer is full)."""
        view = memoryview(data)
        while view:
            sent = self.conn.send(view)
            view = view[sent:]
            await self._flush()

    async def close_notify(self) -> None:
        """Send close_notify (the TLS 1.3 half-close: the other direction may go on)."""
        if self._closed_notify:
            return
        self._closed_notify = True
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        with contextlib.suppress(ConnectionError, OSError):
            await self._flush()

    def abort(self) -> None:
        """Close the socket now."""
        self.writer.close()
