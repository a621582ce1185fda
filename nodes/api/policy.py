from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from nodes.api.deps import get_ctx, require_admin
from nodes.context import NodeContext
from nodes.models import JobCheck, Policy, PolicyDecision, PolicyOut

router = APIRouter(prefix="/policy", tags=["policy"])


@router.get("")
def get_policy(ctx: NodeContext = Depends(get_ctx)) -> PolicyOut:
    return ctx.policy.current()


@router.put("")
def put_policy(policy: Policy, request: Request, ctx: NodeContext = Depends(get_ctx)) -> PolicyOut:
    """Replace the policy (a new version; the old ones stay in the database and the audit log)."""
    return ctx.policy.set(policy, require_admin(request))


@router.post("/check")
def check(job: JobCheck, ctx: NodeContext = Depends(get_ctx)) -> PolicyDecision:
    """Dry-run a job against the policy (the coordinator asks before gathering approvals)."""
    return ctx.policy.evaluate(job)
