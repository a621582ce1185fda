"""The regulator's audit: recompute, from chain events alone, whether every use of data was
authorized — without trusting the coordinator's database or even the contracts' own checks —
and list, per authorization, what was approved and every receipt recorded under it.

Given only an RPC URL and the Registry's address, :func:`run_audit` reads the Registry's bound
Authorizations and Receipts addresses, pulls every event of the three contracts (paged by block
range), replays them in chain order and reports:

* ``receipt_without_authorization`` — a usage receipt for a job that has no authorization;
* ``receipt_outside_authorization`` — a receipt recorded, or a run that started or finished,
  when the authorization was not live (before it was written, after its expiry or revocation),
  or for a dataset the authorization does not cover;
* ``runs_beyond_maximum`` — more receipts for a (job, dataset) than the authorization allows;
* ``approval_missing`` — an authorization some dataset owner did not approve: no ``Approved``
  event by the owner for the recomputed digest of exactly those terms, or a BLS aggregate that
  does not verify against the owners' registered keys;
* ``receipt_from_non_owner`` — a receipt sent by a node that did not own the dataset (or was
  not an active member) at that time;
* ``receipt_run_too_short`` — a run shorter than ``min_run_seconds`` (1 s by default: a node
  records its start floored and its finish rounded up to whole seconds, so only a receipt whose
  times were not measured — e.g. clamped to a stale block — has ``startedAt == finishedAt``);
* ``receipt_times_disagree_with_block`` — a run that claims to finish more than
  ``clock_tolerance`` seconds after the block that recorded it (or to finish before it started);
* ``anchor_went_backwards`` — a node's audit-log anchor covering fewer entries than an earlier
  one (or the same count with a different head: a rewritten log);
* and, as supporting evidence, ``digest_mismatch`` (the digest an authorization claims is not
  that of its terms) and ``authorization_by_non_coordinator``.

A receipt recorded more than ``late_after`` seconds after its run finished (a node that queued it
while the chain was unreachable) is *late*: flagged on the receipt, counted, not a finding.

The real contracts already refuse most of these; the audit exists for when they were not the
real contracts, were mis-deployed, or were bypassed — it recomputes, it does not trust.

**How it scales** (10,000 receipts over 3,000 authorizations in a few seconds): logs are fetched
with raw ``eth_getLogs`` per contract over block ranges and decoded with eth-abi directly (web3's
per-log decoding was a fifth of the time); a block's timestamp is read once per block, in
JSON-RPC batches, and only for blocks holding an authorization, a revocation or a receipt.

**BLS aggregates: the chain's verification is read, not repeated — when the code is genuine.**
``authorizeWithBls`` verifies the aggregate on chain (FastAggregateVerify with the EIP-2537
precompiles) before it emits ``AuthorizationCreated``; the chain's consensus executed that check,
the same consensus the audit already relies on for every event it reads. What the audit cannot
take on faith is *which code* ran, so it first compares the runtime code of the Registry,
Authorizations and Receipts contracts with the committed artifacts (immutables masked, and
Authorizations'/Receipts' immutables required to point at this Registry/Authorizations). If all
three are genuine, an aggregate approval counts as verified from its ``AggregateApproval`` event
(the audit still recomputes the digest and requires the event's approvers to be exactly the
datasets' owners by its own replay). If any differs — or with ``verify_bls=True``
(``dcp audit --verify-bls``) — every aggregate is verified off chain, once, with
:func:`protocols.crypto.bls.fast_aggregate_verify` (native when that module is, ≈ 1-2 ms; py_ecc
0.67 s otherwise). Re-verifying 3,000+ aggregates would spend the whole time budget repeating a
check the chain already made under the code the audit has just proved.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict
from web3 import Web3

from contracts.client import APPROVAL_TYPEHASH
from contracts.errors import DeploymentError, InvalidInput
from contracts.models import ZERO_ADDRESS, Address, Bytes32, HexBytes, Role, Terms

#: Seconds of node clock skew forgiven by default (the Receipts contract's ``TIME_TOLERANCE``).
DEFAULT_CLOCK_TOLERANCE = 60
#: Receipts recorded more than this many seconds after their run are reported as late.
DEFAULT_LATE_AFTER = 60
#: Runs shorter than this are a finding (see the module docstring).
DEFAULT_MIN_RUN_SECONDS = 1
#: Block headers per JSON-RPC batch when reading timestamps.
_BLOCK_BATCH = 500


class FindingKind(str, enum.Enum):
    """What the audit can find."""

    RECEIPT_WITHOUT_AUTHORIZATION = "receipt_without_authorization"
    RECEIPT_OUTSIDE_AUTHORIZATION = "receipt_outside_authorization"
    RUNS_BEYOND_MAXIMUM = "runs_beyond_maximum"
    APPROVAL_MISSING = "approval_missing"
    RECEIPT_FROM_NON_OWNER = "receipt_from_non_owner"
    RECEIPT_RUN_TOO_SHORT = "receipt_run_too_short"
    RECEIPT_TIMES_DISAGREE_WITH_BLOCK = "receipt_times_disagree_with_block"
    ANCHOR_WENT_BACKWARDS = "anchor_went_backwards"
    DIGEST_MISMATCH = "digest_mismatch"
    AUTHORIZATION_BY_NON_COORDINATOR = "authorization_by_non_coordinator"


class Finding(BaseModel):
    """One violation, with where on the chain it is."""

    model_config = ConfigDict(frozen=True)

    kind: FindingKind
    detail: str
    block_number: int
    tx_hash: HexBytes
    job_id: HexBytes | None = None
    dataset_id: HexBytes | None = None
    account: Address | None = None


class ReceiptEntry(BaseModel):
    """One usage receipt as the chain holds it, with its block's time and what the audit saw in it."""

    job_id: Bytes32
    node: Address
    dataset_id: Bytes32
    row_count: int
    result_hash: Bytes32
    started_at: int
    finished_at: int
    run: int
    block_number: int
    block_time: int
    tx_hash: HexBytes
    late_s: int
    """Seconds from the run's finish to the block that recorded it (negative: the node's clock ran ahead)."""
    late: bool
    flags: list[FindingKind]
    """The findings about this receipt (empty for a clean one)."""


class JobEntry(BaseModel):
    """One authorization: its terms, who approved it, and every receipt recorded under it."""

    job_id: Bytes32
    manifest_hash: Bytes32
    dataset_ids: list[Bytes32]
    requester: Address
    coordinator: Address
    approvers: list[Address]
    via_bls: bool
    bls_verified_by: str | None
    """For an aggregate approval: ``"chain"`` (EIP-2537 on chain, code proved genuine) or ``"offchain"``."""
    created_at: int
    created_block: int
    expiry: int
    max_runs: int
    revoked_at: int | None
    runs_used: dict[str, int]
    """Receipts per dataset (``0x`` hex id)."""
    receipts: list[ReceiptEntry]
    findings: int
    """Findings about this authorization and its receipts."""


class AuditReport(BaseModel):
    """What the audit read and what it found."""

    chain_id: int
    registry: Address
    authorizations: Address
    receipts: Address
    from_block: int
    to_block: int
    members: int
    datasets: int
    authorizations_count: int
    receipts_count: int
    anchors_count: int
    late_receipts: int = 0
    contracts_genuine: bool = False
    """The three contracts' runtime code equals the committed artifacts (immutables checked)."""
    bls_verified_by: str = "offchain"
    """How aggregate approvals were checked: ``"chain"`` (read, code genuine) or ``"offchain"``."""
    clock_tolerance: int = DEFAULT_CLOCK_TOLERANCE
    min_run_seconds: int = DEFAULT_MIN_RUN_SECONDS
    late_after: int = DEFAULT_LATE_AFTER
    job: HexBytes | None = None
    """The job the report is narrowed to (``jobs``, ``findings``, ``receipts_without_authorization``)."""
    findings: list[Finding]
    jobs: list[JobEntry] = []
    receipts_without_authorization: list[ReceiptEntry] = []

    @property
    def clean(self) -> bool:
        """True iff nothing was found."""
        return not self.findings

    def count(self, kind: FindingKind) -> int:
        """How many findings of ``kind``."""
        return sum(1 for f in self.findings if f.kind == kind)


# --------------------------------------------------------------------------- reading the chain fast


@dataclass(slots=True)
class _Event:
    event: str
    block_number: int
    log_index: int
    tx_hash: bytes
    args: dict[str, Any]


@lru_cache(maxsize=65_536)
def _checksum(raw: bytes) -> str:
    return to_checksum_address(raw)


def _abi_type(item: dict[str, Any]) -> str:
    t = item["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + t[len("tuple"):]
    return t


@lru_cache(maxsize=65_536)
def _checksum_text(text: str) -> str:
    return to_checksum_address(text)


def _identity(value: Any) -> Any:
    return value


def _converter(item: dict[str, Any]) -> Callable[[Any], Any]:
    """Turns eth-abi's decoded value of ABI input ``item`` into the audit's: checksummed
    addresses, lists for arrays and tuples."""
    t = item["type"]
    if t.endswith("]"):
        inner = _converter({**item, "type": t[: t.rindex("[")]})
        return lambda v: [inner(x) for x in v]
    if t == "tuple":
        parts = [_converter(c) for c in item["components"]]
        return lambda v: [f(x) for f, x in zip(parts, v, strict=True)]
    if t == "address":
        return _checksum_text
    return _identity


_EventSpec = tuple[str, list[tuple[str, str]], list[str], list[str], list[Callable[[Any], Any]]]


@cache
def _event_table(abi_name: str) -> dict[bytes, _EventSpec]:
    """topic0 -> (name, indexed (name, type), data names, data types, data converters) of the artifact's events."""
    from contracts.build import load_artifact

    table = {}
    for item in load_artifact(abi_name).abi:
        if item["type"] != "event":
            continue
        types = [_abi_type(i) for i in item["inputs"]]
        topic = keccak(text=f"{item['name']}({','.join(types)})")
        indexed = [(i["name"], t) for i, t in zip(item["inputs"], types, strict=True) if i["indexed"]]
        data = [(i, t) for i, t in zip(item["inputs"], types, strict=True) if not i["indexed"]]
        table[topic] = (item["name"], indexed, [i["name"] for i, _ in data], [t for _, t in data],
                        [_converter(i) for i, _ in data])
    return table


def _topic_value(topic: bytes, abi_type: str) -> Any:
    if abi_type == "address":
        return _checksum(topic[12:])
    if abi_type.startswith(("uint", "int")):
        return int.from_bytes(topic, "big", signed=abi_type.startswith("int"))
    if abi_type == "bool":
        return topic[-1] == 1
    return topic  # bytes32 and hashes of dynamic values


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    response = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    if response.get("error") is not None:
        raise _RpcFailure(response["error"])
    return response.get("result")


class _RpcFailure(Exception):
    def __init__(self, error: Any) -> None:
        self.error = error
        super().__init__(error.get("message") if isinstance(error, dict) else str(error))


def _uint(word: bytes) -> int:
    return int.from_bytes(word, "big")


#: Decoders of the elementary types that take exactly one 32-byte word of event data.
_STATIC_WORD: dict[str, Callable[[bytes], Any]] = {
    **{f"uint{8 * k}": _uint for k in range(1, 33)},
    "bytes32": bytes,
    "address": lambda w: _checksum(w[12:]),
    "bool": lambda w: w[-1] == 1,
}

_RawLog = tuple[list[bytes], bytes, int, int, bytes]


def _get_logs(w3: Web3, address: str, start: int, end: int) -> list[_RawLog]:
    """(topics, data, block, log index, tx hash) of ``address``'s logs in ``[start, end]``: raw
    JSON-RPC (no web3 result formatting) where the provider speaks it, web3's reader in process."""
    if type(w3.provider).__name__ == "EthereumTesterProvider":
        return [([bytes(t) for t in log["topics"]], bytes(log["data"]), log["blockNumber"], log["logIndex"],
                 bytes(log["transactionHash"]))
                for log in w3.eth.get_logs({"address": address, "fromBlock": start, "toBlock": end})]
    logs = _rpc(w3, "eth_getLogs", [{"address": address, "fromBlock": hex(start), "toBlock": hex(end)}])
    return [([bytes.fromhex(t[2:]) for t in log["topics"]], bytes.fromhex(log["data"][2:]),
             int(log["blockNumber"], 16), int(log["logIndex"], 16), bytes.fromhex(log["transactionHash"][2:]))
            for log in logs]


def read_events(
    w3: Web3, address: str, abi_name: str, from_block: int, to_block: int, page_size: int = 2_000
) -> list[_Event]:
    """Every event of ``address`` decoded with artifact ``abi_name``'s ABI: raw ``eth_getLogs``
    over pages of ``page_size`` blocks (a page the node refuses as too large is halved), decoded
    with eth-abi; sorted by (block, log index)."""
    if page_size < 1:
        raise InvalidInput("page_size must be positive")
    table = _event_table(abi_name)
    out: list[_Event] = []
    start, size = max(0, from_block), page_size
    while start <= to_block:
        end = min(to_block, start + size - 1)
        try:
            logs = _get_logs(w3, address, start, end)
        except _RpcFailure:
            if end == start:
                raise
            size = max(1, (end - start + 1) // 2)
            continue
        for topics, data, block, index, tx_hash in logs:
            entry = table.get(topics[0]) if topics else None
            if entry is None:
                continue
            name, indexed, names, types, converters = entry
            args = {n: _topic_value(t, ty) for (n, ty), t in zip(indexed, topics[1:], strict=False)}
            if types:
                if all(t in _STATIC_WORD for t in types):  # one 32-byte word each: slice, skip eth-abi
                    args.update((n, _STATIC_WORD[t](data[32 * k : 32 * k + 32]))
                                for k, (n, t) in enumerate(zip(names, types, strict=True)))
                else:
                    values = abi_decode(types, data)
                    args.update(zip(names, (f(v) for f, v in zip(converters, values, strict=True)), strict=True))
            out.append(_Event(name, block, index, tx_hash, args))
        start, size = end + 1, page_size
    out.sort(key=lambda e: (e.block_number, e.log_index))
    return out


def block_times(w3: Web3, blocks: set[int]) -> dict[int, int]:
    """Timestamps of ``blocks``: one header each, fetched in JSON-RPC batches where the provider
    batches (one ``eth_getBlockByNumber`` at a time otherwise)."""
    wanted = sorted(blocks)
    times: dict[int, int] = {}
    batch = getattr(w3.provider, "make_batch_request", None)
    for i in range(0, len(wanted), _BLOCK_BATCH):
        chunk = wanted[i : i + _BLOCK_BATCH]
        responses: Any = None
        if batch is not None and len(chunk) > 1:
            try:
                responses = batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            except Exception:  # noqa: BLE001 - a provider without batches: one at a time
                responses = None
        if isinstance(responses, list) and len(responses) == len(chunk):
            by_id = sorted(responses, key=lambda r: r.get("id", 0)) if all("id" in r for r in responses) else responses
            for n, r in zip(chunk, by_id, strict=True):
                if r.get("result") is None:
                    raise DeploymentError(f"block {n} could not be read: {r.get('error')}")
                times[n] = int(r["result"]["timestamp"], 16)
            continue
        for n in chunk:
            times[n] = int(w3.eth.get_block(n)["timestamp"])
    return times


# --------------------------------------------------------------------------- genuine code


def _immutable_slots(code: bytes) -> list[int]:
    """Offsets of ``PUSH32 0`` immediates in compiled runtime code: where solc leaves immutables."""
    slots, i = [], 0
    while i < len(code):
        op = code[i]
        if 0x60 <= op <= 0x7F:
            n = op - 0x5F
            if op == 0x7F and code[i + 1 : i + 33] == bytes(32):
                slots.append(i + 1)
            i += n
        i += 1
    return slots


def code_is_genuine(w3: Web3, address: str, abi_name: str, immutables: set[bytes] | None) -> bool:
    """Whether the runtime code at ``address`` is the committed artifact ``abi_name``'s, with every
    immutable equal to one of ``immutables`` (32-byte words; None: any address)."""
    from contracts.build import load_artifact

    expected = bytes.fromhex(load_artifact(abi_name).deployedBytecode[2:])
    code = bytes(w3.eth.get_code(to_checksum_address(address)))
    if len(code) != len(expected):
        return False
    masked = bytearray(code)
    for slot in _immutable_slots(expected):
        word = code[slot : slot + 32]
        if immutables is None:
            if word[:12] != bytes(12):
                return False
        elif word not in immutables:
            return False
        masked[slot : slot + 32] = bytes(32)
    return bytes(masked) == expected


def _word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


# --------------------------------------------------------------------------- BLS off chain


_P = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB


def _fp(chunk: bytes) -> int | None:
    if chunk[:16] != bytes(16):
        return None
    v = int.from_bytes(chunk[16:], "big")
    return v if v < _P else None


def _compress_g1(key: bytes) -> bytes | None:
    """EIP-2537 G1 (128 bytes) to the 48-byte compressed form, None if not a curve point."""
    if len(key) != 128:
        return None
    x, y = _fp(key[:64]), _fp(key[64:])
    if x is None or y is None:
        return None
    if x == 0 and y == 0:
        return bytes([0xC0]) + bytes(47)
    if (y * y - x * x * x - 4) % _P:
        return None
    flags = 0x80 | (0x20 if y > (_P - 1) // 2 else 0)
    raw = bytearray(x.to_bytes(48, "big"))
    raw[0] |= flags
    return bytes(raw)


def _compress_g2(sig: bytes) -> bytes | None:
    """EIP-2537 G2 (256 bytes, x.c0 x.c1 y.c0 y.c1) to the 96-byte compressed form, None if not on the curve."""
    if len(sig) != 256:
        return None
    parts = [_fp(sig[i : i + 64]) for i in range(0, 256, 64)]
    if any(p is None for p in parts):
        return None
    x0, x1, y0, y1 = parts  # type: ignore[misc]
    if not any(parts):
        return bytes([0xC0]) + bytes(95)
    # y^2 == x^3 + 4(1 + u) in Fp2 = Fp[u]/(u^2 + 1)
    y2 = ((y0 * y0 - y1 * y1) % _P, 2 * y0 * y1 % _P)
    xx = ((x0 * x0 - x1 * x1) % _P, 2 * x0 * x1 % _P)
    x3 = ((xx[0] * x0 - xx[1] * x1) % _P, (xx[0] * x1 + xx[1] * x0) % _P)
    if y2 != ((x3[0] + 4) % _P, (x3[1] + 4) % _P):
        return None
    sign = y1 > (_P - 1) // 2 if y1 else y0 > (_P - 1) // 2
    raw = bytearray(x1.to_bytes(48, "big") + x0.to_bytes(48, "big"))
    raw[0] |= 0x80 | (0x20 if sign else 0)
    return bytes(raw)


def verify_aggregate_offchain(bls_keys: list[bytes], message: bytes, signature: bytes) -> bool:
    """FastAggregateVerify over EIP-2537-encoded keys (128 bytes) and signature (256), through
    :func:`protocols.crypto.bls.fast_aggregate_verify` (the points compressed here, checked on the curve)."""
    from protocols.crypto.bls import fast_aggregate_verify
    from protocols.crypto.errors import CryptoError

    keys = [_compress_g1(k) for k in bls_keys]
    sig = _compress_g2(signature)
    if sig is None or not keys or any(k is None for k in keys):
        return False
    try:
        return bool(fast_aggregate_verify([k for k in keys if k is not None], message, sig))
    except (CryptoError, ValueError, AssertionError):
        return False


# --------------------------------------------------------------------------- the audit


@dataclass
class _MemberState:
    role: Role
    active: bool
    bls_key: bytes


@dataclass
class _AuthState:
    terms: Terms
    created_at: int
    created_block: int
    coordinator: str
    approvers: list[str]
    via_bls: bool
    bls_verified_by: str | None
    revoked_at: int | None = None
    runs: dict[bytes, int] = field(default_factory=dict)
    receipts: list[ReceiptEntry] = field(default_factory=list)
    findings: int = 0


def _fmt(b: bytes) -> str:
    return "0x" + b.hex()[:12] + "…"


def run_audit(
    w3: Web3,
    registry: str,
    from_block: int = 0,
    to_block: int | None = None,
    page_size: int = 2_000,
    clock_tolerance: int = DEFAULT_CLOCK_TOLERANCE,
    progress: Callable[[str], None] | None = None,
    *,
    min_run_seconds: int = DEFAULT_MIN_RUN_SECONDS,
    late_after: int = DEFAULT_LATE_AFTER,
    verify_bls: bool = False,
    job: bytes | None = None,
) -> AuditReport:
    """Audit the deployment whose Registry is at ``registry``, reading the chain only.

    ``clock_tolerance`` (seconds) forgives node clocks that run slightly ahead of or behind the
    chain, both against the authorization's window and against the recording block's time.
    ``verify_bls`` re-verifies every BLS aggregate off chain even when the contracts' code is
    genuine; ``job`` narrows the per-job listing and the findings to one job (totals stay whole).
    """
    registry = to_checksum_address(registry)
    if not w3.eth.get_code(registry):
        raise DeploymentError(f"no contract at {registry}")
    from contracts.build import load_artifact

    reg = w3.eth.contract(address=registry, abi=load_artifact("Registry").abi)
    try:
        auth_addr = reg.functions.authorizations().call()
        receipts_addr = reg.functions.receipts().call()
    except Exception as exc:  # noqa: BLE001 - not a Registry
        raise DeploymentError(f"{registry} is not a dcp Registry: {exc}") from exc
    if auth_addr == ZERO_ADDRESS:
        raise DeploymentError(f"Registry {registry} has no bound Authorizations/Receipts contracts")
    chain_id = w3.eth.chain_id
    last = w3.eth.block_number if to_block is None else to_block
    say = progress or (lambda _msg: None)

    say("comparing the contracts' code with the committed artifacts")
    genuine = (
        code_is_genuine(w3, registry, "Registry", None)
        and code_is_genuine(w3, auth_addr, "Authorizations", {_word(registry)})
        and code_is_genuine(w3, receipts_addr, "Receipts", {_word(registry), _word(auth_addr)})
    )
    bls_by = "chain" if genuine and not verify_bls else "offchain"

    events: list[_Event] = []
    for name, address in (("Registry", registry), ("Authorizations", auth_addr), ("Receipts", receipts_addr)):
        say(f"reading {name} events")
        events += read_events(w3, address, name, from_block, last, page_size)
    events.sort(key=lambda e: (e.block_number, e.log_index))
    timed = {"AuthorizationCreated", "AuthorizationRevoked", "UsageRecorded"}
    say("reading block times")
    times = block_times(w3, {e.block_number for e in events if e.event in timed})

    aggregates = {(e.tx_hash, e.args["jobId"]): e for e in events if e.event == "AggregateApproval"}
    members: dict[str, _MemberState] = {}
    owners: dict[bytes, str] = {}
    approvals: dict[tuple[bytes, bytes], str] = {}
    auths: dict[bytes, _AuthState] = {}
    anchors: dict[str, tuple[int, bytes]] = {}
    findings: list[Finding] = []
    orphans: list[ReceiptEntry] = []
    n_receipts = n_anchors = n_late = 0

    def find(kind: FindingKind, e: _Event, detail: str, **where: Any) -> None:
        findings.append(Finding.model_construct(
            kind=kind, detail=detail, block_number=e.block_number, tx_hash=e.tx_hash,
            job_id=where.get("job_id"), dataset_id=where.get("dataset_id"), account=where.get("account")))
        st = auths.get(where["job_id"]) if where.get("job_id") is not None else None
        if st is not None:
            st.findings += 1

    def is_active(account: str) -> bool:
        m = members.get(account)
        return bool(m and m.active)

    say(f"replaying {len(events)} events")
    for e in events:
        a = e.args
        if e.event == "MemberAdmitted":
            members[a["account"]] = _MemberState(role=Role(a["role"]), active=True, bls_key=a["blsPublicKey"])
        elif e.event == "MemberRemoved":
            if a["account"] in members:
                members[a["account"]].active = False
        elif e.event == "DatasetRegistered":
            owners.setdefault(a["datasetId"], a["owner"])
        elif e.event == "Approved":
            d = a["datasetId"]
            if owners.get(d) == a["approver"] and is_active(a["approver"]):
                approvals[(a["digest"], d)] = a["approver"]
        elif e.event == "AuthorizationCreated":
            _on_authorization(e, times[e.block_number], chain_id, auth_addr, members, owners, approvals, aggregates,
                              auths, find, bls_by)
        elif e.event == "AuthorizationRevoked":
            st = auths.get(a["jobId"])
            if st is not None and st.revoked_at is None:
                st.revoked_at = times[e.block_number]
        elif e.event == "UsageRecorded":
            n_receipts += 1
            entry = _on_receipt(e, times[e.block_number], auths, owners, is_active, find, findings,
                                clock_tolerance, min_run_seconds, late_after)
            n_late += entry.late
            if entry.job_id not in auths:
                orphans.append(entry)
        elif e.event == "AuditHeadAnchored":
            n_anchors += 1
            node, count, head = a["node"], a["entryCount"], a["headHash"]
            prev = anchors.get(node)
            if prev is not None and (count < prev[0] or (count == prev[0] and head != prev[1])):
                find(
                    FindingKind.ANCHOR_WENT_BACKWARDS,
                    e,
                    f"anchor of {count} entries (head {_fmt(head)}) after one of {prev[0]} (head {_fmt(prev[1])})",
                    account=node,
                )
            if prev is None or count >= prev[0]:
                anchors[node] = (count, head)

    say("building the report")
    jobs = [_job_entry(st) for key, st in auths.items() if job is None or key == job]
    if job is not None:
        findings = [f for f in findings if f.job_id == job]
        orphans = [r for r in orphans if r.job_id == job]
    return AuditReport(
        chain_id=chain_id,
        registry=registry,
        authorizations=auth_addr,
        receipts=receipts_addr,
        from_block=from_block,
        to_block=last,
        members=len(members),
        datasets=len(owners),
        authorizations_count=len(auths),
        receipts_count=n_receipts,
        anchors_count=n_anchors,
        late_receipts=n_late,
        contracts_genuine=genuine,
        bls_verified_by=bls_by,
        clock_tolerance=clock_tolerance,
        min_run_seconds=min_run_seconds,
        late_after=late_after,
        job=job,
        findings=findings,
        jobs=jobs,
        receipts_without_authorization=orphans,
    )


def _job_entry(st: _AuthState) -> JobEntry:
    t = st.terms
    return JobEntry.model_construct(
        job_id=t.job_id, manifest_hash=t.manifest_hash, dataset_ids=list(t.dataset_ids), requester=t.requester,
        coordinator=st.coordinator, approvers=st.approvers, via_bls=st.via_bls, bls_verified_by=st.bls_verified_by,
        created_at=st.created_at, created_block=st.created_block, expiry=t.expiry, max_runs=t.max_runs,
        revoked_at=st.revoked_at, runs_used={"0x" + d.hex(): n for d, n in st.runs.items()},
        receipts=st.receipts, findings=st.findings,
    )


def _terms_from_event(raw: Any) -> Terms:
    """The event's terms, trusted as decoded (typed by the ABI): built without validation."""
    job_id, manifest_hash, dataset_ids, requester, expiry, max_runs = raw
    return Terms.model_construct(job_id=job_id, manifest_hash=manifest_hash, dataset_ids=tuple(dataset_ids),
                                 requester=requester, expiry=expiry, max_runs=max_runs)


def _approval_digest(terms: Terms, prefix: bytes) -> bytes:
    """``contracts.client.approval_digest`` from 32-byte words (``prefix`` = typehash, chain id and
    Authorizations address words): the same bytes as its ``abi.encode``, without eth-abi's checks."""
    return keccak(
        prefix
        + terms.job_id
        + terms.manifest_hash
        + keccak(b"".join(terms.dataset_ids))
        + _word(terms.requester)
        + terms.expiry.to_bytes(32, "big")
        + terms.max_runs.to_bytes(32, "big")
    )


def _on_authorization(
    e: _Event,
    block_time: int,
    chain_id: int,
    auth_addr: str,
    members: dict[str, _MemberState],
    owners: dict[bytes, str],
    approvals: dict[tuple[bytes, bytes], str],
    aggregates: dict[tuple[bytes, bytes], _Event],
    auths: dict[bytes, _AuthState],
    find: Callable[..., None],
    bls_by: str,
) -> None:
    a = e.args
    terms = _terms_from_event(a["terms"])
    job = terms.job_id
    if job in auths:  # a second authorization for one job: keep the first, flag the rewrite
        find(FindingKind.APPROVAL_MISSING, e, "authorization written twice for one job", job_id=job)
        return
    auths[job] = _AuthState(
        terms=terms, created_at=block_time, created_block=e.block_number, coordinator=a["coordinator"],
        approvers=list(a["approvers"]), via_bls=bool(a["viaBls"]), bls_verified_by=bls_by if a["viaBls"] else None,
    )
    digest = _approval_digest(terms, APPROVAL_TYPEHASH + chain_id.to_bytes(32, "big") + _word(auth_addr))
    if bytes(a["digest"]) != digest:
        find(
            FindingKind.DIGEST_MISMATCH,
            e,
            f"authorization claims digest {_fmt(a['digest'])} but its terms hash to {_fmt(digest)}",
            job_id=job,
        )
    coord = members.get(a["coordinator"])
    if coord is None or not coord.active or coord.role != Role.COORDINATOR:
        find(
            FindingKind.AUTHORIZATION_BY_NON_COORDINATOR,
            e,
            "authorization written by an account that is not an active coordinator",
            job_id=job,
            account=a["coordinator"],
        )
    if a["viaBls"]:
        agg = aggregates.get((e.tx_hash, job))
        signers: list[str] = []
        for d in terms.dataset_ids:
            o = owners.get(d)
            if o is not None and o not in signers:
                signers.append(o)
        unknown = [d for d in terms.dataset_ids if d not in owners]
        keys = [members[o].bls_key for o in signers if o in members and members[o].active]
        ok = agg is not None and not unknown and len(keys) == len(signers)
        if ok and bls_by == "chain":
            # the genuine contract verified the aggregate before emitting; what it signed must be
            # these terms' digest, by exactly the owners this replay finds
            ok = bytes(agg.args["digest"]) == digest and list(agg.args["approvers"]) == signers
        elif ok:
            ok = verify_aggregate_offchain(keys, digest, bytes(agg.args["signature"]))
        if not ok:
            for d in terms.dataset_ids:
                find(
                    FindingKind.APPROVAL_MISSING,
                    e,
                    "the BLS aggregate does not verify for the dataset owners' registered keys over these terms",
                    job_id=job,
                    dataset_id=d,
                    account=owners.get(d),
                )
        return
    for d in terms.dataset_ids:
        owner = owners.get(d)
        if owner is None:
            find(FindingKind.APPROVAL_MISSING, e, "dataset is not registered", job_id=job, dataset_id=d)
        elif approvals.get((digest, d)) != owner:
            find(
                FindingKind.APPROVAL_MISSING,
                e,
                "the dataset's owner never approved these exact terms",
                job_id=job,
                dataset_id=d,
                account=owner,
            )


def _on_receipt(
    e: _Event,
    t: int,
    auths: dict[bytes, _AuthState],
    owners: dict[bytes, str],
    is_active: Callable[[str], bool],
    find: Callable[..., None],
    findings: list[Finding],
    tolerance: int,
    min_run: int,
    late_after: int,
) -> ReceiptEntry:
    a = e.args
    job, d, node = a["jobId"], a["datasetId"], a["node"]
    started, finished = a["startedAt"], a["finishedAt"]
    where = {"job_id": job, "dataset_id": d, "account": node}
    first = len(findings)
    owner = owners.get(d)
    if owner != node or not is_active(node):
        find(
            FindingKind.RECEIPT_FROM_NON_OWNER,
            e,
            f"receipt sent by {node}, but the dataset's owner is {owner or 'nobody'}"
            if owner != node
            else "receipt sent by a node that is no longer an active member",
            **where,
        )
    if started > finished or finished > t + tolerance:
        find(
            FindingKind.RECEIPT_TIMES_DISAGREE_WITH_BLOCK,
            e,
            f"run started at {started} and finished at {finished}, after it started"
            if started > finished
            else f"run finished at {finished}, {finished - t} s after the block that recorded it (time {t})",
            **where,
        )
    elif finished - started < min_run:
        find(
            FindingKind.RECEIPT_RUN_TOO_SHORT,
            e,
            f"run of {finished - started} s (started {started}, finished {finished}), shorter than {min_run} s",
            **where,
        )
    st = auths.get(job)
    if st is None:
        find(FindingKind.RECEIPT_WITHOUT_AUTHORIZATION, e, "no authorization exists for this job", **where)
    else:
        end = st.terms.expiry if st.revoked_at is None else min(st.terms.expiry, st.revoked_at)
        if d not in st.terms.dataset_ids:
            find(FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION, e, "dataset not covered by the authorization", **where)
        elif st.revoked_at is not None and t >= st.revoked_at:
            find(FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION, e, f"recorded after revocation at {st.revoked_at}",
                 **where)
        elif t >= st.terms.expiry:
            find(FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION, e, f"recorded after expiry at {st.terms.expiry}", **where)
        elif started + tolerance < st.created_at:
            find(
                FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION,
                e,
                f"run started at {started}, before the authorization was written at {st.created_at}",
                **where,
            )
        elif finished > end + tolerance:
            find(
                FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION,
                e,
                f"run finished at {finished}, after the authorization ended at {end}",
                **where,
            )
        count = st.runs.get(d, 0) + 1
        st.runs[d] = count
        if count > st.terms.max_runs:
            find(
                FindingKind.RUNS_BEYOND_MAXIMUM,
                e,
                f"run {count} of a dataset allowed {st.terms.max_runs} run(s)",
                **where,
            )
    late_s = t - finished
    entry = ReceiptEntry.model_construct(
        job_id=job, node=node, dataset_id=d, row_count=a["rowCount"], result_hash=a["resultHash"],
        started_at=started, finished_at=finished, run=a["run"], block_number=e.block_number, block_time=t,
        tx_hash=e.tx_hash, late_s=late_s, late=late_s > late_after,
        flags=[f.kind for f in findings[first:]],
    )
    if st is not None:
        st.receipts.append(entry)
    return entry
