"""Pydantic models of what the chain holds: members, datasets, terms, authorizations, receipts,
anchors, deployments and transaction results. Byte fields serialize to ``0x`` hex in JSON."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from contracts.errors import InvalidInput


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise InvalidInput(f"not hex: {value[:80]!r}") from exc
    if hasattr(value, "hex") and callable(value.hex):  # HexBytes and friends
        return bytes(value)
    raise InvalidInput(f"expected bytes or hex, got {type(value).__name__}")


def _fixed(n: int) -> Any:
    def check(value: Any) -> bytes:
        b = _to_bytes(value)
        if len(b) != n:
            raise InvalidInput(f"expected {n} bytes, got {len(b)}")
        return b

    return check


_hex = PlainSerializer(lambda b: "0x" + b.hex(), return_type=str, when_used="json")

#: Arbitrary bytes (hex in JSON).
HexBytes = Annotated[bytes, BeforeValidator(_to_bytes), _hex]
#: Exactly 32 bytes: ids and hashes (SM3 digests, job keys).
Bytes32 = Annotated[bytes, BeforeValidator(_fixed(32)), _hex]


def _address(value: Any) -> str:
    from eth_utils import is_address, to_checksum_address

    if not isinstance(value, str) or not is_address(value):
        raise InvalidInput(f"not an address: {value!r}")
    return to_checksum_address(value)


#: A checksummed 20-byte address.
Address = Annotated[str, BeforeValidator(_address)]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class Role(enum.IntEnum):
    """Member roles, numbered as in ``IRegistry.Role``."""

    NONE = 0
    DEPARTMENT = 1
    BANK = 2
    REGULATOR = 3
    COORDINATOR = 4
    RESEARCHER = 5


class ProposalKind(enum.IntEnum):
    """Governance proposal kinds, numbered as in ``Registry.ProposalKind``."""

    ADD_MEMBER = 0
    REMOVE_MEMBER = 1
    ADD_GOVERNOR = 2
    REMOVE_GOVERNOR = 3
    SET_THRESHOLD = 4


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, use_enum_values=False)


class MemberAdmission(_Model):
    """What governors propose to admit a member. The BLS key comes with its proof of possession.

    ``bls_public_key`` is the 48-byte compressed G1 key and ``bls_pop`` the 96-byte compressed proof
    (``py_ecc.bls.G2ProofOfPossession.PopProve``); the client converts both to EIP-2537 form.
    """

    account: Address
    role: Role
    name: str = Field(min_length=1, max_length=200)
    sm2_public_key: HexBytes
    bls_public_key: HexBytes = b""
    bls_pop: HexBytes = b""
    enode: str = ""


class Member(_Model):
    """A member as the Registry holds it (``bls_public_key`` in 128-byte EIP-2537 form)."""

    account: Address
    role: Role
    active: bool
    admitted_at: int
    name: str
    sm2_public_key: HexBytes
    bls_public_key: HexBytes
    enode: str


class Dataset(_Model):
    """A registered dataset."""

    dataset_id: Bytes32
    owner: Address
    schema_hash: Bytes32
    grade: int
    registered_at: int


class Terms(_Model):
    """The terms of an authorization; approvers sign exactly these."""

    job_id: Bytes32
    manifest_hash: Bytes32
    dataset_ids: tuple[Bytes32, ...] = Field(min_length=1)
    requester: Address
    expiry: int = Field(ge=0, lt=2**64)
    max_runs: int = Field(ge=0, lt=2**32)

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple ``(jobId, manifestHash, datasetIds, requester, expiry, maxRuns)``."""
        return (
            self.job_id,
            self.manifest_hash,
            list(self.dataset_ids),
            self.requester,
            self.expiry,
            self.max_runs,
        )


class Authorization(_Model):
    """A written authorization."""

    terms: Terms
    digest: Bytes32
    coordinator: Address
    created_at: int
    revoked_at: int
    via_bls: bool
    approvers: tuple[Address, ...]


class UsageReceipt(_Model):
    """What a node records after using its dataset under a job."""

    job_id: Bytes32
    dataset_id: Bytes32
    row_count: int = Field(ge=0, lt=2**64)
    result_hash: Bytes32
    started_at: int = Field(ge=0, lt=2**64)
    finished_at: int = Field(ge=0, lt=2**64)


class AuditAnchor(_Model):
    """A node's latest audit-log anchor."""

    head_hash: Bytes32
    entry_count: int
    sequence: int
    anchored_at: int


class Deployment(_Model):
    """Where the contracts of one federation live."""

    chain_id: int
    registry: Address
    authorizations: Address
    receipts: Address
    block_number: int = 0


class TxResult(_Model):
    """A mined transaction."""

    tx_hash: HexBytes
    block_number: int
    gas_used: int


class ProposalOutcome(_Model):
    """A governance proposal after a propose or approve call."""

    proposal_id: int
    approvals: int
    executed: bool
    tx: TxResult


class EventRecord(_Model):
    """One decoded contract event."""

    contract: str
    event: str
    address: Address
    block_number: int
    log_index: int
    tx_hash: HexBytes
    args: dict[str, Any]
