"""An httpx transport that speaks only 国密 mutual TLS, with pooled keep-alive connections.

:class:`GmTlsTransport` is an ``httpx.HTTPTransport`` whose httpcore pool opens every connection
through a pyOpenSSL client handshake (:func:`protocols.gmtls.context.client_connection`) over the
TCP socket.  The server is verified by **pinning**: ``server_key(host, port)`` names the SM2 key of
the member the caller means to reach (normally its key in the Registry); a server proving any other
key — or when no key is known for that address — fails the handshake (``httpx.ConnectError``).
Plaintext is never sent: an ``http://`` URL is sent over 国密 TLS as if it were ``https://``.

Connections are kept alive and reused (httpcore's pool), so a handshake — two SM2 signatures
and one SM2 key exchange — is paid once per connection, not per request.

    transport = GmTlsTransport(creds, server_key=directory.key_at)   # or pins({"https://h:p": key})
    with httpx.Client(transport=transport) as http:
        http.get("https://127.0.0.1:8701/health")
"""

from __future__ import annotations

import socket
import ssl
import typing
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import httpcore
import httpx
from httpcore._backends.base import SOCKET_OPTION, NetworkBackend, NetworkStream
from httpcore._exceptions import map_exceptions
from httpcore._utils import is_socket_readable
from OpenSSL import SSL

from protocols.gmtls.certs import Credentials
from protocols.gmtls.context import (
    PeerCheck,
    client_connection,
    client_context,
    expect_key,
    peer_public_key,
    refusal,
)

#: ``server_key(host, port)`` → the 64-byte SM2 key the server at that address must prove (None: refuse).
ServerKey = Callable[[str, int], "bytes | None"]
_CHUNK = 1 << 16


def pins(urls: Mapping[str, bytes]) -> ServerKey:
    """A :data:`ServerKey` from ``{base_url: sm2_public_key}`` (scheme ignored; default port 443)."""
    table: dict[tuple[str, int], bytes] = {}
    for url, key in urls.items():
        parts = urlsplit(url if "//" in url else f"//{url}")
        table[(parts.hostname or "", parts.port or 443)] = bytes(key)
    return lambda host, port: table.get((host, port))


class _TlsStream(NetworkStream):
    """A 国密 TLS connection over a blocking socket, driven through pyOpenSSL memory BIOs."""

    def __init__(self, sock: socket.socket, conn: SSL.Connection, timeout: float | None) -> None:
        self._sock = sock
        self._conn = conn
        self._io(conn.do_handshake, timeout)
        self.peer_key = peer_public_key(conn)

    def _io(self, func: Callable[[], typing.Any], timeout: float | None) -> typing.Any:
        self._sock.settimeout(timeout)
        while True:
            want_read = False
            try:
                result = func()
            except SSL.WantReadError:
                want_read = True
            self._flush()
            if not want_read:
                return result
            data = self._sock.recv(_CHUNK)
            if not data:
                raise SSL.SysCallError(-1, "connection closed by the server")
            self._conn.bio_write(data)

    def _flush(self) -> None:
        while True:
            try:
                data = self._conn.bio_read(_CHUNK)
            except SSL.WantReadError:
                return
            self._sock.sendall(data)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with map_exceptions({socket.timeout: httpcore.ReadTimeout, OSError: httpcore.ReadError}):
            try:
                return typing.cast(bytes, self._io(lambda: self._conn.recv(max_bytes), timeout))
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return b""
            except SSL.Error as exc:
                # TLS 1.3: the client's side of the handshake ends before the server has judged the
                # client's certificate, so a refusal ("alert unknown ca": key not registered) arrives here
                raise httpcore.ReadError(f"国密 TLS: the server ended the connection: {exc}") from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with map_exceptions({socket.timeout: httpcore.WriteTimeout, OSError: httpcore.WriteError,
                                                  SSL.Error: httpcore.WriteError}):
            if buffer:
                self._io(lambda: self._conn.sendall(buffer), timeout)

    def close(self) -> None:
        try:
            self._conn.shutdown()
            self._sock.settimeout(0.5)
            self._flush()
        except (SSL.Error, OSError):
            pass
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> NetworkStream:
        raise NotImplementedError("already a 国密 TLS stream")

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return is_socket_readable(self._sock)
        if info == "gmtls_connection":
            return self._conn
        return None


class _TcpStream(NetworkStream):
    """The TCP connection before TLS; ``start_tls`` does the 国密 handshake and pins the server key."""

    def __init__(self, sock: socket.socket, host: str, port: int, backend: GmTlsBackend) -> None:
        self._sock, self._host, self._port, self._backend = sock, host, port, backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise httpcore.ReadError("国密 TLS only: refusing to read plaintext")

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise httpcore.WriteError("国密 TLS only: refusing to send plaintext")

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> NetworkStream:
        expected = self._backend.server_key(self._host, self._port)
        if expected is None:
            self._sock.close()
            raise httpcore.ConnectError(f"no registered key is known for {self._host}:{self._port}; refusing to connect")
        check: PeerCheck = expect_key(expected)
        conn = client_connection(self._backend.context, check)
        try:
            return _TlsStream(self._sock, conn, timeout)
        except TimeoutError:
            self._sock.close()
            raise httpcore.ConnectTimeout(f"国密 TLS handshake with {self._host}:{self._port} timed out") from None
        except (SSL.Error, OSError) as exc:
            self._sock.close()
            why = refusal(conn) or f"{type(exc).__name__}: {exc}"
            raise httpcore.ConnectError(f"国密 TLS handshake with {self._host}:{self._port} failed: {why}") from None

    def get_extra_info(self, info: str) -> typing.Any:
        return self._sock if info == "socket" else None


class GmTlsBackend(NetworkBackend):
    """httpcore network backend: TCP connections whose TLS is 国密 (pyOpenSSL), never Python's ssl."""

    def __init__(self, creds: Credentials, server_key: ServerKey) -> None:
        self.context = client_context(creds)
        self.server_key = server_key

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[SOCKET_OPTION] | None = None) -> NetworkStream:
        with map_exceptions({socket.timeout: httpcore.ConnectTimeout,
                                                  OSError: httpcore.ConnectError}):
            sock = socket.create_connection((host, port), timeout,
                                            source_address=None if local_address is None else (local_address, 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _TcpStream(sock, host, port, self)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[SOCKET_OPTION] | None = None) -> NetworkStream:
        raise httpcore.ConnectError("国密 TLS transport: unix sockets are not supported")


class GmTlsTransport(httpx.HTTPTransport):
    """httpx transport over 国密 mutual TLS with a keep-alive pool; pins each server's SM2 key."""

    def __init__(self, creds: Credentials, server_key: ServerKey | Mapping[str, bytes], *,
                 max_connections: int = 100, max_keepalive_connections: int = 20,
                 keepalive_expiry: float = 30.0, retries: int = 0) -> None:
        super().__init__(retries=retries)
        self._pool.close()
        resolve = pins(server_key) if isinstance(server_key, Mapping) else server_key
        self.backend = GmTlsBackend(creds, resolve)
        self._pool = httpcore.ConnectionPool(
            ssl_context=_UNUSED_SSL_CONTEXT,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            retries=retries,
            network_backend=self.backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":  # never plaintext: the same address over 国密 TLS
            port = request.url.port or 80
            request.url = request.url.copy_with(scheme="https", port=port)
        return super().handle_request(request)


#: httpcore wants an ``ssl.SSLContext`` to hand to ``start_tls``; ours ignores it (TLS is pyOpenSSL's).
_UNUSED_SSL_CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def client(creds: Credentials, server_key: ServerKey | Mapping[str, bytes], **kwargs: typing.Any) -> httpx.Client:
    """An ``httpx.Client`` over :class:`GmTlsTransport` (kwargs go to ``httpx.Client``, e.g. ``base_url``, ``timeout``)."""
    return httpx.Client(transport=GmTlsTransport(creds, server_key), **kwargs)


class AsyncGmTlsTransport(httpx.AsyncBaseTransport):
    """The async face of :class:`GmTlsTransport` for ``httpx.AsyncClient``: each request runs on the
    sync transport (same pool, same pinning) in a worker thread; the response body is read in full."""

    def __init__(self, creds: Credentials, server_key: ServerKey | Mapping[str, bytes], **kwargs: typing.Any) -> None:
        self._sync = GmTlsTransport(creds, server_key, **kwargs)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        body = await request.aread()

        def run() -> tuple[int, httpx.Headers, bytes, dict[str, typing.Any]]:
            sync_request = httpx.Request(request.method, request.url, headers=request.headers, content=body,
                                         extensions=request.extensions)
            response = self._sync.handle_request(sync_request)
            try:
                raw = b"".join(response.iter_raw())  # still encoded: the client decodes
            finally:
                response.close()
            return response.status_code, response.headers, raw, dict(response.extensions)

        status, headers, raw, extensions = await anyio.to_thread.run_sync(run)
        return httpx.Response(status, headers=headers, content=raw, extensions=extensions)

    async def aclose(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self._sync.close)
