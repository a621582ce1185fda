"""The task routes the coordinator calls, the same for every engine: a job's steps (validated against
its engine's step bodies, nodes.services.steps), its status, stop, and its sealed outputs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from nodes.api.deps import CoordinatorCaller, get_ctx
from nodes.context import NodeContext
from nodes.models import SealedOutput, TaskOut, TaskStopped

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("/{job_id}")
def status(job_id: str, caller: CoordinatorCaller, ctx: NodeContext = Depends(get_ctx)) -> TaskOut:
    """The task's status and stage (never a value of any row)."""
    return ctx.tasks.get(job_id)


@router.post("/{job_id}/stop")
def stop(job_id: str, caller: CoordinatorCaller, ctx: NodeContext = Depends(get_ctx)) -> TaskStopped:
    """Stop the task: its engine stops what runs (a SecretFlow party's process group is killed and its
    extract deleted); idempotent."""
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
