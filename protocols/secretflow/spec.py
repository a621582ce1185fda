"""The boundary of the SecretFlow runner: job spec, per-party config, results.

A :class:`VerticalJobSpec` is what a user (or the coordinator) asks for. The runner
turns it into one :class:`PartyConfig` per party: the cluster addresses plus that
party's *own* input and output only — the same file a node would hand to its party
process, so no party ever learns another party's paths or columns.
"""

from __future__ import annotations

import enum
import re
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PsiProtocolName = Literal["RR22", "ECDH", "ECDH_SM2", "ECDH_3PC"]
SpuProtocolName = Literal["SEMI2K", "ABY3"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# SecretFlow's names for the PSI choices offered here. The two-party protocols are chained
# over the parties (see party.psi_schedule); ECDH_3PC intersects exactly three at once.
PSI_PROTOCOLS: dict[str, tuple[str, str]] = {
    "RR22": ("PROTOCOL_RR22", "CURVE_FOURQ"),
    "ECDH": ("PROTOCOL_ECDH", "CURVE_25519"),
    "ECDH_SM2": ("PROTOCOL_ECDH", "CURVE_SM2"),  # 国密 mode
    "ECDH_3PC": ("PROTOCOL_ECDH_3PC", "CURVE_25519"),
}


class PartyExit(enum.IntEnum):
    """Exit codes of a party process; the runner maps them to named errors."""

    OK = 0
    RUNTIME = 1  # SecretFlow or a peer failed during the run
    CONFIG = 2  # unreadable or invalid party config
    INPUT_MISSING = 3  # the input CSV does not exist / cannot be read
    INPUT_INVALID = 4  # the input CSV lacks a column, has duplicate keys, non-numeric features …
    EMPTY_INTERSECTION = 5  # PSI found no common key


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartySpec(_Model):
    """One member's part in a job: its data and where its outputs go."""

    name: str = Field(description="party name: lowercase letters, digits, underscore")
    input_csv: Path
    output_dir: Path
    features: list[str] | None = Field(
        default=None, description="feature columns; None = every column but the join key and label"
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"party name {v!r} must match {_NAME_RE.pattern}")
        return v


class ModelParams(_Model):
    """SS-LR (secretflow.ml.linear.ss_sgd.SSRegression) training parameters."""

    epochs: int = Field(default=5, ge=1, le=200)
    learning_rate: float = Field(default=0.3, gt=0)
    batch_size: int = Field(default=1024, ge=16)
    sig_type: Literal["t1", "t3", "t5", "sr", "real", "df"] = "sr"
    penalty: Literal["None", "l2"] = "None"
    l2_norm: float = Field(default=0.0, ge=0)
    standardize: bool = Field(default=True, description="each party z-scores its own features locally")


class VerticalJobSpec(_Model):
    """PSI on a join key, then SS-LR training and joint prediction revealed to the label holder."""

    job_id: str = Field(
        default_factory=lambda: "sf-" + uuid.uuid4().hex[:12], pattern=r"^[A-Za-z0-9_.-]{1,64}$"
    )
    parties: list[PartySpec] = Field(min_length=2)
    join_key: str
    label_party: str
    label_column: str
    psi_protocol: PsiProtocolName = "RR22"
    spu_protocol: SpuProtocolName = "SEMI2K"
    model: ModelParams = Field(default_factory=ModelParams)
    timeout_s: float = Field(default=600.0, gt=0)
    host: str = "127.0.0.1"
    work_dir: Path | None = Field(default=None, description="configs and logs; a temp dir if None")

    @model_validator(mode="after")
    def _consistent(self) -> VerticalJobSpec:
        names = [p.name for p in self.parties]
        if len(set(names)) != len(names):
            raise ValueError(f"party names must be unique, got {names}")
        if self.label_party not in names:
            raise ValueError(f"label_party {self.label_party!r} is not one of the parties {names}")
        outs = [p.output_dir.resolve() for p in self.parties]
        if len(set(outs)) != len(outs):
            raise ValueError("each party needs its own output_dir")
        if self.spu_protocol == "ABY3" and len(names) != 3:
            raise ValueError("ABY3 needs exactly 3 parties")
        if self.psi_protocol == "ECDH_3PC" and len(names) != 3:
            raise ValueError("ECDH_3PC needs exactly 3 parties")
        if self.host not in ("127.0.0.1", "localhost") and not self.host.startswith("127."):
            # this runner starts every party on one machine; remote parties are the node's job
            raise ValueError("the local runner binds loopback only (host must be 127.x.x.x)")
        for p in self.parties:
            if p.features is not None:
                if self.join_key in p.features:
                    raise ValueError(f"{p.name}: the join key cannot be a feature")
                if p.name == self.label_party and self.label_column in p.features:
                    raise ValueError(f"{p.name}: the label cannot be a feature")
        return self

    def party(self, name: str) -> PartySpec:
        """The spec of party ``name``."""
        for p in self.parties:
            if p.name == name:
                return p
        raise KeyError(name)


class PartyEndpoint(_Model):
    """Where one party listens: SecretFlow gRPC, the job's SPU link, one PSI link per peer."""

    name: str
    sf_port: int = Field(gt=0, lt=65536)
    spu_port: int = Field(gt=0, lt=65536)
    psi_ports: dict[str, int] = Field(default_factory=dict)


class ClusterSpec(_Model):
    """The parties of one job and their endpoints (all on ``host``)."""

    host: str = "127.0.0.1"
    parties: list[PartyEndpoint]
    connect_timeout_s: float = Field(default=60.0, gt=0)
    recv_timeout_s: float = Field(default=600.0, gt=0)

    @property
    def names(self) -> list[str]:
        """Party names in a canonical (sorted) order, the same in every process."""
        return sorted(p.name for p in self.parties)

    def endpoint(self, name: str) -> PartyEndpoint:
        """The endpoint of party ``name``."""
        for p in self.parties:
            if p.name == name:
                return p
        raise KeyError(name)


class PartyConfig(_Model):
    """Everything one party process needs — its own data paths and nobody else's."""

    job_id: str
    cluster: ClusterSpec
    me: PartySpec
    join_key: str
    label_party: str
    label_column: str
    psi_protocol: PsiProtocolName = "RR22"
    spu_protocol: SpuProtocolName = "SEMI2K"
    model: ModelParams = Field(default_factory=ModelParams)

    @model_validator(mode="after")
    def _consistent(self) -> PartyConfig:
        names = self.cluster.names
        if self.me.name not in names:
            raise ValueError(f"party {self.me.name!r} is not in the cluster {names}")
        if self.label_party not in names:
            raise ValueError(f"label_party {self.label_party!r} is not in the cluster {names}")
        if self.psi_protocol == "ECDH_3PC" and len(names) != 3:
            raise ValueError("ECDH_3PC needs exactly 3 parties")
        for ep in self.cluster.parties:
            for peer in psi_peers(ep.name, self.label_party, names):
                if peer not in ep.psi_ports:
                    raise ValueError(f"{ep.name} has no PSI port for peer {peer}")
        return self


def psi_peers(name: str, label_party: str, names: list[str]) -> list[str]:
    """The parties ``name`` runs a two-party PSI with: the label holder pairs with everyone."""
    if name == label_party:
        return [n for n in names if n != label_party]
    return [label_party]


class StageTimes(_Model):
    """Wall-clock seconds of each stage, as measured by one party."""

    connect: float = 0.0
    psi: float = 0.0
    train: float = 0.0
    predict: float = 0.0
    total: float = 0.0


class LabelMetrics(_Model):
    """What the label holder learns about the jointly trained model (training set)."""

    auc: float
    n_rows: int
    positive_rate: float


class PartyResult(_Model):
    """One party's report, printed by the party process as its last JSON line."""

    party: str
    input_rows: int
    intersection_rows: int
    output_files: list[Path]
    stages: StageTimes
    metrics: LabelMetrics | None = None


class RunResult(_Model):
    """The outcome of a whole run."""

    job_id: str
    label_party: str
    psi_protocol: PsiProtocolName
    parties: dict[str, PartyResult]
    elapsed_s: float

    @property
    def intersection_rows(self) -> int:
        """Rows in the intersection (the same at every party)."""
        return self.parties[self.label_party].intersection_rows

    @property
    def metrics(self) -> LabelMetrics:
        """The label holder's metrics."""
        m = self.parties[self.label_party].metrics
        assert m is not None
        return m

    @property
    def stages(self) -> StageTimes:
        """Stage times as measured at the label holder."""
        return self.parties[self.label_party].stages
