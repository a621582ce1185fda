"""The node's policy: stored in its database (versioned), seeded from a file, checked on every job."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from nodes.errors import InvalidPolicy, PolicyViolation
from nodes.models import JobCheck, Policy, PolicyDecision, PolicyOut, PolicyRecord, utcnow
from nodes.services.audit import AuditLog
from nodes.services.datasets import DatasetService


def load_policy_file(path: Path) -> Policy:
    """A policy from a YAML, TOML or JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidPolicy(f"cannot read policy file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomli

            raw = tomli.loads(text)
        elif path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = yaml.safe_load(text) or {}
    except Exception as exc:
        raise InvalidPolicy(f"policy file {path} is not valid: {type(exc).__name__}") from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise InvalidPolicy(f"policy file {path}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


class PolicyService:
    def __init__(self, engine: Engine, audit: AuditLog, datasets: DatasetService) -> None:
        self.engine = engine
        self.audit = audit
        self.datasets = datasets

    def current(self) -> PolicyOut:
        with Session(self.engine) as session:
            rec = session.exec(select(PolicyRecord).order_by(PolicyRecord.version.desc()).limit(1)).first()
        if rec is None:
            return PolicyOut(**Policy().model_dump(), version=0, updated_at=utcnow())
        return PolicyOut(**json.loads(rec.policy_json), version=rec.version, updated_at=rec.updated_at)

    def set(self, policy: Policy, actor: str, source: str = "api") -> PolicyOut:
        with self.audit.transaction() as session:
            last = session.exec(select(PolicyRecord).order_by(PolicyRecord.version.desc()).limit(1)).first()
            rec = PolicyRecord(version=(last.version if last else 0) + 1, policy_json=policy.model_dump_json())
            session.add(rec)
            self.audit.append(
                session, actor=actor, action="policy.set", target=f"v{rec.version}",
                detail={"source": source, "policy": policy.model_dump()},
            )
        return PolicyOut(**policy.model_dump(), version=rec.version, updated_at=rec.updated_at)

    def seed_from_file(self, path: Path) -> None:
        """Load ``path`` as the policy if the database holds none yet."""
        if self.current().version == 0:
            self.set(load_policy_file(path), actor="node", source=f"file:{Path(path).name}")

    def evaluate(self, job: JobCheck) -> PolicyDecision:
        """Every reason the node's policy refuses ``job`` (allowed when there is none)."""
        p = self.current()
        reasons: list[str] = []
        if p.allowed_requesters and job.requester not in p.allowed_requesters:
            reasons.append(f"requester {job.requester!r} is not allowed to ask this node")
        if job.requester_role not in p.allowed_roles:
            reasons.append(f"role {job.requester_role!r} is not allowed to ask this node")
        limit = p.max_grade.get(job.kind, p.default_max_grade)
        negative = set(p.negative_list)
        if job.aggregate_group_size is not None and job.aggregate_group_size < p.min_group_size:
            reasons.append(f"aggregate group size {job.aggregate_group_size} is below the minimum {p.min_group_size}")
        for inp in job.inputs:
            try:
                metas = {m.name: m for m in self.datasets.column_meta(inp.dataset)}
            except Exception as exc:  # DatasetNotFound
                reasons.append(str(exc))
                continue
            for col in inp.columns:
                m = metas.get(col)
                if m is None:
                    reasons.append(f"{inp.dataset}.{col} does not exist")
                    continue
                if m.category and m.category in negative:
                    reasons.append(f"{inp.dataset}.{col} is in negative-list category {m.category!r}")
                if m.grade > limit:
                    reasons.append(f"{inp.dataset}.{col} has grade {m.grade}, above {limit} allowed for {job.kind!r}")
        return PolicyDecision(allowed=not reasons, reasons=reasons)

    def enforce(self, job: JobCheck) -> PolicyDecision:
        """Raise PolicyViolation when ``job`` is refused."""
        d = self.evaluate(job)
        if not d.allowed:
            raise PolicyViolation("; ".join(d.reasons))
        return d
