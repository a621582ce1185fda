"""HE routes (``he_score``, ``secure_stats``): the steps the coordinator calls, the requester's scoring
models, and the ε budgets of this node's datasets. See :mod:`nodes.services.he_tasks`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from nodes.api.deps import CoordinatorCaller, MemberOrOfficer, Steward
from nodes.services.he_tasks import (
    BudgetOut,
    HeContributeIn,
    HeFinishIn,
    HeModelIn,
    HeModelOut,
    HePrepareIn,
    HeService,
    HeStartIn,
    HeTaskOut,
)

router = APIRouter(prefix="/he", tags=["he"])


def get_he(request: Request) -> HeService:
    """The HE service of this app."""
    return request.app.state.he


@router.put("/models/{name}")
def put_model(name: str, body: HeModelIn, officer: Steward, he: HeService = Depends(get_he)) -> HeModelOut:
    """Store a scoring model on this node (admin); the answer's commitment goes into he_score specs."""
    return he.put_model(name, body, officer.actor)


@router.get("/models/{name}")
def get_model(name: str, caller: MemberOrOfficer, he: HeService = Depends(get_he)) -> HeModelOut:
    """A model's commitment and the columns it weighs (never the weights)."""
    return he.get_model(name)


@router.get("/budgets/{dataset}")
def budget(dataset: str, caller: MemberOrOfficer, he: HeService = Depends(get_he)) -> BudgetOut:
    """A dataset's differential-privacy budget and the ε spent so far."""
    return he.budget(dataset)


@router.post("/{job_id}/start")
def start(job_id: str, body: HeStartIn, caller: CoordinatorCaller, he: HeService = Depends(get_he)) -> dict[str, Any]:
    """Check the manifest against the chain; keys (requester) and mask keys (contributors)."""
    return he.start(job_id, body, caller.actor)


@router.post("/{job_id}/prepare")
def prepare(job_id: str, body: HePrepareIn, caller: CoordinatorCaller, he: HeService = Depends(get_he)) -> dict[str, Any]:
    """he_score requester: encrypted weights, sealed key lists, its own encrypted partial."""
    return he.prepare(job_id, body, caller.actor)


@router.post("/{job_id}/contribute")
def contribute(
    job_id: str, body: HeContributeIn, caller: CoordinatorCaller, he: HeService = Depends(get_he)
) -> dict[str, Any]:
    """Department: encrypted partial scores or statistics, after its checks and its receipt."""
    return he.contribute(job_id, body, caller.actor)


@router.post("/{job_id}/finish")
def finish(job_id: str, body: HeFinishIn, caller: CoordinatorCaller, he: HeService = Depends(get_he)) -> dict[str, Any]:
    """Requester: decrypt the total, seal the result to itself, record its receipt."""
    return he.finish(job_id, body, caller.actor)


@router.post("/{job_id}/stop")
def stop(job_id: str, caller: CoordinatorCaller, he: HeService = Depends(get_he)) -> HeTaskOut:
    """Drop the job; its secrets are deleted (idempotent)."""
    return he.stop(job_id, caller.actor)


@router.get("/{job_id}")
def status(job_id: str, caller: CoordinatorCaller, he: HeService = Depends(get_he)) -> HeTaskOut:
    return he.get(job_id)
