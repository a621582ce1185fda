"""A typed web3.py client of the Registry, Authorizations and Receipts contracts.

* :meth:`ChainClient.deploy` deploys the three contracts and binds them in the Registry;
  :meth:`ChainClient.connect` finds them again from the Registry's address alone.
* Every write estimates gas first, so a revert surfaces before anything is sent, as the
  Python class named like the Solidity custom error (:mod:`contracts.errors`) — except usage
  receipts, the one write a node makes per run: :meth:`ChainClient.record_usage` and
  :meth:`ChainClient.record_usage_batch` take a lean path (:class:`_ReceiptSender`): chain id, gas
  price and the sender's nonce cached (the nonce kept locally under a lock and resynced on any
  error), gas from the contract's known cost, calldata encoded with eth-abi, the transaction
  signed by :mod:`contracts.txsign`, and the receipt polled with a short backoff. A refused
  receipt still raises its named error: the mined-but-reverted transaction is replayed with
  ``eth_call`` on the state before its block to recover the custom error.
* Reads return pydantic models (:mod:`contracts.models`); events are fetched in block-range
  pages (:meth:`ChainClient.events`).
* Senders are addresses. Accounts the node manages (anvil, eth-tester, a Besu node with
  unlocked accounts) need nothing more; for others pass ``signers`` (eth-account keys) and the
  client signs locally.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from contracts.build import all_artifacts, load_artifact
from contracts.errors import (
    REVERT_CLASSES,
    BatchItemRefused,
    ChainError,
    ContractRevert,
    DeploymentError,
    InvalidInput,
    TransactionFailed,
    UnknownRevert,
)
from contracts.models import (
    ZERO_ADDRESS,
    AuditAnchor,
    Authorization,
    Dataset,
    Deployment,
    EventRecord,
    Member,
    MemberAdmission,
    ProposalOutcome,
    Role,
    Terms,
    TxResult,
    UsageReceipt,
)

#: keccak256("dcp.Authorization.v1"), the domain tag of approval digests.
APPROVAL_TYPEHASH = keccak(text="dcp.Authorization.v1")
DEFAULT_PAGE_SIZE = 2_000
GAS_MARGIN = 1.25
#: Gas limit of transactions on the in-process eth-tester chain (below EIP-7825's 2**24 cap).
IN_PROCESS_GAS = 15_000_000
#: Gas limit of a receipt transaction: a fixed part and one part per receipt. Measured (anvil,
#: prague): 79-96k for one receipt, 29-46k per further receipt of a batch (more for a first run of
#: a (job, dataset), and for authorizations naming many datasets); the limits leave 2x room, and
#: a transaction that still runs out of gas is re-sent once with an estimate.
RECEIPT_BASE_GAS = 120_000
RECEIPT_ITEM_GAS = 100_000
#: The most receipts one batch transaction may carry (keeps it under EIP-7825's 2**24 gas cap).
MAX_BATCH = 150
_USAGE_TUPLE = "(bytes32,bytes32,uint64,bytes32,uint64,uint64)"
_RECORD_USAGE = keccak(text="recordUsage(bytes32,bytes32,uint64,bytes32,uint64,uint64)")[:4]
_RECORD_USAGE_BATCH = keccak(text=f"recordUsageBatch({_USAGE_TUPLE}[])")[:4]


# --------------------------------------------------------------------------- revert decoding


@cache
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for artifact in all_artifacts().values():
        for item in artifact.abi:
            if item["type"] != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            table[selector] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


def decode_revert(data: bytes | str | None) -> ContractRevert:
    """Map revert data to the named :class:`ContractRevert` subclass with decoded arguments."""
    if isinstance(data, str):
        try:
            data = bytes.fromhex(data[2:] if data.startswith("0x") else data)
        except ValueError:
            return UnknownRevert(message=f"reverted: {data}")
    if not data or len(data) < 4:
        return UnknownRevert(message="reverted without data")
    entry = _error_table().get(data[:4])
    if entry is None:
        return UnknownRevert(message=f"reverted with unknown data 0x{data.hex()}")
    name, names, types = entry
    try:
        values = abi_decode(types, data[4:])
    except Exception:  # noqa: BLE001 - malformed revert payload
        return UnknownRevert(message=f"reverted with malformed {name} data 0x{data.hex()}")
    args = {n: (to_checksum_address(v) if t == "address" else v) for n, t, v in zip(names, types, values, strict=True)}
    if name == "BatchItemRefused":
        inner = decode_revert(args["reason"])
        exc = BatchItemRefused(args, message=f"BatchItemRefused: receipt {args['index']} of the batch was refused "
                                             f"with {inner}; nothing of the batch was recorded")
        exc.item_error = inner
        return exc
    return REVERT_CLASSES[name](args)


def _revert_data(exc: BaseException) -> bytes | str | None:
    """Revert data from a web3 (JSON-RPC) or eth-tester (in-process) failure."""
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, dict):
            data = data.get("data")
        if data:
            return data
    seen: BaseException | None = exc
    while seen is not None:  # eth-tester keeps the raw bytes (or their repr) on what it wrapped
        first = seen.args[0] if seen.args else None
        if isinstance(first, BaseException) and first.args:
            first = first.args[0]
        if isinstance(first, bytes | bytearray):
            return bytes(first)
        if isinstance(first, str):
            text = first.removeprefix("execution reverted: ")
            if text.startswith(("b'", 'b"')):
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = None
                if isinstance(value, bytes):
                    return value
        seen = seen.__context__ or seen.__cause__
    return None


def _is_revert(exc: BaseException) -> bool:
    if isinstance(exc, ContractLogicError):
        return True
    return type(exc).__name__ == "TransactionFailed" and type(exc).__module__.startswith("eth_tester")


# --------------------------------------------------------------------------- helpers


def approval_digest(terms: Terms, chain_id: int, authorizations_address: str) -> bytes:
    """The digest approvers sign for ``terms`` (same as ``Authorizations.approvalDigest``).

    ``keccak256(abi.encode(TYPEHASH, chainid, authorizations, jobId, manifestHash,
    keccak256(abi.encodePacked(datasetIds)), requester, expiry, maxRuns))``; it is also the
    32-byte message of the BLS aggregate.
    """
    datasets_hash = keccak(b"".join(terms.dataset_ids))
    return keccak(
        abi_encode(
            ["bytes32", "uint256", "address", "bytes32", "bytes32", "bytes32", "address", "uint64", "uint32"],
            [
                APPROVAL_TYPEHASH,
                chain_id,
                to_checksum_address(authorizations_address),
                terms.job_id,
                terms.manifest_hash,
                datasets_hash,
                terms.requester,
                terms.expiry,
                terms.max_runs,
            ],
        )
    )


def _bls_g1(pubkey: bytes) -> bytes:
    from protocols.crypto.bls import EIP2537_G1_LENGTH, to_eip2537_g1
    from protocols.crypto.errors import CryptoError

    if len(pubkey) == EIP2537_G1_LENGTH:
        return pubkey
    try:
        return to_eip2537_g1(pubkey)
    except CryptoError as exc:
        raise InvalidInput(f"BLS public key: {exc}") from exc


def _bls_g2(signature: bytes) -> bytes:
    from protocols.crypto.bls import EIP2537_G2_LENGTH, to_eip2537_g2
    from protocols.crypto.errors import CryptoError

    if len(signature) == EIP2537_G2_LENGTH:
        return signature
    try:
        return to_eip2537_g2(signature)
    except CryptoError as exc:
        raise InvalidInput(f"BLS signature: {exc}") from exc


def check_proof_of_possession(admission: MemberAdmission) -> None:
    """Off-chain rogue-key defence: the BLS key must come with a valid proof of possession.

    Raises :class:`InvalidInput` otherwise (the contract re-checks it on chain).
    """
    if not admission.bls_public_key and not admission.bls_pop:
        return
    from protocols.crypto.bls import pop_verify
    from protocols.crypto.errors import CryptoError

    try:
        ok = pop_verify(admission.bls_public_key, admission.bls_pop)
    except CryptoError as exc:
        raise InvalidInput(f"BLS key of {admission.account}: {exc}") from exc
    if not ok:
        raise InvalidInput(f"BLS key of {admission.account} has no valid proof of possession")


# --------------------------------------------------------------------------- client


class ChainClient:
    """Typed access to one deployment of the contracts."""

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        signers: Mapping[str, Any] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        receipt_timeout: float = 120.0,
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.page_size = page_size
        self.receipt_timeout = receipt_timeout
        self._signers = {to_checksum_address(a): k for a, k in (signers or {}).items()}
        self.registry = w3.eth.contract(address=deployment.registry, abi=load_artifact("Registry").abi)
        self.authorizations = w3.eth.contract(
            address=deployment.authorizations, abi=load_artifact("Authorizations").abi
        )
        self.receipts = w3.eth.contract(address=deployment.receipts, abi=load_artifact("Receipts").abi)
        in_process = type(w3.provider).__name__ == "EthereumTesterProvider"
        # the lean receipt path signs with the raw key of eth-account accounts (or lets the node sign)
        lean = not in_process and all(hasattr(k, "key") for k in self._signers.values())
        self._receipt_sender = _ReceiptSender(w3, self._signers, receipt_timeout) if lean else None

    # ------------------------------------------------------------------ deployment

    @classmethod
    def deploy(
        cls,
        w3: Web3,
        deployer: str,
        governors: Sequence[str],
        threshold: int,
        signers: Mapping[str, Any] | None = None,
    ) -> ChainClient:
        """Deploy Registry(governors, threshold), Authorizations(registry), Receipts(registry,
        authorizations), and bind the latter two in the Registry."""
        helper = _Sender(w3, signers, 120.0)
        start_block = w3.eth.block_number
        registry, _ = helper.deploy("Registry", deployer, list(governors), threshold)
        auths, _ = helper.deploy("Authorizations", deployer, registry)
        receipts, _ = helper.deploy("Receipts", deployer, registry, auths)
        reg = w3.eth.contract(address=registry, abi=load_artifact("Registry").abi)
        helper.send(reg.functions.bind(auths, receipts), deployer)
        deployment = Deployment(
            chain_id=w3.eth.chain_id,
            registry=registry,
            authorizations=auths,
            receipts=receipts,
            block_number=start_block + 1,
        )
        return cls(w3, deployment, signers=signers)

    @classmethod
    def connect(cls, w3: Web3, registry: str, signers: Mapping[str, Any] | None = None) -> ChainClient:
        """Attach to the deployment whose Registry lives at ``registry`` (read from the chain)."""
        registry = to_checksum_address(registry)
        if not w3.eth.get_code(registry):
            raise DeploymentError(f"no contract at {registry}")
        reg = w3.eth.contract(address=registry, abi=load_artifact("Registry").abi)
        try:
            auths = reg.functions.authorizations().call()
            receipts = reg.functions.receipts().call()
        except Exception as exc:  # noqa: BLE001 - not a Registry at all
            raise DeploymentError(f"{registry} is not a dcp Registry: {exc}") from exc
        if auths == ZERO_ADDRESS:
            raise DeploymentError(f"Registry {registry} has no bound Authorizations/Receipts contracts")
        return cls(
            w3,
            Deployment(chain_id=w3.eth.chain_id, registry=registry, authorizations=auths, receipts=receipts),
            signers=signers,
        )

    def _send(self, fn: Any, sender: str) -> tuple[TxResult, Any]:
        return _Sender(self.w3, self._signers, self.receipt_timeout).send(fn, sender)

    # ------------------------------------------------------------------ governance

    def _outcome(self, receipt: Any, tx: TxResult) -> ProposalOutcome:
        approved = self.registry.events.ProposalApproved().process_receipt(receipt, errors=DISCARD)
        executed = self.registry.events.ProposalExecuted().process_receipt(receipt, errors=DISCARD)
        last = approved[-1]["args"]
        return ProposalOutcome(
            proposal_id=last["proposalId"], approvals=last["approvals"], executed=bool(executed), tx=tx
        )

    def propose_add_member(self, governor: str, admission: MemberAdmission) -> ProposalOutcome:
        """Propose admitting a member (PoP checked off chain first, then on chain)."""
        check_proof_of_possession(admission)
        payload = (
            admission.account,
            int(admission.role),
            admission.name,
            admission.sm2_public_key,
            _bls_g1(admission.bls_public_key) if admission.bls_public_key else b"",
            admission.bls_public_key if len(admission.bls_public_key) == 48 else b"",
            _bls_g2(admission.bls_pop) if admission.bls_pop else b"",
            admission.enode,
        )
        tx, receipt = self._send(self.registry.functions.proposeAddMember(payload), governor)
        return self._outcome(receipt, tx)

    def propose_remove_member(self, governor: str, account: str) -> ProposalOutcome:
        """Propose removing a member."""
        tx, receipt = self._send(self.registry.functions.proposeRemoveMember(account), governor)
        return self._outcome(receipt, tx)

    def propose_add_governor(self, governor: str, account: str) -> ProposalOutcome:
        """Propose adding a governor."""
        tx, receipt = self._send(self.registry.functions.proposeAddGovernor(account), governor)
        return self._outcome(receipt, tx)

    def propose_remove_governor(self, governor: str, account: str) -> ProposalOutcome:
        """Propose removing a governor."""
        tx, receipt = self._send(self.registry.functions.proposeRemoveGovernor(account), governor)
        return self._outcome(receipt, tx)

    def propose_threshold(self, governor: str, threshold: int) -> ProposalOutcome:
        """Propose a new approval threshold."""
        tx, receipt = self._send(self.registry.functions.proposeThreshold(threshold), governor)
        return self._outcome(receipt, tx)

    def approve_proposal(self, governor: str, proposal_id: int) -> ProposalOutcome:
        """Approve a proposal; it executes when the threshold is reached."""
        tx, receipt = self._send(self.registry.functions.approve(proposal_id), governor)
        return self._outcome(receipt, tx)

    def admit(self, governors: Sequence[str], admission: MemberAdmission) -> ProposalOutcome:
        """Propose with the first governor and approve with the next until the threshold is met."""
        if not governors:
            raise InvalidInput("admit needs at least one governor")
        outcome = self.propose_add_member(governors[0], admission)
        for g in governors[1:]:
            if outcome.executed:
                break
            outcome = self.approve_proposal(g, outcome.proposal_id)
        return outcome

    def remove(self, governors: Sequence[str], account: str) -> ProposalOutcome:
        """Propose removing ``account`` and approve until the threshold is met."""
        outcome = self.propose_remove_member(governors[0], account)
        for g in governors[1:]:
            if outcome.executed:
                break
            outcome = self.approve_proposal(g, outcome.proposal_id)
        return outcome

    # ------------------------------------------------------------------ datasets

    def register_dataset(self, owner: str, dataset_id: bytes, schema_hash: bytes, grade: int) -> TxResult:
        """Register a dataset owned by ``owner`` (an active DEPARTMENT or BANK)."""
        _check32(dataset_id, "dataset_id")
        _check32(schema_hash, "schema_hash")
        if not 0 <= grade < 256:
            raise InvalidInput(f"grade must fit uint8, got {grade}")
        tx, _ = self._send(self.registry.functions.registerDataset(dataset_id, schema_hash, grade), owner)
        return tx

    # ------------------------------------------------------------------ authorizations

    def approval_digest(self, terms: Terms) -> bytes:
        """What approvers sign for ``terms`` (computed locally; equals the contract's view)."""
        return approval_digest(terms, self.deployment.chain_id, self.deployment.authorizations)

    def approve(self, owner: str, terms: Terms, dataset_ids: Iterable[bytes] | None = None) -> TxResult:
        """``owner`` approves ``terms`` for its datasets among them (all of its own by default)."""
        ids = list(dataset_ids) if dataset_ids is not None else [
            d for d in terms.dataset_ids if self.registry.functions.ownerOf(d).call() == to_checksum_address(owner)
        ]
        tx, _ = self._send(self.authorizations.functions.approve(terms.as_tuple(), ids), owner)
        return tx

    def authorize(self, coordinator: str, terms: Terms) -> TxResult:
        """Write the authorization; every dataset owner must have approved ``terms``."""
        tx, _ = self._send(self.authorizations.functions.authorize(terms.as_tuple()), coordinator)
        return tx

    def authorize_with_bls(self, coordinator: str, terms: Terms, aggregate_signature: bytes) -> TxResult:
        """Write the authorization with one aggregated BLS signature (96-byte compressed or
        256-byte EIP-2537) of every dataset owner over :meth:`approval_digest`."""
        sig = _bls_g2(aggregate_signature)
        tx, _ = self._send(self.authorizations.functions.authorizeWithBls(terms.as_tuple(), sig), coordinator)
        return tx

    def revoke(self, sender: str, job_id: bytes) -> TxResult:
        """Revoke the authorization of ``job_id`` (an approver or a governor)."""
        tx, _ = self._send(self.authorizations.functions.revoke(job_id), sender)
        return tx

    def authorization(self, job_id: bytes) -> Authorization | None:
        """The authorization of ``job_id``, or None."""
        raw = self.authorizations.functions.authorization(job_id).call()
        terms_raw, digest, coordinator, created_at, revoked_at, via_bls, approvers = raw
        if created_at == 0:
            return None
        return Authorization(
            terms=terms_from_abi(terms_raw),
            digest=digest,
            coordinator=coordinator,
            created_at=created_at,
            revoked_at=revoked_at,
            via_bls=via_bls,
            approvers=tuple(approvers),
        )

    def is_live(self, job_id: bytes) -> bool:
        """Whether the authorization exists, is unrevoked and unexpired at the latest block."""
        return bool(self.authorizations.functions.isLive(job_id).call())

    # ------------------------------------------------------------------ receipts

    def record_usage(self, node: str, receipt: UsageReceipt) -> TxResult:
        """Record one use of ``receipt.dataset_id`` by its owner ``node`` (the lean receipt path:
        a refusal raises the contract's named error once the reverted transaction is mined)."""
        if self._receipt_sender is None:
            fn = self.receipts.functions.recordUsage(*_usage_tuple(receipt))
            tx, _ = self._send(fn, node)
            return tx
        data = _RECORD_USAGE + abi_encode(
            ["bytes32", "bytes32", "uint64", "bytes32", "uint64", "uint64"], list(_usage_tuple(receipt))
        )
        return self._receipt_sender.transact(node, self.receipts.address, data, RECEIPT_BASE_GAS)

    def record_usage_batch(self, node: str, receipts: Sequence[UsageReceipt]) -> TxResult:
        """Record many uses by ``node`` in one transaction (``Receipts.recordUsageBatch``): each
        receipt is checked against its live authorization and gets its own ``UsageRecorded``
        event; one refused receipt refuses the whole batch with :class:`BatchItemRefused`
        (``error_args["index"]`` and ``item_error`` name it) and nothing is recorded.
        At most :data:`MAX_BATCH` receipts per call."""
        items = [_usage_tuple(r) for r in receipts]
        if len(items) > MAX_BATCH:
            raise InvalidInput(f"a batch holds at most {MAX_BATCH} receipts, got {len(items)}")
        if self._receipt_sender is None:
            tx, _ = self._send(self.receipts.functions.recordUsageBatch(items), node)
            return tx
        data = _RECORD_USAGE_BATCH + abi_encode([f"{_USAGE_TUPLE}[]"], [items])
        gas = RECEIPT_BASE_GAS + RECEIPT_ITEM_GAS * max(0, len(items) - 1)
        return self._receipt_sender.transact(node, self.receipts.address, data, gas)

    def anchor_audit_head(self, node: str, head_hash: bytes, entry_count: int) -> TxResult:
        """Anchor ``node``'s audit-log head."""
        _check32(head_hash, "head_hash")
        tx, _ = self._send(self.receipts.functions.anchorAuditHead(head_hash, entry_count), node)
        return tx

    def runs(self, job_id: bytes, dataset_id: bytes) -> int:
        """Receipts recorded so far for ``dataset_id`` under ``job_id``."""
        return int(self.receipts.functions.runs(job_id, dataset_id).call())

    def latest_anchor(self, node: str) -> AuditAnchor | None:
        """``node``'s latest anchor, or None."""
        head, count, seq, at = self.receipts.functions.latestAnchor(node).call()
        if seq == 0:
            return None
        return AuditAnchor(head_hash=head, entry_count=count, sequence=seq, anchored_at=at)

    # ------------------------------------------------------------------ registry reads

    def member(self, account: str) -> Member | None:
        """The member record of ``account`` (None if never admitted)."""
        role, active, admitted_at, name, sm2, bls, enode = self.registry.functions.member(account).call()
        if role == Role.NONE:
            return None
        return Member(
            account=account,
            role=Role(role),
            active=active,
            admitted_at=admitted_at,
            name=name,
            sm2_public_key=sm2,
            bls_public_key=bls,
            enode=enode,
        )

    def members(self, active_only: bool = False) -> list[Member]:
        """Every member ever admitted (or only the active ones)."""
        out = [m for a in self.registry.functions.members().call() if (m := self.member(a)) is not None]
        return [m for m in out if m.active] if active_only else out

    def dataset(self, dataset_id: bytes) -> Dataset | None:
        """The dataset record, or None if unregistered."""
        owner, schema_hash, grade, registered_at = self.registry.functions.dataset(dataset_id).call()
        if owner == ZERO_ADDRESS:
            return None
        return Dataset(
            dataset_id=dataset_id, owner=owner, schema_hash=schema_hash, grade=grade, registered_at=registered_at
        )

    def datasets(self) -> list[Dataset]:
        """Every registered dataset."""
        return [d for i in self.registry.functions.datasetIds().call() if (d := self.dataset(i)) is not None]

    def governors(self) -> list[str]:
        """Current governors."""
        return list(self.registry.functions.governors().call())

    def threshold(self) -> int:
        """Current governance threshold."""
        return int(self.registry.functions.threshold().call())

    # ------------------------------------------------------------------ events

    def events(
        self,
        contract: str,
        event: str | None = None,
        from_block: int | None = None,
        to_block: int | None = None,
    ) -> list[EventRecord]:
        """Events of ``contract`` ("Registry", "Authorizations", "Receipts"), optionally one kind,
        fetched in pages of ``page_size`` blocks."""
        target = {"Registry": self.registry, "Authorizations": self.authorizations, "Receipts": self.receipts}
        if contract not in target:
            raise InvalidInput(f"unknown contract {contract!r}")
        return fetch_events(
            self.w3,
            target[contract].address,
            contract,
            event=event,
            from_block=self.deployment.block_number if from_block is None else from_block,
            to_block=to_block,
            page_size=self.page_size,
        )


def deploy_contract(
    w3: Web3, name: str, sender: str, *args: Any, signers: Mapping[str, Any] | None = None
) -> str:
    """Deploy the committed artifact ``name`` with constructor ``args``; its address."""
    address, _ = _Sender(w3, signers, 120.0).deploy(name, sender, *args)
    return address


def _usage_tuple(r: UsageReceipt) -> tuple[bytes, bytes, int, bytes, int, int]:
    return (r.job_id, r.dataset_id, r.row_count, r.result_hash, r.started_at, r.finished_at)


def _check32(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidInput(f"{what} must be 32 bytes")


def terms_from_abi(raw: Any) -> Terms:
    """Terms from the ABI tuple the contracts return (jobId, manifestHash, datasetIds, requester, expiry, maxRuns)."""
    job_id, manifest_hash, dataset_ids, requester, expiry, max_runs = raw
    return Terms(
        job_id=job_id,
        manifest_hash=manifest_hash,
        dataset_ids=tuple(dataset_ids),
        requester=requester,
        expiry=expiry,
        max_runs=max_runs,
    )


def fetch_events(
    w3: Web3,
    address: str,
    abi_name: str,
    event: str | None = None,
    from_block: int = 0,
    to_block: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    label: str | None = None,
) -> list[EventRecord]:
    """Decode the logs of ``address`` with the events of artifact ``abi_name``, paging
    ``eth_getLogs`` over block ranges of ``page_size``; sorted by (block, log index)."""
    if page_size < 1:
        raise InvalidInput("page_size must be positive")
    contract = w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(abi_name).abi)
    by_topic = {}
    for item in contract.abi:
        if item["type"] == "event" and (event is None or item["name"] == event):
            types = ",".join(_abi_type(i) for i in item["inputs"])
            by_topic[keccak(text=f"{item['name']}({types})")] = item["name"]
    if not by_topic:
        raise InvalidInput(f"{abi_name} has no event {event!r}")
    last = w3.eth.block_number if to_block is None else to_block
    out: list[EventRecord] = []
    start = max(0, from_block)
    while start <= last:
        end = min(last, start + page_size - 1)
        params: dict[str, Any] = {"address": contract.address, "fromBlock": start, "toBlock": end}
        if event is not None:
            params["topics"] = [list(by_topic)]
        for log in w3.eth.get_logs(params):
            name = by_topic.get(bytes(log["topics"][0])) if log["topics"] else None
            if name is None:
                continue
            decoded = contract.events[name]().process_log(log)
            out.append(
                EventRecord(
                    contract=label or abi_name,
                    event=name,
                    address=log["address"],
                    block_number=log["blockNumber"],
                    log_index=log["logIndex"],
                    tx_hash=bytes(log["transactionHash"]),
                    args=_plain(decoded["args"]),
                )
            )
        start = end + 1
    out.sort(key=lambda e: (e.block_number, e.log_index))
    return out


def _abi_type(item: dict[str, Any]) -> str:
    t = item["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + t[len("tuple") :]
    return t


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


class _Sender:
    """Estimates, signs (if a key is known) or asks the node to send, and waits for receipts."""

    def __init__(self, w3: Web3, signers: Mapping[str, Any] | None, timeout: float) -> None:
        self.w3 = w3
        self.signers = {to_checksum_address(a): k for a, k in (signers or {}).items()}
        self.timeout = timeout
        self.in_process = type(w3.provider).__name__ == "EthereumTesterProvider"

    def deploy(self, name: str, sender: str, *args: Any) -> tuple[str, TxResult]:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx, receipt = self.send(factory.constructor(*args), sender)
        if not receipt["contractAddress"]:
            raise DeploymentError(f"deploying {name} produced no contract")
        return to_checksum_address(receipt["contractAddress"]), tx

    def send(self, fn: Any, sender: str) -> tuple[TxResult, Any]:
        sender = to_checksum_address(sender)
        params: dict[str, Any] = {"from": sender}
        try:
            if self.in_process and hasattr(fn, "call"):
                # eth-tester's estimate_gas bisects (~17 executions); one eth_call surfaces any
                # revert, then a fixed limit is enough (gas used is still measured exactly).
                params["gas"] = IN_PROCESS_GAS
                fn.call(params)
            else:
                params["gas"] = int(fn.estimate_gas(params) * GAS_MARGIN) + 20_000
        except Exception as exc:
            if _is_revert(exc):
                raise decode_revert(_revert_data(exc)) from exc
            raise
        key = self.signers.get(sender)
        try:
            if key is None:
                tx_hash = fn.transact(params)
            else:
                params["nonce"] = self.w3.eth.get_transaction_count(sender, "pending")
                params["chainId"] = self.w3.eth.chain_id
                built = fn.build_transaction(params)
                signed = key.sign_transaction(built)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Exception as exc:
            if _is_revert(exc):
                raise decode_revert(_revert_data(exc)) from exc
            raise
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout)
        result = TxResult(tx_hash=bytes(tx_hash), block_number=receipt["blockNumber"], gas_used=receipt["gasUsed"])
        if receipt["status"] != 1:
            raise TransactionFailed(f"transaction 0x{bytes(tx_hash).hex()} reverted (gas used {receipt['gasUsed']})")
        return result, receipt


class _RpcError(Exception):
    """A JSON-RPC error object returned by the node."""

    def __init__(self, error: Any) -> None:
        self.error = error if isinstance(error, dict) else {"message": str(error)}
        super().__init__(self.error.get("message", str(error)))


class _ReceiptSender:
    """The lean transaction path of usage receipts on a JSON-RPC chain.

    Per receipt it makes two kinds of call: one ``eth_sendRawTransaction`` (or
    ``eth_sendTransaction`` for an account the node holds unlocked) and ``eth_getTransactionReceipt``
    polled from 0.5 ms with a doubling backoff capped at 20 ms. The chain id and gas price are
    read once, each sender's nonce is read once and then counted locally under a lock (so several
    threads may pipeline receipts), and any failed send drops the cached nonce and gas price so the
    next send reads them again. The gas price is the chain's suggestion as it stands, never a multiple:
    a legacy transaction's whole price above the base fee is its tip, the chain suggests the recent
    tips, so paying twice the suggestion doubled the price with every receipt (2^k after k receipts:
    a 20-job load exhausted a node's and the coordinator's 100 ETH by the 40th). A price the base fee
    has since passed is refused at submission, and the send reads a fresh one and retries once. Gas is
    the caller's known limit; no ``eth_estimateGas`` unless a transaction runs out of gas (then it is
    re-sent once with an estimate)."""

    def __init__(self, w3: Web3, signers: Mapping[str, Any], timeout: float) -> None:
        from contracts.txsign import TxKey

        self.w3 = w3
        self.timeout = timeout
        self._keys = {a: TxKey.from_account(k) for a, k in signers.items()}
        self._lock = threading.Lock()
        self._nonces: dict[str, int] = {}
        self._chain_id: int | None = None
        self._gas_price: int | None = None

    def _rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if response.get("error") is not None:
            raise _RpcError(response["error"])
        return response.get("result")

    def _send(self, sender: str, to: str, data: bytes, gas: int) -> bytes:
        key = self._keys.get(sender)
        with self._lock:
            for attempt in range(2):
                try:
                    if key is None:
                        tx = {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(gas)}
                        return _hash_bytes(self._rpc("eth_sendTransaction", [tx]))
                    if self._chain_id is None:
                        self._chain_id = int(self._rpc("eth_chainId", []), 16)
                    if self._gas_price is None:  # as suggested, never more (see the class docstring)
                        self._gas_price = int(self._rpc("eth_gasPrice", []), 16)
                    nonce = self._nonces.get(sender)
                    if nonce is None:
                        nonce = int(self._rpc("eth_getTransactionCount", [sender, "pending"]), 16)
                    from contracts.txsign import sign_legacy_tx

                    raw = sign_legacy_tx(key, nonce=nonce, gas_price=self._gas_price, gas=gas, to=to, data=data,
                                         chain_id=self._chain_id)
                    tx_hash = _hash_bytes(self._rpc("eth_sendRawTransaction", ["0x" + raw.hex()]))
                    self._nonces[sender] = nonce + 1
                    return tx_hash
                except _RpcError:
                    self._nonces.pop(sender, None)  # stale nonce or fee: read both again, once
                    self._gas_price = None
                    if attempt:
                        raise
                except BaseException:
                    self._nonces.pop(sender, None)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, tx_hash: bytes, sender: str) -> dict[str, Any]:
        start = time.monotonic()
        delay, checked = 0.0005, False
        while True:
            receipt = self._rpc("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
            if receipt is not None:
                return receipt
            waited = time.monotonic() - start
            if waited > 5 and not checked:  # slow: is the transaction still known to the node at all?
                checked = True
                if self._rpc("eth_getTransactionByHash", ["0x" + tx_hash.hex()]) is None:
                    self._nonces.pop(sender, None)
                    raise TransactionFailed(f"transaction 0x{tx_hash.hex()} was dropped by the node (nonce resynced)")
            if waited > self.timeout:
                self._nonces.pop(sender, None)  # a nonce gap (e.g. the chain was reset) must not stay cached
                raise TimeoutError(f"transaction 0x{tx_hash.hex()} not mined after {self.timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def _replay(self, sender: str, to: str, data: bytes, gas: int, block: int) -> ContractRevert | None:
        """The named error the call raises on the state of ``block`` (None if it does not revert)."""
        call = {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(gas)}
        try:
            self._rpc("eth_call", [call, hex(max(block, 0))])
        except _RpcError as exc:
            return decode_revert(exc.error.get("data"))
        return None

    def transact(self, sender: str, to: str, data: bytes, gas: int, retried: bool = False) -> TxResult:
        """Send, wait, and return the mined transaction; its named error if it reverted."""
        sender = to_checksum_address(sender)
        tx_hash = self._send(sender, to, data, gas)
        receipt = self._wait(tx_hash, sender)
        block, used = int(receipt["blockNumber"], 16), int(receipt["gasUsed"], 16)
        if int(receipt["status"], 16) == 1:
            return TxResult(tx_hash=tx_hash, block_number=block, gas_used=used)
        error = self._replay(sender, to, data, gas, block - 1)
        if error is not None:
            raise error
        if used >= gas and not retried:  # out of gas: estimate once, with room
            try:
                estimate = int(self._rpc("eth_estimateGas", [{"from": sender, "to": to, "data": "0x" + data.hex()}]), 16)
            except _RpcError as exc:
                raise decode_revert(exc.error.get("data")) from None
            return self.transact(sender, to, data, int(estimate * GAS_MARGIN) + 20_000, retried=True)
        raise TransactionFailed(f"transaction 0x{tx_hash.hex()} reverted (gas used {used} of {gas})")


def _hash_bytes(value: Any) -> bytes:
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


__all__ = [
    "MAX_BATCH",
    "ChainClient",
    "ChainError",
    "approval_digest",
    "check_proof_of_possession",
    "decode_revert",
    "deploy_contract",
    "fetch_events",
]
