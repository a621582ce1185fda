"""SQLModel tables of the node's metadata, and the pydantic models of its API."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PField
from sqlmodel import Field, SQLModel, UniqueConstraint

from protocols.manifest import ApprovalRequestIn, JobColumns  # noqa: F401 - the slice lives with the manifest

DType = Literal["int", "float", "bool", "date", "string", "uscc", "resident_id"]
DTYPES: tuple[str, ...] = ("int", "float", "bool", "date", "string", "uscc", "resident_id")
ID_DTYPES: tuple[str, ...] = ("uscc", "resident_id")


def utcnow() -> datetime:
    """Timezone-aware now (UTC)."""
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- tables


class Dataset(SQLModel, table=True):
    """A dataset registered on this node; its rows live in ``table_name`` of the same database."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    description: str = ""
    source: str  # csv | parquet | sql
    source_ref: str = ""  # file name, or URL without password + table / query digest
    key_column: str | None = None
    table_name: str
    row_count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ColumnMeta(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    position: int
    name: str
    dtype: str
    description: str = ""
    grade: int = 2
    category: str | None = None
    min_value: float | None = None
    max_value: float | None = None


class QualityRecord(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    report_json: str


class AuditEntry(SQLModel, table=True):
    """One append-only audit entry; ``hash = SM3(prev_hash || canonical JSON of the entry)``."""

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    ts: str
    actor: str
    action: str
    target: str = ""
    outcome: str = "ok"  # ok | refused
    detail: str = "{}"  # canonical JSON
    prev_hash: str
    hash: str = Field(index=True)


class AuditBoundary(SQLModel, table=True):
    """The last pruned entry (seq, hash): verification of the remaining log starts here."""

    id: int = Field(default=1, primary_key=True)
    seq: int
    hash: str


class AuditAnchorRecord(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    seq: int
    hash: str
    ref: str  # transaction hash or file position
    anchored_at: datetime = Field(default_factory=utcnow)


class PolicyRecord(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    version: int
    policy_json: str
    updated_at: datetime = Field(default_factory=utcnow)


class ApprovalStatus(str, enum.Enum):
    """An inbox request's status (stored as its value); only a pending request is ever decided."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


#: The allowed approval moves: pending to one decision, never back and never again.
APPROVAL_MOVES: dict[ApprovalStatus, frozenset[ApprovalStatus]] = {
    ApprovalStatus.PENDING: frozenset({ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED}),
    ApprovalStatus.APPROVED: frozenset(),
    ApprovalStatus.REJECTED: frozenset(),
    ApprovalStatus.EXPIRED: frozenset(),
}


class ApprovalRecord(SQLModel, table=True):
    """One request in the approvals inbox and its decision."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True, unique=True)
    requester: str
    kind: str
    manifest_json: str
    manifest_hash: str
    expires_at: datetime
    status: str = ApprovalStatus.PENDING.value
    """An :class:`ApprovalStatus` value; moves only as :data:`APPROVAL_MOVES` allows."""
    reason: str | None = None
    approval_json: str | None = None
    chain_ref: str | None = None
    job_manifest_hash: str | None = None
    """SM3 of the whole job manifest whose terms this node approved on chain (hex)."""
    terms_json: str | None = None
    """The chain terms this node approved (contracts.models.Terms JSON)."""
    decided_by: str | None = None
    decided_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- API models


class ColumnOut(BaseModel):
    name: str
    dtype: str
    description: str
    grade: int
    category: str | None
    min_value: float | None
    max_value: float | None


class ColumnEdit(BaseModel):
    """Edit of one column's schema; unset fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: DType | None = None
    description: str | None = None
    grade: int | None = PField(default=None, ge=1, le=4)
    category: str | None = None
    min_value: float | None = None
    max_value: float | None = None


class SchemaEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: list[ColumnEdit] = PField(min_length=1)
    description: str | None = None


class ColumnHint(BaseModel):
    """Ingest-time declaration for a column (overrides inference)."""

    model_config = ConfigDict(extra="forbid")

    dtype: DType | None = None
    description: str | None = None
    grade: int | None = PField(default=None, ge=1, le=4)
    category: str | None = None
    min_value: float | None = None
    max_value: float | None = None


class IngestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    key_column: str | None = None
    description: str = ""
    encoding: str = "utf-8"
    delimiter: str = ","
    columns: dict[str, ColumnHint] = PField(default_factory=dict)


class SqlIngestRequest(IngestOptions):
    url: str
    table: str | None = None
    query: str | None = None


class RuleResult(BaseModel):
    rule: str  # uscc_check | resident_id_check | null | range | duplicate_key | type_mismatch
    column: str
    count: int
    sample_rows: list[int]  # 1-based data row numbers, never values


class QualityReport(BaseModel):
    dataset: str
    total_rows: int
    rows_with_issues: int
    results: list[RuleResult]
    created_at: datetime


class QualitySummary(BaseModel):
    total_rows: int
    rows_with_issues: int
    issues_per_rule: dict[str, int]


class DatasetOut(BaseModel):
    name: str
    description: str
    source: str
    key_column: str | None
    row_count: int
    columns: list[ColumnOut]
    quality: QualitySummary | None
    created_at: datetime
    updated_at: datetime


class CatalogEntry(BaseModel):
    """What the coordinator may know about a dataset: metadata only."""

    node: str
    name: str
    description: str
    key_column: str | None
    row_count: int
    columns: list[ColumnOut]
    max_grade: int
    schema_hash: str
    quality: QualitySummary | None
    updated_at: datetime


class Policy(BaseModel):
    """The node's own policy; re-checked before anything runs."""

    model_config = ConfigDict(extra="forbid")

    negative_list: list[str] = PField(default_factory=list)
    """Column categories that never take part in any computation."""
    max_grade: dict[str, int] = PField(default_factory=dict)
    """Highest sensitivity grade allowed per job kind; kinds not listed get ``default_max_grade``."""
    default_max_grade: int = PField(default=2, ge=0, le=4)
    min_group_size: int = PField(default=10, ge=1)
    allowed_requesters: list[str] = PField(default_factory=list)
    """Members allowed to ask; empty means any member holding an allowed role."""
    allowed_roles: list[str] = PField(default_factory=lambda: ["bank", "department", "regulator", "researcher"])
    privacy_budgets: dict[str, float] = PField(default_factory=dict)
    """Dataset -> total differential-privacy ε it may ever spend (a statistics job with ε); a DP query
    on a dataset without a budget is refused. Spent ε is kept in the node's ledger (``protocols.he.budget``, in the node's database)."""

    @field_validator("privacy_budgets")
    @classmethod
    def _budgets(cls, v: dict[str, float]) -> dict[str, float]:
        for ds, eps in v.items():
            if not 0 <= eps < float("inf"):
                raise ValueError(f"privacy budget of {ds!r} must be a finite ε >= 0")
        return v

    @field_validator("max_grade")
    @classmethod
    def _grades(cls, v: dict[str, int]) -> dict[str, int]:
        for kind, g in v.items():
            if not 0 <= g <= 4:
                raise ValueError(f"max grade for {kind!r} must be 0..4")
        return v


class PolicyOut(Policy):
    version: int
    updated_at: datetime


class JobCheck(BaseModel):
    """A job as the node's policy sees it."""

    kind: str
    requester: str
    requester_role: str
    purpose: str = PField(min_length=1)
    inputs: list[JobColumns]
    aggregate_group_size: int | None = None


class PolicyDecision(BaseModel):
    allowed: bool
    reasons: list[str]


class AuditEntryOut(BaseModel):
    seq: int
    ts: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict
    prev_hash: str
    hash: str


class AuditVerifyResult(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int
    head_hash: str


class AuditHead(BaseModel):
    node: str
    seq: int
    hash: str


class AnchorOut(BaseModel):
    seq: int
    hash: str
    ref: str
    anchored_at: datetime


class PruneOut(BaseModel):
    pruned: int
    boundary_seq: int
    boundary_hash: str


class ApprovalRequestOut(BaseModel):
    id: int
    job_id: str
    status: str
    manifest: dict
    manifest_hash: str
    summary: list[str]
    """The manifest in words, for the person who decides."""
    reason: str | None
    approval: dict | None
    chain_ref: str | None
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime


class TaskStatus(str, enum.Enum):
    """A task's status on this node (stored as its value); :data:`TASK_MOVES` says where each may go."""

    PORTS = "ports"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


#: The allowed task transitions: a task is created ``ports`` (reserved by an engine's ``prepares`` step,
#: e.g. SecretFlow's ports) or ``running`` (any other step) and ends in one of the three terminal statuses, never to leave it.
TASK_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PORTS: frozenset({TaskStatus.RUNNING, TaskStatus.STOPPED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.STOPPED}),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.STOPPED: frozenset(),
}


def task_may_move(src: str, dst: str) -> bool:
    """Whether a task may go from status ``src`` to ``dst`` (the same status is no move: allowed)."""
    return src == dst or TaskStatus(dst) in TASK_MOVES[TaskStatus(src)]


class NodeTask(SQLModel, table=True):
    """One task of a job on this node; every state change is persisted before it is acted on."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True, unique=True)
    status: str = TaskStatus.PORTS.value
    """A :class:`TaskStatus` value; moves only as :data:`TASK_MOVES` allows."""
    stage: str | None = None
    error: str | None = None
    endpoint_json: str
    peers_json: str = "[]"
    label_party: str = ""
    datasets_json: str = "[]"
    """[{"dataset", "columns", "rows"}] extracted for the run."""
    intersection_rows: int | None = None
    outputs_json: str = "{}"
    """name -> {"receiver", "sm3", "size"}; only sealed copies are kept."""
    result_hash: str | None = None
    receipt_tx: str | None = None
    extract_dir: str | None = None
    model_dir: str | None = None
    """vertical_train: this node's private model part (kept after the task, never sent anywhere)."""
    model_from: str | None = None
    """vertical_predict: the training job whose model part this task used."""
    manifest_json: str | None = None
    """A step-route task of a job this node requested without data of its own (so no approval slice):
    the whole job manifest, checked against the authorization on chain when the task began."""
    pid: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = PField(min_length=1, max_length=2000)


class TaskOutputInfo(BaseModel):
    name: str
    receiver: str
    sm3: str
    size: int


class TaskOut(BaseModel):
    job_id: str
    party: str
    status: str
    stage: str | None
    error: str | None
    intersection_rows: int | None
    outputs: list[TaskOutputInfo]
    result_hash: str | None
    receipt_tx: str | None
    started_at: float | None
    finished_at: float | None


class TaskStopped(BaseModel):
    status: str


class SealedOutput(BaseModel):
    """An output sealed (SM2 envelope) to its receiver's registered key; never plaintext."""

    name: str
    receiver: str
    envelope_b64: str
    sm3: str


class HeModel(SQLModel, table=True):
    """A requester's scoring model for an engine (engines/ckks), kept on its own node (never sent anywhere in the clear)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    model_json: str
    """{"intercept", "weights": {member: {column: weight}}} — the requester's own member name included."""
    salt: str
    commitment: str
    """SM3 (hex) of the salted canonical model: what a job manifest names and departments sign."""
    created_at: datetime = Field(default_factory=utcnow)


