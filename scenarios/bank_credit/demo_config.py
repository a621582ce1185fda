"""The bank-credit demo's configuration: ``federation.yaml`` (the members, who approves how, the extra
models) and the job templates it submits, checked before anything starts; the demo's named errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scenarios.bank_credit.federated import ScenarioRunError, auto_params

DEFAULT_CONFIG = Path(__file__).resolve().parent / "federation.yaml"
DEFAULT_JOB = Path(__file__).resolve().parent / "jobs" / "pre_loan_training.yaml"


class DemoError(ScenarioRunError):
    """The demo could not complete (the message says which step and why)."""


class TransientJobFailure(DemoError):
    """A job's engine run failed for a reason that a new run may not meet: it outran its time limit
    (a stalled engine, stopped by its nodes) or a party could not bind its link port."""


class DemoConfigError(DemoError):
    """The demo's federation config or job template is invalid."""


class ApprovalRefused(DemoError):
    """A member refused the job (the demo stops after showing the rejection)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DemoMember(_Model):
    """One member of the demo federation."""

    name: str
    role: Literal["department", "bank", "regulator", "researcher"]
    host: str = "127.0.0.1"
    auto_approve: bool = False
    policy: dict[str, Any] = Field(default_factory=dict)
    node: dict[str, Any] = Field(default_factory=dict)
    """More of the member's node settings (``federation.launcher.MemberConfig.node``), e.g. its
    ``gateway`` (the bench's ``--gateways``)."""


class DemoConfig(_Model):
    """``federation.yaml``: the federation (as ``dcp up`` takes it) plus the demo's approval flags."""

    name: str = "bank-credit-demo"
    work_dir: Path = Path("var/bank_credit_demo/federation")
    bank: str = "bank_a"
    chain: dict[str, Any] = Field(default_factory=dict)
    coordinator: dict[str, Any] = Field(default_factory=dict)
    members: list[DemoMember] = Field(min_length=2)
    scrypt_n: int = 2**14
    extra_models: list[Path] = Field(default_factory=list)
    """Further pre-loan training job templates (relative to ``jobs/``) run after the main one, e.g. SGB."""
    in_loan_job: Path = Path("in_loan_scoring.yaml")
    """The in-loan scoring job template (relative to ``jobs/``)."""
    job_timeout_s: float | None = Field(default=None, gt=0)
    """Overrides every job template's ``timeout_s`` (a run longer than this is stopped and named)."""

    @property
    def departments(self) -> list[str]:
        """The department members, in config order."""
        return [m.name for m in self.members if m.role == "department"]

    def member(self, name: str) -> DemoMember:
        """The member called ``name``."""
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def federation_config(self, work_dir: Path) -> Any:
        """The :class:`federation.launcher.FederationConfig` (members without datasets: the demo ingests)."""
        from federation.launcher import FederationConfig

        try:
            return FederationConfig.model_validate({
                "name": self.name, "work_dir": str(work_dir), "chain": self.chain, "coordinator": self.coordinator,
                "scrypt_n": self.scrypt_n,
                "members": [{"name": m.name, "role": m.role, "host": m.host, "policy": m.policy, "node": m.node}
                            for m in self.members],
            })
        except ValidationError as exc:
            e = exc.errors()[0]
            raise DemoConfigError(f"federation config: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def load_demo_config(path: Path = DEFAULT_CONFIG) -> DemoConfig:
    """Load and check the demo federation config (named errors)."""
    from common.yamlfile import load_yaml_model

    path = Path(path)
    cfg = load_yaml_model(path, DemoConfig, DemoConfigError)
    if not cfg.work_dir.is_absolute():
        cfg.work_dir = (path.parent / cfg.work_dir).resolve()
    banks = [m.name for m in cfg.members if m.role == "bank"]
    if cfg.bank not in banks:
        raise DemoConfigError(f"{path}: bank {cfg.bank!r} is not a member with role bank ({banks})")
    if not cfg.departments:
        raise DemoConfigError(f"{path}: the demo needs at least one department")
    return cfg


def resolve_job_template(path: Path, catalog: list[dict[str, Any]], n_rows: int, test_fraction: float) -> dict[str, Any]:
    """The job spec from a template: ``columns: published`` → every published column but the key and label
    (from the coordinator's catalog); ``params: auto`` → :func:`~scenarios.bank_credit.federated.auto_params`;
    ``params: {auto: true, …}`` → those, with the keys given overriding them."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DemoConfigError(f"cannot read the job template {path}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("inputs"), list):
        raise DemoConfigError(f"{path}: a job template is a mapping with a list of inputs")
    label = raw.get("label") or {}
    for inp in raw["inputs"]:
        if inp.get("columns") != "published":
            continue
        entry = next((e for e in catalog if e["member"] == inp["member"] and e["dataset"] == inp["dataset"]), None)
        if entry is None:
            raise DemoConfigError(f"{path}: {inp['member']}/{inp['dataset']} is not in the federation's catalog")
        skip = {raw.get("join_key")}
        if label.get("member") == inp["member"] and label.get("dataset") == inp["dataset"]:
            skip.add(label.get("column"))
        inp["columns"] = [c["name"] for c in entry["columns"] if c["name"] not in skip]
    model = raw.setdefault("model", {})
    params = model.get("params")
    auto = auto_params(str(model.get("algorithm", "ss_lr")), n_rows, test_fraction)
    if params == "auto":
        model["params"] = auto
    elif isinstance(params, dict) and params.pop("auto", False):  # the auto parameters, some overridden
        model["params"] = {**auto, **params}
    return raw


