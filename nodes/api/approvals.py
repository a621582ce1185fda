from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from nodes.api.deps import actor_of, get_ctx, require_admin
from nodes.context import NodeContext
from nodes.models import ApprovalRequestIn, ApprovalRequestOut, Rejection

router = APIRouter(prefix="/approvals", tags=["approvals"])


@router.post("", status_code=201)
def submit(req: ApprovalRequestIn, request: Request, ctx: NodeContext = Depends(get_ctx)) -> ApprovalRequestOut:
    """The coordinator files a request (refused at once if this node's policy forbids it)."""
    return ctx.approvals.submit(req, actor_of(request))


@router.get("")
def inbox(status: str | None = Query(None, pattern="^(pending|approved|rejected|expired)$"),
          ctx: NodeContext = Depends(get_ctx)) -> list[ApprovalRequestOut]:
    """Requests with their manifests in words; ``status=pending`` for the inbox."""
    return ctx.approvals.list(status)


@router.get("/{request_id}")
def get(request_id: int, ctx: NodeContext = Depends(get_ctx)) -> ApprovalRequestOut:
    return ctx.approvals.get(request_id)


@router.post("/{request_id}/approve")
def approve(request_id: int, request: Request, ctx: NodeContext = Depends(get_ctx)) -> ApprovalRequestOut:
    """Sign the manifest with the node's SM2 and BLS keys."""
    return ctx.approvals.approve(request_id, require_admin(request))


@router.post("/{request_id}/reject")
def reject(request_id: int, body: Rejection, request: Request, ctx: NodeContext = Depends(get_ctx)) -> ApprovalRequestOut:
    return ctx.approvals.reject(request_id, body.reason, require_admin(request))
