"""The one usage receipt and the one sealing of outputs, for every engine's task.

* :func:`seal_for` seals an output to its receiver's SM2 key from the Registry (``NotAuthorized`` when
  the receiver is not an active member); the associated data is ``"{job_id}/{name}"``.
* :func:`record_receipt` records this node's usage of one dataset on chain with the node's own
  measured run (start floored, finish rounded up to whole seconds); the chain accepts it within
  ``Receipts.TIME_TOLERANCE`` of the recording block (#18.1: no clamp to the latest block, whose
  timestamp is stale on a chain that makes blocks on demand). With the node's receipt queue wired
  (``chain.receipts``, :mod:`nodes.services.receipt_queue`) the receipt is kept durably first and a
  chain that does not answer leaves it pending (None is returned) instead of failing the task.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from nodes.errors import NotAuthorized
from nodes.services.chain import NodeChain, dataset_chain_id


def receiver_key(chain: NodeChain, receiver: str) -> bytes:
    """``receiver``'s SM2 public key from the Registry (``NotAuthorized`` unless an active member)."""
    key = chain.member_sm2_key(receiver)
    if key is None:
        raise NotAuthorized(f"receiver {receiver!r} is not an active member on chain")
    return key


def seal_for(chain: NodeChain, receiver: str, job_id: str, name: str, data: bytes, key: bytes | None = None) -> bytes:
    """``data`` sealed to ``receiver``'s SM2 key (``key`` if the caller looked it up already; the
    envelope, never plaintext)."""
    from protocols.crypto.envelope import seal

    return seal(key or receiver_key(chain, receiver), data, f"{job_id}/{name}".encode())


def record_receipt(
    chain: NodeChain, member: str, job_id: str, dataset: str, rows: int, result_hash: bytes,
    started_at: datetime | float | None,
) -> str | None:
    """Record ``member``'s usage of ``dataset`` in job ``job_id`` on chain; the transaction hash, or None
    while the receipt waits in the node's queue for the chain to answer."""
    from contracts.models import UsageReceipt
    from protocols.crypto.approvals import job_key

    finished = -int(-time.time() // 1)
    if isinstance(started_at, datetime):
        started_at = started_at.replace(tzinfo=started_at.tzinfo or timezone.utc).timestamp()
    started = min(int(started_at or finished), finished)
    receipt = UsageReceipt(job_id=job_key(job_id), dataset_id=dataset_chain_id(member, dataset),
                           row_count=rows, result_hash=result_hash, started_at=started, finished_at=finished)
    queue = getattr(chain, "receipts", None)
    if queue is not None:
        return queue.submit(job_id, dataset, receipt)
    return chain.record_usage(receipt)
