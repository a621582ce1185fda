"""Usage receipts that lose nothing, and the node's chain housekeeping (#18.3, #18.4).

* :class:`ReceiptQueue` — every usage receipt is first written to the node's database (table
  ``queuedreceipt``), then sent. A receipt the chain cannot take now (:class:`ChainUnavailable`) stays
  ``pending``: its task still succeeds, the node's audit log says ``receipt.pending`` and the job shows
  "receipt pending" until :meth:`ReceiptQueue.flush` sends it when the chain answers again — after a
  node restart too, since the row is durable. Before a pending receipt is (re)sent, the chain is
  searched for it (a node killed between the transaction and its own bookkeeping does not record the
  run twice). Each receipt that reached the chain has exactly one ``receipt.recorded`` entry in the
  audit log (its transaction and fields; ``late`` when it waited), which the reconciliation
  (:mod:`nodes.services.reconcile`) matches with the chain's ``UsageRecorded`` events. A receipt the
  chain *refuses* (e.g. ``MaxRunsReached``) is ``refused``, audited, and the refusal raised as before.
* :class:`ChainKeeper` — one background thread that flushes pending receipts every
  ``receipt_retry_s`` and anchors the audit head at the end of every job (the audit log signals it)
  and at shutdown (:meth:`ChainKeeper.close`), besides the app's periodic anchor.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Any

from sqlmodel import Field, Session, SQLModel, select

from nodes.errors import ChainRefused, ChainUnavailable
from nodes.services.audit import AuditLog, now_ts

log = logging.getLogger("dcp.node.receipts")


class ReceiptState(str, enum.Enum):
    """Where a queued receipt is."""

    PENDING = "pending"
    SENT = "sent"
    REFUSED = "refused"


class QueuedReceipt(SQLModel, table=True):
    """One usage receipt of this node, kept from before it is sent until after (the durable queue)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True)
    dataset: str
    job_key: str
    dataset_id: str
    rows: int
    result_hash: str
    started_at: int
    finished_at: int
    state: str = Field(default=ReceiptState.PENDING.value, index=True)
    tx: str | None = None
    attempts: int = 0
    last_error: str | None = None
    queued_at: str = ""
    sent_at: str | None = None


def _usage(row: QueuedReceipt) -> Any:
    from contracts.models import UsageReceipt

    return UsageReceipt(job_id=bytes.fromhex(row.job_key), dataset_id=bytes.fromhex(row.dataset_id),
                        row_count=row.rows, result_hash=bytes.fromhex(row.result_hash),
                        started_at=row.started_at, finished_at=row.finished_at)


def _fields(row: QueuedReceipt) -> dict[str, Any]:
    """What the audit log says about a receipt (all the chain's event holds but the node's address)."""
    return {"queue_id": row.id, "dataset": row.dataset, "job_key": row.job_key, "dataset_id": row.dataset_id,
            "rows": row.rows, "result_hash": row.result_hash, "started_at": row.started_at,
            "finished_at": row.finished_at}


class ReceiptQueue:
    """The node's receipts: durable first, sent now or when the chain returns."""

    def __init__(self, engine: Any, audit: AuditLog, chain: Any, late_after_s: int = 60) -> None:
        self.engine = engine
        self.audit = audit
        self.chain = chain
        self.late_after_s = late_after_s
        self._send_lock = threading.Lock()
        self.on_pending: Any = None
        """Called (no arguments) when a receipt had to wait: the keeper's wake-up."""

    # ------------------------------------------------------------ submit

    def submit(self, job_id: str, dataset: str, receipt: Any) -> str | None:
        """Queue ``receipt`` (``contracts.models.UsageReceipt``) durably and try to send it: its
        transaction hash, or None when the chain did not answer (the receipt is pending)."""
        with self.audit.transaction() as session:
            row = QueuedReceipt(job_id=job_id, dataset=dataset, job_key=bytes(receipt.job_id).hex(),
                                dataset_id=bytes(receipt.dataset_id).hex(), rows=receipt.row_count,
                                result_hash=bytes(receipt.result_hash).hex(), started_at=receipt.started_at,
                                finished_at=receipt.finished_at, queued_at=now_ts())
            session.add(row)
            session.flush()
            row_id = row.id
        with self._send_lock:
            try:
                tx = self.chain.record_usage(receipt)
            except ChainUnavailable as exc:
                self._pending(row_id, exc.detail)
                if self.on_pending is not None:
                    self.on_pending()
                return None
            except ChainRefused as exc:
                self._refused(row_id, exc.detail)
                raise
            self._sent(row_id, tx, late=False)
        return tx

    # ------------------------------------------------------------ state changes (each audited)

    def _get(self, session: Session, row_id: int | None) -> QueuedReceipt:
        row = session.get(QueuedReceipt, row_id)
        assert row is not None
        return row

    def _pending(self, row_id: int | None, error: str) -> None:
        with self.audit.transaction() as session:
            row = self._get(session, row_id)
            row.attempts += 1
            row.last_error = error[:300]
            session.add(row)
            self.audit.append(session, actor="node", action="receipt.pending", target=row.job_id,
                              outcome="pending", detail={**_fields(row), "error": error[:300]})

    def _refused(self, row_id: int | None, error: str) -> None:
        with self.audit.transaction() as session:
            row = self._get(session, row_id)
            row.state, row.last_error = ReceiptState.REFUSED.value, error[:300]
            session.add(row)
            self.audit.append(session, actor="node", action="receipt.refused", target=row.job_id,
                              outcome="refused", detail={**_fields(row), "error": error[:300]})

    def _sent(self, row_id: int | None, tx: str, late: bool) -> None:
        with self.audit.transaction() as session:
            row = self._get(session, row_id)
            row.state, row.tx, row.sent_at = ReceiptState.SENT.value, tx, now_ts()
            session.add(row)
            self.audit.append(session, actor="node", action="receipt.recorded", target=row.job_id,
                              detail={**_fields(row), "tx": tx, "late": late})

    # ------------------------------------------------------------ reading

    def pending(self, job_id: str | None = None) -> list[QueuedReceipt]:
        """Receipts not yet on chain (of ``job_id``, or all)."""
        with Session(self.engine) as session:
            q = select(QueuedReceipt).where(QueuedReceipt.state == ReceiptState.PENDING.value)
            if job_id is not None:
                q = q.where(QueuedReceipt.job_id == job_id)
            return list(session.exec(q.order_by(QueuedReceipt.id)))

    def sent_tx(self, job_id: str) -> list[str]:
        """Transactions of ``job_id``'s receipts that reached the chain."""
        with Session(self.engine) as session:
            rows = session.exec(select(QueuedReceipt).where(QueuedReceipt.job_id == job_id,
                                                            QueuedReceipt.state == ReceiptState.SENT.value))
            return [r.tx for r in rows if r.tx]

    # ------------------------------------------------------------ flushing

    def _on_chain(self, row: QueuedReceipt) -> str | None:
        """The transaction of a ``UsageRecorded`` event of this node matching ``row``, if the chain has one
        (a send whose answer was lost, or a node killed before it wrote down the transaction)."""
        from eth_utils import keccak

        client = self.chain.client
        topic = keccak(text="UsageRecorded(bytes32,bytes32,address,uint64,bytes32,uint64,uint64,uint32)")
        node_topic = b"\x00" * 12 + bytes.fromhex(self.chain.account.removeprefix("0x"))
        logs = self.chain._call("searching the chain for a queued receipt", lambda: client.w3.eth.get_logs({
            "address": client.receipts.address, "fromBlock": client.deployment.block_number, "toBlock": "latest",
            "topics": ["0x" + topic.hex(), "0x" + row.job_key, "0x" + row.dataset_id, "0x" + node_topic.hex()]}))
        for entry in logs:
            data = bytes(entry["data"])
            words = [int.from_bytes(data[i:i + 32], "big") for i in range(0, len(data), 32)]
            rows, result_hash, started, finished = words[0], data[32:64].hex(), words[2], words[3]
            if (rows, result_hash, started, finished) == (row.rows, row.result_hash, row.started_at, row.finished_at):
                return "0x" + bytes(entry["transactionHash"]).hex()
        return None

    def flush(self) -> int:
        """Send every pending receipt the chain will take now; how many reached it. Stops at the first
        that cannot reach the chain (it is still down); a refused one is audited and skipped."""
        sent = 0
        with self._send_lock:
            for row in self.pending():
                late = time.time() - row.finished_at > self.late_after_s
                try:
                    tx = self._on_chain(row)
                    if tx is None:
                        tx = self.chain.record_usage(_usage(row))
                except ChainUnavailable as exc:
                    with self.audit.transaction() as session:
                        r = self._get(session, row.id)
                        r.attempts += 1
                        r.last_error = exc.detail[:300]
                        session.add(r)
                    break
                except ChainRefused as exc:
                    self._refused(row.id, exc.detail)
                    continue
                self._sent(row.id, tx, late=late or row.attempts > 0)
                sent += 1
        return sent


class ChainKeeper:
    """The node's background chain work: pending receipts and the audit anchors at job ends and at shutdown."""

    def __init__(self, queue: ReceiptQueue, audit: AuditLog, retry_s: float = 2.0) -> None:
        self.queue = queue
        self.audit = audit
        self.retry_s = retry_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._anchor_due = False
        self._thread: threading.Thread | None = None
        queue.on_pending = self._wake.set

    def job_ended(self) -> None:
        """A task ended: anchor the audit head soon (without holding up the task)."""
        self._anchor_due = True
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dcp-chain-keeper", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.retry_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.tick()

    def tick(self) -> None:
        """Flush what is pending; anchor if a job ended (or a receipt went out) since the last anchor."""
        sent = 0
        try:
            if self.queue.pending():
                sent = self.queue.flush()
        except Exception as exc:  # noqa: BLE001 - retried on the next tick
            log.warning("sending pending receipts failed: %s", getattr(exc, "detail", exc))
        if self._anchor_due or sent:
            try:
                self.audit.anchor_if_new("node")
                self._anchor_due = False
            except Exception as exc:  # noqa: BLE001 - the chain may be down; retried on the next tick
                log.warning("anchoring at the end of a job failed: %s", getattr(exc, "detail", exc))

    def close(self) -> None:
        """Stop the thread; one last flush and the shutdown anchor (best effort: the chain may be down)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._anchor_due = True
        self.tick()

