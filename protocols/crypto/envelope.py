"""SM2 envelopes: public-key encryption to a member, for any payload size.

Format::

    b"DCPE" | version:u8 (=1) | mode:u8 | body

* ``mode 0`` (payloads up to :data:`DIRECT_MAX` bytes): ``body = SM2-encrypt(pub, SM3(aad) || payload)``;
  the C3 hash of SM2 authenticates payload and associated data together.
* ``mode 1`` (anything larger): a fresh SM4 key wrapped with SM2, then the payload as an
  SM4-GCM container (:mod:`protocols.crypto.sm4`)::

      body = wrapped_len:u16be | SM2-encrypt(pub, sm4_key) | SM4-GCM(sm4_key, payload,
                                                                  ad = prefix || wrapped key || aad)

Opening raises :class:`DecryptionFailed` for a wrong private key, :class:`AuthenticationFailed`
for tampering, :class:`CiphertextTruncated` / :class:`MalformedCiphertext` for broken input,
and never returns partial plaintext.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from protocols.crypto import sm2, sm4
from protocols.crypto.errors import (
    AuthenticationFailed,
    CiphertextTruncated,
    DecryptionFailed,
    MalformedCiphertext,
)
from protocols.crypto.sm3 import sm3_digest

MAGIC = b"DCPE"
VERSION = 1
MODE_DIRECT = 0
MODE_WRAPPED = 1
DIRECT_MAX = 256
_PREFIX = struct.Struct(">4sBB")


def _prefix(mode: int) -> bytes:
    return _PREFIX.pack(MAGIC, VERSION, mode)


def _parse_prefix(data: bytes) -> int:
    if len(data) < _PREFIX.size:
        raise CiphertextTruncated("envelope shorter than its prefix")
    magic, version, mode = _PREFIX.unpack(data[: _PREFIX.size])
    if magic != MAGIC:
        raise MalformedCiphertext("not an SM2 envelope (bad magic)")
    if version != VERSION or mode not in (MODE_DIRECT, MODE_WRAPPED):
        raise MalformedCiphertext(f"unsupported envelope version {version} / mode {mode}")
    return mode


def _wrap_header(public_key: bytes) -> tuple[bytes, bytes]:
    key = sm4.new_key()
    wrapped = sm2.encrypt(public_key, key)
    return key, _prefix(MODE_WRAPPED) + struct.pack(">H", len(wrapped)) + wrapped


def _unwrap_header(private_key: bytes, head: bytes, wrapped: bytes) -> bytes:
    try:
        key = sm2.decrypt(private_key, wrapped)
    except MalformedCiphertext as exc:
        raise MalformedCiphertext(f"wrapped key: {exc}") from exc
    if len(key) != sm4.KEY_SIZE:
        raise DecryptionFailed("wrapped key has the wrong size")
    return key


def seal(public_key: bytes, payload: bytes, associated_data: bytes = b"") -> bytes:
    """Encrypt ``payload`` to the holder of ``public_key``."""
    if len(payload) <= DIRECT_MAX and payload:
        return _prefix(MODE_DIRECT) + sm2.encrypt(public_key, sm3_digest(associated_data) + payload)
    key, head = _wrap_header(public_key)
    return head + sm4.encrypt(key, payload, head + associated_data)


def open_(private_key: bytes, envelope: bytes, associated_data: bytes = b"") -> bytes:
    """Decrypt an envelope made by :func:`seal`."""
    mode = _parse_prefix(envelope)
    body = envelope[_PREFIX.size :]
    if mode == MODE_DIRECT:
        try:
            inner = sm2.decrypt(private_key, body)
        except MalformedCiphertext as exc:
            if len(body) <= sm2.CIPHERTEXT_OVERHEAD:
                raise CiphertextTruncated("SM2 envelope body is cut off") from exc
            raise
        if inner[:32] != sm3_digest(associated_data):
            raise AuthenticationFailed("envelope associated data does not match")
        return inner[32:]
    if len(body) < 2:
        raise CiphertextTruncated("envelope ends before the wrapped key length")
    (wlen,) = struct.unpack(">H", body[:2])
    if len(body) < 2 + wlen:
        raise CiphertextTruncated("envelope ends inside the wrapped key")
    wrapped = body[2 : 2 + wlen]
    head = envelope[: _PREFIX.size + 2 + wlen]
    key = _unwrap_header(private_key, head, wrapped)
    return sm4.decrypt(key, body[2 + wlen :], head + associated_data)


def seal_file(
    public_key: bytes, src: str | os.PathLike[str], dst: str | os.PathLike[str], associated_data: bytes = b""
) -> int:
    """Encrypt a file of any size to ``public_key`` (always the wrapped-key mode); atomic write."""
    key, head = _wrap_header(public_key)
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, Path(src).open("rb") as inp:
            out.write(head)
            n = sm4.encrypt_stream(key, inp, out, head + associated_data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def open_file(
    private_key: bytes, src: str | os.PathLike[str], dst: str | os.PathLike[str], associated_data: bytes = b""
) -> int:
    """Decrypt a file made by :func:`seal_file`; ``dst`` appears only if everything verified."""
    dst = Path(dst)
    with Path(src).open("rb") as inp:
        prefix = inp.read(_PREFIX.size)
        if _parse_prefix(prefix) != MODE_WRAPPED:
            raise MalformedCiphertext("file envelopes use the wrapped-key mode")
        wl = inp.read(2)
        if len(wl) < 2:
            raise CiphertextTruncated("envelope ends before the wrapped key length")
        (wlen,) = struct.unpack(">H", wl)
        wrapped = inp.read(wlen)
        if len(wrapped) < wlen:
            raise CiphertextTruncated("envelope ends inside the wrapped key")
        head = prefix + wl + wrapped
        key = _unwrap_header(private_key, head, wrapped)
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                # partial output goes only to the private temp file, removed on failure
                n = sm4._decrypt_to(key, inp, out, head + associated_data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return n
