"""The node's runtime objects, built once per app (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from nodes.db import init_db, make_engine
from nodes.services.approvals import ApprovalRecorder, ApprovalService
from nodes.services.audit import AuditAnchor, AuditLog, FileAnchor
from nodes.services.datasets import DatasetService
from nodes.services.policy import PolicyService
from nodes.settings import NodeSettings


@dataclass
class NodeContext:
    settings: NodeSettings
    engine: Engine
    audit: AuditLog
    datasets: DatasetService
    policy: PolicyService
    approvals: ApprovalService

    @classmethod
    def build(
        cls, settings: NodeSettings, anchor: AuditAnchor | None = None, recorder: ApprovalRecorder | None = None
    ) -> NodeContext:
        """Open (and create) the database, seed the policy from its file, wire the services."""
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url())
        init_db(engine)
        if anchor is None and settings.anchor_file is not None:
            anchor = FileAnchor(settings.anchor_file)
        audit = AuditLog(settings.name, engine, anchor)
        datasets = DatasetService(settings.name, engine, audit)
        policy = PolicyService(engine, audit, datasets)
        if settings.policy_file is not None:
            policy.seed_from_file(settings.policy_file)
        approvals = ApprovalService(settings, engine, audit, policy, datasets, recorder)
        return cls(settings=settings, engine=engine, audit=audit, datasets=datasets, policy=policy, approvals=approvals)

    def close(self) -> None:
        self.engine.dispose()
