"""Job routes: submit (the requester, signed), list, status, manifest, withdraw (signed), results."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Query, Response
from sqlmodel import Field, Session, SQLModel

from coordinator.api.deps import (
    CoordDep,
    Forbidden,
    JobId,
    MemberCaller,
    ReplayedRequest,
    UnsignedRequest,
    directory,
)
from coordinator.models import JobOut, ResultOut, SubmitOut
from coordinator.service import Coordinator
from coordinator.spec import load_spec_text, parse_spec
from protocols.signed_request import RequestRefused, SignedRequest, verify_request

router = APIRouter(prefix="/jobs", tags=["jobs"])


class SeenJobRequest(SQLModel, table=True):
    """Nonces of the signed requests the coordinator accepted (a replay is refused)."""

    __tablename__ = "seen_job_request"

    nonce: str = Field(primary_key=True)
    requester: str
    action: str


def _verified(coord: Coordinator, caller_name: str, raw: Any, action: str) -> SignedRequest:
    s = coord.settings
    try:
        sr = SignedRequest.model_validate(raw)
    except Exception:  # noqa: BLE001
        raise UnsignedRequest(f"a {action} needs the requester's signed request (protocols.signed_request)") from None
    if sr.requester != caller_name:
        raise Forbidden(f"member {caller_name} cannot send a request signed in {sr.requester}'s name")
    try:
        verify_request(sr, directory(coord).key_of(sr.requester), action=action,  # type: ignore[arg-type]
                       max_age_s=s.request_max_age_s)
    except RequestRefused as exc:
        raise UnsignedRequest(str(exc)) from None
    SeenJobRequest.metadata.create_all(coord.engine, tables=[SeenJobRequest.__table__])
    with Session(coord.engine) as session:
        if session.get(SeenJobRequest, sr.nonce) is not None:
            raise ReplayedRequest("this signed request was already used")
        session.add(SeenJobRequest(nonce=sr.nonce, requester=sr.requester, action=action))
        session.commit()
    return sr


@router.post("", status_code=201)
def submit(caller: MemberCaller, coord: CoordDep, body: Any = Body(...)) -> SubmitOut:
    """Submit a job: ``{"request": <signed request whose spec is the job spec>}``; the caller must be
    the requester the spec names and the signature its Registry key's. (With
    ``require_signed_requests`` off, a bare spec or ``{"spec_yaml": "..."}`` from its requester.)"""
    request = None
    if isinstance(body, dict) and "request" in body:
        sr = _verified(coord, caller.name, body["request"], "submit")
        spec = parse_spec(sr.spec)
        request = sr.model_dump()
    elif coord.settings.require_signed_requests:
        raise UnsignedRequest("a job request must be signed by its requester ({\"request\": …})")
    elif isinstance(body, dict) and set(body) == {"spec_yaml"}:
        spec = load_spec_text(str(body["spec_yaml"]))
    else:
        spec = parse_spec(body)
    if spec.requester != caller.name:
        raise Forbidden(f"member {caller.name} cannot submit a job in {spec.requester}'s name")
    return coord.submit(spec, request=request)


#: The most jobs one page of ``GET /jobs`` holds.
MAX_PAGE = 500


@router.get("")
def list_jobs(caller: MemberCaller, coord: CoordDep, response: Response,
              state: str | None = Query(None, max_length=32), requester: str | None = Query(None, max_length=64),
              q: str | None = Query(None, max_length=200), limit: int | None = Query(None, ge=1, le=MAX_PAGE),
              offset: int = Query(0, ge=0, le=10_000_000),
              order: Literal["oldest", "newest"] = "oldest") -> list[JobOut]:
    """The jobs (any member may list them), filtered by ``state``, ``requester`` and the words of
    ``q`` (in the id, purpose or kind); ``limit``/``offset`` page them in ``order`` of submission
    (no ``limit``: all of them). ``X-Total-Count`` says how many match in all."""
    total, jobs = coord.page_jobs(state, requester, q, limit, offset, newest_first=order == "newest")
    response.headers["X-Total-Count"] = str(total)
    return jobs


@router.get("/{job_id}")
def status(job_id: JobId, caller: MemberCaller, coord: CoordDep) -> JobOut:
    return coord.job_out(job_id)


@router.get("/{job_id}/manifest")
def manifest(job_id: JobId, caller: MemberCaller, coord: CoordDep) -> dict[str, Any]:
    """The canonical manifest, its SM3 hash and the chain terms (nodes check these before approving)."""
    return coord.manifest_of(job_id)


@router.post("/{job_id}/revoke")
def revoke(job_id: JobId, caller: MemberCaller, coord: CoordDep, body: dict[str, Any] = Body(...)) -> JobOut:
    """The requester withdraws the job (running tasks are stopped): ``{"request": <signed revoke whose
    spec is {"job_id", "reason"}>}``, sent by the requester itself."""
    job = coord.get_job(job_id)
    if caller.name != job.requester:
        raise Forbidden(f"only the requester {job.requester} can withdraw job {job_id}, not {caller.name}")
    if "request" in body:
        sr = _verified(coord, caller.name, body["request"], "revoke")
        if sr.spec.get("job_id") != job_id:
            raise UnsignedRequest("the signed withdrawal is for another job")
        reason = sr.spec.get("reason")
    elif coord.settings.require_signed_requests:
        raise UnsignedRequest("a withdrawal must be signed by the requester ({\"request\": …})")
    else:
        reason = body.get("reason")
    return coord.revoke(job_id, caller.name, reason)


@router.get("/{job_id}/results/{name}")
def result(job_id: JobId, name: str, caller: MemberCaller, coord: CoordDep) -> ResultOut:
    """An output, sealed to the requester's SM2 key."""
    return coord.result(job_id, name)
