"""The boundary of the SecretFlow runner: job spec, per-party config, results.

A :class:`VerticalJobSpec` is what a user (or the coordinator) asks for. The runner
turns it into one :class:`PartyConfig` per party: the cluster addresses plus that
party's *own* input and output only — the same file a node would hand to its party
process, so no party ever learns another party's paths or columns.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PsiProtocolName = Literal["RR22", "ECDH", "ECDH_SM2", "ECDH_3PC"]
SpuProtocolName = Literal["SEMI2K", "ABY3"]
AlgorithmName = Literal["ss_lr", "ss_xgb", "sgb"]
StageName = Literal["psi", "train", "predict"]

DEFAULT_STAGES: list[StageName] = ["psi", "train", "predict"]
# what a job may ask for: PSI alone, training (with or without the joint in-sample prediction),
# or prediction with a model stored by an earlier training job
STAGE_PLANS: tuple[tuple[str, ...], ...] = (
    ("psi",),
    ("psi", "train"),
    ("psi", "train", "predict"),
    ("psi", "predict"),
)

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
    SINGLE_CLASS = 6  # the training rows' labels are all one class (AUC undefined, nothing to learn)
    MODEL_INVALID = 7  # a stored model part is missing, corrupt, or does not fit this job


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
    model_dir: Path | None = Field(
        default=None,
        description="this party's private model part: written by `train` (default output_dir/model), "
        "read by a `predict` run without `train` (required there)",
    )
    checked_rows: int | None = Field(
        default=None, ge=1,
        description="set by a node that wrote this input itself and checked its cells while writing it "
        "(the key, the features, the label): its row count. The party then reads only the header",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"party name {v!r} must match {_NAME_RE.pattern}")
        return v


# SS-LR's sig_type "real" (1 / (1 + exp(-x)) on the SPU, SEMI2K, FM64, 18 fraction bits) trains
# correctly with 3 parties and returns garbage weights (~1e13) with 5 (measured with 2 and 12
# columns per party; "sr" is fine with 5) — so a job with more parties is refused by name.
MAX_PARTIES_REAL_SIGMOID = 3

_WOE = ("woe_bins", "woe_method", "woe_device", "score_base_points", "score_base_odds", "score_pdo", "points_tables")
_LR_ONLY = ("epochs", "batch_size", "sig_type", "penalty", "l2_norm", "standardize", *_WOE)
WoeMethod = Literal["quantile", "eq_range", "chimerge"]
WoeDevice = Literal["spu", "heu"]
_TREE_ONLY = (
    "num_boost_round",
    "max_depth",
    "reg_lambda",
    "subsample",
    "colsample_by_tree",
    "sketch_eps",
    "base_score",
    "seed",
)


class ModelParams(_Model):
    """The model and its training parameters.

    ``algorithm`` picks the learner: ``ss_lr`` (secretflow.ml.linear.ss_sgd.SSRegression,
    logistic), ``ss_xgb`` (secretflow.ml.boost.ss_xgb_v.Xgb, every leaf weight secret-shared) or
    ``sgb`` (secretflow.ml.boost.sgb_v.Sgb, SecureBoost on HEU: the label holder learns the leaf
    weights). Parameters of the other family are rejected when set to a non-default value.

    ``test_fraction`` turns on a deterministic hold-out: a row is a *test* row iff
    ``int.from_bytes(sha256(split_salt.encode() + b"\\x00" + key.encode()).digest()[:4], "big")
    < int(test_fraction * 2**32)`` — a pure function of the join key that every party computes on
    its own (see :func:`protocols.secretflow.split.holdout_mask`). Training uses the train rows only;
    prediction covers every intersection row.
    """

    algorithm: AlgorithmName = "ss_lr"
    # SS-LR
    epochs: int | None = Field(
        default=None, ge=1, le=200, description="None = chosen from the training rows (sslr_schedule)"
    )
    learning_rate: float = Field(default=0.3, gt=0, description="SS-LR step size, or the trees' shrinkage (<= 1)")
    batch_size: int | None = Field(
        default=None, ge=16, description="None = chosen from the training rows (sslr_schedule)"
    )
    sig_type: Literal["t1", "t3", "t5", "sr", "real", "df"] = "sr"
    penalty: Literal["None", "l2"] = "None"
    l2_norm: float = Field(default=0.0, ge=0)
    standardize: bool = Field(
        default=True, description="each party z-scores its own features locally (not with woe_bins: WOE is used as is)"
    )
    # SS-LR on WOE-binned features and its points scorecard
    woe_bins: int | None = Field(
        default=None, ge=2, le=64, description="None = raw features; else the maximum bins per feature"
    )
    woe_method: WoeMethod = "quantile"
    woe_device: WoeDevice = Field(default="spu", description="where the label is kept while bins are counted")
    score_base_points: float = Field(default=600.0, ge=0, le=100_000)
    score_base_odds: float = Field(default=50.0, gt=0, le=1e6, description="good:bad odds at score_base_points")
    score_pdo: float = Field(default=20.0, gt=0, le=10_000, description="points to double the good:bad odds")
    points_tables: bool = Field(
        default=False, description="reveal each party its own weights so it can keep its own bins' points table"
    )
    # SS-XGB / SGB
    num_boost_round: int = Field(default=10, ge=1, le=1024)
    max_depth: int = Field(default=5, ge=1, le=16)
    reg_lambda: float = Field(default=0.1, ge=0, le=10_000)
    subsample: float = Field(default=1.0, gt=0, le=1)
    colsample_by_tree: float = Field(default=1.0, gt=0, le=1)
    sketch_eps: float = Field(default=0.1, gt=0, le=1)
    base_score: float = Field(default=0.0, ge=-10, le=10)
    seed: int = Field(default=42, ge=0)
    # train/test split (every party computes it from the join key alone)
    test_fraction: float | None = Field(default=None, gt=0, lt=1, description="None = train on every row")
    split_salt: str = Field(default="split", max_length=256)

    @model_validator(mode="after")
    def _family(self) -> ModelParams:
        is_tree = self.algorithm in ("ss_xgb", "sgb")
        foreign = _LR_ONLY if is_tree else _TREE_ONLY
        # a serialized ModelParams carries every field: only a non-default value is a mistake
        wrong = sorted(
            f for f in foreign if f in self.model_fields_set and getattr(self, f) != type(self).model_fields[f].default
        )
        if wrong:
            raise ValueError(f"parameters {wrong} do not apply to algorithm {self.algorithm!r}")
        if is_tree and self.learning_rate > 1:
            raise ValueError("learning_rate of a tree model must be in (0, 1]")
        if self.woe_bins is None:
            woe_only = sorted(
                f
                for f in _WOE
                if f != "woe_bins"
                and f in self.model_fields_set
                and getattr(self, f) != type(self).model_fields[f].default
            )
            if woe_only:
                raise ValueError(f"parameters {woe_only} need woe_bins (the WOE scorecard)")
        elif self.points_tables and self.sig_type != "real":
            raise ValueError(
                f"points_tables needs sig_type 'real' (bin points add up to exact log-odds), got {self.sig_type!r}"
            )
        return self

    @property
    def scorecard(self) -> Scorecard | None:
        """The points scaling of a WOE model (None without ``woe_bins``)."""
        if self.woe_bins is None:
            return None
        return Scorecard(base_points=self.score_base_points, base_odds=self.score_base_odds, pdo=self.score_pdo)


#: SS-LR's schedule when a spec leaves it out: about this many gradient steps in all …
SSLR_TARGET_STEPS = 120
#: … with batches of about a sixteenth of the training rows, a power of two within these bounds …
SSLR_BATCH_BOUNDS = (64, 1024)
#: … and at least this many, at most this many passes over the data.
SSLR_EPOCH_BOUNDS = (5, 50)


def sslr_schedule(n_rows: int, epochs: int | None = None, batch_size: int | None = None) -> tuple[int, int]:
    """SS-LR's ``(epochs, batch_size)`` on ``n_rows`` training rows; a value the spec gives is kept.

    Every party computes it from the intersection's training rows, which all of them know after PSI,
    so the schedule is the same everywhere without being agreed. The rule: batches of about
    ``n_rows / 16`` rows (a power of two in :data:`SSLR_BATCH_BOUNDS`, never more than the rows), and
    enough epochs for :data:`SSLR_TARGET_STEPS` gradient steps (within :data:`SSLR_EPOCH_BOUNDS`).
    Five epochs of 512-row batches on 1,000 rows (10 steps) left UCI German Credit 0.04 AUC below a
    plaintext logistic regression; about 150 steps closed the gap to 0.014.

    >>> sslr_schedule(1_000), sslr_schedule(4_400), sslr_schedule(22_000), sslr_schedule(300_000)
    ((8, 64), (8, 256), (6, 1024), (5, 1024))
    """
    n = max(1, int(n_rows))
    if batch_size is None:
        lo, hi = SSLR_BATCH_BOUNDS
        batch_size = min(hi, max(lo, 1 << max(0, round(math.log2(max(1.0, n / 16))))))
    batch_size = min(batch_size, n)  # SSRegression trains on full batches only
    if epochs is None:
        steps_per_epoch = max(1, n // batch_size)
        lo, hi = SSLR_EPOCH_BOUNDS
        epochs = min(hi, max(lo, math.ceil(SSLR_TARGET_STEPS / steps_per_epoch)))
    return epochs, batch_size


class Scorecard(_Model):
    """Points scaling: ``base_points`` at good:bad odds ``base_odds``:1, ``pdo`` points to double the odds.

    ``points = offset - factor * logit(PD)``, ``logit(PD) = ln(PD / (1 - PD))`` (bad:good log-odds).
    """

    base_points: float = 600.0
    base_odds: float = Field(default=50.0, gt=0)
    pdo: float = Field(default=20.0, gt=0)

    @property
    def factor(self) -> float:
        """Points per unit of log-odds."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """The points of a row whose log-odds are 0 (PD = 0.5)."""
        return self.base_points - self.factor * math.log(self.base_odds)

    def points(self, logit: Any) -> Any:
        """Points of a (numpy array of) bad:good log-odds."""
        return self.offset - self.factor * logit


def check_real_sigmoid(model: ModelParams, n_parties: int, training: bool) -> None:
    """Raise ``ValueError`` if SS-LR would train with the SPU's exact sigmoid on too many parties."""
    if training and model.algorithm == "ss_lr" and model.sig_type == "real" and n_parties > MAX_PARTIES_REAL_SIGMOID:
        raise ValueError(
            f"sig_type 'real' is unreliable on the SPU with {n_parties} parties (at most "
            f"{MAX_PARTIES_REAL_SIGMOID}); use 'sr' (the WOE scorecard then derives points from the PD)"
        )


def check_stages(
    stages: list[str], label_column: str | None, model: ModelParams, parties: list[PartySpec]
) -> None:
    """Raise ``ValueError`` unless ``stages`` is a runnable plan for these parties and parameters."""
    if tuple(stages) not in STAGE_PLANS:
        raise ValueError(f"stages {stages} is not one of {[list(p) for p in STAGE_PLANS]}")
    if "train" in stages and not label_column:
        raise ValueError("training needs a label_column")
    if "train" not in stages and model.test_fraction is not None:
        raise ValueError("test_fraction splits training rows; it needs the train stage")
    if "predict" in stages and "train" not in stages:
        missing = [p.name for p in parties if p.model_dir is None]
        if missing:
            raise ValueError(f"prediction with a stored model needs model_dir for {missing}")


class VerticalJobSpec(_Model):
    """PSI on a join key, then (per ``stages``) training and joint prediction revealed to the label holder.

    ``label_party`` is the hub of the PSI and the receiver of predictions; in a PSI-only or
    predict-only job it needs no label column.
    """

    job_id: str = Field(
        default_factory=lambda: "sf-" + uuid.uuid4().hex[:12], pattern=r"^[A-Za-z0-9_.-]{1,64}$"
    )
    parties: list[PartySpec] = Field(min_length=2)
    join_key: str
    label_party: str
    label_column: str | None = None
    stages: list[StageName] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    psi_protocol: PsiProtocolName = "RR22"
    spu_protocol: SpuProtocolName = "SEMI2K"
    model: ModelParams = Field(default_factory=ModelParams)
    timeout_s: float = Field(default=600.0, gt=0)
    host: str = "127.0.0.1"
    party_hosts: dict[str, str] = Field(
        default_factory=dict, description="a party's own loopback address instead of `host` (e.g. 127.0.0.2)"
    )
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
        check_stages(self.stages, self.label_column, self.model, self.parties)
        check_real_sigmoid(self.model, len(names), "train" in self.stages)
        for h in (self.host, *self.party_hosts.values()):
            if h != "localhost" and not h.startswith("127."):
                # this runner starts every party on one machine; remote parties are the node's job
                raise ValueError(f"the local runner binds loopback only (host must be 127.x.x.x, got {h!r})")
        unknown = sorted(set(self.party_hosts) - set(names))
        if unknown:
            raise ValueError(f"party_hosts names unknown parties {unknown}")
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
    """Where one party listens: SecretFlow gRPC, the job's SPU link, one PSI link per peer.

    ``host`` is the party's own address (its machine); None means the cluster's ``host``.
    """

    name: str
    host: str | None = Field(default=None, min_length=1, max_length=253)
    sf_port: int = Field(gt=0, lt=65536)
    spu_port: int = Field(gt=0, lt=65536)
    psi_ports: dict[str, int] = Field(default_factory=dict)


class ClusterSpec(_Model):
    """The parties of one job and their endpoints (on ``host`` unless an endpoint names its own)."""

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

    def host_of(self, name: str) -> str:
        """The address party ``name`` listens on: its own ``host``, else the cluster's."""
        return self.endpoint(name).host or self.host


class PartyConfig(_Model):
    """Everything one party process needs — its own data paths and nobody else's."""

    job_id: str
    cluster: ClusterSpec
    me: PartySpec
    join_key: str
    label_party: str
    label_column: str | None = None
    stages: list[StageName] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    psi_protocol: PsiProtocolName = "RR22"
    spu_protocol: SpuProtocolName = "SEMI2K"
    model: ModelParams = Field(default_factory=ModelParams)

    @model_validator(mode="after")
    def _consistent(self) -> PartyConfig:
        check_stages(self.stages, self.label_column, self.model, [self.me])
        names = self.cluster.names
        check_real_sigmoid(self.model, len(names), "train" in self.stages)
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
    woe: float = 0.0  # WOE binning (SS-LR scorecard), part of train
    load: float = 0.0  # loading stored model parts (a prediction-only run)
    predict: float = 0.0
    total: float = 0.0


class LabelMetrics(_Model):
    """What the label holder learns about the model's scores.

    ``auc``/``ks``/``n_rows``/``positive_rate`` cover every scored row. With a split,
    ``*_train`` cover the rows the model was trained on and ``*_test`` the held-out rows
    (``auc_test``/``ks_test`` are None when the test rows hold one class only).
    """

    auc: float
    n_rows: int
    positive_rate: float
    ks: float | None = None
    algorithm: AlgorithmName | None = None
    auc_train: float | None = None
    ks_train: float | None = None
    n_train: int | None = None
    positive_rate_train: float | None = None
    auc_test: float | None = None
    ks_test: float | None = None
    n_test: int | None = None
    positive_rate_test: float | None = None


class PartyResult(_Model):
    """One party's report, printed by the party process as its last JSON line."""

    party: str
    input_rows: int
    intersection_rows: int
    output_files: list[Path]
    stages: StageTimes
    metrics: LabelMetrics | None = None
    model_dir: Path | None = Field(default=None, description="where this party's model part was written")


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


MODEL_FORMAT = "dcp.sf.model.v1"
MODEL_PART_FILE = "model.json"


class ModelPart(_Model):
    """One party's stored part of a trained model (``model.json`` in its own model dir).

    The files it lists (secret shares, own split nodes) sit next to it; see
    :mod:`protocols.secretflow.learners` for what each algorithm stores where.
    """

    format: Literal["dcp.sf.model.v1"] = MODEL_FORMAT
    model_id: str = Field(description="the training job's id; every party's part carries the same")
    algorithm: AlgorithmName
    party: str
    parties: list[str] = Field(description="every party of the model, in the SPU's (sorted) order")
    label_party: str
    features: list[str] = Field(description="this party's feature columns, in model order")
    spu_protocol: SpuProtocolName
    mean: list[float] | None = Field(default=None, description="SS-LR: this party's own standardization")
    std: list[float] | None = None
    sig_type: str | None = None
    objective: str | None = None
    base: float | None = None
    share_files: list[str] = Field(default_factory=list)
    woe_rules: str | None = Field(default=None, description="SS-LR on WOE: this party's own bin rules (file name)")
    scorecard: Scorecard | None = Field(default=None, description="SS-LR on WOE: the points scaling")
    files_sha256: dict[str, str] = Field(default_factory=dict)
    created_at: str

    def fingerprint(self) -> str:
        """What every party's part must agree on (compared across parties before predicting)."""
        return "|".join(
            [self.model_id, self.algorithm, ",".join(self.parties), self.label_party, self.spu_protocol]
        )
