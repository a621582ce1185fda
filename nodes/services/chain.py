"""The node's own view of the chain: its account, its approvals, its receipts, its audit anchors.

* :class:`NodeChain` wraps a ``contracts.client.ChainClient`` that signs as the node's keystore
  account. Writes are serialized (one nonce sequence per account) and chain failures become the
  node's named errors: :class:`ChainRefused` for a revert (the contract's error name in the detail),
  :class:`ChainUnavailable` when the chain does not answer.
* :class:`ChainAnchor` is the chain-backed :class:`~nodes.services.audit.AuditAnchor`.
* :class:`ChainApprovalRecorder` prepares and records a department's approval. Before the node signs
  anything it checks, without trusting the coordinator, that the job manifest hashes to the terms'
  manifest hash, that the manifest says exactly what the department approved about its own data, and
  that the terms name this job, its expiry and runs, the registered requester and this node's
  datasets. The node then signs (SM2 + BLS) the chain's approval digest of those terms
  (:mod:`protocols.crypto.approvals`). In the federation's ``per_owner`` mode it also approves the
  terms on chain from its own account; in ``bls_aggregate`` mode it sends nothing: the coordinator
  aggregates the owners' BLS signatures into one ``authorizeWithBls`` transaction.

The identifiers are shared with the coordinator through :mod:`protocols.manifest`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from nodes.errors import (
    ApprovalTermsMismatch,
    ChainRefused,
    ChainUnavailable,
    ConfigError,
    CoordinatorUnavailable,
    KeysUnavailable,
)
from protocols.manifest import AUTHORIZATION_MODES, as_manifest, dataset_chain_id, manifest_sm3, slice_matches

T = TypeVar("T")

__all__ = [
    "ChainAnchor",
    "ChainApprovalRecorder",
    "NodeChain",
    "PreparedApproval",
    "dataset_chain_id",
    "load_node_keys",
    "tx_hex",
]


def tx_hex(tx: Any) -> str:
    """``0x``-hex of a ``TxResult``'s hash."""
    return "0x" + bytes(tx.tx_hash).hex()


class NodeChain:
    """The chain as this node sees it, writing as ``account`` (the node's keystore chain key)."""

    def __init__(self, client: Any, account: str, member: str) -> None:
        self.client = client
        self.account = account
        self.member = member
        self._write_lock = threading.Lock()
        self.receipts: Any = None
        """The node's durable receipt queue (``nodes.services.receipt_queue.ReceiptQueue``), once wired."""
        self._receipts = ReceiptGroup(self._record_one, self._record_batch)

    @classmethod
    def connect(cls, rpc_url: str, registry: str, keys: Any, member: str, timeout: float = 60.0) -> NodeChain:
        """Attach to the deployment whose Registry is ``registry``, signing with ``keys.chain_private_key``."""
        from eth_account import Account
        from web3 import HTTPProvider, Web3

        from contracts.client import ChainClient
        from contracts.errors import ChainError

        acct = Account.from_key(keys.chain_private_key)
        w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        try:
            client = ChainClient.connect(w3, registry, signers={acct.address: acct})
        except ChainError as exc:
            raise ConfigError(f"no dcp deployment at Registry {registry} on {rpc_url}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - connection refused, bad URL …
            raise ChainUnavailable(f"the chain at {rpc_url} did not answer: {type(exc).__name__}") from None
        return cls(client, acct.address, member)

    # ------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from contracts.errors import ChainError, ContractRevert

        try:
            return fn()
        except ContractRevert as exc:
            name = exc.error_name or type(exc).__name__
            raise ChainRefused(f"{what}: the chain refused with {name}: {exc}") from None
        except ChainError as exc:
            raise ChainRefused(f"{what}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - transport errors, timeouts
            raise ChainUnavailable(f"{what}: the chain did not answer ({type(exc).__name__})") from None

    def _write(self, what: str, fn: Callable[[], Any]) -> str:
        with self._write_lock:
            return tx_hex(self._call(what, fn))

    # ------------------------------------------------------------ reads

    def chain_time(self) -> int:
        """Timestamp of the latest block (the clock every expiry is judged by)."""
        return self._call("reading the latest block", lambda: int(self.client.w3.eth.get_block("latest")["timestamp"]))

    def authorization(self, job_key: bytes) -> Any:
        """``contracts.models.Authorization`` of ``job_key`` or None."""
        return self._call("reading the authorization", lambda: self.client.authorization(job_key))

    def is_live(self, job_key: bytes) -> bool:
        return self._call("reading the authorization", lambda: self.client.is_live(job_key))

    def runs(self, job_key: bytes, dataset_id: bytes) -> int:
        return self._call("reading the receipts", lambda: self.client.runs(job_key, dataset_id))

    def approval_digest(self, terms: Any) -> bytes:
        """The approval digest of ``terms`` on this deployment (computed locally, equal to the contract's)."""
        return bytes(self.client.approval_digest(terms))

    def approved_by_me(self, digest: bytes, dataset_id: bytes) -> bool:
        """Whether this node's account approved ``dataset_id`` under approval digest ``digest``."""
        fn = self.client.authorizations.functions.approvalOf(digest, dataset_id)
        who = self._call("reading approvals", fn.call)
        return str(who).lower() == self.account.lower()

    def member_sm2_key(self, name: str) -> bytes | None:
        """The SM2 public key the Registry holds for the active member called ``name``."""
        for m in self._call("reading the registry", lambda: self.client.members(active_only=True)):
            if m.name == name:
                return bytes(m.sm2_public_key)
        return None

    def member_name(self, account: str) -> str | None:
        """The name of the active member ``account`` (None if not an active member)."""
        m = self._call("reading the registry", lambda: self.client.member(account))
        return m.name if m is not None and m.active else None

    def dataset(self, dataset_id: bytes) -> Any:
        """The Registry's ``contracts.models.Dataset`` record of ``dataset_id``, or None."""
        return self._call("reading the registry", lambda: self.client.dataset(dataset_id))

    def latest_anchor(self) -> tuple[int, str] | None:
        """This node's latest anchored ``(entry_count, head_hash hex)``."""
        a = self._call("reading the audit anchor", lambda: self.client.latest_anchor(self.account))
        if a is None:
            return None
        return int(a.entry_count), bytes(a.head_hash).hex()

    # ------------------------------------------------------------ writes

    def approve(self, terms: Any, dataset_ids: Iterable[bytes]) -> str:
        ids = list(dataset_ids)
        return self._write("approving on chain", lambda: self.client.approve(self.account, terms, ids))

    def register_dataset(self, dataset_id: bytes, schema_hash: bytes, grade: int) -> str:
        return self._write("registering the dataset on chain",
                           lambda: self.client.register_dataset(self.account, dataset_id, schema_hash, grade))

    def record_usage(self, receipt: Any) -> str:
        """Record one usage receipt; the hash of the transaction that holds it. Receipts recorded
        at the same time (several tasks ending, a step over several datasets) share one
        ``recordUsageBatch`` transaction (see :class:`ReceiptGroup`)."""
        return self._receipts.record(receipt)

    def _record_one(self, receipt: Any) -> str:
        return self._write("recording the usage receipt", lambda: self.client.record_usage(self.account, receipt))

    def _record_batch(self, receipts: list[Any]) -> str:
        return self._write("recording the usage receipts",
                           lambda: self.client.record_usage_batch(self.account, receipts))

    def anchor(self, head_hash: bytes, entry_count: int) -> str:
        return self._write(
            "anchoring the audit head", lambda: self.client.anchor_audit_head(self.account, head_hash, entry_count)
        )


class ReceiptGroup:
    """Group commit of usage receipts (issue #19 item 1): a receipt that arrives while another
    transaction of receipts is on its way waits for it and then goes with every other one that
    arrived meanwhile, in one ``recordUsageBatch`` (the contract checks each receipt against its
    live authorization and emits one event per receipt). A lone receipt goes alone, at once, so a
    quiet node pays nothing; a busy one pays one block per batch instead of one per receipt.

    A batch is all or nothing on chain: if it is refused, each of its receipts is sent again on its
    own, so one bad receipt gets its own error and takes no other receipt down with it.
    The caller that finds no transaction under way sends; it keeps sending the receipts that queued
    behind it until its own is done, and hands over to the oldest waiting caller after that."""

    def __init__(self, send_one: Callable[[Any], str], send_batch: Callable[[list[Any]], str],
                 max_batch: int = 100) -> None:
        from concurrent.futures import Future
        from concurrent.futures import TimeoutError as FutureTimeout

        self._future, self._timeout = Future, FutureTimeout
        self._send_one, self._send_batch, self.max_batch = send_one, send_batch, max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, Any]] = []
        self._sending = False
        self.transactions = 0  # sent so far (batches and single receipts), for tests and benches

    def record(self, receipt: Any) -> str:
        fut = self._future()
        with self._lock:
            self._pending.append((receipt, fut))
        while True:
            with self._lock:
                lead = not self._sending and bool(self._pending)
                if lead:
                    self._sending = True
            if lead:
                try:
                    while not fut.done():
                        with self._lock:
                            batch = self._pending[: self.max_batch]
                            del self._pending[: self.max_batch]
                        if not batch:
                            break
                        self._send(batch)
                finally:
                    with self._lock:
                        self._sending = False
            try:
                return fut.result(timeout=0.05)
            except self._timeout:
                continue

    def _send(self, batch: list[tuple[Any, Any]]) -> None:
        if len(batch) > 1:
            try:
                self.transactions += 1
                tx = self._send_batch([r for r, _ in batch])
            except ChainRefused:
                pass  # one of them is refused: each goes alone below
            except BaseException as exc:  # noqa: BLE001 - the chain is away: every caller hears it
                for _, f in batch:
                    f.set_exception(exc)
                return
            else:
                for _, f in batch:
                    f.set_result(tx)
                return
        for r, f in batch:
            try:
                self.transactions += 1
                f.set_result(self._send_one(r))
            except BaseException as exc:  # noqa: BLE001 - handed to the receipt's own caller
                f.set_exception(exc)


class ChainAnchor:
    """Audit heads anchored in the Receipts contract from the node's own account.

    The anchor stores ``(head hash, entry count)``; the node's entry count is the head's sequence
    number, which only grows (the contract refuses an anchor that does not advance)."""

    def __init__(self, chain: NodeChain) -> None:
        self.chain = chain

    def anchor(self, node: str, seq: int, head_hash: str) -> str:
        return self.chain.anchor(bytes.fromhex(head_hash), seq)

    def latest(self, node: str) -> tuple[int, str] | None:
        return self.chain.latest_anchor()


@dataclass(frozen=True)
class PreparedApproval:
    """Checked terms of a job, ready to be signed: the approval digest and this node's datasets in them."""

    terms: Any
    """``contracts.models.Terms``."""
    digest: bytes
    dataset_ids: list[bytes]
    mode: str = "per_owner"
    """How the federation turns approvals into an authorization (``protocols.manifest.AuthorizationMode``)."""

    @property
    def job_manifest_hash(self) -> str:
        return bytes(self.terms.manifest_hash).hex()

    @property
    def terms_json(self) -> str:
        return str(self.terms.model_dump_json())


class ChainApprovalRecorder:
    """Checks the coordinator's terms of a job (:meth:`prepare`), then records the signed approval
    (:meth:`record`): ``Authorizations.approve`` from the node's account in ``per_owner`` mode."""

    def __init__(
        self, chain: NodeChain, coordinator_url: str | None, timeout: float = 10.0, http: httpx.Client | None = None
    ) -> None:
        self.chain = chain
        self.member = chain.member
        self.coordinator_url = coordinator_url.rstrip("/") if coordinator_url else None
        self.timeout = timeout
        self.http = http

    def fetch(self, job_id: str) -> dict[str, Any]:
        """The coordinator's ``{"manifest", "manifest_hash", "terms", "authorization_mode"}`` of ``job_id``."""
        if self.coordinator_url is None:
            raise CoordinatorUnavailable("no coordinator_url is configured: cannot fetch the job's terms")
        url = f"{self.coordinator_url}/jobs/{job_id}/manifest"
        try:
            r = (self.http.get(url, timeout=self.timeout) if self.http is not None
                 else httpx.get(url, timeout=self.timeout))
        except httpx.HTTPError as exc:
            raise CoordinatorUnavailable(f"the coordinator did not answer: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise ApprovalTermsMismatch(f"the coordinator has no manifest for job {job_id!r} (HTTP {r.status_code})")
        try:
            body = r.json()
        except ValueError:
            raise ApprovalTermsMismatch("the coordinator's manifest answer is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("manifest"), dict) or "terms" not in body:
            raise ApprovalTermsMismatch("the coordinator's answer lacks the manifest or the terms")
        return body

    def check(self, node_manifest: dict[str, Any], served: dict[str, Any]) -> tuple[Any, list[bytes]]:
        """The terms to approve and this node's dataset ids in them (ApprovalTermsMismatch otherwise)."""
        from pydantic import ValidationError

        from contracts.errors import ChainError
        from contracts.models import Terms
        from protocols.crypto.approvals import job_key

        manifest = served["manifest"]
        try:
            terms = Terms.model_validate(served["terms"])
        except (ValidationError, ChainError) as exc:
            raise ApprovalTermsMismatch(f"the coordinator's terms are malformed: {type(exc).__name__}") from None
        job_id = node_manifest["job_id"]
        if manifest_sm3(manifest) != terms.manifest_hash:
            raise ApprovalTermsMismatch("the job manifest does not hash (SM3) to the terms' manifest hash")
        bound = node_manifest.get("job_manifest_hash")
        if bound and bytes.fromhex(bound.removeprefix("0x")) != terms.manifest_hash:
            raise ApprovalTermsMismatch("the terms carry another job manifest than the one this node signed")
        if not slice_matches(manifest, self.member, node_manifest):
            raise ApprovalTermsMismatch("the job manifest says something else about this node's data than it approved")
        if terms.job_id != job_key(job_id):
            raise ApprovalTermsMismatch("the terms are for another job")
        m = as_manifest(manifest)  # slice_matches said it is a well-formed manifest
        if terms.expiry != m.expiry_unix or terms.max_runs != m.max_runs:
            raise ApprovalTermsMismatch("the terms' expiry or maximum runs differ from the manifest")
        if self.chain.member_name(terms.requester) != m.requester:
            raise ApprovalTermsMismatch("the terms' requester account is not the member the manifest names")
        mine = [dataset_chain_id(self.member, i["dataset"]) for i in node_manifest["inputs"]]
        missing = [d.hex()[:16] for d in mine if d not in terms.dataset_ids]
        if missing:
            raise ApprovalTermsMismatch(f"the terms do not name this node's dataset(s) {', '.join(missing)}")
        return terms, mine

    def prepare(self, job_id: str, node_manifest: dict[str, Any]) -> PreparedApproval:
        """Fetch and check the coordinator's terms of ``job_id``; what the node is about to sign."""
        served = self.fetch(job_id)
        mode = served.get("authorization_mode", "per_owner")
        if mode not in AUTHORIZATION_MODES:
            raise ApprovalTermsMismatch(f"the coordinator asks for an unknown authorization mode {mode!r}")
        terms, mine = self.check(node_manifest, served)
        return PreparedApproval(terms=terms, digest=self.chain.approval_digest(terms), dataset_ids=mine, mode=mode)

    def record(self, prepared: PreparedApproval, approval: Any) -> str | None:
        """Put the approval on chain (``per_owner``): the transaction hash. ``bls_aggregate``: None —
        the signed approval itself is the evidence; the coordinator submits the aggregate."""
        if prepared.mode == "bls_aggregate":
            return None
        return self.chain.approve(prepared.terms, prepared.dataset_ids)


def load_node_keys(settings: Any) -> Any:
    """The node's MemberKeys from its keystore (KeysUnavailable when missing or not openable)."""
    from protocols.crypto.errors import CryptoError
    from protocols.crypto.keystore import load_keystore

    passphrase = settings.passphrase()
    if settings.keystore_path is None or passphrase is None:
        raise KeysUnavailable("no keystore configured (keystore_path and a passphrase)")
    try:
        return load_keystore(settings.keystore_path, passphrase)
    except (CryptoError, OSError) as exc:
        raise KeysUnavailable(f"cannot open the node keystore: {type(exc).__name__}") from None


def chain_from_recorder(recorder: Any) -> tuple[NodeChain, str | None] | None:
    """The chain and coordinator URL a recorder carries (any object with a chain client ``chain``, an
    ``account`` and a ``coordinator_url``), so a node built around such a recorder wires its own chain
    services (anchoring, tasks, approvals) to the same chain and account."""
    client = getattr(recorder, "chain", None)
    account = getattr(recorder, "account", None)
    member = getattr(recorder, "member", None)
    if client is None or not isinstance(account, str) or not hasattr(client, "record_usage"):
        return None
    return NodeChain(client, account, str(member or "")), getattr(recorder, "coordinator_url", None)
