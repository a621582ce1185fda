"""Task execution routes (the interface the coordinator calls; see nodes.services.tasks)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from nodes.api.deps import CoordinatorCaller, get_ctx
from nodes.context import NodeContext
from nodes.models import (
    SealedOutput,
    TaskOut,
    TaskPortsIn,
    TaskPortsOut,
    TaskStarted,
    TaskStartIn,
    TaskStopped,
)

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.post("/{job_id}/ports")
def ports(job_id: str, body: TaskPortsIn, caller: CoordinatorCaller, ctx: NodeContext = Depends(get_ctx)) -> TaskPortsOut:
    """Reserve this node's party ports for an approved job (idempotent)."""
    return ctx.tasks.ports(job_id, body, caller.actor)


@router.post("/{job_id}", status_code=202)
def start(job_id: str, body: TaskStartIn, caller: CoordinatorCaller, ctx: NodeContext = Depends(get_ctx)) -> TaskStarted:
    """Check the authorization on chain and the node's own policy, extract, start the party."""
    return ctx.tasks.start(job_id, body, caller.actor)


@router.get("/{job_id}")
def status(job_id: str, caller: CoordinatorCaller, ctx: NodeContext = Depends(get_ctx)) -> TaskOut:
    return ctx.tasks.get(job_id)


@router.post("/{job_id}/stop")
def stop(job_id: str, caller: CoordinatorCaller, ctx: NodeContext = Depends(get_ctx)) -> TaskStopped:
    """Kill the party's process group; the extract is deleted (idempotent)."""
    return ctx.steps.stop(job_id, caller.actor)


@router.post("/{job_id}/{step}")
def step(
    job_id: str, step: str, caller: CoordinatorCaller, body: dict[str, Any] | None = Body(default=None),
    ctx: NodeContext = Depends(get_ctx),
) -> dict[str, Any]:
    """One step of a job whose engine runs through this route, its body validated against the step's
    model (engines.base.NodeEngine.steps); the authorization guard and the policy first."""
    return ctx.steps.run(job_id, step, body, caller.actor)


@router.get("/{job_id}/outputs/{name}")
def output(job_id: str, name: str, caller: CoordinatorCaller, ctx: NodeContext = Depends(get_ctx)) -> SealedOutput:
    """An output sealed (SM2) to its receiver's key from the Registry; never plaintext."""
    return ctx.tasks.output(job_id, name, caller.actor)
