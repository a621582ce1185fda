"""Approvals inbox routes: the coordinator files requests; only this node's approvers decide."""
from __future__ import annotations

import logging

from fastapi import APIRouter, BackgroundTasks, Query

from nodes.api.deps import Approver, CoordinatorCaller, Ctx, InboxReader, RequestId
from nodes.models import ApprovalRequestIn, ApprovalRequestOut, Rejection
from nodes.services.requests import check_signed_request

router = APIRouter(prefix="/approvals", tags=["approvals"])
log = logging.getLogger(__name__)


@router.post("", status_code=201)
def submit(req: ApprovalRequestIn, caller: CoordinatorCaller, ctx: Ctx, later: BackgroundTasks) -> ApprovalRequestOut:
    """The coordinator files a request: refused at once unless the requester signed it (checked against
    the requester's Registry key) and this node's policy allows it. A request this node's own member
    signed is approved right after this answer (``auto_approve_own_requests``)."""
    s = ctx.settings
    signed = check_signed_request(req, s.name, ctx.members, ctx.engine, required=s.require_signed_requests,
                                  max_age_s=s.request_max_age_s, write_lock=ctx.audit.write_lock)
    out = ctx.approvals.submit(req, caller.actor)
    if signed is not None and signed.requester == s.name and s.auto_approve_own_requests:
        later.add_task(_approve_own, ctx, out.id)
    return out


def _approve_own(ctx: Ctx, request_id: int) -> None:
    """Approve the node's own member's signed request (after the coordinator has its answer: the terms are
    fetched from it). A failure leaves the request pending for an approver; the refusal is logged."""
    try:
        ctx.approvals.approve(request_id, f"member:{ctx.settings.name} (its own signed request)")
    except Exception as exc:  # noqa: BLE001 — a named refusal or the chain; the approver can still decide
        log.warning("own request %s left for an approver: %s: %s", request_id, type(exc).__name__, exc)


@router.get("")
def inbox(reader: InboxReader, ctx: Ctx,
          status: str | None = Query(None, pattern="^(pending|approved|rejected|expired)$"),
          ) -> list[ApprovalRequestOut]:
    """Requests with their manifests in words; ``status=pending`` for the inbox."""
    return ctx.approvals.list(status)


@router.get("/{request_id}")
def get(request_id: RequestId, reader: InboxReader, ctx: Ctx) -> ApprovalRequestOut:
    return ctx.approvals.get(request_id)


@router.post("/{request_id}/approve")
def approve(request_id: RequestId, officer: Approver, ctx: Ctx) -> ApprovalRequestOut:
    """An approver's act: sign the manifest with the node's SM2 and BLS keys."""
    return ctx.approvals.approve(request_id, officer.actor)


@router.post("/{request_id}/reject")
def reject(request_id: RequestId, body: Rejection, officer: Approver, ctx: Ctx) -> ApprovalRequestOut:
    return ctx.approvals.reject(request_id, body.reason, officer.actor)
