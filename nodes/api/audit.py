"""Audit-log routes: auditors (and regulators) read and reconcile with the chain; admins anchor and prune."""
from __future__ import annotations

from fastapi import APIRouter, Query

from nodes.api.deps import Admin, Auditor, Ctx
from nodes.models import AnchorOut, AuditEntryOut, AuditHead, AuditVerifyResult, PruneOut
from nodes.services.reconcile import ReconcileReport, reconcile_node

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("")
def entries(reader: Auditor, ctx: Ctx, after: int = Query(0, ge=0, le=2**62),
            limit: int = Query(100, ge=1, le=1000)) -> list[AuditEntryOut]:
    return ctx.audit.entries(after, limit)


@router.get("/verify")
def verify(reader: Auditor, ctx: Ctx) -> AuditVerifyResult:
    """Re-hash the whole chain; report the first bad entry (edited, deleted, truncated)."""
    return ctx.audit.verify()


@router.get("/reconcile")
def reconcile(reader: Auditor, ctx: Ctx) -> ReconcileReport:
    """Prove this node's whole retained log against the chain: hash chain intact, every anchored head
    in the log, every receipt on chain in the log and vice versa; each difference names its entry."""
    report = reconcile_node(ctx.audit, ctx.chain)
    ctx.audit.record(actor=reader.actor, action="audit.reconcile", detail={
        "head_seq": report.head_seq, "findings": len(report.findings), "receipts": report.receipts_on_chain,
        "anchors": report.anchors_on_chain})
    return report


@router.get("/head")
def head(reader: Auditor, ctx: Ctx) -> AuditHead:
    return ctx.audit.head()


@router.post("/anchor")
def anchor(officer: Admin, ctx: Ctx) -> AnchorOut:
    return ctx.audit.anchor_now(officer.actor)


@router.post("/prune")
def prune(officer: Admin, ctx: Ctx) -> PruneOut:
    """Apply the retention setting; only entries at or before the last anchor are pruned."""
    return ctx.audit.prune(ctx.settings.audit_retention_days, actor=officer.actor)
