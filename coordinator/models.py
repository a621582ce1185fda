"""SQLModel tables of the coordinator's own database, and the pydantic models of its API."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, UniqueConstraint


def utcnow() -> datetime:
    """Timezone-aware now (UTC)."""
    return datetime.now(timezone.utc)


def aware(dt: datetime) -> datetime:
    """SQLite drops tzinfo: read naive datetimes back as UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class JobState(str, enum.Enum):
    """The job lifecycle."""

    SUBMITTED = "SUBMITTED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    AUTHORIZED = "AUTHORIZED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    FAILED = "FAILED"


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.REJECTED, JobState.EXPIRED, JobState.REVOKED, JobState.FAILED}
)


# ---------------------------------------------------------------- tables


class CoordBase(SQLModel, registry=registry()):
    """Base of the coordinator's tables: its own metadata, apart from the node's tables."""


class Job(CoordBase, table=True):
    """One job: its spec, manifest, chain terms, state and results."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True, unique=True)
    kind: str
    requester: str = Field(index=True)
    purpose: str
    state: str = Field(default=JobState.SUBMITTED.value, index=True)
    reason: str | None = None
    spec_json: str
    manifest_json: str
    manifest_hash: str
    terms_json: str | None = None
    expires_at: datetime
    max_runs: int = 1
    stage: str | None = None
    cluster_json: str | None = None
    results_json: str | None = None
    auth_tx: str | None = None
    authorization_mode: str | None = None
    """``per_owner`` or ``bls_aggregate`` (protocols.manifest.AuthorizationMode); None reads as per_owner."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class JobEvent(CoordBase, table=True):
    """The transition log: every state change, persisted before it is acted on."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True)
    from_state: str | None = None
    to_state: str
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)


class ApprovalState(str, enum.Enum):
    """Where one owner's approval request stands, as the coordinator sees it (stored as its value)."""

    UNSENT = "unsent"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


#: The allowed moves of an approval record: sent (the node may answer a decision at once), then decided once.
APPROVAL_MOVES: dict[ApprovalState, frozenset[ApprovalState]] = {
    ApprovalState.UNSENT: frozenset({ApprovalState.PENDING, ApprovalState.APPROVED, ApprovalState.REJECTED,
                                     ApprovalState.EXPIRED}),
    ApprovalState.PENDING: frozenset({ApprovalState.APPROVED, ApprovalState.REJECTED, ApprovalState.EXPIRED}),
    ApprovalState.APPROVED: frozenset(),
    ApprovalState.REJECTED: frozenset(),
    ApprovalState.EXPIRED: frozenset(),
}


def approval_may_move(src: str, dst: str) -> bool:
    """Whether an approval record may go from ``src`` to ``dst`` (staying is no move); False for a status
    that is not an :class:`ApprovalState`."""
    try:
        return src == dst or ApprovalState(dst) in APPROVAL_MOVES[ApprovalState(src)]
    except ValueError:
        return False


class ApprovalRecord(CoordBase, table=True):
    """The approval request sent to one data owner and what came back."""

    __table_args__ = (UniqueConstraint("job_id", "member"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True)
    member: str
    node_request_id: int | None = None
    request_hash: str
    status: str = ApprovalState.UNSENT.value
    """An :class:`ApprovalState` value; moves only as :data:`APPROVAL_MOVES` allows."""
    reason: str | None = None
    approval_json: str | None = None
    verified: bool = False
    updated_at: datetime = Field(default_factory=utcnow)


class TaskRecord(CoordBase, table=True):
    """One member's engine task within a job."""

    __table_args__ = (UniqueConstraint("job_id", "member"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True)
    member: str
    endpoint_json: str | None = None
    status: str = "new"  # new | ports | dispatched | running | succeeded | failed | stopped
    stage: str | None = None
    error: str | None = None
    detail_json: str | None = None
    last_seen: datetime | None = None


class Member(CoordBase, table=True):
    """The member directory, mirrored from the chain Registry (plus the node URL from the config)."""

    name: str = Field(primary_key=True)
    role: str
    account: str | None = None
    active: bool = True
    sm2_public_key: str = ""
    bls_public_key: str = ""
    node_url: str | None = None
    synced_at: datetime = Field(default_factory=utcnow)


class CatalogEntry(CoordBase, table=True):
    """One dataset in the global catalog, pulled from its node (metadata only)."""

    __table_args__ = (UniqueConstraint("member", "dataset"),)

    id: int | None = Field(default=None, primary_key=True)
    member: str = Field(index=True)
    dataset: str
    description: str = ""
    key_column: str | None = None
    row_count: int = 0
    max_grade: int = 0
    schema_hash: str = ""
    columns_json: str = "[]"
    categories: str = ""
    text: str = ""
    updated_at: datetime | None = None
    pulled_at: datetime = Field(default_factory=utcnow)


class PolicySnapshot(CoordBase, table=True):
    """A node's policy as last pulled (checked at submission; the node re-checks)."""

    member: str = Field(primary_key=True)
    policy_json: str
    pulled_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- API models


class JobOut(BaseModel):
    job_id: str
    kind: str
    requester: str
    purpose: str
    state: JobState
    reason: str | None
    stage: str | None
    manifest_hash: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    approvals: dict[str, str]
    tasks: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]


class SubmitOut(BaseModel):
    job_id: str
    state: JobState
    manifest_hash: str


class MemberOut(BaseModel):
    name: str
    role: str
    account: str | None
    active: bool
    node_url: str | None


class CatalogOut(BaseModel):
    member: str
    dataset: str
    description: str
    key_column: str | None
    row_count: int
    max_grade: int
    schema_hash: str
    columns: list[dict[str, Any]]
    updated_at: datetime | None


class DecisionIn(BaseModel):
    """A department's decision relayed through its node."""

    member: str
    approve: bool
    reason: str | None = None


class ResultOut(BaseModel):
    """An output sealed to the requester's SM2 key (the coordinator cannot read it)."""

    job_id: str
    name: str
    receiver: str
    envelope_b64: str
    sm3: str
