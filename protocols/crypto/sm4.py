"""SM4 (GB/T 32907-2016) in GCM mode, through OpenSSL (``cryptography``), for bytes, streams and files.

Container format (version 1), used for in-memory messages, streams and files alike::

    header  = b"DCP4" | version:u8 (=1) | flags:u8 (=0) | chunk_size:u32be | nonce_prefix:8 bytes   (18 bytes)
    chunk_i = final:u8 | length:u32be | ciphertext (length bytes) | tag (16 bytes)
              where ciphertext||tag = SM4-GCM(key, nonce = nonce_prefix || i:u32be,
                    aad = header || SM3(associated_data) || i:u64be || final:u8 || length:u32be)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes and has ``final = 0``;
the last one holds 0..chunk_size bytes and has ``final = 1``.  Because index, finality and
length are authenticated, a changed header or associated data, reordered, dropped or
duplicated chunks fail authentication (:class:`AuthenticationFailed`), and a stream that ends
before its final chunk — at a chunk boundary or inside a chunk — is reported as
:class:`CiphertextTruncated`.  A fresh random nonce prefix per message; keys are 16 bytes.

Decryption never releases unauthenticated plaintext: :func:`decrypt` returns only after the
final chunk verified, :func:`decrypt_stream` stages plaintext in a private temporary file and
copies it out only after the whole stream verified, and :func:`decrypt_file` writes a temporary
file next to the destination and atomically renames it once everything verified.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.crypto.errors import (
    AuthenticationFailed,
    CiphertextTruncated,
    MalformedCiphertext,
    MalformedKey,
)
from protocols.crypto.sm3 import sm3_digest

MAGIC = b"DCP4"
VERSION = 1
KEY_SIZE = 16
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 8
_HEADER = struct.Struct(">4sBBI8s")
HEADER_SIZE = _HEADER.size  # 18
DEFAULT_CHUNK_SIZE = 256 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
_SPOOL_LIMIT = 16 * 1024 * 1024


def new_key() -> bytes:
    """A fresh random 16-byte SM4 key."""
    return secrets.token_bytes(KEY_SIZE)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise MalformedKey(f"SM4 key must be {KEY_SIZE} bytes, got {len(key) if key is not None else None}")


# --------------------------------------------------------------------------- one-shot GCM


def gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Raw SM4-GCM: ``ciphertext || tag`` (16-byte tag)."""
    _check_key(key)
    enc = Cipher(algorithms.SM4(bytes(key)), modes.GCM(nonce)).encryptor()
    if aad:
        enc.authenticate_additional_data(aad)
    ct = enc.update(plaintext) + enc.finalize()
    return ct + enc.tag


def gcm_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    """Inverse of :func:`gcm_seal`; :class:`AuthenticationFailed` on any change."""
    _check_key(key)
    if len(sealed) < TAG_SIZE:
        raise CiphertextTruncated("sealed data shorter than the GCM tag")
    dec = Cipher(algorithms.SM4(bytes(key)), modes.GCM(nonce, sealed[-TAG_SIZE:])).decryptor()
    if aad:
        dec.authenticate_additional_data(aad)
    pt = dec.update(sealed[:-TAG_SIZE])
    try:
        dec.finalize()
    except InvalidTag as exc:
        raise AuthenticationFailed("SM4-GCM tag mismatch") from exc
    return pt


def ecb_encrypt_block(key: bytes, block: bytes) -> bytes:
    """One raw SM4 block encryption (for the GB/T 32907 known-answer test)."""
    _check_key(key)
    if len(block) != 16:
        raise MalformedCiphertext("SM4 block must be 16 bytes")
    enc = Cipher(algorithms.SM4(bytes(key)), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


# --------------------------------------------------------------------------- container


def _chunk_aad(header: bytes, aad_digest: bytes, index: int, final: bool, length: int) -> bytes:
    return header + aad_digest + struct.pack(">QBI", index, 1 if final else 0, length)


_CHUNK_HEAD = struct.Struct(">BI")


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= 1 << 32:
        raise MalformedCiphertext("too many chunks for one nonce prefix")
    return prefix + index.to_bytes(4, "big")


def _read_exact(src: BinaryIO, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = src.read(n - len(buf))
        if not part:
            break
        buf += part
    return bytes(buf)


def encrypt_stream(
    key: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    associated_data: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt everything readable from ``src`` into ``dst``; returns the plaintext length."""
    _check_key(key)
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in [1, {MAX_CHUNK_SIZE}]")
    header = _HEADER.pack(MAGIC, VERSION, 0, chunk_size, secrets.token_bytes(NONCE_PREFIX_SIZE))
    prefix = header[-NONCE_PREFIX_SIZE:]
    aad_digest = sm3_digest(associated_data)
    algo = algorithms.SM4(bytes(key))
    dst.write(header)
    total = 0
    index = 0
    current = _read_exact(src, chunk_size)
    while True:
        nxt = _read_exact(src, chunk_size) if len(current) == chunk_size else b""
        final = not nxt
        enc = Cipher(algo, modes.GCM(_nonce(prefix, index))).encryptor()
        enc.authenticate_additional_data(_chunk_aad(header, aad_digest, index, final, len(current)))
        dst.write(
            _CHUNK_HEAD.pack(1 if final else 0, len(current)) + enc.update(current) + enc.finalize() + enc.tag
        )
        total += len(current)
        if final:
            return total
        current = nxt
        index += 1


def _parse_header(header: bytes) -> tuple[int, bytes]:
    if len(header) < HEADER_SIZE:
        raise CiphertextTruncated(f"ciphertext shorter than its {HEADER_SIZE}-byte header")
    magic, version, flags, chunk_size, prefix = _HEADER.unpack(header)
    if magic != MAGIC:
        raise MalformedCiphertext("not an SM4-GCM container (bad magic)")
    if version != VERSION or flags != 0:
        raise MalformedCiphertext(f"unsupported container version {version} / flags {flags}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise MalformedCiphertext(f"implausible chunk size {chunk_size}")
    return chunk_size, prefix


def _decrypt_to(key: bytes, src: BinaryIO, sink: BinaryIO, associated_data: bytes) -> int:
    """Verify-and-decrypt ``src`` into ``sink`` chunk by chunk (``sink`` may hold a verified prefix on error)."""
    _check_key(key)
    header = _read_exact(src, HEADER_SIZE)
    chunk_size, prefix = _parse_header(header)
    aad_digest = sm3_digest(associated_data)
    algo = algorithms.SM4(bytes(key))
    index = 0
    total = 0
    while True:
        head = _read_exact(src, _CHUNK_HEAD.size)
        if len(head) < _CHUNK_HEAD.size:
            raise CiphertextTruncated(f"ciphertext ends before chunk {index} (no final chunk)")
        final_flag, length = _CHUNK_HEAD.unpack(head)
        if final_flag not in (0, 1) or length > chunk_size or (final_flag == 0 and length != chunk_size):
            raise AuthenticationFailed(f"chunk {index} has an invalid header")
        sealed = _read_exact(src, length + TAG_SIZE)
        if len(sealed) < length + TAG_SIZE:
            raise CiphertextTruncated(f"chunk {index} is cut off")
        dec = Cipher(algo, modes.GCM(_nonce(prefix, index), sealed[-TAG_SIZE:])).decryptor()
        dec.authenticate_additional_data(_chunk_aad(header, aad_digest, index, bool(final_flag), length))
        pt = dec.update(sealed[:-TAG_SIZE])
        try:
            dec.finalize()
        except InvalidTag as exc:
            raise AuthenticationFailed(f"SM4-GCM tag mismatch in chunk {index}") from exc
        sink.write(pt)
        total += len(pt)
        if final_flag:
            if src.read(1):
                raise MalformedCiphertext("data after the final chunk")
            return total
        index += 1


def decrypt_stream(key: bytes, src: BinaryIO, dst: BinaryIO, associated_data: bytes = b"") -> int:
    """Decrypt a container from ``src`` to ``dst``; ``dst`` receives nothing unless all of it verified."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT) as staging:
        total = _decrypt_to(key, src, staging, associated_data)
        staging.seek(0)
        while block := staging.read(1 << 20):
            dst.write(block)
    return total


def encrypt(
    key: bytes, plaintext: bytes, associated_data: bytes = b"", chunk_size: int = DEFAULT_CHUNK_SIZE
) -> bytes:
    """Encrypt bytes into the container format."""
    out = io.BytesIO()
    encrypt_stream(key, io.BytesIO(plaintext), out, associated_data, chunk_size)
    return out.getvalue()


def decrypt(key: bytes, ciphertext: bytes, associated_data: bytes = b"") -> bytes:
    """Decrypt a container held in memory; returns the plaintext only if every chunk verified."""
    out = io.BytesIO()
    _decrypt_to(key, io.BytesIO(ciphertext), out, associated_data)
    return out.getvalue()


def _atomic_target(dst: Path) -> tuple[int, Path]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    return fd, Path(tmp)


def encrypt_file(
    key: bytes,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    associated_data: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt file ``src`` to ``dst`` (atomically: a temp file renamed into place)."""
    fd, tmp = _atomic_target(Path(dst))
    try:
        with os.fdopen(fd, "wb") as out, Path(src).open("rb") as inp:
            n = encrypt_stream(key, inp, out, associated_data, chunk_size)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def decrypt_file(
    key: bytes,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    associated_data: bytes = b"",
) -> int:
    """Decrypt file ``src`` to ``dst``; ``dst`` appears only after every chunk verified."""
    fd, tmp = _atomic_target(Path(dst))
    try:
        with os.fdopen(fd, "wb") as out, Path(src).open("rb") as inp:
            n = _decrypt_to(key, inp, out, associated_data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n
