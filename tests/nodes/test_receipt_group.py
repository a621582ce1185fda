"""A node's receipts recorded at the same time share one ``recordUsageBatch`` transaction (group
commit, issue #19 item 1), on a real anvil chain: every receipt lands with its own event, a lone one
goes alone, and a refused receipt in a group gets its own error without taking the others down."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from nodes.errors import ChainRefused, ChainUnavailable
from nodes.services.chain import NodeChain, ReceiptGroup


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _authorized(chain, job: str, max_runs: int = 50):  # noqa: ANN001, ANN202
    from contracts.models import Terms

    did = chain.register_dataset("tax", "tax_2024")
    terms = Terms(job_id=h(job), manifest_hash=h(f"m-{job}"), dataset_ids=(did,),
                  requester=chain.members["bank"][1].public.chain_address, expiry=chain.now() + 3600,
                  max_runs=max_runs)
    chain.approve_as("tax", terms)
    chain.authorize(terms)
    return terms, did


def _receipt(job_id: bytes, did: bytes, i: int):  # noqa: ANN202
    from contracts.models import UsageReceipt

    now = int(time.time())
    return UsageReceipt(job_id=job_id, dataset_id=did, row_count=100 + i, result_hash=h(f"r{i}"),
                        started_at=now - 2, finished_at=now)


def _node_chain(chain) -> NodeChain:  # noqa: ANN001
    return NodeChain(chain.client_of("tax"), chain.members["tax"][1].public.chain_address, "tax")


def _record_together(node: NodeChain, receipts: list) -> list:  # noqa: ANN001
    """Record ``receipts`` from one thread each while the node's writer is held, so that they all
    queue behind the first; then let go. Each thread's tx hash or exception, in order."""
    out: list = [None] * len(receipts)

    def worker(i: int) -> None:
        try:
            out[i] = node.record_usage(receipts[i])
        except Exception as exc:  # noqa: BLE001 - compared by the test
            out[i] = exc

    with node._write_lock:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(receipts))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(node._receipts._pending) < len(receipts) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(60)
    return out


def test_receipts_recorded_together_share_one_transaction(chain, no_leaked_processes) -> None:
    terms, did = _authorized(chain, "group-commit")
    node = _node_chain(chain)
    lone = node.record_usage(_receipt(terms.job_id, did, 0))  # nothing under way: it goes alone, at once
    assert node._receipts.transactions == 1
    txs = _record_together(node, [_receipt(terms.job_id, did, i) for i in range(1, 13)])
    assert all(isinstance(t, str) and t.startswith("0x") for t in txs), txs
    # the first went alone (it was already sending when the others queued); the other 11 in one batch
    assert len(set(txs)) == 2 and node._receipts.transactions == 3 and lone not in txs
    assert chain.admin.runs(terms.job_id, did) == 13
    receipt = chain.w3.eth.get_transaction_receipt(txs[-1])
    events = chain.admin.receipts.events.UsageRecorded().process_receipt(receipt)
    assert sorted(e.args.rowCount for e in events) == list(range(102, 113))  # one event per receipt


def test_a_refused_receipt_in_a_group_fails_alone(chain, no_leaked_processes) -> None:
    terms, did = _authorized(chain, "group-refusal")
    node = _node_chain(chain)
    receipts = [_receipt(terms.job_id, did, i) for i in range(6)]
    receipts[3] = _receipt(h("never-authorized"), did, 3)  # no live authorization: the contract refuses
    out = _record_together(node, receipts)
    assert isinstance(out[3], ChainRefused) and "recording the usage receipt" in str(out[3])
    ok = [o for i, o in enumerate(out) if i != 3]
    assert all(isinstance(t, str) and t.startswith("0x") for t in ok), out
    assert chain.admin.runs(terms.job_id, did) == 5  # the five good ones landed, the batch did not
    assert chain.admin.runs(h("never-authorized"), did) == 0


def test_an_unreachable_chain_is_every_callers_error() -> None:
    """No chain at all: each waiting caller hears ChainUnavailable (none waits for ever)."""
    calls: list[int] = []
    gate = threading.Event()

    def one(r):  # noqa: ANN001, ANN202
        calls.append(1)
        gate.wait(5)
        raise ChainUnavailable("recording the usage receipt: the chain did not answer (ConnectError)")

    def batch(rs):  # noqa: ANN001, ANN202
        calls.append(len(rs))
        raise ChainUnavailable("recording the usage receipts: the chain did not answer (ConnectError)")

    group = ReceiptGroup(one, batch)
    out: list = [None] * 5

    def worker(i: int) -> None:
        try:
            group.record(i)
        except ChainUnavailable as exc:
            out[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(group._pending) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(10)
    assert all(isinstance(o, ChainUnavailable) for o in out), out
    assert calls == [1, 4]  # the lone first, then the four that queued behind it, once, not one by one
    with pytest.raises(ChainUnavailable):
        group.record("after")
