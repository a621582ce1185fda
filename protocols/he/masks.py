"""Pairwise zero-sum masks, so the aggregator and the decryptor together still see only the sum.

Without masks the protocols need a *non-colluding* aggregator: it holds every party's
ciphertext, and the requester holds the key, so the two together could decrypt each
department's partial. With masks each contributor adds, before it releases its ciphertext,

    m_i = Σ_{j ≠ i} sign(i, j) · PRG(seed_ij, batch)      sign = +1 if i < j else −1

where ``seed_ij`` comes from an X25519 agreement between i and j (each party publishes a
fresh public key per job; the coordinator only relays them). The masks cancel exactly in
the sum over the whole group, so the total decrypts to the true value, while one party's
ciphertext decrypts to its value plus a uniform mask of width ``2^mask_bits``.

Limits (say them out loud): the masks are real numbers, so the hiding is statistical —
a value of magnitude ``v`` behind a mask of width ``2^b`` is distinguishable with
probability about ``v / 2^b`` per slot; the default ``b = 30`` against standardized scores
(|v| < 2^5) gives ~2^-25 per row. If one member of the group does not contribute, the masks
do not cancel: the aggregator refuses (:class:`MaskError`) rather than release noise.
"""

from __future__ import annotations

import re

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.crypto.sm3 import sm3_kdf
from protocols.he.errors import MaskError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def mask_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair for one job: (private raw 32 bytes — keep, public raw 32 bytes — publish)."""
    sk = X25519PrivateKey.generate()
    priv = sk.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return priv, pub


class MaskGroup(BaseModel):
    """The parties whose masks cancel, and their published X25519 keys (hex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    members: dict[str, str] = Field(description="party name -> X25519 public key, 64 hex characters")
    mask_bits: int = Field(default=30, ge=8, le=48)

    @field_validator("members")
    @classmethod
    def _members_ok(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) < 2:
            raise ValueError("a mask group needs at least two members")
        for name, key in v.items():
            if not _NAME.match(name):
                raise ValueError(f"bad party name {name!r}")
            if not re.fullmatch(r"[0-9a-f]{64}", key):
                raise ValueError(f"{name}: public key must be 64 lowercase hex characters")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> MaskGroup:
        if len(set(self.members.values())) != len(self.members):
            raise ValueError("two members published the same public key")
        return self

    @property
    def names(self) -> list[str]:
        """Members in canonical order."""
        return sorted(self.members)


def _pair_seed(group: MaskGroup, me: str, my_private: bytes, peer: str) -> int:
    try:
        sk = X25519PrivateKey.from_private_bytes(my_private)
        pk = X25519PublicKey.from_public_bytes(bytes.fromhex(group.members[peer]))
        shared = sk.exchange(pk)
    except ValueError as exc:
        raise MaskError(f"key agreement with {peer!r} failed: {exc}") from exc
    a, b = sorted((me, peer))
    info = f"dcp-he-mask|{group.job_id}|{a}|{b}".encode()
    return int.from_bytes(sm3_kdf(shared + info, 32), "big")


def mask_vectors(group: MaskGroup, me: str, my_private: bytes, sizes: list[int]) -> list[np.ndarray]:
    """Party ``me``'s mask for each ciphertext batch (``sizes`` slots each)."""
    if me not in group.members:
        raise MaskError(f"{me!r} is not a member of the mask group {group.names}")
    try:
        own_pub = X25519PrivateKey.from_private_bytes(my_private).public_key()
    except ValueError as exc:
        raise MaskError(f"private mask key is malformed: {exc}") from exc
    if (
        own_pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
        != group.members[me]
    ):
        raise MaskError(f"the private key does not match {me!r}'s published public key")
    width = float(2**group.mask_bits)
    out = [np.zeros(n) for n in sizes]
    for peer in group.names:
        if peer == me:
            continue
        seed = _pair_seed(group, me, my_private, peer)
        sign = 1.0 if me < peer else -1.0
        for b, n in enumerate(sizes):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, b])))
            out[b] += sign * rng.uniform(-width, width, n)
    return out
