"""SM3 (GB/T 32905-2016) hashing: OpenSSL through :mod:`hashlib`, gmssl as the fallback.

``backend="auto"`` uses OpenSSL when the linked OpenSSL provides SM3 (≈1000x faster
than the pure-Python gmssl implementation) and gmssl otherwise; ``"openssl"`` and
``"gmssl"`` force one (tests cross-check them against each other).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from protocols.crypto.errors import CryptoError

Backend = Literal["auto", "openssl", "gmssl"]
DIGEST_SIZE = 32
BLOCK_SIZE = 64
FILE_CHUNK = 1 << 20


@lru_cache(maxsize=1)
def openssl_has_sm3() -> bool:
    """True if :func:`hashlib.new` can make SM3 (OpenSSL built with SM3)."""
    try:
        hashlib.new("sm3")
    except ValueError:
        return False
    return True


def _resolve(backend: Backend) -> Literal["openssl", "gmssl"]:
    if backend == "auto":
        return "openssl" if openssl_has_sm3() else "gmssl"
    if backend == "openssl" and not openssl_has_sm3():
        raise CryptoError("this OpenSSL has no SM3; use backend='gmssl'")
    if backend not in ("openssl", "gmssl"):
        raise CryptoError(f"unknown SM3 backend {backend!r}")
    return backend


def _gmssl_digest(data: bytes) -> bytes:
    from gmssl import sm3 as gm_sm3

    return bytes.fromhex(gm_sm3.sm3_hash(list(data)))


class Sm3Hasher:
    """Incremental SM3: ``update()`` any number of times, then ``digest()``/``hexdigest()``.

    The gmssl backend has no incremental API, so it buffers the input (fallback only).
    """

    digest_size = DIGEST_SIZE
    block_size = BLOCK_SIZE
    name = "sm3"

    def __init__(self, data: bytes = b"", backend: Backend = "auto") -> None:
        self.backend = _resolve(backend)
        self._h = hashlib.new("sm3") if self.backend == "openssl" else None
        self._buf = bytearray()
        if data:
            self.update(data)

    def update(self, data: bytes) -> None:
        """Feed more bytes."""
        if self._h is not None:
            self._h.update(data)
        else:
            self._buf += data

    def digest(self) -> bytes:
        """The 32-byte digest of everything fed so far (the hasher stays usable)."""
        if self._h is not None:
            return self._h.digest()
        return _gmssl_digest(bytes(self._buf))

    def hexdigest(self) -> str:
        """Lower-case hex of :meth:`digest`."""
        return self.digest().hex()

    def copy(self) -> Sm3Hasher:
        """An independent hasher with the same state."""
        other = Sm3Hasher.__new__(Sm3Hasher)
        other.backend = self.backend
        other._h = self._h.copy() if self._h is not None else None
        other._buf = bytearray(self._buf)
        return other


def sm3_digest(data: bytes, backend: Backend = "auto") -> bytes:
    """SM3 digest (32 bytes) of ``data``."""
    if _resolve(backend) == "openssl":
        return hashlib.new("sm3", data).digest()
    return _gmssl_digest(bytes(data))


def sm3_hex(data: bytes, backend: Backend = "auto") -> str:
    """SM3 digest of ``data`` as 64 lower-case hex characters."""
    return sm3_digest(data, backend).hex()


def sm3_file(path: str | os.PathLike[str], backend: Backend = "auto", chunk_size: int = FILE_CHUNK) -> str:
    """Stream a file through SM3 in ``chunk_size`` pieces; returns the hex digest."""
    h = Sm3Hasher(backend=backend)
    with Path(path).open("rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def sm3_kdf(z: bytes, length: int) -> bytes:
    """The SM2 key-derivation function KDF(Z, klen) of GB/T 32918.4: SM3(Z || ct) for ct = 1, 2, …"""
    out = bytearray()
    counter = 1
    while len(out) < length:
        out += sm3_digest(z + counter.to_bytes(4, "big"))
        counter += 1
    return bytes(out[:length])
