"""Job routes: submit, list, status, manifest, withdraw, results."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query

from coordinator.api.deps import get_coord
from coordinator.models import JobOut, ResultOut, SubmitOut
from coordinator.service import Coordinator
from coordinator.spec import load_spec_text, parse_spec

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=201)
def submit(body: Any = Body(...), coord: Coordinator = Depends(get_coord)) -> SubmitOut:
    """Submit a job spec: a JSON object, or ``{"spec_yaml": "..."}``."""
    if isinstance(body, dict) and set(body) == {"spec_yaml"}:
        spec = load_spec_text(str(body["spec_yaml"]))
    else:
        spec = parse_spec(body)
    return coord.submit(spec)


@router.get("")
def list_jobs(
    state: str | None = Query(None), requester: str | None = Query(None), coord: Coordinator = Depends(get_coord)
) -> list[JobOut]:
    return coord.list_jobs(state, requester)


@router.get("/{job_id}")
def status(job_id: str, coord: Coordinator = Depends(get_coord)) -> JobOut:
    return coord.job_out(job_id)


@router.get("/{job_id}/manifest")
def manifest(job_id: str, coord: Coordinator = Depends(get_coord)) -> dict[str, Any]:
    """The canonical manifest, its SM3 hash and the chain terms (nodes check these before approving)."""
    return coord.manifest_of(job_id)


@router.post("/{job_id}/revoke")
def revoke(job_id: str, by: str = Body(..., embed=True), reason: str | None = Body(None, embed=True),
           coord: Coordinator = Depends(get_coord)) -> JobOut:
    """The requester withdraws the job (running tasks are stopped)."""
    return coord.revoke(job_id, by, reason)


@router.get("/{job_id}/results/{name}")
def result(job_id: str, name: str, coord: Coordinator = Depends(get_coord)) -> ResultOut:
    """An output, sealed to the requester's SM2 key."""
    return coord.result(job_id, name)
