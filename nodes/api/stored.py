"""Models stored on this node for its engines (a requester's scoring model) and its ε budgets."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from nodes.api.deps import MemberOrOfficer, Steward, get_ctx
from nodes.context import NodeContext
from nodes.services.stored_models import BudgetOut, ModelIn, ModelOut

router = APIRouter(tags=["models"])


@router.put("/models/{name}")
def put_model(name: str, body: ModelIn, officer: Steward, ctx: NodeContext = Depends(get_ctx)) -> ModelOut:
    """Store a scoring model on this node (a steward); the answer's commitment goes into job specs."""
    return ctx.models.put(name, body, officer.actor)


@router.get("/models/{name}")
def get_model(name: str, caller: MemberOrOfficer, ctx: NodeContext = Depends(get_ctx)) -> ModelOut:
    """A model's commitment and the columns it weighs (never the weights)."""
    return ctx.models.get(name)


@router.get("/budgets/{dataset}")
def budget(dataset: str, caller: MemberOrOfficer, ctx: NodeContext = Depends(get_ctx)) -> BudgetOut:
    """A dataset's differential-privacy budget and the ε spent so far."""
    return ctx.models.budget(dataset)
