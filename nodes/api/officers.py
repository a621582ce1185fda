"""Officer sessions and four-eyes proposals.

``POST /officers/login`` gives a short-lived session token; ``/proposals`` lists the policy and
grade changes waiting for a second officer, who confirms (the change is applied then) or cancels.
Accounts themselves are managed on the node's host with ``dcp node user …``, not over the network."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from nodes.api.deps import Ctx, Officer, Steward
from nodes.models import DatasetOut, Policy, PolicyOut, SchemaEdit
from nodes.services.officers import LoginIn, ProposalOut, TokenOut

router = APIRouter(tags=["officers"])
ProposalId = Annotated[int, Path(ge=1, le=2**62)]


@router.post("/officers/login")
def login(body: LoginIn, ctx: Ctx) -> TokenOut:
    """An officer's name and password → a session token (``Authorization: Bearer <token>``)."""
    out = ctx.officers.login(body.name, body.password)
    ctx.audit.record(actor=f"officer:{out.officer}@{ctx.settings.name}", action="officer.login",
                     target=out.officer, detail={"expires_at": out.expires_at.isoformat()})
    return out


@router.post("/officers/logout", status_code=204)
def logout(officer: Officer, ctx: Ctx) -> None:
    assert officer.officer is not None
    ctx.officers.logout(officer.officer)
    ctx.audit.record(actor=officer.actor, action="officer.logout", target=officer.officer.name)


@router.get("/officers/me")
def me(officer: Officer) -> dict[str, object]:
    assert officer.officer is not None
    return {"name": officer.officer.name, "roles": officer.officer.roles, "node": officer.officer.node}


@router.get("/proposals")
def proposals(officer: Officer, ctx: Ctx,
              status: str | None = Query(None, pattern="^(pending|confirmed|cancelled|expired)$"),
              ) -> list[ProposalOut]:
    return ctx.officers.proposals(status)


@router.get("/proposals/{proposal_id}")
def proposal(proposal_id: ProposalId, officer: Officer, ctx: Ctx) -> ProposalOut:
    return ctx.officers.proposal(proposal_id)


@router.post("/proposals/{proposal_id}/confirm")
def confirm(proposal_id: ProposalId, officer: Steward, ctx: Ctx) -> PolicyOut | DatasetOut:
    """The second steward confirms: the change is applied and both officers are in the audit log."""
    assert officer.officer is not None
    p = ctx.officers.pending_for_confirmation(proposal_id, officer.officer)
    actor = f"officer:{p.proposed_by}@{ctx.settings.name} confirmed by {officer.actor}"
    result: PolicyOut | DatasetOut
    if p.kind == "policy":
        result = ctx.policy.set(Policy.model_validate(p.body), actor, source=f"proposal {p.id}")
    else:
        result = ctx.datasets.edit_schema(p.target, SchemaEdit.model_validate(p.body), actor)
    ctx.officers.close(p.id, "confirmed", officer.officer)
    return result


@router.post("/proposals/{proposal_id}/cancel")
def cancel(proposal_id: ProposalId, officer: Steward, ctx: Ctx) -> ProposalOut:
    assert officer.officer is not None
    out = ctx.officers.close(proposal_id, "cancelled", officer.officer)
    ctx.audit.record(actor=officer.actor, action="proposal.cancel", target=f"proposal {proposal_id}")
    return out
