"""Who is calling: the SM2 key a peer proved in the TLS handshake, looked up in the member directory.

The 国密 TLS server puts the peer's proven SM2 public key (64 bytes, ``x || y``) into the ASGI scope
under :data:`PEER_KEY_SCOPE`. This module turns that key into a :class:`Caller` — the member's name,
role and whether it is active — from the service's one :class:`KeyDirectory`: the chain's Registry (a
chain-wired node or coordinator; :func:`from_registry` is the one place a Registry read becomes
members), else the ``peers`` list in its settings, else its 国密 TLS known-keys file
(:func:`member_directory`). The same directory answers the TLS layer (``is_known``), the clients' pins
(``key_of``) and the routes (``lookup``), so a service keeps one cache of the members' keys: a member
removed or rotated on chain is refused at the latest ``ttl_s`` (the settings' ``identity_cache_s``,
or the ``tls`` section's ``registry_ttl_s`` if smaller) after the block that removed it. Nothing here
trusts a header the caller sends.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class KnownMember:
    """A member as a directory holds it: name, SM2 public key (64 bytes ``x || y``), role, active."""

    name: str
    sm2_public_key: bytes
    role: str = "member"
    active: bool = True


#: The Registry's roles by number (``IRegistry.Role``; ``contracts.models.Role`` numbers them alike).
ROLE_NAMES = ("none", "department", "bank", "regulator", "coordinator", "researcher")


class KeyDirectory:
    """The members' keys, TTL-cached: the one cache a service keeps of who its peers are.

    A snapshot of the members (name, SM2 public key, role, active) taken by a ``fetch`` callable
    (:func:`from_registry` over the chain's Registry; :func:`file_members`; :class:`StaticDirectory`).
    The TLS layer asks ``is_known(key)``, clients pin ``key_of(name)``, routes ask ``lookup(key)`` for
    the :class:`Caller`. ``protocols`` must not import ``contracts``, so the chain read is the caller's
    callable.

    **Bounded staleness.** The snapshot is refetched when it is older than ``ttl_s``; an unknown key
    triggers an early refetch at most once per ``miss_interval_s`` (a newly admitted member is accepted
    quickly, but a stranger cannot make every handshake a chain read). If a refetch fails once the
    snapshot is older than ``ttl_s``, every key is refused (fail closed; ``lookup`` raises the fetch's
    error so that a route answers "chain unavailable", not "unknown member"). So a member removed or
    rotated on chain is refused by every new handshake and every request (:mod:`protocols.gmtls.server`
    re-checks the key per request) at most ``ttl_s`` plus one chain read after the change.
    """

    def __init__(
        self,
        fetch: Callable[[], Iterable[KnownMember]],
        *,
        ttl_s: float = 10.0,
        miss_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.miss_interval_s = miss_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[bytes, KnownMember] = {}
        self._by_name: dict[str, KnownMember] = {}
        self._fetched_at: float | None = None
        self._tried_at: float | None = None

    def refresh(self) -> None:
        """Fetch the members now (raises whatever ``fetch`` raises; the old snapshot is kept)."""
        now = self._clock()
        self._tried_at = now
        members = list(self._fetch())
        by_key: dict[bytes, KnownMember] = {}
        by_name: dict[str, KnownMember] = {}
        for m in members:
            key = bytes(m.sm2_public_key)
            # the newest record of a name wins (a rotated key replaces the old one);
            # an inactive record never shadows an active one for the same key
            if m.active or key not in by_key:
                by_key[key] = m
            if m.active or m.name not in by_name:
                by_name[m.name] = m
        self._by_key, self._by_name, self._fetched_at = by_key, by_name, now

    def _current(self, miss: bool = False, raise_stale: bool = False) -> bool:
        """Make the snapshot fresh enough; False if it is stale and cannot be refreshed (fail closed), or
        with ``raise_stale`` the fetch's error."""
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.ttl_s
            retry = miss and (self._tried_at is None or now - self._tried_at >= self.miss_interval_s)
            if stale or retry:
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 — a failing lookup refuses; it never lets a peer through
                    self._tried_at = now
                    if stale and raise_stale:
                        raise
                    return not stale
            return True

    def keep_fresh(self, interval_s: float | None = None) -> threading.Event:
        """Refresh in a daemon thread every ``interval_s`` (default ``ttl_s / 2``), so that lookups on a
        server's event loop find a fresh snapshot instead of reading the chain themselves; set the
        returned event to stop."""
        stop = threading.Event()
        every = interval_s if interval_s is not None else self.ttl_s / 2

        def loop() -> None:
            while not stop.wait(every):
                try:
                    with self._lock:
                        self.refresh()
                except Exception:  # noqa: BLE001 — lookups fail closed once the snapshot is stale
                    pass

        threading.Thread(target=loop, name="member-key-directory", daemon=True).start()
        return stop

    def _record(self, public_key: bytes, raise_stale: bool = False) -> KnownMember | None:
        """The record of ``public_key`` (active or not) in a fresh enough snapshot, else None."""
        key = _raw(public_key)
        if not self._current(raise_stale=raise_stale):
            return None
        m = self._by_key.get(key)
        if m is None or not m.active:
            if not self._current(miss=True, raise_stale=raise_stale):
                return None
            m = self._by_key.get(key)
        return m

    def member(self, public_key: bytes) -> KnownMember | None:
        """The active member whose current registered SM2 key is ``public_key``, else None."""
        m = self._record(public_key)
        return m if m is not None and m.active and self._by_name.get(m.name) == m else None

    def is_known(self, public_key: bytes) -> bool:
        """True iff ``public_key`` is the current key of an active member (the TLS peer check)."""
        return self.member(public_key) is not None

    def lookup(self, sm2_public_key: bytes) -> Caller | None:
        """Who proved ``sm2_public_key``: the member holding it, ``active=False`` for a removed member or a
        rotated-away key (a route refuses it by name), None for a key no member ever held."""
        m = self._record(sm2_public_key, raise_stale=True)
        if m is None:
            return None
        current = m.active and self._by_name.get(m.name) == m
        role = m.role if m.role in ROLES else "department"  # a known-keys file may name no role
        return Caller(name=m.name, role=role, active=current, sm2_public_key=bytes(m.sm2_public_key).hex())

    def key_of(self, name: str) -> bytes | None:
        """The current SM2 key of the active member ``name`` (what a client pins), else None."""
        if not self._current():
            return None
        m = self._by_name.get(name)
        if m is None or not m.active:
            if not self._current(miss=True):
                return None
            m = self._by_name.get(name)
        return bytes(m.sm2_public_key) if m is not None and m.active else None


#: What a service's routes ask: a :class:`KeyDirectory` (the name the routes' signatures use).
MemberDirectory = KeyDirectory


class StaticDirectory(KeyDirectory):
    """Members from the settings' ``peers`` (a service without a chain; tests): a fixed list, so the
    cache never goes stale."""

    def __init__(self, peers: Iterable[PeerEntry]) -> None:
        known = [KnownMember(name=p.name, sm2_public_key=bytes.fromhex(p.key()), role=p.role, active=p.active)
                 for p in peers]
        super().__init__(lambda: known, ttl_s=float("inf"))


def from_registry(registry_members: Callable[[], Iterable[Any]]) -> Callable[[], list[KnownMember]]:
    """The one adapter from the chain's Registry to a directory's fetch: ``registry_members`` returns
    ``contracts.models.Member``-like records (``name``, ``sm2_public_key``, ``role``, ``active``; every
    member ever admitted, so a removed one is found and refused as inactive rather than unknown)."""

    def fetch() -> list[KnownMember]:
        return [KnownMember(name=m.name, sm2_public_key=bytes(m.sm2_public_key), role=ROLE_NAMES[int(m.role)],
                            active=bool(m.active)) for m in registry_members()]

    return fetch


def _flag(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def file_members(path: str | Path) -> Callable[[], list[KnownMember]]:
    """A ``fetch`` reading a file of known members, re-read on every fetch.

    The file is YAML or JSON: either a mapping ``{name: hex_key}`` or a list of
    ``{name, sm2_public_key, role?, active?}`` (keys as 128 hex characters, optional ``0x``).
    """
    p = Path(path)

    def fetch() -> list[KnownMember]:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.load(text, Loader=yaml.BaseLoader)  # every scalar a string: a hex key never becomes a number
        rows = [{"name": k, "sm2_public_key": v} for k, v in doc.items()] if isinstance(doc, dict) else doc
        out = []
        for row in rows or []:
            key = bytes.fromhex(str(row["sm2_public_key"]).removeprefix("0x"))
            if len(key) != 64:
                raise ValueError(f"{p}: key of {row['name']} is not 64 bytes")
            out.append(KnownMember(name=str(row["name"]), sm2_public_key=key,
                                   role=str(row.get("role", "member")), active=_flag(row.get("active", True))))
        return out

    return fetch


def member_directory(registry_members: Callable[[], Iterable[Any]] | None = None, *,
                     peers: Iterable[PeerEntry] = (), known_keys: str | Path | None = None,
                     ttl_s: float = 15.0) -> KeyDirectory:
    """A service's one member directory, for its TLS layer, its clients' pins and its routes alike: the
    chain's Registry when the service has a chain (``registry_members``), else its settings' ``peers``,
    else its 国密 TLS known-keys file; no members at all otherwise."""
    if registry_members is not None:
        return KeyDirectory(from_registry(registry_members), ttl_s=ttl_s)
    peers = list(peers)
    if peers or known_keys is None:
        return StaticDirectory(peers)
    return KeyDirectory(file_members(known_keys), ttl_s=ttl_s)


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


def _raw(key: bytes) -> bytes:
    """A key as the directory holds it: 64 bytes ``x || y`` (a leading ``04`` dropped)."""
    raw = bytes(key)
    return raw[1:] if len(raw) == 65 and raw[0] == 4 else raw
