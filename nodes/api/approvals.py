"""Approvals inbox routes: the coordinator files requests; only this node's approvers decide."""
from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, BackgroundTasks, Query, Response

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


#: The most requests one page of ``GET /approvals`` holds.
MAX_PAGE = 500


@router.get("")
def inbox(reader: InboxReader, ctx: Ctx, response: Response,
          status: str | None = Query(None, pattern="^(pending|approved|rejected|expired)$"),
          job_id: str | None = Query(None, min_length=1, max_length=200),
          limit: int | None = Query(None, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0, le=10_000_000),
          order: Literal["oldest", "newest"] = "oldest") -> list[ApprovalRequestOut]:
    """Requests with their manifests in words; ``status=pending`` for the inbox, ``job_id`` for one
    job's request. ``limit``/``offset`` page them in ``order`` of arrival (no ``limit``: all of them);
    ``X-Total-Count`` says how many match in all."""
    total, items = ctx.approvals.find(status, job_id, offset, limit, newest_first=order == "newest")
    response.headers["X-Total-Count"] = str(total)
    return items


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
