"""国密 mutual TLS contexts (RFC 8998): TLS 1.3 only, ``TLS_SM4_GCM_SM3``, ``curveSM2``, ``sm2sig_sm3``.

The OpenSSL inside the ``cryptography`` wheel (driven through ``pyOpenSSL``) negotiates all three;
Python's :mod:`ssl` and the system OpenSSL 3.0 cannot.  Every context made here pins exactly that
suite, that key-share group and that signature algorithm, refuses any other protocol version,
disables session resumption (so every connection proves its key afresh), and requires the peer's
certificate on both sides.

Trust is not a CA's: a peer is accepted when the SM2 key it proves in the handshake passes a
:class:`PeerCheck` — on a server "is this a registered, active member key?"
(``is_known(key) -> bool``), on a client "is this exactly the key of the member I meant to reach?"
(pinning).  The check runs in OpenSSL's verify callback, so a refused peer fails the handshake
itself; after the handshake :func:`peer_public_key` returns the proven key (64 bytes ``x || y``).

Typical use (the HTTP layers in :mod:`protocols.gmtls.server` / :mod:`protocols.gmtls.client`,
or a raw TCP gateway)::

    ctx = server_context(creds, is_known)            # once per process
    conn = server_connection(ctx)                    # per accepted socket (or memory BIOs: None)
    ...handshake...
    member_key = peer_public_key(conn)

    cctx = client_context(creds)
    conn = client_connection(cctx, expected_server_key, sock)
    conn.do_handshake(); peer_public_key(conn) == expected_server_key

On a real socket pyOpenSSL needs it blocking (a socket with a Python timeout is non-blocking
underneath and gives ``WantReadError``); or pass ``sock=None`` and move bytes through the memory BIOs
(``bio_write``/``bio_read``), as the server and the httpx transport here do.  In TLS 1.3 the client's
handshake completes before the server has judged the client's certificate: a refused client learns it
from the server's alert on its first read.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL, crypto

from protocols.gmtls.certs import CertificateError, Credentials, public_key_from_spki

SUITE = "TLS_SM4_GCM_SM3"
GROUP = "curveSM2"
SIGALG = "sm2sig_sm3"
#: IANA code points (RFC 8998): cipher suite 0x00C6, group 41, signature scheme 0x0708.
SUITE_CODE = 0x00C6
GROUP_CODE = 0x0029
SIGALG_CODE = 0x0708

#: X.509 verification results that only say "no CA vouches for this certificate" — expected, since
#: trust comes from the key check, not from a CA (18 self-signed leaf, 19 self-signed in chain,
#: 20/2 issuer unknown, 21 unable to verify leaf).  Anything else (expired 10, not yet valid 9,
#: bad signature 7, malformed …) refuses the peer.
_NO_CA_ERRORS = frozenset({0, 2, 18, 19, 20, 21})


class GmTlsError(Exception):
    """Base of this package's errors."""


class UnsupportedOpenSSL(GmTlsError):
    """The OpenSSL under pyOpenSSL cannot pin the 国密 suite, group or signature algorithm."""


class PeerRefused(GmTlsError):
    """The peer's proven key did not pass the check (unregistered, inactive, not the expected member)."""


class PeerCheck:
    """The per-connection trust decision on the peer's SM2 key; remembers what it saw and why it refused."""

    def __init__(self, accept: Callable[[bytes], bool], describe: str) -> None:
        self._accept = accept
        self.describe = describe
        self.key: bytes | None = None
        self.refused: str | None = None

    def __call__(self, key: bytes) -> bool:
        try:
            ok = bool(self._accept(key))
        except Exception as exc:  # a failing lookup refuses; it never lets a peer through
            self.refused = f"key check failed: {type(exc).__name__}: {exc}"
            return False
        if ok:
            self.key = key
            self.refused = None
        else:
            self.refused = f"peer key {key.hex()[:16]}… is not {self.describe}"
        return ok


def expect_key(expected: bytes) -> PeerCheck:
    """Accept only the peer whose proven key equals ``expected`` (a client pinning its server)."""
    expected = bytes(expected)
    if len(expected) != 64:
        raise ValueError("expected SM2 key must be 64 bytes x || y")
    return PeerCheck(lambda key: key == expected, f"the expected key {expected.hex()[:16]}…")


def known_keys(is_known: Callable[[bytes], bool]) -> PeerCheck:
    """Accept a peer whose proven key ``is_known`` (a registered, active member key)."""
    return PeerCheck(is_known, "a registered member key")


def _lib() -> Any:
    from OpenSSL._util import lib

    return lib


def _pin(ctx: SSL.Context, creds: Credentials) -> None:
    lib = _lib()
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    try:
        ctx.set_tls13_ciphersuites(SUITE.encode())
    except SSL.Error as exc:
        raise UnsupportedOpenSSL(f"{SUITE} not available: {exc}") from None
    if lib.SSL_CTX_set1_curves_list(ctx._context, GROUP.encode()) != 1:  # noqa: SLF001
        raise UnsupportedOpenSSL(f"group {GROUP} not available")
    if lib.SSL_CTX_set1_sigalgs_list(ctx._context, SIGALG.encode()) != 1:  # noqa: SLF001
        raise UnsupportedOpenSSL(f"signature algorithm {SIGALG} not available")
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    try:
        from cryptography import x509

        ctx.use_certificate(x509.load_pem_x509_certificate(creds.cert_pem))
        # cryptography has no SM2 private keys; hand OpenSSL the key pyOpenSSL loaded
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, creds.key_pem)
        if lib.SSL_CTX_use_PrivateKey(ctx._context, key._pkey) != 1:  # noqa: SLF001
            raise CertificateError("OpenSSL refused the private key")
        ctx.check_privatekey()
    except (crypto.Error, SSL.Error, ValueError) as exc:
        raise CertificateError(f"cannot use these credentials: {exc}") from None
    creds.public_key  # noqa: B018 — CertificateError unless the certificate carries an SM2 key
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE, _verify)


def _verify(conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    """OpenSSL's verify callback: the leaf must be an SM2 key that the connection's PeerCheck accepts."""
    if errnum not in _NO_CA_ERRORS:
        return False
    if depth > 0:
        return True  # intermediate certificates carry no authority here; only the leaf's key counts
    check = conn.get_app_data()
    if not isinstance(check, PeerCheck):
        return False  # a connection not made by server_connection / client_connection is never trusted
    try:
        key = public_key_from_spki(crypto.dump_publickey(crypto.FILETYPE_ASN1, cert.get_pubkey()))
    except (CertificateError, crypto.Error) as exc:
        check.refused = f"peer certificate: {exc}"
        return False
    return check(key)


def server_context(creds: Credentials, is_known: Callable[[bytes], bool]) -> SSL.Context:
    """A server context: 国密 TLS 1.3 only, client certificate required, clients accepted iff ``is_known(key)``.

    Make connections with :func:`server_connection` (it attaches the key check).
    """
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    _pin(ctx, creds)
    ctx.set_app_data(is_known)
    return ctx


def client_context(creds: Credentials) -> SSL.Context:
    """A client context: 国密 TLS 1.3 only, presents ``creds``; the server check is per connection
    (:func:`client_connection` pins the key of the member the client means to reach)."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    _pin(ctx, creds)
    return ctx


def server_connection(ctx: SSL.Context, sock: socket.socket | None = None) -> SSL.Connection:
    """A server-side connection on ``sock`` (None: memory BIOs) checking clients with the context's ``is_known``."""
    is_known = ctx.get_app_data()
    if not callable(is_known):
        raise GmTlsError("not a context made by server_context")
    conn = SSL.Connection(ctx, sock)
    conn.set_app_data(known_keys(is_known))
    conn.set_accept_state()
    return conn


def client_connection(
    ctx: SSL.Context, expected: bytes | PeerCheck, sock: socket.socket | None = None
) -> SSL.Connection:
    """A client-side connection that accepts only a server proving ``expected`` (64-byte key or a PeerCheck)."""
    conn = SSL.Connection(ctx, sock)
    conn.set_app_data(expected if isinstance(expected, PeerCheck) else expect_key(expected))
    conn.set_connect_state()
    return conn


def refusal(conn: SSL.Connection) -> str | None:
    """Why the peer's key was refused on this connection (None if it was not, or not yet checked)."""
    check = conn.get_app_data()
    return check.refused if isinstance(check, PeerCheck) else None


def peer_public_key(conn: SSL.Connection) -> bytes:
    """The 64-byte SM2 key the peer proved in the completed handshake of ``conn`` and that passed its check.

    Raises :class:`PeerRefused` if the handshake has not completed or the key was not accepted.
    """
    check = conn.get_app_data()
    cert = conn.get_peer_certificate()
    if not isinstance(check, PeerCheck) or cert is None or conn.get_protocol_version_name() != "TLSv1.3":
        raise PeerRefused("no completed 国密 TLS handshake on this connection")
    key = public_key_from_spki(crypto.dump_publickey(crypto.FILETYPE_ASN1, cert.get_pubkey()))
    if check.key is None or key != check.key:
        raise PeerRefused(check.refused or "the peer's key was not checked")
    return key


@dataclass(frozen=True)
class Negotiated:
    """What a completed handshake agreed (as OpenSSL reports it)."""

    version: str
    cipher: str
    group: str


def negotiated(conn: SSL.Connection) -> Negotiated:
    """Protocol version, cipher suite and key-share group of a completed handshake."""
    return Negotiated(
        version=conn.get_protocol_version_name(),
        cipher=conn.get_cipher_name() or "",
        group=conn.get_group_name() or "",
    )


@dataclass
class HandshakeTrace:
    """The code points seen in plaintext handshake messages (OpenSSL's message callback).

    ``suites``: cipher suite of each ServerHello; ``groups``: key-share group of each ServerHello;
    ``sigalgs``: signature scheme of each CertificateVerify (server's and client's).
    """

    suites: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    sigalgs: list[int] = field(default_factory=list)
    _callback: Any = field(default=None, repr=False)

    def _message(self, write_p: int, version: int, content_type: int, buf: Any, length: int, ssl: Any, arg: Any) -> None:
        from OpenSSL._util import ffi

        if content_type != 22 or length < 4:  # handshake messages only
            return
        data = bytes(ffi.buffer(buf, length))
        kind, body = data[0], data[4:]
        if kind == 2:  # ServerHello: version(2) random(32) sid_len sid suite(2) comp(1) ext_len(2) exts
            pos = 34
            pos += 1 + body[pos]
            self.suites.append(struct.unpack(">H", body[pos : pos + 2])[0])
            pos += 3
            end = pos + 2 + struct.unpack(">H", body[pos : pos + 2])[0]
            pos += 2
            while pos + 4 <= end:
                ext, n = struct.unpack(">HH", body[pos : pos + 4])
                if ext == 51:  # key_share: group(2) key_exchange
                    self.groups.append(struct.unpack(">H", body[pos + 4 : pos + 6])[0])
                pos += 4 + n
        elif kind == 15:  # CertificateVerify: algorithm(2) signature
            self.sigalgs.append(struct.unpack(">H", body[:2])[0])


def trace_handshakes(ctx: SSL.Context) -> HandshakeTrace:
    """Record the suite, group and signature scheme of every handshake on ``ctx`` (tests, diagnostics)."""
    from OpenSSL._util import ffi

    trace = HandshakeTrace()
    trace._callback = ffi.callback("void(int, int, int, void *, size_t, SSL *, void *)", trace._message)
    _lib().SSL_CTX_set_msg_callback(ctx._context, trace._callback)  # noqa: SLF001
    ctx._dcp_trace = trace  # noqa: SLF001 — the cffi callback must live as long as the context
    return trace
