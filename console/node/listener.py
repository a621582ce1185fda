"""The node console's own listener: HTTPS for officers' browsers, beside the node's 国密 TLS API.

Browsers speak no 国密 TLS (TLS_SM4_GCM_SM3 with SM2 certificates) and officers carry no member
certificate, so the console is not served on the member listener. The node serves it on a second
address (``console_host:console_port``) over standard TLS 1.2+ with an ECDSA P-256 certificate of
its own (made once in ``<work_dir>/console/``, key 0600), and that listener carries **only** the
console: no member route (tasks, approvals API, datasets upload, HE steps) is reachable there, and
every console page needs an officer's password + TOTP session (:mod:`console.node.auth`).

Officers pin the certificate: the node prints its SPKI SHA-256 at start (``spki_sha256``), the
fingerprint a browser policy or ``--ignore-certificate-errors-spki-list`` accepts without trusting
any CA.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("dcp.console")


def console_credentials(directory: Path, host: str, name: str) -> tuple[Path, Path]:
    """``(cert, key)`` of the console listener in ``directory``: made on first use (ECDSA P-256,
    self-signed, 5 years, for ``host``, ``localhost`` and 127.0.0.1), reused after."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "console.crt", directory / "console.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dcp console {name}"[:64])])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if str(ip) != "127.0.0.1":
            alt.append(x509.IPAddress(ip))
    except ValueError:
        if host != "localhost":
            alt.append(x509.DNSName(host))
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=5 * 365))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def spki_sha256(cert_path: Path) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (what browsers pin)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def is_requester(ctx: Any) -> bool:
    """Whether this node serves the requester console: the ``requester_console`` setting, else whether
    its member is a ``bank`` in the node's member directory (the chain's Registry, or ``peers``)."""
    settings = ctx.settings
    if settings.requester_console is not None:
        return bool(settings.requester_console)
    try:
        key = ctx.members.key_of(settings.name)
        caller = ctx.members.lookup(key) if key is not None else None
    except Exception as exc:  # noqa: BLE001 - a registry that cannot be read: no requester console
        log.warning("console: cannot read %s's role (%s); no requester console", settings.name, type(exc).__name__)
        return False
    return caller is not None and caller.role == "bank"


def console_app(ctx: Any, page_size: int = 20) -> Any:
    """The console as the listener serves it: the node console at ``/`` with officers' sign-in, and
    on a bank's node the requester console at ``/requester`` behind the same sign-in."""
    from console.node.app import create_officer_console

    requester = None
    if is_requester(ctx):
        from console.requester import RequesterDesk, create_requester_console

        try:
            desk = RequesterDesk.from_node(ctx)
        except Exception as exc:  # noqa: BLE001 - no keystore, no coordinator, no TLS credentials: say so, serve the rest
            log.warning("console: no requester console on %s: %s: %s", ctx.settings.name, type(exc).__name__, exc)
        else:
            def requester(officer: Any) -> Any:
                return create_requester_console(desk, officer=officer, page_size=page_size)

    return create_officer_console(ctx, page_size=page_size, requester=requester)


class ConsoleListener:
    """The console listener of a running node: uvicorn over TLS in a thread of the node's process."""

    def __init__(self, ctx: Any, host: str, port: int, page_size: int = 20) -> None:
        import uvicorn

        settings = ctx.settings
        self.cert, self.key = console_credentials(settings.work_dir / "console", host, settings.name)
        self.url = f"https://{host}:{port}"
        self.spki = spki_sha256(self.cert)
        config = uvicorn.Config(console_app(ctx, page_size), host=host, port=port, log_level="warning",
                                ssl_certfile=str(self.cert), ssl_keyfile=str(self.key), lifespan="off",
                                proxy_headers=False, server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dcp-console", daemon=True)

    def start(self, timeout: float = 30.0) -> ConsoleListener:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console listener did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
