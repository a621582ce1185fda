from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from nodes.api.deps import get_ctx, require_admin
from nodes.context import NodeContext
from nodes.models import AnchorOut, AuditEntryOut, AuditHead, AuditVerifyResult, PruneOut

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("")
def entries(
    after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000), ctx: NodeContext = Depends(get_ctx)
) -> list[AuditEntryOut]:
    return ctx.audit.entries(after, limit)


@router.get("/verify")
def verify(ctx: NodeContext = Depends(get_ctx)) -> AuditVerifyResult:
    """Re-hash the whole chain; report the first bad entry (edited, deleted, truncated)."""
    return ctx.audit.verify()


@router.get("/head")
def head(ctx: NodeContext = Depends(get_ctx)) -> AuditHead:
    return ctx.audit.head()


@router.post("/anchor")
def anchor(request: Request, ctx: NodeContext = Depends(get_ctx)) -> AnchorOut:
    return ctx.audit.anchor_now(require_admin(request))


@router.post("/prune")
def prune(request: Request, ctx: NodeContext = Depends(get_ctx)) -> PruneOut:
    """Apply the retention setting; only entries at or before the last anchor are pruned."""
    return ctx.audit.prune(ctx.settings.audit_retention_days, actor=require_admin(request))
