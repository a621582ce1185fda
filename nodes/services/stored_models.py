"""Models an officer stores on this node for an engine to use (a requester's scoring model), and the
ε budgets of its datasets. An engine's step reads a model through its task port
(``TaskPort.stored``); a model never leaves the node in the clear: its salted SM3 commitment is what a
job manifest names and the departments sign."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from nodes.errors import NodeError
from nodes.models import HeModel, utcnow
from nodes.services.audit import AuditLog
from nodes.services.datasets import DatasetService
from nodes.services.policy import PolicyService


class StoredModelNotFound(NodeError):
    status_code = 404


class ModelMismatch(NodeError):
    """A model name that is not allowed."""

    status_code = 409


class ModelIn(BaseModel):
    """A scoring model: ``logit = intercept + Σ_member Σ_column weight · value``."""

    model_config = ConfigDict(extra="forbid")

    intercept: float = 0.0
    weights: dict[str, dict[str, float]] = Field(min_length=1, description="member -> column -> weight")

    @field_validator("weights")
    @classmethod
    def _finite(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for member, cols in v.items():
            if not all(np.isfinite(w) for w in cols.values()):
                raise ValueError(f"weights of {member!r} must be finite")
        return v


class ModelOut(BaseModel):
    name: str
    commitment: str
    features: dict[str, list[str]]
    created_at: datetime


class BudgetOut(BaseModel):
    dataset: str
    budget: float | None
    spent: float
    remaining: float | None


class StoredModels:
    """The node's stored models and its datasets' ε budgets."""

    def __init__(self, engine: Engine, audit: AuditLog, datasets: DatasetService, policy: PolicyService,
                 ledger: Any) -> None:
        self.engine = engine
        self.audit = audit
        self.datasets = datasets
        self.policy = policy
        self._ledger = ledger  # () -> the node's PrivacyLedger

    def put(self, name: str, body: ModelIn, actor: str) -> ModelOut:
        """Store (or replace) a model; its commitment is what a job manifest names."""
        from protocols.crypto.approvals import canonical_json
        from protocols.crypto.sm3 import sm3_hex

        if not name or len(name) > 100 or not all(c.isalnum() or c in "_.-" for c in name):
            raise ModelMismatch(f"model name {name!r}: letters, digits, '_', '.', '-' (at most 100)")
        salt = secrets.token_hex(16)
        model = body.model_dump()
        commitment = sm3_hex(canonical_json({"model": model, "salt": salt}))
        with self.audit.transaction() as session:
            rec = session.exec(select(HeModel).where(HeModel.name == name)).first() or HeModel(
                name=name, model_json="{}", salt="", commitment="")
            rec.model_json, rec.salt, rec.commitment, rec.created_at = json.dumps(model), salt, commitment, utcnow()
            session.add(rec)
            self.audit.append(session, actor=actor, action="model.put", target=name,
                              detail={"commitment": commitment,
                                      "features": {m: sorted(c) for m, c in body.weights.items()}})
            session.flush()
            return self._out(rec)

    def get(self, name: str) -> ModelOut:
        with Session(self.engine) as session:
            rec = session.exec(select(HeModel).where(HeModel.name == name)).first()
        if rec is None:
            raise StoredModelNotFound(f"no model {name!r} on this node")
        return self._out(rec)

    @staticmethod
    def _out(rec: HeModel) -> ModelOut:
        m = json.loads(rec.model_json)
        return ModelOut(name=rec.name, commitment=rec.commitment, created_at=rec.created_at,
                        features={k: list(v) for k, v in m["weights"].items()})

    def budget(self, dataset: str) -> BudgetOut:
        """A dataset's ε budget (from the policy) and what the ledger says was spent."""
        self.datasets.get(dataset)
        b = self.policy.current().privacy_budgets.get(dataset)
        spent = self._ledger().spent(dataset)
        return BudgetOut(dataset=dataset, budget=b, spent=spent, remaining=None if b is None else max(b - spent, 0.0))
