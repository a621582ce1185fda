"""Who a TLS peer is: the member whose registered, active SM2 key it proved.

A :class:`KeyDirectory` holds a snapshot of the federation's members — name, SM2 public key, role,
active — taken by a ``fetch`` callable, and answers ``is_known(key)`` for the TLS layer and
``member(key)`` / ``key_of(name)`` for authorization and client pinning.  ``protocols`` must not
import ``contracts``, so the chain read is the caller's callable (e.g. over
``ChainClient.members()``); :func:`file_members` reads a list from a YAML/JSON file instead.

**Bounded staleness.** The snapshot is refetched when it is older than ``ttl_s`` (default 10 s); an
unknown key triggers an early refetch at most once per ``miss_interval_s`` (a newly admitted member
is accepted quickly, but a stranger cannot make every handshake a chain read).  If a refetch fails
once the snapshot is older than ``ttl_s``, every key is refused (fail closed).  So a member removed or
rotated on chain is refused by every new handshake — and, since :mod:`protocols.gmtls.server`
re-checks the key on every request, on every pooled connection — at most ``ttl_s`` plus one chain read
after the change.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownMember:
    """A member as the TLS layer needs it."""

    name: str
    sm2_public_key: bytes
    role: str = "member"
    active: bool = True


class KeyDirectory:
    """A TTL-cached view of the registered members, keyed by SM2 public key and by name."""

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

    def _current(self, miss: bool = False) -> bool:
        """Make the snapshot fresh enough; False if it is stale and cannot be refreshed (fail closed)."""
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.ttl_s
            retry = miss and (self._tried_at is None or now - self._tried_at >= self.miss_interval_s)
            if stale or retry:
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 — a failing lookup refuses; it never lets a peer through
                    self._tried_at = now
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

        threading.Thread(target=loop, name="gmtls-key-directory", daemon=True).start()
        return stop

    def member(self, public_key: bytes) -> KnownMember | None:
        """The active member whose registered SM2 key is ``public_key``, else None."""
        key = bytes(public_key)
        if not self._current():
            return None
        m = self._by_key.get(key)
        if m is None or not m.active:
            if not self._current(miss=True):
                return None
            m = self._by_key.get(key)
        return m if m is not None and m.active and self._by_name.get(m.name) == m else None

    def is_known(self, public_key: bytes) -> bool:
        """True iff ``public_key`` is the current key of an active member (the TLS peer check)."""
        return self.member(public_key) is not None

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
