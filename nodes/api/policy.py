"""Policy routes: read by members and officers; changed only by two different stewards (four eyes)."""
from __future__ import annotations

from fastapi import APIRouter

from nodes.api.deps import CoordinatorCaller, Ctx, MemberOrOfficer, Steward
from nodes.models import JobCheck, Policy, PolicyDecision, PolicyOut
from nodes.services.officers import ProposalOut

router = APIRouter(prefix="/policy", tags=["policy"])


@router.get("")
def get_policy(reader: MemberOrOfficer, ctx: Ctx) -> PolicyOut:
    return ctx.policy.current()


@router.put("", status_code=202)
def put_policy(policy: Policy, officer: Steward, ctx: Ctx) -> ProposalOut:
    """Propose a new policy; a different steward confirms it (``POST /proposals/{id}/confirm``)."""
    assert officer.officer is not None
    p = ctx.officers.propose("policy", "policy", policy.model_dump(mode="json"), officer.officer)
    ctx.audit.record(actor=officer.actor, action="policy.propose", target=f"proposal {p.id}",
                     detail={"policy": p.body})
    return p


@router.post("/check")
def check(job: JobCheck, caller: CoordinatorCaller, ctx: Ctx) -> PolicyDecision:
    """Dry-run a job against the policy (the coordinator asks before gathering approvals)."""
    return ctx.policy.evaluate(job)
