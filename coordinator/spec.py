"""Job specs: what a requester asks for, in YAML or JSON, validated with pydantic.

A spec names the kind, the requester, a free-text purpose, the join key, the label, the feature
columns per member and dataset, the model parameters, the receiver of each output, the expiry and
the maximum number of runs. Errors are named (:mod:`coordinator.errors`) and say which field is
wrong and why.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coordinator.errors import InvalidJobSpec, OutputNotToRequester, UnknownJobKind, spec_refused
from engines import registry
from engines.base import SubmitContext
from engines.ckks.coordinator import CkksEngine
from engines.errors import SpecRefused
from engines.secretflow.coordinator import KIND_STAGES, RUNNABLE  # noqa: F401 - read by tests and the CLI

#: Kinds whose spec carries the ``he`` section (the CKKS engine's, engines/ckks).
HE_KINDS: tuple[str, ...] = CkksEngine.kinds
PsiProtocol = Literal["RR22", "ECDH", "ECDH_SM2"]
PUBLISHED = "published"
"""``inputs[].columns: published``: every column the member publishes for that dataset (see InputSpec)."""
Algorithm = Literal["ss_lr", "ss_xgb", "sgb"]


def job_kinds() -> tuple[str, ...]:
    """Every kind an engine in the registry serves (engines/registry.py)."""
    return registry.kinds()


def kind_outputs(kind: str) -> tuple[str, ...]:
    """The outputs a job of ``kind`` produces, as its engine names them."""
    return registry.engine_for(kind).outputs[kind]


_NAME = r"^[a-z][a-z0-9_]{0,31}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Model):
    """Columns of one dataset of one member (features; the join key and label are implied)."""

    member: str = Field(pattern=_NAME)
    dataset: str = Field(min_length=1, max_length=200)
    columns: list[str] | Literal["published"] = Field(default_factory=list)
    """The feature columns, or ``published``: every column the member publishes for the dataset in the
    catalog but the join key and the label (resolved by the coordinator at submission)."""

    @field_validator("columns")
    @classmethod
    def _unique(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"columns are listed twice: {sorted({c for c in v if v.count(c) > 1})}")
        return v


class LabelSpec(_Model):
    """Where the label lives: the label holder, who also receives the scores.

    A ``vertical_predict`` job scores rows whose outcome is not known yet (current borrowers): it names
    the label holder's dataset and may leave ``column`` out."""

    member: str = Field(pattern=_NAME)
    dataset: str = Field(min_length=1)
    column: str | None = Field(default=None, min_length=1)


class OutputSpec(_Model):
    """Who receives one output."""

    name: str
    receiver: str = Field(pattern=_NAME)


class ModelSpec(_Model):
    """The algorithm and its parameters (SS-LR: epochs, learning_rate, batch_size, ...; SS-XGB / SGB:
    num_boost_round, max_depth, ...; any: test_fraction, split_salt), validated by the engine's
    ``ModelParams`` for every algorithm."""

    algorithm: Algorithm = "ss_lr"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params(self) -> ModelSpec:
        from protocols.secretflow.spec import ModelParams

        if "algorithm" in self.params and self.params["algorithm"] != self.algorithm:
            raise ValueError(f"params.algorithm {self.params['algorithm']!r} contradicts algorithm {self.algorithm!r}")
        # a ValidationError names the bad parameter
        ModelParams.model_validate({**self.params, "algorithm": self.algorithm})
        return self


class JobSpec(_Model):
    """A requester's job, before the coordinator checks it against the catalog and policies."""

    kind: str = Field(description="a kind some engine serves (engines/registry.py)")
    requester: str = Field(pattern=_NAME)
    purpose: str = Field(min_length=1, max_length=2000)
    join_key: str | None = Field(default=None, min_length=1, description="not needed by secure_stats")
    label: LabelSpec | None = None
    inputs: list[InputSpec] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    psi_protocol: PsiProtocol = "RR22"
    gm_mode: bool = Field(default=False, description="国密 mode: PSI is ECDH on the SM2 curve")
    outputs: list[OutputSpec] = Field(default_factory=list)
    expiry: datetime | None = None
    expires_in_s: int | None = Field(default=None, gt=0, le=366 * 86400)
    max_runs: int = Field(default=1, ge=1, le=1000)
    timeout_s: float = Field(default=600.0, gt=0)
    he: dict[str, Any] | None = Field(
        default=None, description="he_score / secure_stats parameters (engines/ckks)"
    )
    model_from: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="vertical_predict: the training job whose stored model parts each node uses",
    )
    engine_params: dict[str, Any] | None = Field(
        default=None, description="an engine's own parameters, checked by its check_spec (engines/)"
    )

    @field_validator("purpose")
    @classmethod
    def _purpose(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the purpose must say what the computation is for")
        return v.strip()

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in job_kinds():
            raise ValueError(f"unknown job kind {v!r}; known kinds: {', '.join(job_kinds())}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.expiry is not None and self.expires_in_s is not None:
            raise ValueError("give expiry or expires_in_s, not both")
        if self.expiry is not None and self.expiry.tzinfo is None:
            raise ValueError("expiry needs a time zone (e.g. 2030-01-01T00:00:00+08:00)")
        if self.gm_mode:
            if self.psi_protocol not in ("RR22", "ECDH_SM2"):
                raise ValueError(f"gm_mode uses ECDH on the SM2 curve; psi_protocol {self.psi_protocol} conflicts")
            self.psi_protocol = "ECDH_SM2"
        engine = registry.engine_for(self.kind)
        if self.join_key is None and self.kind != "secure_stats" and engine.needs_join_key:
            raise ValueError(f"a {self.kind} job needs a join_key")
        if (self.he is None) == (self.kind in HE_KINDS):
            raise ValueError(f"the he section is for {' and '.join(HE_KINDS)} jobs only, and they need it")
        if self.kind in ("vertical_train", "vertical_predict") and self.label is None:
            raise ValueError(f"a {self.kind} job needs a label (member, dataset, column)")
        if self.kind == "vertical_train" and self.label is not None and self.label.column is None:
            raise ValueError("a vertical_train job needs the label's column (a vertical_predict job may omit it)")
        if (self.model_from is None) == (self.kind == "vertical_predict"):
            raise ValueError("model_from names the training job of a vertical_predict job; only that kind takes it")
        if self.kind == "psi" and self.label is not None:
            raise ValueError("a psi job has no label (it intersects keys only)")
        if self.kind == "vertical_predict" and self.model.params.get("test_fraction") is not None:
            raise ValueError("test_fraction splits training rows; a vertical_predict job scores every row")
        seen: set[tuple[str, str]] = set()
        for i in self.inputs:
            if (i.member, i.dataset) in seen:
                raise ValueError(f"inputs list {i.member}/{i.dataset} twice")
            seen.add((i.member, i.dataset))
            if i.columns == PUBLISHED:
                continue
            if self.join_key in i.columns:
                raise ValueError(f"{i.member}/{i.dataset}: the join key {self.join_key!r} is not a feature")
            if self.label and self.label.column and (i.member, i.dataset) == (self.label.member, self.label.dataset) and (
                self.label.column in i.columns
            ):
                raise ValueError(f"{i.member}/{i.dataset}: the label {self.label.column!r} is not a feature")
        if self.label and (self.label.member, self.label.dataset) not in seen:
            raise ValueError(f"the label's dataset {self.label.member}/{self.label.dataset} is not among the inputs")
        members = [i.member for i in self.inputs]
        if len(set(members)) != len(members):
            raise ValueError("one dataset per member: the engines run one party per member")
        if len(set(members)) < engine.min_members:
            raise ValueError(f"a {self.kind} job needs at least {engine.min_members} members"
                             if engine.min_members != 2 else "a multi-party job needs at least two members")
        if self.kind == "vertical_train":  # refused here, not only when every party process starts
            from protocols.secretflow.spec import ModelParams, check_real_sigmoid

            check_real_sigmoid(ModelParams.model_validate({**self.model.params, "algorithm": self.model.algorithm}),
                               len(members), training=True)
        if not self.outputs:
            self.outputs = [OutputSpec(name=n, receiver=self.requester) for n in kind_outputs(self.kind)]
        known = kind_outputs(self.kind)
        for o in self.outputs:
            if o.name not in known:
                raise ValueError(f"a {self.kind} job has no output {o.name!r} (it has {', '.join(known)})")
        return self

    def expiry_at(self, now: datetime | None = None) -> datetime:
        """The absolute expiry (default: one day from ``now``), UTC, whole seconds."""
        now = now or datetime.now(timezone.utc)
        if self.expiry is not None:
            at = self.expiry
        else:
            at = now + timedelta(seconds=self.expires_in_s or 86400)
        return at.astimezone(timezone.utc).replace(microsecond=0)

    def input_of(self, member: str) -> InputSpec:
        """The input of ``member``."""
        for i in self.inputs:
            if i.member == member:
                return i
        raise KeyError(member)

    @property
    def members(self) -> list[str]:
        """Data-owning members, in spec order."""
        return [i.member for i in self.inputs]

    @property
    def uses_published(self) -> bool:
        """Whether an input says ``columns: published`` (not yet resolved against the catalog)."""
        return any(i.columns == PUBLISHED for i in self.inputs)


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "spec"


def parse_spec(raw: Any) -> JobSpec:
    """Validate a mapping into a :class:`JobSpec`; named errors for every kind of mistake."""
    if not isinstance(raw, dict):
        raise InvalidJobSpec(f"a job spec is a mapping, got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind is None:
        raise InvalidJobSpec("kind: field required (one of " + ", ".join(job_kinds()) + ")")
    if kind not in job_kinds():
        raise UnknownJobKind(f"kind: unknown job kind {kind!r}; known kinds: {', '.join(job_kinds())}")
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise InvalidJobSpec(f"{_where(first['loc'])}: {msg}{more}") from None
    for o in spec.outputs:
        if o.receiver != spec.requester:
            raise OutputNotToRequester(
                f"output {o.name!r} would go to {o.receiver!r}; results go only to the requester {spec.requester!r}"
            )
    if spec.uses_published:
        return spec  # the engine checks the spec once the coordinator has resolved the published columns
    try:
        registry.engine_for(spec.kind).check_spec(spec)
    except SpecRefused as exc:
        raise spec_refused(exc.error, exc.detail) from None
    return spec


def complete_spec(spec: JobSpec, ctx: SubmitContext | None = None) -> JobSpec:
    """At submission: refuse a spec no engine in this build runs (``EngineUnsupported``); with ``ctx``,
    the engine fills in what the coordinator knows (the aligned rows of an he_score job)."""
    try:
        return registry.engine_for(spec.kind).complete_spec(spec, ctx)
    except SpecRefused as exc:
        raise spec_refused(exc.error, exc.detail) from None


def check_runnable(spec: JobSpec) -> None:
    """Refuse specs that are valid but that no engine in this build can run (EngineUnsupported)."""
    complete_spec(spec, None)


def load_spec_text(text: str, fmt: str = "yaml") -> JobSpec:
    """Parse YAML (JSON is YAML too) or JSON text into a :class:`JobSpec`."""
    try:
        raw = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidJobSpec(f"the spec is not valid {fmt.upper()}: {str(exc).splitlines()[0]}") from None
    return parse_spec(raw)


def load_spec(path: str | Path) -> JobSpec:
    """Load a spec file (``.yaml``/``.yml``/``.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidJobSpec(f"cannot read {path}: {exc.strerror}") from None
    return load_spec_text(text, "json" if path.suffix.lower() == ".json" else "yaml")
