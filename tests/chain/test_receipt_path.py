"""The lean receipt path on a real anvil, signing with the node's own key: transactions signed by
contracts.txsign recover to the sender, refusals still come back as named errors, the locally
counted nonce resyncs after someone else used the account, and several threads share one client."""

from __future__ import annotations

import threading

import pytest
from eth_account import Account

from contracts import errors as E
from contracts.backends import ChainBackend
from contracts.client import ChainClient
from contracts.txsign import TxKey, sign_hash, sign_legacy_tx

from .conftest import build_federation, h

MNEMONIC = "test test test test test test test test test test test junk"


def _anvil_key(index: int):  # noqa: ANN202 - an eth-account LocalAccount
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def test_txsign_matches_eth_account() -> None:
    for i in range(12):
        acct = Account.create()
        raw = sign_legacy_tx(TxKey.from_account(acct), nonce=i, gas_price=i * 10**9, gas=21_000 + i,
                             to="0x" + f"{i:02x}" * 20, data=bytes(range(i * 7 % 256)), chain_id=31337 + i)
        assert Account.recover_transaction(raw) == acct.address
    # low s (EIP-2) and the same signature for the same hash (deterministic nonce)
    acct = Account.create()
    key = TxKey.from_account(acct)
    recid, r, s = sign_hash(key.secret, h("m"))
    assert s <= 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2
    assert (recid, r, s) == sign_hash(key.secret, h("m")) and recid in (0, 1)


def test_signed_receipts_nonce_resync_and_named_refusals(anvil_backend: ChainBackend) -> None:
    fed = build_federation(anvil_backend)
    w3 = anvil_backend.w3
    tax = fed.departments["tax"]
    key = _anvil_key(anvil_backend.accounts.index(tax))
    assert key.address == tax
    node = ChainClient(w3, fed.client.deployment, signers={tax: key})
    t = fed.authorized("tax.vat", "power.usage", max_runs=100)
    tx = node.record_usage(tax, fed.receipt(t, "tax.vat", started_ago=5))
    assert w3.eth.get_transaction(tx.tx_hash)["from"] == tax
    # someone else spends the account's next nonce: the cached nonce is stale, the client resyncs
    fed.client.anchor_audit_head(tax, h("head"), 1)
    node.record_usage(tax, fed.receipt(t, "tax.vat"))
    assert node.runs(t.job_id, fed.datasets["tax.vat"]) == 2
    # a refusal is mined as a reverted transaction and replayed for its named error
    with pytest.raises(E.NotDatasetOwner) as exc:
        node.record_usage(tax, fed.receipt(t, "power.usage"))
    assert exc.value.error_args == {"datasetId": fed.datasets["power.usage"], "account": tax}
    with pytest.raises(E.BatchItemRefused) as batch_exc:
        node.record_usage_batch(tax, [fed.receipt(t, "tax.vat"), fed.receipt(t, "tax.vat", finished_at=0)])
    assert batch_exc.value.error_args["index"] == 1 and isinstance(batch_exc.value.item_error, E.InvalidTimes)
    assert node.runs(t.job_id, fed.datasets["tax.vat"]) == 2
    # four threads share the client (one locally counted nonce sequence)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                node.record_usage(tax, fed.receipt(t, "tax.vat"))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    node.record_usage_batch(tax, [fed.receipt(t, "tax.vat")] * 40)
    assert node.runs(t.job_id, fed.datasets["tax.vat"]) == 2 + 20 + 40
    runs = [e.args["run"] for e in node.events("Receipts", "UsageRecorded")]
    assert runs == list(range(1, 63))


def test_receipts_do_not_inflate_the_gas_price(anvil_backend: ChainBackend) -> None:
    """Each receipt pays the chain's suggested price, not a multiple of it: a legacy transaction's price
    above the base fee is all tip and the chain suggests recent tips, so paying twice the suggestion
    doubled the suggestion with every receipt (a 20-job load ran the accounts out of 100 ETH)."""
    fed = build_federation(anvil_backend)
    w3 = anvil_backend.w3
    tax = fed.departments["tax"]
    key = _anvil_key(anvil_backend.accounts.index(tax))
    t = fed.authorized("tax.vat", max_runs=100)
    start = w3.eth.gas_price
    for _ in range(12):  # a fresh client each time (a node restarted, a new job's client): a fresh price
        ChainClient(w3, fed.client.deployment, signers={tax: key}).record_usage(tax, fed.receipt(t, "tax.vat"))
    assert w3.eth.gas_price <= 2 * start, (start, w3.eth.gas_price)
    assert fed.client.runs(t.job_id, fed.datasets["tax.vat"]) == 12
