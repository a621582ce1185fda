"""A member's TLS credentials: its SM2 identity key as PKCS#8 PEM and a certificate that carries it.

The key in the certificate is **the member's SM2 identity key** — the same 32-byte scalar as in its
keystore (:mod:`protocols.crypto.keystore`) and the same 64-byte public key as in the chain Registry.
The certificate is **self-signed by that key** (SM2-with-SM3, GB/T 32918 default user ID): there is
no federation CA.  A CA would add a second root of trust that could mint a certificate for any name,
while what authorizes a peer here is only the key it proves in the handshake, looked up in the
Registry (see :mod:`protocols.identity`).  A self-signed certificate is a container for that
key plus a readable subject (``CN=<member>``, ``O=dcp``); rotating a key on chain is the revocation.

Both PEMs are built here from DER (no deprecated pyOpenSSL X509 builder, no ``openssl`` binary):

* private key: PKCS#8 ``PrivateKeyInfo{0, {id-ecPublicKey, sm2p256v1}, ECPrivateKey{1, d, [1] 04||x||y}}``
  — what ``openssl genpkey -algorithm SM2`` writes; the OpenSSL in ``cryptography`` loads it as SM2;
* certificate: X.509 v3, signature ``sm2sign-with-sm3`` (1.2.156.10197.1.501), extensions
  basicConstraints CA:FALSE, keyUsage digitalSignature, extendedKeyUsage serverAuth+clientAuth,
  subjectAltName DNS:<member>, DNS:localhost, IP:127.0.0.1.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from Cryptodome.Util.asn1 import DerObjectId

from protocols.crypto import sm2
from protocols.crypto.errors import MalformedKey

EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
SM2_SIGN_WITH_SM3_OID = "1.2.156.10197.1.501"
#: Default lifetime of a member certificate (the Registry, not the date, decides who is a member).
DEFAULT_DAYS = 825
CERT_SUFFIX = ".tls.crt"
KEY_SUFFIX = ".tls.key"


class CertificateError(ValueError):
    """A PEM is not a certificate or key this package made or accepts (not X.509 / not SM2)."""


# --------------------------------------------------------------------------- minimal DER


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _int(v: int) -> bytes:
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return _tlv(0x02, b)


def _oid(dotted: str) -> bytes:
    return DerObjectId(dotted).encode()


def _utf8(s: str) -> bytes:
    return _tlv(0x0C, s.encode("utf-8"))


def _bits(b: bytes) -> bytes:
    return _tlv(0x03, b"\x00" + b)


def _time(t: datetime) -> bytes:
    t = t.astimezone(timezone.utc)
    if 1950 <= t.year < 2050:
        return _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())


def _name(member: str) -> bytes:
    rdn = lambda oid, v: _tlv(0x31, _seq(_oid(oid), _utf8(v)))  # noqa: E731
    return _seq(rdn("2.5.4.10", "dcp"), rdn("2.5.4.3", member))


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n".encode()


def _spki(public_key: bytes) -> bytes:
    return _seq(_seq(_oid(EC_PUBLIC_KEY_OID), _oid(sm2.SM2_CURVE_OID)), _bits(b"\x04" + public_key))


# --------------------------------------------------------------------------- keys and certificates


def private_key_to_pem(private_key: bytes) -> bytes:
    """PKCS#8 PEM (``BEGIN PRIVATE KEY``) of a raw 32-byte SM2 scalar, with its public point."""
    public_key = sm2.public_key_from_private(private_key)
    ec_private = _seq(_int(1), _tlv(0x04, bytes(private_key)), _tlv(0xA1, _bits(b"\x04" + public_key)))
    algorithm = _seq(_oid(EC_PUBLIC_KEY_OID), _oid(sm2.SM2_CURVE_OID))
    return _pem("PRIVATE KEY", _seq(_int(0), algorithm, _tlv(0x04, ec_private)))


def make_certificate(
    private_key: bytes,
    member: str,
    *,
    days: int = DEFAULT_DAYS,
    not_before: datetime | None = None,
    hosts: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
) -> bytes:
    """A self-signed X.509 v3 certificate (PEM) for ``member`` carrying the SM2 key of ``private_key``.

    ``not_before`` defaults to one hour ago (clock skew); the certificate is valid ``days`` after it.
    """
    public_key = sm2.public_key_from_private(private_key)
    start = (not_before or datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
    end = start + timedelta(days=days)
    san = b"".join([_tlv(0x82, h.encode("ascii")) for h in (member, *hosts)]
                   + [_tlv(0x87, ipaddress.ip_address(ip).packed) for ip in ips])
    extensions = _seq(
        _seq(_oid("2.5.29.19"), _tlv(0x01, b"\xff"), _tlv(0x04, _seq())),  # basicConstraints CA:FALSE, critical
        _seq(_oid("2.5.29.15"), _tlv(0x01, b"\xff"), _tlv(0x04, _tlv(0x03, b"\x07\x80"))),  # digitalSignature
        _seq(_oid("2.5.29.37"), _tlv(0x04, _seq(_oid("1.3.6.1.5.5.7.3.1"), _oid("1.3.6.1.5.5.7.3.2")))),
        _seq(_oid("2.5.29.17"), _tlv(0x04, _seq(san))),
    )
    algorithm = _seq(_oid(SM2_SIGN_WITH_SM3_OID))
    tbs = _seq(
        _tlv(0xA0, _int(2)),
        _int(secrets.randbits(126) | 1 << 126),
        algorithm,
        _name(member),
        _seq(_time(start), _time(end)),
        _name(member),
        _spki(public_key),
        _tlv(0xA3, extensions),
    )
    signature = sm2.signature_to_der(sm2.sign(private_key, tbs, public_key=public_key))
    return _pem("CERTIFICATE", _seq(tbs, algorithm, _bits(signature)))


def _der_of(pem: bytes, label: str) -> bytes:
    text = pem.decode("ascii", "replace")
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in text or end not in text:
        raise CertificateError(f"not a PEM {label.lower()}")
    return base64.b64decode(text.split(begin, 1)[1].split(end, 1)[0])


def public_key_from_spki(spki_der: bytes) -> bytes:
    """The 64-byte ``x || y`` of a DER SubjectPublicKeyInfo, only if it is an SM2 key (else CertificateError)."""
    head = _spki(bytes(64))[:-64]  # 30 59 30 13 <id-ecPublicKey> <sm2p256v1> 03 42 00 04
    if len(spki_der) != len(head) + 64 or not spki_der.startswith(head):
        raise CertificateError("the key is not an uncompressed SM2 key (id-ecPublicKey on sm2p256v1)")
    try:
        return sm2.validate_public_key(spki_der[-64:])
    except MalformedKey as exc:
        raise CertificateError(f"the SM2 point is invalid: {exc}") from None


def certificate_public_key(cert_pem: bytes) -> bytes:
    """The 64-byte SM2 public key a PEM certificate carries (CertificateError if not SM2)."""
    from OpenSSL import crypto

    try:
        cert = crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
    except crypto.Error as exc:
        raise CertificateError(f"not a certificate: {exc}") from None
    return public_key_from_spki(crypto.dump_publickey(crypto.FILETYPE_ASN1, cert.get_pubkey()))


# --------------------------------------------------------------------------- credentials on disk


@dataclass(frozen=True)
class Credentials:
    """A member's TLS certificate and private key (both PEM) and the SM2 public key they carry."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def public_key(self) -> bytes:
        """The 64-byte SM2 public key of the certificate."""
        return certificate_public_key(self.cert_pem)


def credentials_for(private_key: bytes, member: str, *, days: int = DEFAULT_DAYS) -> Credentials:
    """In-memory credentials for a raw SM2 private key (e.g. ``MemberKeys.sm2.private_key``)."""
    return Credentials(cert_pem=make_certificate(private_key, member, days=days), key_pem=private_key_to_pem(private_key))


def credential_paths(directory: str | os.PathLike[str], member: str) -> tuple[Path, Path]:
    """Where :func:`write_credentials` puts ``<member>.tls.crt`` and ``<member>.tls.key``."""
    d = Path(directory)
    return d / f"{member}{CERT_SUFFIX}", d / f"{member}{KEY_SUFFIX}"


def write_credentials(
    directory: str | os.PathLike[str], member: str, private_key: bytes, *, days: int = DEFAULT_DAYS
) -> tuple[Path, Path]:
    """Write the member's certificate (0644) and private key PEM (0600, created so) beside its keystore.

    Returns ``(cert_path, key_path)``.  An existing pair is replaced (a key rotation makes a new one).
    """
    creds = credentials_for(private_key, member, days=days)
    cert_path, key_path = credential_paths(directory, member)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    for path, data, mode in ((key_path, creds.key_pem, 0o600), (cert_path, creds.cert_pem, 0o644)):
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    return cert_path, key_path


def load_credentials(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Credentials:
    """Read a certificate and key PEM; CertificateError unless the key is SM2 and matches the certificate."""
    from OpenSSL import crypto

    creds = Credentials(cert_pem=Path(cert_path).read_bytes(), key_pem=Path(key_path).read_bytes())
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, creds.key_pem)
    except crypto.Error as exc:
        raise CertificateError(f"{key_path}: not a private key: {exc}") from None
    if public_key_from_spki(crypto.dump_publickey(crypto.FILETYPE_ASN1, key)) != creds.public_key:
        raise CertificateError(f"{key_path} is not the key of {cert_path}")
    return creds
