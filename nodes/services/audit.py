"""Append-only audit log, SM3-hash-chained, anchorable, prunable only behind an anchor.

``hash_n = SM3(bytes(prev_hash) || canonical_json(entry_n without hash))``; the first entry's
``prev_hash`` is 64 zeros, or after pruning the hash of the last pruned entry (kept in
``AuditBoundary``) so that the remaining log still verifies.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from nodes.errors import AnchorError, AuditIntegrityError, DiskFull, RetentionTooShort
from nodes.models import (
    AnchorOut,
    AuditAnchorRecord,
    AuditBoundary,
    AuditEntry,
    AuditEntryOut,
    AuditHead,
    AuditVerifyResult,
    PruneOut,
)

GENESIS = "0" * 64

MIN_RETENTION_DAYS = 180
"""The audit log keeps at least this many days (#18.3): a shorter retention is refused."""

JOB_END_ACTIONS = frozenset({"task.succeed", "task.fail", "task.stopped", "he.succeeded", "he.failed",
                             "he.stopped", "he.finish", "he.contribute"})
"""Audit actions that end a job's task on this node: the node anchors its head after each (#18.3)."""


def sm3_hex(data: bytes) -> str:
    """SM3 digest (OpenSSL) as lowercase hex."""
    return hashlib.new("sm3", data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_body(e: AuditEntry) -> dict[str, Any]:
    """The hashed content of an entry (everything but its own hash)."""
    return {
        "seq": e.seq,
        "ts": e.ts,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "detail": json.loads(e.detail),
        "prev_hash": e.prev_hash,
    }


def entry_hash(prev_hash: str, body: dict[str, Any]) -> str:
    """SM3(prev_hash bytes || canonical JSON of body)."""
    return sm3_hex(bytes.fromhex(prev_hash) + canonical_json(body))


def now_ts(now: datetime | None = None) -> str:
    """UTC timestamp in one fixed ISO format (lexically ordered)."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="microseconds")


@runtime_checkable
class AuditAnchor(Protocol):
    """Somewhere outside the node's database that keeps audit heads (the chain, in production)."""

    def anchor(self, node: str, seq: int, head_hash: str) -> str:
        """Record ``(seq, head_hash)`` for ``node``; return a reference (e.g. a transaction hash)."""
        ...

    def latest(self, node: str) -> tuple[int, str] | None:
        """The most recent anchored ``(seq, head_hash)`` of ``node``, if any."""
        ...


class FileAnchor:
    """Anchors appended as JSON lines to a file outside the database (for nodes without a chain)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def anchor(self, node: str, seq: int, head_hash: str) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"node": node, "seq": seq, "hash": head_hash, "ts": now_ts()}) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            pos = fh.tell()
            fh.write(line)
        return f"file:{self.path.name}@{pos}"

    def latest(self, node: str) -> tuple[int, str] | None:
        if not self.path.exists():
            return None
        found: tuple[int, str] | None = None
        for line in self.path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec["node"] == node:
                found = (int(rec["seq"]), str(rec["hash"]))
        return found


def _to_out(e: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        seq=e.seq,
        ts=e.ts,
        actor=e.actor,
        action=e.action,
        target=e.target,
        outcome=e.outcome,
        detail=json.loads(e.detail),
        prev_hash=e.prev_hash,
        hash=e.hash,
    )


class AuditLog:
    """The node's audit log. Writes are serialized through :meth:`transaction`."""

    def __init__(self, node: str, engine: Engine, anchor: AuditAnchor | None = None) -> None:
        self.node = node
        self.engine = engine
        self.anchor_backend = anchor
        self._lock = threading.RLock()
        self.on_job_end: Callable[[], None] | None = None
        """Called after a transaction that logged one of :data:`JOB_END_ACTIONS` committed."""

    @property
    def write_lock(self) -> threading.RLock:
        """The node's one writer lock: every write transaction of the node's database holds it (SQLite
        cannot upgrade a read transaction to a write once another writer has committed, and answers
        "database is locked" at once instead of waiting)."""
        return self._lock

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One serialized write transaction: the change and its audit entry commit together."""
        with self._lock, Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except OperationalError as exc:
                session.rollback()
                if "full" in str(exc.orig).lower():  # SQLite: "database or disk is full"
                    raise DiskFull("the node's disk is full: the change was rolled back, nothing of it kept") from None
                raise
            except BaseException:
                session.rollback()
                raise
        if session.info.pop("dcp.job_end", False) and self.on_job_end is not None:
            self.on_job_end()

    def append(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        target: str = "",
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Add an entry inside ``session`` (committed with the caller's transaction)."""
        seq, prev = self._head(session)
        entry = AuditEntry(
            seq=seq + 1,
            ts=now_ts(),
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            detail=canonical_json(detail or {}).decode(),
            prev_hash=prev,
            hash="",
        )
        entry.hash = entry_hash(prev, entry_body(entry))
        if action in JOB_END_ACTIONS:
            session.info["dcp.job_end"] = True
        session.add(entry)
        session.flush()
        return entry

    def record(self, **kwargs: Any) -> AuditEntry:
        """Append one entry in its own transaction (for refusals and reads worth logging)."""
        with self.transaction() as session:
            return self.append(session, **kwargs)

    # ------------------------------------------------------------ reading

    @staticmethod
    def _boundary(session: Session) -> tuple[int, str]:
        b = session.get(AuditBoundary, 1)
        return (b.seq, b.hash) if b else (0, GENESIS)

    def _head(self, session: Session) -> tuple[int, str]:
        last = session.exec(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
        if last is not None:
            return last.seq, last.hash
        return self._boundary(session)

    def head(self) -> AuditHead:
        with Session(self.engine) as session:
            seq, h = self._head(session)
        return AuditHead(node=self.node, seq=seq, hash=h)

    def entries(self, after: int = 0, limit: int = 100) -> list[AuditEntryOut]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(limit)
            ).all()
        return [_to_out(e) for e in rows]

    def verify(self) -> AuditVerifyResult:
        """Walk the chain from the pruned boundary; compare with local and external anchors."""
        with Session(self.engine) as session:
            b_seq, b_hash = self._boundary(session)
            expected_seq, expected_prev = b_seq + 1, b_hash
            checked = 0
            seen: dict[int, str] = {b_seq: b_hash}
            bad: tuple[int, str] | None = None
            note: str | None = None
            for e in session.exec(select(AuditEntry).order_by(AuditEntry.seq)).yield_per(1000):
                if e.seq != expected_seq:
                    bad = (expected_seq, f"entry {expected_seq} is missing (deleted or renumbered)")
                    break
                if e.prev_hash != expected_prev:
                    bad = (e.seq, "prev_hash does not match the previous entry (chain broken)")
                    break
                if entry_hash(e.prev_hash, entry_body(e)) != e.hash:
                    bad = (e.seq, "content does not match its hash (entry edited)")
                    break
                seen[e.seq] = e.hash
                checked += 1
                expected_seq, expected_prev = e.seq + 1, e.hash
            head_seq, head_hash = expected_seq - 1, expected_prev
            if bad is None:
                anchors: list[tuple[str, tuple[int, str]]] = []
                rec = session.exec(select(AuditAnchorRecord).order_by(AuditAnchorRecord.seq.desc()).limit(1)).first()
                if rec is not None:
                    anchors.append(("local anchor record", (rec.seq, rec.hash)))
                if self.anchor_backend is not None:
                    try:
                        ext = self.anchor_backend.latest(self.node)
                    except Exception as exc:  # noqa: BLE001 - the local chain still verifies
                        note = f"external anchor not readable ({type(exc).__name__}); checked the local chain only"
                        ext = None
                    if ext is not None:
                        anchors.append(("external anchor", ext))
                for label, (a_seq, a_hash) in anchors:
                    if a_seq > head_seq:
                        bad = (head_seq + 1, f"log ends at {head_seq} but the {label} is at {a_seq} (truncated)")
                        break
                    if a_seq in seen and seen[a_seq] != a_hash:
                        bad = (a_seq, f"entry {a_seq} differs from the {label} (history rewritten)")
                        break
        if bad is not None:
            return AuditVerifyResult(
                ok=False, checked=checked, first_bad_seq=bad[0], reason=bad[1], head_seq=head_seq, head_hash=head_hash
            )
        return AuditVerifyResult(ok=True, checked=checked, head_seq=head_seq, head_hash=head_hash, reason=note)

    # ------------------------------------------------------------ anchoring and retention

    def last_anchor(self) -> AnchorOut | None:
        """The most recent anchor this node made (from its own records)."""
        with Session(self.engine) as session:
            rec = session.exec(select(AuditAnchorRecord).order_by(AuditAnchorRecord.seq.desc()).limit(1)).first()
        if rec is None:
            return None
        return AnchorOut(seq=rec.seq, hash=rec.hash, ref=rec.ref, anchored_at=rec.anchored_at)

    def anchor_if_new(self, actor: str = "node") -> AnchorOut | None:
        """Anchor when something was logged since the last anchor (its own ``audit.anchor`` entry aside)."""
        last = self.last_anchor()
        head = self.head()
        if head.seq == 0 or (last is not None and head.seq <= last.seq + 1):
            return None
        return self.anchor_now(actor)

    def anchor_now(self, actor: str = "node") -> AnchorOut:
        """Anchor the current head through the configured backend and remember it locally."""
        if self.anchor_backend is None:
            raise AnchorError("no audit anchor is configured (set anchor_file or a chain client)")
        bad = self._verify_since_anchor()
        if bad is not None:
            raise AuditIntegrityError(f"refusing to anchor a log that fails verification at {bad}")
        with self.transaction() as session:
            seq, h = self._head(session)
            try:
                ref = self.anchor_backend.anchor(self.node, seq, h)
            except Exception as exc:
                raise AnchorError(f"anchoring failed: {type(exc).__name__}: {exc}") from exc
            rec = AuditAnchorRecord(seq=seq, hash=h, ref=ref)
            session.add(rec)
            self.append(session, actor=actor, action="audit.anchor", target=str(seq), detail={"hash": h, "ref": ref})
        return AnchorOut(seq=rec.seq, hash=rec.hash, ref=rec.ref, anchored_at=rec.anchored_at)

    def _verify_since_anchor(self) -> int | None:
        """The first bad entry after (and at) this node's last anchor, or None: what an anchor adds to
        the chain is checked, not the whole log again (the part before is pinned by the earlier anchor,
        and the reconciliation re-checks everything)."""
        with Session(self.engine) as session:
            rec = session.exec(select(AuditAnchorRecord).order_by(AuditAnchorRecord.seq.desc()).limit(1)).first()
            start = session.get(AuditEntry, rec.seq) if rec is not None else None
            if rec is None or start is None:
                full = self.verify()
                return None if full.ok else (full.first_bad_seq or 0)
            if start.hash != rec.hash or entry_hash(start.prev_hash, entry_body(start)) != start.hash:
                return start.seq
            expected_seq, expected_prev = start.seq + 1, start.hash
            for e in session.exec(select(AuditEntry).where(AuditEntry.seq > start.seq)
                                  .order_by(AuditEntry.seq)).yield_per(1000):
                if (e.seq != expected_seq or e.prev_hash != expected_prev
                        or entry_hash(e.prev_hash, entry_body(e)) != e.hash):
                    return min(e.seq, expected_seq)
                expected_seq, expected_prev = e.seq + 1, e.hash
        return None

    def prune(self, retention_days: int, now: datetime | None = None, actor: str = "node") -> PruneOut:
        """Delete entries older than the retention (at least :data:`MIN_RETENTION_DAYS`) that are at or
        before the last anchored head the chain confirms."""
        if retention_days < MIN_RETENTION_DAYS:
            raise RetentionTooShort(f"the audit log keeps at least {MIN_RETENTION_DAYS} days; "
                                      f"refusing a retention of {retention_days}")
        now = now or datetime.now(timezone.utc)
        cutoff = now_ts(now - timedelta(days=retention_days))
        result = self.verify()
        if not result.ok:
            raise AuditIntegrityError(f"refusing to prune a log that fails verification at {result.first_bad_seq}")
        anchored = self._anchored_seq()
        with self.transaction() as session:
            b_seq, b_hash = self._boundary(session)
            pruned = 0
            if anchored is not None:
                last = session.exec(
                    select(AuditEntry)
                    .where(AuditEntry.seq <= anchored, AuditEntry.ts < cutoff)
                    .order_by(AuditEntry.seq.desc())
                    .limit(1)
                ).first()
                if last is not None:
                    pruned = session.exec(
                        select(func.count()).select_from(AuditEntry).where(AuditEntry.seq <= last.seq)
                    ).one()
                    b_seq, b_hash = last.seq, last.hash
                    boundary = session.get(AuditBoundary, 1) or AuditBoundary(id=1, seq=b_seq, hash=b_hash)
                    boundary.seq, boundary.hash = b_seq, b_hash
                    session.add(boundary)
                    session.execute(delete(AuditEntry).where(AuditEntry.seq <= last.seq))
            self.append(
                session,
                actor=actor,
                action="audit.prune",
                detail={"pruned": pruned, "boundary_seq": b_seq, "retention_days": retention_days,
                        "anchored_seq": anchored},
            )
        return PruneOut(pruned=pruned, boundary_seq=b_seq, boundary_hash=b_hash)

    def _anchored_seq(self) -> int | None:
        """The last entry that may be pruned: the newest anchor the backend itself confirms.

        With an external backend (the chain) only what it holds counts, and only if it names an
        entry this log has with the same hash (or the pruned boundary); otherwise the local record."""
        with Session(self.engine) as session:
            rec = session.exec(select(AuditAnchorRecord).order_by(AuditAnchorRecord.seq.desc()).limit(1)).first()
            if self.anchor_backend is None:
                return rec.seq if rec is not None else None
            try:
                ext = self.anchor_backend.latest(self.node)
            except Exception as exc:  # noqa: BLE001
                raise AnchorError(f"cannot read the external anchor: {type(exc).__name__}") from None
            if ext is None:
                return None
            a_seq, a_hash = ext
            entry = session.get(AuditEntry, a_seq)
            b_seq, b_hash = self._boundary(session)
            if (entry is not None and entry.hash == a_hash) or (a_seq == b_seq and a_hash == b_hash):
                return a_seq
            return None
