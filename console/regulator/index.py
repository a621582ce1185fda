"""What the regulator's console reads: the chain's members, datasets, authorizations, receipts and
audit anchors, indexed from the contracts' events, and the audit's findings.

:class:`ChainIndex` reads events through :class:`contracts.client.ChainClient` only (no node, no
coordinator), incrementally: each :meth:`ChainIndex.refresh` reads the blocks mined since the last
one. The audit (:func:`contracts.audit.run_audit`) is re-run only when the chain has moved.
Searches and usage series are computed from the index in memory.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from contracts.audit import AuditReport, run_audit
from contracts.client import ChainClient, terms_from_abi
from contracts.models import EventRecord, Role, Terms


def hex0x(value: Any) -> str:
    """``0x``-prefixed lower-case hex of bytes (a hex string is normalized)."""
    if isinstance(value, str):
        return "0x" + (value[2:] if value.lower().startswith("0x") else value).lower()
    return "0x" + bytes(value).hex()


def _hex_key(text: str | None) -> str | None:
    """The lower-case hex digits a search for a hash or id means, or None for "no filter"."""
    if not text or not text.strip():
        return None
    t = text.strip().lower()
    return t[2:] if t.startswith("0x") else t


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class MemberRow(_Row):
    """A member as admitted (the latest admission wins)."""

    account: str
    name: str
    role: Role
    active: bool


class DatasetRow(_Row):
    """A registered dataset (its id is a hash: the chain holds no names)."""

    dataset_id: str
    owner: str
    grade: int
    block_number: int


class AuthorizationRow(_Row):
    """An authorization written on chain, with its revocation if any."""

    job_id: str
    manifest_hash: str
    dataset_ids: tuple[str, ...]
    requester: str
    coordinator: str
    approvers: tuple[str, ...]
    via_bls: bool
    expiry: int
    max_runs: int
    created_at: int
    revoked_at: int | None = None
    revoked_by: str | None = None
    block_number: int
    tx_hash: str

    def status(self, now: int) -> Literal["revoked", "expired", "live"]:
        """Where the authorization stands at chain time ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expiry else "live"


class ReceiptRow(_Row):
    """One usage receipt: a dataset's owner used it under a job."""

    job_id: str
    dataset_id: str
    node: str
    row_count: int
    result_hash: str
    started_at: int
    finished_at: int
    run: int
    recorded_at: int
    block_number: int
    tx_hash: str


class AnchorRow(_Row):
    """One anchoring of a node's audit-log head."""

    node: str
    head_hash: str
    entry_count: int
    sequence: int
    anchored_at: int
    block_number: int
    tx_hash: str


class Search(BaseModel):
    """A search over authorizations or receipts; every field optional. ``member`` matches a
    member's name (substring) or address; ``dataset`` and ``job`` match a hex prefix; the times
    bound when the authorization was written or the receipt recorded (``until`` exclusive)."""

    model_config = ConfigDict(frozen=True)

    member: str | None = None
    dataset: str | None = None
    job: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return not any((self.member, self.dataset, self.job, self.since, self.until))


Bucket = Literal["hour", "day", "week"]


class UsagePoint(_Row):
    """Use of one dataset or by one department in one time bucket."""

    start: datetime
    runs: int
    rows: int


class ChainIndex:
    """The chain's records, read from events, refreshed incrementally; thread-safe."""

    def __init__(self, chain: ChainClient, tz: timezone | Any = timezone.utc) -> None:
        self.chain = chain
        self.tz = tz
        self._lock = threading.RLock()
        self._next_block = chain.deployment.block_number
        self._times: dict[int, int] = {}
        self.members: dict[str, MemberRow] = {}
        self.datasets: dict[str, DatasetRow] = {}
        self._auths: dict[str, AuthorizationRow] = {}
        self.receipts: list[ReceiptRow] = []
        self.anchors: list[AnchorRow] = []
        self._audit: tuple[int, AuditReport] | None = None

    # ------------------------------------------------------------------ reading the chain

    @property
    def head(self) -> int:
        """The last block the index has read."""
        return self._next_block - 1

    def now(self) -> int:
        """Chain time: the timestamp of the latest block read."""
        return self._block_time(self.head) if self.head >= 0 else 0

    def _block_time(self, number: int) -> int:
        if number not in self._times:
            self._times[number] = int(self.chain.w3.eth.get_block(number)["timestamp"])
        return self._times[number]

    def refresh(self) -> int:
        """Read the blocks mined since the last refresh; the new head."""
        with self._lock:
            head = self.chain.w3.eth.block_number
            if head < self._next_block:
                return self.head
            events: list[EventRecord] = []
            for contract in ("Registry", "Authorizations", "Receipts"):
                events += self.chain.events(contract, from_block=self._next_block, to_block=head)
            events.sort(key=lambda e: (e.block_number, e.log_index))
            for e in events:
                self._apply(e)
            self._next_block = head + 1
            self._block_time(head)
            return head

    def _apply(self, e: EventRecord) -> None:
        a = e.args
        tx = hex0x(e.tx_hash)
        if e.event == "MemberAdmitted":
            self.members[a["account"]] = MemberRow(account=a["account"], name=a["name"], role=Role(a["role"]),
                                                   active=True)
        elif e.event == "MemberRemoved" and a["account"] in self.members:
            self.members[a["account"]] = self.members[a["account"]].model_copy(update={"active": False})
        elif e.event == "DatasetRegistered":
            key = hex0x(a["datasetId"])
            self.datasets.setdefault(key, DatasetRow(dataset_id=key, owner=a["owner"], grade=a["grade"],
                                                     block_number=e.block_number))
        elif e.event == "AuthorizationCreated":
            terms = _terms(a["terms"])
            job = hex0x(terms.job_id)
            self._auths.setdefault(job, AuthorizationRow(
                job_id=job,
                manifest_hash=hex0x(terms.manifest_hash),
                dataset_ids=tuple(hex0x(d) for d in terms.dataset_ids),
                requester=terms.requester,
                coordinator=a["coordinator"],
                approvers=tuple(a["approvers"]),
                via_bls=bool(a["viaBls"]),
                expiry=terms.expiry,
                max_runs=terms.max_runs,
                created_at=self._block_time(e.block_number),
                block_number=e.block_number,
                tx_hash=tx,
            ))
        elif e.event == "AuthorizationRevoked":
            job = hex0x(a["jobId"])
            row = self._auths.get(job)
            if row is not None and row.revoked_at is None:
                self._auths[job] = row.model_copy(
                    update={"revoked_at": self._block_time(e.block_number), "revoked_by": a["by"]}
                )
        elif e.event == "UsageRecorded":
            self.receipts.append(ReceiptRow(
                job_id=hex0x(a["jobId"]),
                dataset_id=hex0x(a["datasetId"]),
                node=a["node"],
                row_count=a["rowCount"],
                result_hash=hex0x(a["resultHash"]),
                started_at=a["startedAt"],
                finished_at=a["finishedAt"],
                run=a["run"],
                recorded_at=self._block_time(e.block_number),
                block_number=e.block_number,
                tx_hash=tx,
            ))
        elif e.event == "AuditHeadAnchored":
            self.anchors.append(AnchorRow(
                node=a["node"],
                head_hash=hex0x(a["headHash"]),
                entry_count=a["entryCount"],
                sequence=a["sequence"],
                anchored_at=self._block_time(e.block_number),
                block_number=e.block_number,
                tx_hash=tx,
            ))

    def audit(self) -> AuditReport:
        """The audit of the whole deployment at the current head (re-run only when it moved)."""
        with self._lock:
            head = self.head
            if self._audit is None or self._audit[0] != head:
                report = run_audit(self.chain.w3, self.chain.deployment.registry,
                                   from_block=self.chain.deployment.block_number, to_block=head)
                self._audit = (head, report)
            return self._audit[1]

    # ------------------------------------------------------------------ lookups

    def name_of(self, account: str | None) -> str:
        """A member's registered name ('' for an unknown account)."""
        m = self.members.get(account or "")
        return m.name if m else ""

    @property
    def authorizations(self) -> list[AuthorizationRow]:
        """Every authorization, newest first."""
        return sorted(self._auths.values(), key=lambda r: r.block_number, reverse=True)

    def authorization(self, job_id: str) -> AuthorizationRow | None:
        return self._auths.get(hex0x(job_id))

    def latest_anchors(self) -> list[AnchorRow]:
        """Each node's latest anchor."""
        latest: dict[str, AnchorRow] = {}
        for row in self.anchors:
            latest[row.node] = row
        return sorted(latest.values(), key=lambda r: self.name_of(r.node))

    def member_matches(self, text: str, accounts: Iterable[str]) -> bool:
        t = text.strip().lower()
        return any(t in acc.lower() or t in self.name_of(acc).lower() for acc in accounts)

    def _time_ok(self, t: int, q: Search) -> bool:
        if q.since is not None and t < _epoch(q.since, self.tz):
            return False
        return not (q.until is not None and t >= _epoch(q.until, self.tz))

    def search_authorizations(self, q: Search) -> list[AuthorizationRow]:
        """Authorizations matching ``q``, newest first."""
        dataset, job = _hex_key(q.dataset), _hex_key(q.job)
        out = []
        for row in self.authorizations:
            if job and not row.job_id[2:].startswith(job):
                continue
            if dataset and not any(d[2:].startswith(dataset) for d in row.dataset_ids):
                continue
            if q.member and not self.member_matches(
                q.member, (row.requester, row.coordinator, *row.approvers, *self._owners(row.dataset_ids))
            ):
                continue
            if self._time_ok(row.created_at, q):
                out.append(row)
        return out

    def _owners(self, dataset_ids: Iterable[str]) -> list[str]:
        return [self.datasets[d].owner for d in dataset_ids if d in self.datasets]

    def search_receipts(self, q: Search) -> list[ReceiptRow]:
        """Receipts matching ``q`` (``member`` matches the recording node or the job's requester),
        newest first."""
        dataset, job = _hex_key(q.dataset), _hex_key(q.job)
        out = []
        for row in reversed(self.receipts):
            if job and not row.job_id[2:].startswith(job):
                continue
            if dataset and not row.dataset_id[2:].startswith(dataset):
                continue
            if q.member:
                auth = self._auths.get(row.job_id)
                accounts = (row.node, auth.requester) if auth else (row.node,)
                if not self.member_matches(q.member, accounts):
                    continue
            if self._time_ok(row.recorded_at, q):
                out.append(row)
        return out

    # ------------------------------------------------------------------ usage over time

    def usage(self, by: Literal["dataset", "department"], bucket: Bucket = "day") -> dict[str, list[UsagePoint]]:
        """Receipts per dataset (or per recording department) and time bucket, oldest first; every
        series has a point for every bucket between the first and the last receipt."""
        if not self.receipts:
            return {}
        sums: dict[str, dict[datetime, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        starts = []
        for r in self.receipts:
            start = _bucket(datetime.fromtimestamp(r.recorded_at, self.tz), bucket)
            starts.append(start)
            key = r.dataset_id if by == "dataset" else r.node
            cell = sums[key][start]
            cell[0] += 1
            cell[1] += r.row_count
        axis = _axis(min(starts), max(starts), bucket)
        return {
            key: [UsagePoint(start=t, runs=per[t][0] if t in per else 0, rows=per[t][1] if t in per else 0)
                  for t in axis]
            for key, per in sorted(sums.items())
        }


def _terms(raw: Any) -> Terms:
    if isinstance(raw, Mapping):
        return Terms(job_id=raw["jobId"], manifest_hash=raw["manifestHash"], dataset_ids=tuple(raw["datasetIds"]),
                     requester=raw["requester"], expiry=raw["expiry"], max_runs=raw["maxRuns"])
    return terms_from_abi(raw)


def _epoch(t: datetime, tz: Any) -> int:
    return int((t if t.tzinfo else t.replace(tzinfo=tz)).timestamp())


def _bucket(t: datetime, bucket: Bucket) -> datetime:
    if bucket == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def _axis(first: datetime, last: datetime, bucket: Bucket) -> list[datetime]:
    out = [first]
    while out[-1] < last:
        nxt = out[-1] + (timedelta(hours=1) if bucket == "hour" else timedelta(days=7 if bucket == "week" else 1))
        out.append(_bucket(nxt, bucket))  # re-snapped: a DST change does not drift the axis
    return out


def choose_bucket(first: int, last: int) -> Bucket:
    """A bucket that keeps a usage chart between a few and a few hundred points."""
    span = last - first
    if span <= 2 * 86_400:
        return "hour"
    return "day" if span <= 180 * 86_400 else "week"
