"""Serve an ASGI app (FastAPI) with uvicorn over 国密 mutual TLS only.

:func:`protocol_class` makes a uvicorn ``http=`` protocol class: a subclass of uvicorn's h11
protocol that runs the TLS handshake in pyOpenSSL memory BIOs on the raw TCP transport, and only
once the client has proved a known SM2 key hands the decrypted stream to h11.  Each request's ASGI
scope carries the proven key as ``scope["dcp.peer_sm2_public_key"]`` (64 bytes ``x || y``) and
``scope["scheme"] == "https"``.  A plain-HTTP request, a client without a certificate or with an
unknown key fails the handshake and the connection is closed before any byte reaches the app.

The key is checked again on every request (``is_known`` of the context, normally a cached
:class:`~protocols.identity.KeyDirectory`): a member removed while it holds a pooled
connection gets ``403 PeerRefused`` from then on.

    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol_class(ctx))
    uvicorn.Server(config).run()            # or serve(app, host, port, ctx)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from uvicorn.protocols.http.h11_impl import H11Protocol

from protocols.gmtls.context import PeerRefused, peer_public_key, refusal, server_connection

#: The ASGI scope key holding the peer's proven SM2 public key (64 bytes).
SCOPE_KEY = "dcp.peer_sm2_public_key"
#: A client must finish the handshake within this many seconds.
HANDSHAKE_TIMEOUT_S = 10.0
_CHUNK = 1 << 16
log = logging.getLogger("dcp.gmtls")


def _drain(conn: SSL.Connection) -> bytes:
    out = []
    while True:
        try:
            out.append(conn.bio_read(_CHUNK))
        except SSL.WantReadError:
            return b"".join(out)


class _TlsTransport(asyncio.Transport):
    """The plaintext side handed to h11: writes are encrypted onto the raw TCP transport."""

    def __init__(self, raw: asyncio.Transport, conn: SSL.Connection, peer_key: bytes) -> None:
        super().__init__()
        self._raw = raw
        self._conn = conn
        self._peer_key = peer_key
        self._closed = False

    def _flush(self) -> None:
        data = _drain(self._conn)
        if data and not self._raw.is_closing():
            self._raw.write(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or not data:
            return
        try:
            self._conn.sendall(bytes(data))
        except SSL.Error:
            self.abort()
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._closed or self._raw.is_closing()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.shutdown()  # close_notify
            self._flush()
        except SSL.Error:
            pass
        self._raw.close()

    def abort(self) -> None:
        self._closed = True
        self._raw.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return self._conn.get_context()
        if name == "ssl_object":
            return self._conn
        if name == SCOPE_KEY:
            return self._peer_key
        return self._raw.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False


async def _refuse(send: Callable[..., Any], detail: str) -> None:
    body = json.dumps({"error": "PeerRefused", "detail": detail}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class GmTlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol behind a 国密 TLS server handshake (use :func:`protocol_class`)."""

    tls_context: SSL.Context

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw: asyncio.Transport | None = None
        self._tls: SSL.Connection | None = None
        self._ready = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._raw = transport  # type: ignore[assignment]
        self._tls = server_connection(self.tls_context)
        self._timer = self.loop.call_later(HANDSHAKE_TIMEOUT_S, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        if not self._ready and self._raw is not None:
            log.info("gmtls: handshake timed out from %s", self._raw.get_extra_info("peername"))
            self._raw.abort()

    def _fail(self, why: str) -> None:
        assert self._raw is not None and self._tls is not None
        alert = _drain(self._tls)
        if alert and not self._raw.is_closing():
            self._raw.write(alert)
        log.info("gmtls: refused %s: %s", self._raw.get_extra_info("peername"), why)
        self._raw.close()

    def data_received(self, data: bytes) -> None:
        conn = self._tls
        assert conn is not None and self._raw is not None
        if self._raw.is_closing():
            return
        conn.bio_write(data)
        if not self._ready:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                out = _drain(conn)
                if out:
                    self._raw.write(out)
                return
            except SSL.Error as exc:
                self._fail(refusal(conn) or f"handshake failed: {exc}")
                return
            try:
                key = peer_public_key(conn)
            except PeerRefused as exc:
                self._fail(str(exc))
                return
            if self._timer is not None:
                self._timer.cancel()
            self._ready = True
            out = _drain(conn)
            if out:
                self._raw.write(out)
            self.app = self._with_peer(self.config.loaded_app, key)
            super().connection_made(_TlsTransport(self._raw, conn, key))
        plain = []
        while True:
            try:
                plain.append(conn.recv(_CHUNK))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # the client's close_notify
                self.transport.close()
                break
            except SSL.Error as exc:
                self._fail(f"TLS error: {exc}")
                return
        out = _drain(conn)  # e.g. post-handshake key updates
        if out and not self._raw.is_closing():
            self._raw.write(out)
        if plain:
            super().data_received(b"".join(plain))

    def _with_peer(self, app: Any, key: bytes) -> Any:
        is_known = self.tls_context.get_app_data()

        async def with_peer(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
            if scope["type"] in ("http", "websocket"):
                if not is_known(key):
                    await _refuse(send, "the client's key is no longer a registered, active member key")
                    return
                scope[SCOPE_KEY] = key
            await app(scope, receive, send)

        return with_peer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._ready:
            super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        return None


def peer_key(scope: dict[str, Any]) -> bytes | None:
    """The SM2 key (64 bytes) the client proved for this request, or None (not served over 国密 TLS)."""
    key = scope.get(SCOPE_KEY)
    return key if isinstance(key, bytes) and len(key) == 64 else None


def protocol_class(ctx: SSL.Context) -> type[GmTlsH11Protocol]:
    """A uvicorn ``http=`` protocol class serving over the server context ``ctx`` (from ``server_context``)."""
    return type("GmTlsH11ProtocolBound", (GmTlsH11Protocol,), {"tls_context": ctx})


#: Idle keep-alive connections live this long on the server: longer than the client pool's expiry
#: (30 s), so a pooled connection is dropped by its client first (no request races the server's close).
KEEP_ALIVE_S = 75


def uvicorn_config(app: Any, host: str, port: int, ctx: SSL.Context, **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` on ``host:port`` over 国密 TLS only (no websockets)."""
    import uvicorn

    kwargs.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
    return uvicorn.Config(app, host=host, port=port, http=protocol_class(ctx), ws="none", **kwargs)


def serve(app: Any, host: str, port: int, ctx: SSL.Context, **kwargs: Any) -> None:
    """Run ``app`` with uvicorn on ``host:port`` over 国密 TLS until interrupted (like ``uvicorn.run``)."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host, port, ctx, **kwargs)).run()
