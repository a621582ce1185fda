"""国密 mutual TLS on a real uvicorn server: the negotiated suite/group/sigalg, and every refusal."""

from __future__ import annotations

import socket

import httpx
import pytest
from OpenSSL import SSL

from protocols.gmtls.certs import credentials_for, load_credentials, write_credentials
from protocols.gmtls.client import GmTlsTransport, pins
from protocols.gmtls.context import (
    GROUP_CODE,
    SIGALG_CODE,
    SUITE_CODE,
    PeerRefused,
    client_connection,
    client_context,
    negotiated,
    peer_public_key,
    refusal,
    trace_handshakes,
)


def _client(creds, served, key=None) -> httpx.Client:
    expected = served.member.keys.public_key if key is None else key
    return httpx.Client(transport=GmTlsTransport(creds, pins({served.url: expected})), timeout=10)


def _blocking_socket(port: int) -> socket.socket:
    """A blocking socket (pyOpenSSL needs one) whose reads still give up after 10 s."""
    import struct

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
    return sock


def _raw_handshake(creds, served, expected, sigalgs: bytes | None = None):
    """A handshake on a plain socket, returning (connection, trace); raises SSL.Error on refusal."""
    from OpenSSL._util import lib

    ctx = client_context(creds)
    if sigalgs is not None:
        assert lib.SSL_CTX_set1_sigalgs_list(ctx._context, sigalgs) == 1
    trace = trace_handshakes(ctx)
    sock = _blocking_socket(served.port)
    conn = client_connection(ctx, expected, sock)
    try:
        conn.do_handshake()
        conn.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except (SSL.ZeroReturnError, SSL.SysCallError):
                break
            if not chunk:
                break
            answer += chunk
        return conn, trace, answer
    finally:
        sock.close()


def test_negotiates_exactly_the_rfc8998_suite_group_and_sigalg(members, tls_server):
    bank = members["bank"]
    conn, trace, answer = _raw_handshake(bank.creds, tls_server, tls_server.member.keys.public_key)
    got = negotiated(conn)
    assert (got.version, got.cipher, got.group) == ("TLSv1.3", "TLS_SM4_GCM_SM3", "curveSM2")
    # the code points on the wire (plaintext handshake messages): suite 0x00C6, group 41, and
    # sm2sig_sm3 (0x0708) in both CertificateVerify messages (server's and client's)
    assert trace.suites == [SUITE_CODE] and trace.groups == [GROUP_CODE]
    assert trace.sigalgs == [SIGALG_CODE, SIGALG_CODE]
    assert tls_server.trace.sigalgs == [SIGALG_CODE, SIGALG_CODE]
    assert peer_public_key(conn) == tls_server.member.keys.public_key
    assert answer.startswith(b"HTTP/1.1 200")
    assert bank.keys.public_key.hex().encode() in answer  # the app saw the client's proven key


def test_a_client_offering_only_other_sigalgs_is_refused(members, tls_server):
    with pytest.raises(SSL.Error):
        _raw_handshake(members["bank"].creds, tls_server, tls_server.member.keys.public_key,
                       sigalgs=b"ECDSA+SHA256:RSA-PSS+SHA256")
    assert tls_server.trace.sigalgs == []


def test_httpx_transport_pools_connections_and_app_sees_peer_key(members, tls_server):
    bank = members["bank"]
    with _client(bank.creds, tls_server) as http:
        answers = [http.get(f"{tls_server.url}/whoami").json() for _ in range(5)]
        big = bytes(range(256)) * 4096  # 1 MiB through SM4-GCM records
        echoed = http.post(f"{tls_server.url}/echo", content=big).json()
        plain_url = http.get(f"http://127.0.0.1:{tls_server.port}/whoami").json()  # never sent in plaintext
    assert answers == [{"peer": bank.keys.public_key.hex(), "scheme": "https"}] * 5
    from protocols.crypto.sm3 import sm3_digest

    assert echoed == {"n": len(big), "sm3": sm3_digest(big).hex()}
    assert plain_url == answers[0]
    # seven requests, one handshake: the connection was kept alive
    assert tls_server.trace.suites == [SUITE_CODE]


def test_outsider_key_is_refused_in_the_handshake(members, tls_server):
    with _client(members["mallory"].creds, tls_server) as http, pytest.raises(httpx.HTTPError):
        http.get(f"{tls_server.url}/whoami")
    with pytest.raises(SSL.Error):
        _raw_handshake(members["mallory"].creds, tls_server, tls_server.member.keys.public_key)
    # each time the server signed, then refused the client's key before reading its CertificateVerify
    assert tls_server.trace.sigalgs == [SIGALG_CODE, SIGALG_CODE]
    assert tls_server.hits == []  # no request reached the app


def test_certificate_from_a_foreign_ca_is_refused(members, tls_server, tmp_path):
    """A certificate issued by a foreign CA (system ``openssl``) to a foreign SM2 key: no CA counts."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    run("genpkey", "-algorithm", "SM2", "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-sm3", "-subj", "/O=dcp/CN=federation-ca", "-days", "30", "-out", "ca.crt")
    run("genpkey", "-algorithm", "SM2", "-out", "leaf.key")
    run("req", "-new", "-key", "leaf.key", "-sm3", "-subj", "/O=dcp/CN=tax", "-out", "leaf.csr")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-sm3", "-days", "30", "-out", "leaf.crt")
    foreign = load_credentials(tmp_path / "leaf.crt", tmp_path / "leaf.key")
    with pytest.raises(SSL.Error):
        _raw_handshake(foreign, tls_server, tls_server.member.keys.public_key)
    with _client(foreign, tls_server) as http, pytest.raises(httpx.HTTPError) as err:
        http.get(f"{tls_server.url}/whoami")
    # TLS 1.3: the client's side is done before the server judges its certificate; the refusal
    # arrives as the server's alert on the first read
    assert "alert unknown ca" in str(err.value)
    assert tls_server.hits == []


def test_handshake_without_client_certificate_is_refused(members, tls_server):
    from OpenSSL._util import lib

    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)  # pinned like ours, but presents no certificate
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_tls13_ciphersuites(b"TLS_SM4_GCM_SM3")
    lib.SSL_CTX_set1_curves_list(ctx._context, b"curveSM2")
    lib.SSL_CTX_set1_sigalgs_list(ctx._context, b"sm2sig_sm3")
    sock = _blocking_socket(tls_server.port)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    try:
        conn.do_handshake()  # TLS 1.3: the client finishes first; the server's refusal arrives next
        conn.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(SSL.Error) as err:
            conn.recv(65536)
        assert "certificate required" in str(err.value)
    finally:
        sock.close()
    assert tls_server.hits == []


def test_plain_http_to_the_tls_port_gets_no_http_answer(tls_server):
    sock = socket.create_connection(("127.0.0.1", tls_server.port), timeout=10)
    try:
        sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        data = b""
    finally:
        sock.close()
    assert b"HTTP/" not in data and b"peer" not in data  # at most a TLS alert, then the connection closes
    with httpx.Client(timeout=5) as plain, pytest.raises(httpx.HTTPError):  # Python's ssl cannot either
        plain.get(tls_server.url + "/whoami", extensions={})
    assert tls_server.hits == []


def test_server_with_another_members_key_is_refused_by_the_client(members, tls_server):
    """The client meant to reach ``bank`` at this address; the server proves ``tax``'s key."""
    with _client(members["coordinator"].creds, tls_server, key=members["bank"].keys.public_key) as http:
        with pytest.raises(httpx.ConnectError) as err:
            http.get(f"{tls_server.url}/whoami")
    assert "is not the expected key" in str(err.value)
    with pytest.raises(SSL.Error):
        _raw_handshake(members["coordinator"].creds, tls_server, members["bank"].keys.public_key)
    assert tls_server.hits == []


def test_no_pinned_key_for_the_address_refuses_before_connecting(members, tls_server):
    transport = GmTlsTransport(members["bank"].creds, lambda host, port: None)
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ConnectError) as err:
        http.get(f"{tls_server.url}/whoami")
    assert "no registered key" in str(err.value)
    assert tls_server.trace.suites == []
    assert tls_server.hits == []


def test_a_removed_member_is_refused_on_its_pooled_connection_within_the_ttl(members, registry, tls_server):
    import time

    bank = members["bank"]
    with _client(bank.creds, tls_server) as http:
        assert http.get(f"{tls_server.url}/whoami").status_code == 200
        registry[:] = [m for m in registry if m.name != "bank"]  # removed on chain
        time.sleep(tls_server.directory.ttl_s + 0.05)
        refused = http.get(f"{tls_server.url}/whoami")
        assert refused.status_code == 403 and refused.json()["error"] == "PeerRefused"
    with _client(bank.creds, tls_server) as http, pytest.raises(httpx.HTTPError) as err:
        http.get(f"{tls_server.url}/whoami")  # and a new connection fails the handshake
    assert "alert unknown ca" in str(err.value)
    assert tls_server.hits == ["/whoami"]  # only the request made while it was a member


def test_credentials_on_disk_carry_the_identity_key(members, tmp_path):
    import stat

    tax = members["tax"]
    cert_path, key_path = write_credentials(tmp_path, "tax", tax.keys.private_key)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    creds = load_credentials(cert_path, key_path)
    assert creds.public_key == tax.keys.public_key
    other = credentials_for(members["bank"].keys.private_key, "bank")
    key_path.write_bytes(other.key_pem)
    from protocols.gmtls.certs import CertificateError

    with pytest.raises(CertificateError):
        load_credentials(cert_path, key_path)


def _pump(client: SSL.Connection, server: SSL.Connection) -> None:
    """Run a handshake between two memory-BIO connections (SSL.Error on refusal)."""
    for _ in range(10):
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        for src, dst in ((client, server), (server, client)):
            try:
                dst.bio_write(src.bio_read(65536))
            except SSL.WantReadError:
                pass


def test_refusal_names_the_reason(members):
    from protocols.gmtls.context import server_connection, server_context

    sctx = server_context(members["tax"].creds, lambda key: False)
    s = server_connection(sctx)
    c = client_connection(client_context(members["bank"].creds), members["tax"].keys.public_key)
    with pytest.raises(SSL.Error):
        _pump(c, s)
    assert "is not a registered member key" in (refusal(s) or "")
    with pytest.raises(PeerRefused):
        peer_public_key(s)


def test_a_session_is_never_resumed_every_connection_proves_its_key(members):
    """A client offering a previous session's ticket still gets a full handshake (certificates and
    CertificateVerify again), so a key removed from the Registry cannot ride on an old session."""
    from OpenSSL._util import lib

    from protocols.gmtls.context import server_connection, server_context

    seen: list[bytes] = []
    sctx = server_context(members["tax"].creds, lambda key: seen.append(key) or True)
    strace = trace_handshakes(sctx)
    cctx = client_context(members["bank"].creds)
    first_s, first_c = server_connection(sctx), client_connection(cctx, members["tax"].keys.public_key)
    _pump(first_c, first_s)
    first_s.send(b"x")  # let the server's post-handshake messages (tickets) reach the client
    first_c.bio_write(first_s.bio_read(65536))
    assert first_c.recv(1) == b"x"
    second_s, second_c = server_connection(sctx), client_connection(cctx, members["tax"].keys.public_key)
    second_c.set_session(first_c.get_session())
    _pump(second_c, second_s)
    assert lib.SSL_session_reused(second_s._ssl) == 0
    assert strace.sigalgs == [SIGALG_CODE] * 4  # both sides signed in both handshakes
    assert seen.count(members["bank"].keys.public_key) >= 2
    assert peer_public_key(second_s) == members["bank"].keys.public_key


def test_one_pooled_client_serves_many_threads(members, tls_server):
    """The coordinator's worker threads share one client: concurrent calls, each answered for its caller."""
    from concurrent.futures import ThreadPoolExecutor

    bank = members["bank"]
    with _client(bank.creds, tls_server) as http:
        def call(i: int) -> tuple[int, int]:
            r = http.post(f"{tls_server.url}/echo", content=bytes([i % 256]) * (i * 1000 + 1))
            return i, r.json()["n"]

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(call, range(64)))
    assert got == [(i, i * 1000 + 1) for i in range(64)]
    assert 1 <= len(tls_server.trace.suites) <= 8  # at most one handshake per concurrent connection


def test_async_client_over_gmtls(members, tls_server):
    import asyncio

    from protocols.gmtls.client import AsyncGmTlsTransport

    bank = members["bank"]

    async def main() -> list[dict]:
        transport = AsyncGmTlsTransport(bank.creds, pins({tls_server.url: tls_server.member.keys.public_key}))
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            return [(await http.get(f"{tls_server.url}/whoami")).json() for _ in range(3)]

    assert asyncio.run(main()) == [{"peer": bank.keys.public_key.hex(), "scheme": "https"}] * 3
    assert tls_server.trace.suites == [SUITE_CODE]


def test_a_client_that_never_finishes_the_handshake_is_dropped(tls_server, monkeypatch):
    import time

    import protocols.gmtls.server as server

    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT_S", 0.5)
    sock = socket.create_connection(("127.0.0.1", tls_server.port), timeout=10)
    try:
        start = time.monotonic()
        try:
            got = sock.recv(1024)  # says nothing: the server closes it
        except ConnectionResetError:
            got = b""
        assert got == b"" and time.monotonic() - start < 5
    finally:
        sock.close()
    assert tls_server.hits == []
