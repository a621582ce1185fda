"""Who is calling: the SM2 key a peer proved in the TLS handshake, looked up in the member directory.

The 国密 TLS server puts the peer's proven SM2 public key (64 bytes, ``x || y``) into the ASGI scope
under :data:`PEER_KEY_SCOPE`. This module turns that key into a :class:`Caller` — the member's name,
role and whether it is active — from the chain's Registry (a chain-wired node) or from the
``peers`` list in the node's settings (a node without a chain). Registry answers are cached for
``identity_cache_s`` seconds (default 15): a member removed or rotated on chain is refused at the
latest that long after the block that removed it. Nothing here trusts a header the caller sends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

PEER_KEY_SCOPE = "dcp.peer_sm2_public_key"
"""ASGI scope key under which the TLS server hands over the peer's proven SM2 public key."""

ROLES = ("department", "bank", "regulator", "coordinator", "researcher")


class Caller(BaseModel):
    """A member proved by its SM2 key: what the Registry says about it."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: str
    active: bool
    sm2_public_key: str
    """128 hex characters, ``x || y``."""

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"member:{self.name}"


class PeerEntry(BaseModel):
    """A member this node knows without a chain (``peers`` in the node settings)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: str
    sm2_public_key: str = Field(pattern=r"^(04)?[0-9a-fA-F]{128}$")
    active: bool = True

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        return v

    def key(self) -> str:
        return self.sm2_public_key.lower()[-128:]


class MemberDirectory(Protocol):
    """Maps a proven SM2 key to the member holding it (None: nobody)."""

    ttl_s: float

    def lookup(self, sm2_public_key: bytes) -> Caller | None: ...

    def key_of(self, name: str) -> bytes | None:
        """The SM2 key of the *active* member called ``name`` (None if there is none)."""
        ...


class StaticDirectory:
    """Members from the node's settings (a node without a chain; tests)."""

    ttl_s = 0.0

    def __init__(self, peers: Iterable[PeerEntry]) -> None:
        self._by_key = {
            p.key(): Caller(name=p.name, role=p.role, active=p.active, sm2_public_key=p.key()) for p in peers
        }

    def lookup(self, sm2_public_key: bytes) -> Caller | None:
        return self._by_key.get(_norm(sm2_public_key))

    def key_of(self, name: str) -> bytes | None:
        return next((bytes.fromhex(k) for k, c in self._by_key.items() if c.name == name and c.active), None)


#: The Registry's roles by number (``IRegistry.Role``; ``contracts.models.Role`` numbers them alike).
ROLE_NAMES = ("none", "department", "bank", "regulator", "coordinator", "researcher")


class RegistryDirectory:
    """Members from the chain's Registry, re-read at most every ``ttl_s`` seconds.

    ``read_members`` returns ``contracts.models.Member`` records (every member ever admitted, so a
    removed one is found and refused as inactive rather than unknown)."""

    def __init__(self, read_members: Callable[[], list], ttl_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._read = read_members
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[str, Caller] = {}
        self._read_at: float | None = None

    def _refresh(self) -> None:
        by_key: dict[str, Caller] = {}
        for m in self._read():
            key = bytes(m.sm2_public_key).hex()
            c = Caller(name=m.name, role=ROLE_NAMES[int(m.role)], active=bool(m.active), sm2_public_key=key)
            # a rotated key: the old record stays in the Registry inactive; an active holder wins
            if key not in by_key or c.active:
                by_key[key] = c
        self._by_key, self._read_at = by_key, self._clock()

    def lookup(self, sm2_public_key: bytes) -> Caller | None:
        with self._lock:
            if self._read_at is None or self._clock() - self._read_at >= self.ttl_s:
                self._refresh()
            return self._by_key.get(_norm(sm2_public_key))

    def key_of(self, name: str) -> bytes | None:
        with self._lock:
            if self._read_at is None or self._clock() - self._read_at >= self.ttl_s:
                self._refresh()
            return next((bytes.fromhex(k) for k, c in self._by_key.items() if c.name == name and c.active), None)


def peer_key(scope: dict) -> bytes | None:
    """The SM2 key the TLS server put in the ASGI scope (64 bytes ``x || y``; 65 with ``04`` and a hex
    string are accepted too), or None when the request carried none."""
    key = scope.get(PEER_KEY_SCOPE)
    if key is None:
        return None
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key)
        except ValueError:
            return b""
    return bytes(key)


def _norm(key: bytes) -> str:
    raw = bytes(key)
    if len(raw) == 65 and raw[0] == 4:
        raw = raw[1:]
    return raw.hex()
