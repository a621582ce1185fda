"""Reconciliation of a node's audit log with the chain (#18.3): what a regulator can prove about a node.

Three records must agree — the chain's usage receipts and audit anchors of the node's account, and the
node's SM3-hash-chained audit log. :func:`reconcile` checks, over the whole retained log:

* the hash chain is intact: consecutive sequence numbers, each ``prev_hash`` the previous entry's hash,
  each entry's content hashing to its ``hash`` (``entry_missing``, ``chain_broken``, ``entry_edited``);
* every anchored head on chain matches the log: the entry at the anchor's count has the anchored hash
  (``anchor_mismatch``); an anchor beyond the log's head means the log was cut (``log_truncated``);
  anchors of entries pruned away are counted, not checked (the pruned boundary itself is);
* every receipt on chain has its ``receipt.recorded`` entry with the same fields, and vice versa
  (``receipt_not_in_log``, ``receipt_not_on_chain``, ``receipt_differs``). A receipt the node queued
  while the chain was down is *pending* (``receipt.pending`` with no ``receipt.recorded`` yet) or
  *late* once sent: reported, not a finding. A receipt recorded before the retained log begins
  (pruned) is counted, not a finding.

Every finding names the log entry (``seq``) or the chain transaction (``tx``) it is about. The same
function serves the node's ``GET /audit/reconcile`` (its own database, its own chain client) and the
regulator's ``dcp audit reconcile`` (the log read page by page from that route's sibling ``GET /audit``
as an authenticated auditor, the chain read directly), so neither has to trust the other's arithmetic.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from nodes.services.audit import GENESIS, entry_hash


class ReconcileKind(str, enum.Enum):
    """What the reconciliation can find."""

    ENTRY_MISSING = "entry_missing"
    CHAIN_BROKEN = "chain_broken"
    ENTRY_EDITED = "entry_edited"
    ANCHOR_MISMATCH = "anchor_mismatch"
    LOG_TRUNCATED = "log_truncated"
    RECEIPT_NOT_IN_LOG = "receipt_not_in_log"
    RECEIPT_NOT_ON_CHAIN = "receipt_not_on_chain"
    RECEIPT_DIFFERS = "receipt_differs"


class ReconcileFinding(BaseModel):
    """One difference between the log and the chain, naming the entry and/or the transaction."""

    kind: ReconcileKind
    seq: int | None = None
    tx: str | None = None
    detail: str


class ChainReceipt(BaseModel):
    """A ``UsageRecorded`` event of the node's account."""

    tx: str
    block: int
    block_time: int | None = None
    job_key: str
    dataset_id: str
    rows: int
    result_hash: str
    started_at: int
    finished_at: int


class ChainAnchorEvent(BaseModel):
    """An ``AuditHeadAnchored`` event of the node's account."""

    tx: str
    block: int
    entry_count: int
    head_hash: str
    sequence: int


class ReconcileReport(BaseModel):
    """The reconciliation of one node's log with the chain."""

    node: str
    account: str
    first_seq: int
    head_seq: int
    head_hash: str
    entries_checked: int
    receipts_on_chain: int
    receipts_in_log: int
    receipts_before_log: int
    receipts_pending: int
    receipts_late: int
    anchors_on_chain: int
    anchors_checked: int
    anchors_before_log: int
    findings: list[ReconcileFinding]
    seconds: float

    @property
    def clean(self) -> bool:
        return not self.findings


RECEIPT_FIELDS = ("job_key", "dataset_id", "rows", "result_hash", "started_at", "finished_at")


def _detail(e: dict[str, Any]) -> dict[str, Any]:
    d = e["detail"]
    return json.loads(d) if isinstance(d, str) else d


def reconcile(
    node: str, account: str, entries: Iterable[dict[str, Any]], receipts: list[ChainReceipt],
    anchors: list[ChainAnchorEvent], recorded_later: Callable[[str], bool] | None = None,
) -> ReconcileReport:
    """Reconcile ``entries`` (the retained log, in order: dicts with the entry fields, ``detail`` as
    an object or its JSON text) with the chain's ``receipts`` and ``anchors`` of ``account``.

    Read the chain first, then the log (an anchor always names entries that existed when it was made);
    ``recorded_later(tx)`` says whether a logged receipt's transaction was mined after the chain was
    read (not a finding: the node kept working meanwhile)."""
    t0 = time.perf_counter()
    findings: list[ReconcileFinding] = []
    hashes: dict[int, str] = {}
    recorded: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
    pending: dict[Any, int] = {}
    late = 0
    first_seq: int | None = None
    first_ts: str | None = None
    expected_seq = expected_prev = None
    checked = 0
    for e in entries:
        seq = int(e["seq"])
        detail = _detail(e)
        if first_seq is None:
            first_seq, first_ts = seq, e["ts"]
            hashes[seq - 1] = e["prev_hash"]
            if seq == 1 and e["prev_hash"] != GENESIS:
                findings.append(ReconcileFinding(kind=ReconcileKind.CHAIN_BROKEN, seq=seq,
                                                 detail="the first entry does not start from the genesis hash"))
        elif seq != expected_seq:
            findings.append(ReconcileFinding(kind=ReconcileKind.ENTRY_MISSING, seq=expected_seq,
                                             detail=f"entries {expected_seq}..{seq - 1} are missing from the log"))
        elif e["prev_hash"] != expected_prev:
            findings.append(ReconcileFinding(kind=ReconcileKind.CHAIN_BROKEN, seq=seq,
                                             detail=f"entry {seq}'s prev_hash is not entry {seq - 1}'s hash"))
        body = {k: e[k] for k in ("seq", "ts", "actor", "action", "target", "outcome", "prev_hash")}
        body["detail"] = detail
        if entry_hash(e["prev_hash"], body) != e["hash"]:
            findings.append(ReconcileFinding(kind=ReconcileKind.ENTRY_EDITED, seq=seq,
                                             detail=f"entry {seq} ({e['action']}) does not hash to its hash: edited"))
        hashes[seq] = e["hash"]
        checked += 1
        expected_seq, expected_prev = seq + 1, e["hash"]
        action = e["action"]
        if action == "receipt.recorded":
            key = (str(detail.get("tx", "")).lower(), str(detail.get("job_key")), str(detail.get("dataset_id")))
            recorded.setdefault(key, []).append((seq, detail))
            pending.pop(detail.get("queue_id"), None)
            late += bool(detail.get("late"))
        elif action == "receipt.pending":
            pending.setdefault(detail.get("queue_id"), seq)
        elif action == "receipt.refused":
            pending.pop(detail.get("queue_id"), None)
    head_seq = (expected_seq - 1) if expected_seq is not None else 0
    head_hash = expected_prev or GENESIS
    first = first_seq if first_seq is not None else 1

    # anchors
    anchors_checked = anchors_before = 0
    for a in anchors:
        if a.entry_count > head_seq:
            findings.append(ReconcileFinding(
                kind=ReconcileKind.LOG_TRUNCATED, seq=head_seq + 1, tx=a.tx,
                detail=f"anchor #{a.sequence} covers {a.entry_count} entries but the log ends at {head_seq}"))
        elif a.entry_count in hashes:
            anchors_checked += 1
            if hashes[a.entry_count] != a.head_hash.lower():
                findings.append(ReconcileFinding(
                    kind=ReconcileKind.ANCHOR_MISMATCH, seq=a.entry_count, tx=a.tx,
                    detail=f"entry {a.entry_count} differs from anchor #{a.sequence} (history rewritten)"))
        else:
            anchors_before += 1

    # receipts, both ways
    before = 0
    n_log = sum(len(v) for v in recorded.values())
    for r in receipts:
        key = (r.tx.lower(), r.job_key, r.dataset_id)
        candidates = recorded.get(key)
        if not candidates:
            if first > 1 and r.block_time is not None and first_ts is not None and _iso_epoch(first_ts) > r.block_time:
                before += 1  # recorded before the retained log begins (pruned behind an anchor)
                continue
            findings.append(ReconcileFinding(
                kind=ReconcileKind.RECEIPT_NOT_IN_LOG, tx=r.tx,
                detail=f"receipt of job 0x{r.job_key[:12]}… dataset 0x{r.dataset_id[:12]}… (block {r.block}) "
                       "has no receipt.recorded entry in the node's log"))
            continue
        want = {k: getattr(r, k) for k in RECEIPT_FIELDS}
        match = next((i for i, (_, d) in enumerate(candidates)
                      if all(str(d.get(k)) == str(v) for k, v in want.items())), None)
        if match is None:
            seq, d = candidates.pop(0)
            diff = [k for k, v in want.items() if str(d.get(k)) != str(v)]
            findings.append(ReconcileFinding(kind=ReconcileKind.RECEIPT_DIFFERS, seq=seq, tx=r.tx,
                                             detail=f"entry {seq} and the chain's receipt differ in {', '.join(diff)}"))
        else:
            candidates.pop(match)
    for key, rest in recorded.items():
        for seq, _ in rest:
            if recorded_later is not None and key[0] and recorded_later(key[0]):
                continue
            findings.append(ReconcileFinding(
                kind=ReconcileKind.RECEIPT_NOT_ON_CHAIN, seq=seq, tx=key[0] or None,
                detail=f"entry {seq} records a receipt (tx {key[0][:18]}…) that the chain does not hold"))
    findings.sort(key=lambda f: (f.seq if f.seq is not None else -1, f.kind.value))
    return ReconcileReport(
        node=node, account=account, first_seq=first, head_seq=head_seq, head_hash=head_hash,
        entries_checked=checked, receipts_on_chain=len(receipts), receipts_in_log=n_log,
        receipts_before_log=before, receipts_pending=len(pending), receipts_late=late,
        anchors_on_chain=len(anchors), anchors_checked=anchors_checked, anchors_before_log=anchors_before,
        findings=findings, seconds=round(time.perf_counter() - t0, 3))


def _iso_epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts).timestamp()


def chain_records(client: Any, account: str, with_block_times: bool = False) -> tuple[list[ChainReceipt],
                                                                                     list[ChainAnchorEvent], int]:
    """The ``UsageRecorded`` and ``AuditHeadAnchored`` events of ``account`` (a ``contracts.client.
    ChainClient``'s deployment), read with ``eth_getLogs`` filtered by the indexed node address, up to
    the latest block (returned third)."""
    from eth_utils import keccak

    from contracts.audit import block_times

    w3 = client.w3
    last = int(w3.eth.block_number)
    node_topic = "0x" + "00" * 12 + account.lower().removeprefix("0x")
    start = client.deployment.block_number
    address = client.receipts.address
    usage = "0x" + keccak(text="UsageRecorded(bytes32,bytes32,address,uint64,bytes32,uint64,uint64,uint32)").hex()
    anchored = "0x" + keccak(text="AuditHeadAnchored(address,bytes32,uint64,uint64)").hex()
    receipts: list[ChainReceipt] = []
    for log in _logs(w3, address, start, last, [usage, None, None, node_topic]):
        data = bytes(log["data"])
        words = [int.from_bytes(data[i:i + 32], "big") for i in range(0, len(data), 32)]
        receipts.append(ChainReceipt(
            tx="0x" + bytes(log["transactionHash"]).hex(), block=int(log["blockNumber"]),
            job_key=bytes(log["topics"][1]).hex(), dataset_id=bytes(log["topics"][2]).hex(),
            rows=words[0], result_hash=data[32:64].hex(), started_at=words[2], finished_at=words[3]))
    anchors: list[ChainAnchorEvent] = []
    for log in _logs(w3, address, start, last, [anchored, node_topic]):
        data = bytes(log["data"])
        anchors.append(ChainAnchorEvent(
            tx="0x" + bytes(log["transactionHash"]).hex(), block=int(log["blockNumber"]),
            head_hash=data[0:32].hex(), entry_count=int.from_bytes(data[32:64], "big"),
            sequence=int.from_bytes(data[64:96], "big")))
    if with_block_times and receipts:
        times = block_times(w3, {r.block for r in receipts})
        receipts = [r.model_copy(update={"block_time": times.get(r.block)}) for r in receipts]
    return receipts, anchors, last


def mined_after(w3: Any, block: int) -> Callable[[str], bool]:
    """``tx -> whether it was mined after ``block``` (for :func:`reconcile`'s ``recorded_later``)."""
    def later(tx: str) -> bool:
        try:
            got = w3.eth.get_transaction_receipt(tx)
        except Exception:  # noqa: BLE001 - unknown to the chain
            return False
        return got is not None and int(got["blockNumber"]) > block

    return later


def _logs(w3: Any, address: str, start: int, last: int, topics: list[str | None], page: int = 50_000) -> list[Any]:
    out: list[Any] = []
    while start <= last:
        end = min(last, start + page - 1)
        out.extend(w3.eth.get_logs({"address": address, "fromBlock": start, "toBlock": end, "topics": topics}))
        start = end + 1
    return out


def db_entries(engine: Any, batch: int = 5000) -> Iterable[dict[str, Any]]:
    """The node's retained log from its database, in order (``detail`` as stored JSON text)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        result = conn.execution_options(yield_per=batch).execute(text(
            "SELECT seq, ts, actor, action, target, outcome, detail, prev_hash, hash FROM auditentry ORDER BY seq"))
        for row in result.mappings():
            yield dict(row)


def reconcile_node(audit: Any, chain: Any) -> ReconcileReport:
    """This node's own log (``audit``: an :class:`~nodes.services.audit.AuditLog`) against its chain
    account (``chain``: a :class:`~nodes.services.chain.NodeChain`)."""
    from nodes.errors import ConfigError

    if chain is None:
        raise ConfigError("this node is not wired to a chain: there is nothing to reconcile its log with")
    first = audit.entries(0, 1)
    pruned = bool(first) and first[0].seq > 1  # receipts older than the retained log are told apart by time
    receipts, anchors, last = chain._call("reading the node's receipts and anchors", lambda: chain_records(
        chain.client, chain.account, with_block_times=pruned))
    return reconcile(audit.node, chain.account, db_entries(audit.engine), receipts, anchors,
                     mined_after(chain.client.w3, last))


def remote_entries(http: Any, node_url: str, page: int = 1000) -> Iterator[dict[str, Any]]:
    """A node's retained audit log, read in pages from its ``GET /audit`` (as an authenticated auditor)."""
    after = 0
    while True:
        r = http.get(f"{node_url.rstrip('/')}/audit", params={"after": after, "limit": page})
        if r.status_code != 200:
            raise RuntimeError(f"the node refused to show its audit log: HTTP {r.status_code} {r.text[:300]}")
        batch = r.json()
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1]["seq"]


def reconcile_remote(http: Any, node_url: str, chain_client: Any, node: str) -> Any:
    """Reconcile member ``node``'s log (read from ``node_url`` through ``http``) with the chain that
    ``chain_client`` (``contracts.client.ChainClient``) reads: a ``ReconcileReport``."""
    member = next((m for m in chain_client.members() if m.name == node), None)
    if member is None:
        raise LookupError(f"no member called {node!r} in the Registry")
    receipts, anchors, last = chain_records(chain_client, member.account, with_block_times=True)
    entries = list(remote_entries(http, node_url))  # after the chain: see reconcile()
    return reconcile(node, member.account, entries, receipts, anchors, mined_after(chain_client.w3, last))
