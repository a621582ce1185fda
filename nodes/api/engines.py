"""The officers' routes to the engines' companion services of this node (``settings.engines``;
:mod:`nodes.services.companions`): any officer reads, an ``admin`` officer creates (e.g. the accounts of
researchers on a low side). No member — not the coordinator, not a bank — and no anonymous caller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.concurrency import run_in_threadpool

from engines.errors import StepRefused
from nodes.api.deps import Admin, Ctx, Officer
from nodes.services.steps import EngineRefusal

router = APIRouter(prefix="/engines", tags=["engines"])

EngineName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
Collection = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]


@router.get("")
def services(officer: Officer, ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Every engine service of this node and its status."""
    return {name: svc.status() for name, svc in ctx.companions.services.items()}


@router.get("/{engine}/{collection}")
async def read(engine: EngineName, collection: Collection, officer: Officer, ctx: Ctx) -> Any:
    """The items of one collection of an engine's service (e.g. ``researchers``, ``requests``)."""
    try:
        return await run_in_threadpool(ctx.companions.get(engine).read, collection)
    except StepRefused as exc:
        raise EngineRefusal(exc) from None


@router.post("/{engine}/{collection}", status_code=201)
async def create(engine: EngineName, collection: Collection, officer: Admin, ctx: Ctx,
                 body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Create an item of one collection of an engine's service (audited by the service, as this officer)."""
    try:
        return await run_in_threadpool(ctx.companions.get(engine).create, collection, body, officer.actor)
    except StepRefused as exc:
        raise EngineRefusal(exc) from None
