"""Signing the receipt path's transactions fast: secp256k1 ECDSA with a fixed-base table, and
legacy (EIP-155) transactions encoded by hand.

eth-account signs a transaction in ≈ 38 ms here (eth-keys' pure-Python ECDSA ≈ 13 ms plus its
transaction machinery), which alone caps one sender at ~26 transactions/s. Signing needs one
multiplication of the generator ``k·G``; with a precomputed table of ``j·16^i·G`` (64 windows of
4 bits, 960 points built once per process in ≈ 0.05 s) that is 64 mixed Jacobian additions
without an inversion, ≈ 0.5 ms in Python. The
nonce ``k`` is derived deterministically from the key and the message hash (HMAC-SHA512, reduced
mod n), so no random-number failure can leak the key; ``s`` is normalized to the low half (EIP-2).
The tests check every signature against eth-account's recovery of the sender.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass

import rlp
from eth_hash.auto import keccak
from eth_utils import to_canonical_address, to_checksum_address

P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)
_BITS = 4
_WINDOWS = 256 // _BITS
_MASK = (1 << _BITS) - 1
_table: list[list[tuple[int, int] | None]] | None = None
_table_lock = threading.Lock()


def _add(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    """Affine point addition (None is the point at infinity)."""
    if a is None:
        return b
    if b is None:
        return a
    x1, y1 = a
    x2, y2 = b
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None
        lam = 3 * x1 * x1 * pow(2 * y1, -1, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return x3, (lam * (x1 - x3) - y1) % P


def _madd(a: tuple[int, int, int] | None, b: tuple[int, int] | None) -> tuple[int, int, int] | None:
    """Jacobian ``a`` plus affine ``b`` without an inversion (madd-2007-bl)."""
    if b is None:
        return a
    if a is None:
        return b[0], b[1], 1
    x1, y1, z1 = a
    x2, y2 = b
    z1z1 = z1 * z1 % P
    u2 = x2 * z1z1 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - x1) % P
    r = 2 * (s2 - y1) % P
    if h == 0:  # equal x: double or cancel, in affine (never met with table points of distinct multiples)
        sum_ = _add(_affine(a), b)
        return None if sum_ is None else (sum_[0], sum_[1], 1)
    hh = h * h % P
    i = 4 * hh % P
    j = h * i % P
    v = x1 * i % P
    x3 = (r * r - j - 2 * v) % P
    y3 = (r * (v - x3) - 2 * y1 * j) % P
    z3 = ((z1 + h) * (z1 + h) - z1z1 - hh) % P
    return x3, y3, z3


def _affine(a: tuple[int, int, int]) -> tuple[int, int]:
    x, y, z = a
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return x * zi2 % P, y * zi2 * zi % P


def _normalize(points: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Many Jacobian points to affine with one inversion (Montgomery's trick)."""
    prefix = [1]
    for _, _, z in points:
        prefix.append(prefix[-1] * z % P)
    inv = pow(prefix[-1], -1, P)
    out: list[tuple[int, int]] = [(0, 0)] * len(points)
    for k in range(len(points) - 1, -1, -1):
        x, y, z = points[k]
        zi = inv * prefix[k] % P
        inv = inv * z % P
        zi2 = zi * zi % P
        out[k] = (x * zi2 % P, y * zi2 * zi % P)
    return out


def _fixed_base_table() -> list[list[tuple[int, int] | None]]:
    global _table
    with _table_lock:
        if _table is None:
            table: list[list[tuple[int, int] | None]] = []
            base = G
            for _ in range(_WINDOWS):
                jac: list[tuple[int, int, int]] = []
                acc: tuple[int, int, int] | None = None
                for _ in range(_MASK + 1):  # 1·base … 2^bits·base
                    acc = _madd(acc, base)
                    assert acc is not None
                    jac.append(acc)
                row = _normalize(jac)
                table.append([None, *row[:_MASK]])
                base = row[_MASK]
            _table = table
        return _table


def _mul_g(k: int) -> tuple[int, int]:
    table = _fixed_base_table()
    acc: tuple[int, int, int] | None = None
    for i in range(_WINDOWS):
        acc = _madd(acc, table[i][(k >> (_BITS * i)) & _MASK])
    assert acc is not None
    return _affine(acc)


def _nonce(secret: int, msg_hash: bytes, attempt: int) -> int:
    mac = hmac.new(secret.to_bytes(32, "big"), msg_hash + attempt.to_bytes(4, "big"), hashlib.sha512).digest()
    return int.from_bytes(mac, "big") % (N - 1) + 1


def sign_hash(secret: int, msg_hash: bytes) -> tuple[int, int, int]:
    """ECDSA over secp256k1: ``(recovery id, r, s)`` with low ``s``."""
    z = int.from_bytes(msg_hash, "big")
    for attempt in range(16):
        k = _nonce(secret, msg_hash, attempt)
        x, y = _mul_g(k)
        r = x % N
        if r == 0:
            continue
        s = pow(k, -1, N) * (z + r * secret) % N
        if s == 0:
            continue
        recid = (y & 1) | (2 if x >= N else 0)
        if s > N // 2:
            s, recid = N - s, recid ^ 1
        return recid, r, s
    raise ValueError("no signature found")  # pragma: no cover - probability ~2^-4000


@dataclass(frozen=True)
class TxKey:
    """A transaction signing key: its secret and checksummed address."""

    secret: int
    address: str

    @classmethod
    def from_account(cls, account: object) -> TxKey:
        """From an eth-account ``LocalAccount`` (anything with ``.key`` and ``.address``)."""
        key = bytes(account.key)  # type: ignore[attr-defined]
        return cls(secret=int.from_bytes(key, "big"), address=to_checksum_address(account.address))  # type: ignore[attr-defined]


def sign_legacy_tx(
    key: TxKey, *, nonce: int, gas_price: int, gas: int, to: str, data: bytes, chain_id: int, value: int = 0
) -> bytes:
    """The raw signed EIP-155 (type 0) transaction."""
    to_b = to_canonical_address(to)
    unsigned = rlp.encode([nonce, gas_price, gas, to_b, value, data, chain_id, 0, 0])
    recid, r, s = sign_hash(key.secret, keccak(unsigned))
    return rlp.encode([nonce, gas_price, gas, to_b, value, data, chain_id * 2 + 35 + recid, r, s])


__all__ = ["TxKey", "sign_hash", "sign_legacy_tx"]
