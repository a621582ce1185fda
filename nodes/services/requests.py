"""The node's check of a requester's signed job request before an approval request is filed.

The request (``protocols.signed_request``) must be signed by the Registry key of the member the
request names as requester, be fresh, not be a replay (its nonce seen with another job), and agree
with what the coordinator asks this node: same requester, kind and purpose, and this node's datasets
and columns inside what the requester signed for this member."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel

from nodes.errors import NodeError
from nodes.models import ApprovalRequestIn
from protocols.identity import MemberDirectory
from protocols.signed_request import RequestRefused, SignedRequest, verify_request


class UnsignedRequest(NodeError):
    """The job request is not signed by its requester, or the signature does not verify."""

    status_code = 403


class ReplayedRequest(NodeError):
    """This signed job request was already filed for another job."""

    status_code = 409


class SeenRequest(SQLModel, table=True):
    __tablename__ = "seen_request"

    nonce: str = Field(primary_key=True)
    job_id: str
    requester: str


def _spec_columns(spec: dict[str, Any], member: str) -> dict[str, set[str] | None]:
    """Dataset -> the columns the signed spec lets ``member``'s data contribute; None for ``columns:
    published`` (every column this node publishes for that dataset: its own catalog, its own policy)."""
    extra = {spec.get("join_key")} if spec.get("join_key") else set()
    label = spec.get("label") or {}
    out: dict[str, set[str] | None] = {}
    for inp in spec.get("inputs") or []:
        if isinstance(inp, dict) and inp.get("member") == member:
            if inp.get("columns") == "published":
                out[str(inp.get("dataset"))] = None
                continue
            cols = set(inp.get("columns") or []) | extra
            if label.get("member") == member and label.get("dataset") == inp.get("dataset") and label.get("column"):
                cols.add(label["column"])
            have = out.setdefault(str(inp.get("dataset")), set())
            if have is not None:
                have.update(cols)
    return out


def check_signed_request(req: ApprovalRequestIn, member: str, members: MemberDirectory, engine: Engine,
                         *, required: bool, max_age_s: float,
                         write_lock: threading.RLock | None = None) -> SignedRequest | None:
    """Verify ``req.request`` for this node ``member``; record its nonce. Raises a named refusal."""
    if req.request is None:
        if required:
            raise UnsignedRequest("the job request carries no signature of its requester")
        return None
    try:
        sr = SignedRequest.model_validate(req.request)
    except Exception:  # noqa: BLE001
        raise UnsignedRequest("the signed job request is malformed") from None
    try:
        verify_request(sr, members.key_of(sr.requester), max_age_s=max_age_s)
    except RequestRefused as exc:
        raise UnsignedRequest(str(exc)) from None
    spec = sr.spec
    if sr.requester != req.requester or spec.get("requester") != req.requester:
        raise UnsignedRequest(f"the request is signed by {sr.requester}, the job names {req.requester}")
    if spec.get("kind") != req.kind or spec.get("purpose") != req.purpose:
        raise UnsignedRequest("the job's kind or purpose differs from what the requester signed")
    allowed = _spec_columns(spec, member)
    for inp in req.inputs:
        signed = allowed.get(inp.dataset, set())
        extra = set() if signed is None else set(inp.columns) - signed
        if inp.dataset not in allowed or extra:
            raise UnsignedRequest(f"the requester did not sign for {member}.{inp.dataset} "
                                  f"column(s) {', '.join(sorted(extra)) or '(the dataset)'}")
    with write_lock or threading.RLock(), Session(engine) as s:  # read then write: the node's writer lock
        seen = s.get(SeenRequest, sr.nonce)
        if seen is not None and seen.job_id != req.job_id:
            raise ReplayedRequest(f"this signed request was already filed as job {seen.job_id}")
        if seen is None:
            s.add(SeenRequest(nonce=sr.nonce, job_id=req.job_id, requester=sr.requester))
            s.commit()
    return sr
