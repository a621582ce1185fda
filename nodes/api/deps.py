"""Route dependencies: the node context and *who may call* — a dependency type per role.

A route says in its signature who may call it, as the FastAPI full-stack template does with
``CurrentUser``::

    @router.post("/{request_id}/approve")
    def approve(request_id: RequestId, officer: Approver, ctx: Ctx) -> ApprovalRequestOut: ...

Two kinds of proven identity meet here:

- **members** (other services: the coordinator, a bank's client, a regulator) are the SM2 key the
  peer proved in the 国密 TLS handshake — ``scope["dcp.peer_sm2_public_key"]``, set by the TLS
  server — looked up in the node's one member directory, the chain's Registry (:mod:`protocols.identity`; cached
  ``identity_cache_s``). No key (plain HTTP, in-process) means no member.
- **officers** (people of this node) are a live session token, ``Authorization: Bearer dcp1…``,
  issued by ``POST /officers/login`` of this node (:mod:`nodes.services.officers`).

Refusals are :class:`NotAuthenticated` (401), :class:`Forbidden`, :class:`UnknownMember`,
:class:`MemberInactive` (403); the app's handler writes each into the audit log with the JSON body
``{"error": name, "detail": …}``.

============================  ==================================================================
type                          who
============================  ==================================================================
``MemberCaller``              any active member (catalog)
``CoordinatorCaller``         the member with role ``coordinator`` (tasks, HE steps, filing
                              approval requests, policy dry-run)
``Officer``                   any officer of this node (dataset and proposal listings)
``Approver``                  officer with role ``approver`` (approve, reject)
``Steward``                   officer with role ``steward`` (datasets, schema, policy proposals)
``Auditor``                   officer with role ``auditor``, or a member with role ``regulator``
``Admin``                     officer with role ``admin`` (anchor, prune)
``InboxReader``               an officer of this node, or the coordinator (the approvals inbox)
``MemberOrOfficer``           an officer of this node, or any member (policy, mock data)
============================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from nodes.context import NodeContext
from nodes.services.officers import (
    Forbidden,
    MemberInactive,
    NotAuthenticated,
    OfficerIdentity,
    UnknownMember,
)
from protocols.identity import Caller, peer_key

ANY = "*"


def get_ctx(request: Request) -> NodeContext:
    """The node context of this app."""
    return request.app.state.ctx


Ctx = Annotated[NodeContext, Depends(get_ctx)]


@dataclass(frozen=True)
class Principal:
    """The verified caller of one request: a member (by TLS key), an officer (by session), or both."""

    member: Caller | None = None
    officer: OfficerIdentity | None = None

    @property
    def actor(self) -> str:
        """The audit log's ``actor``: the officer when one acted, else the member; with the other after."""
        if self.officer is not None:
            return self.officer.actor + (f" via member:{self.member.name}" if self.member else "")
        return self.member.actor if self.member else "anonymous"


def peer_member(request: Request) -> Caller | None:
    """The member whose key the TLS peer proved (None when the request carried no key)."""
    if hasattr(request.state, "dcp_member"):
        return request.state.dcp_member
    key = peer_key(request.scope)
    caller = None
    if key is not None:
        caller = get_ctx(request).members.lookup(key)
        if caller is None:
            request.state.dcp_actor = f"peer:{key.hex()[:16]}…"
            raise UnknownMember("the key this peer proved belongs to no member of the Registry")
        if not caller.active:
            request.state.dcp_actor = caller.actor
            raise MemberInactive(f"member {caller.name} is no longer active in the Registry")
        request.state.dcp_actor = caller.actor
    request.state.dcp_member = caller
    return caller


def session_officer(request: Request) -> OfficerIdentity | None:
    """The officer of the bearer token (None without one; NotAuthenticated for a bad one)."""
    auth = request.headers.get("authorization")
    if not auth:
        return None
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 4096:
        raise NotAuthenticated("the Authorization header is not a bearer officer token")
    officer = get_ctx(request).officers.verify(token.strip())
    request.state.dcp_actor = officer.actor
    return officer


def require(*, members: tuple[str, ...] = (), officers: tuple[str, ...] = ()) -> Callable[[Request], Principal]:
    """A dependency admitting members with one of ``members``' roles or officers with one of
    ``officers``' roles (``ANY``: every role)."""
    wanted = [f"member ({'any role' if ANY in members else ', '.join(members)})"] if members else []
    if officers:
        wanted.append(f"officer of this node ({'any role' if ANY in officers else ', '.join(officers)})")

    def dependency(request: Request) -> Principal:
        member = peer_member(request)
        officer = session_officer(request)
        p = Principal(member, officer)
        request.state.dcp_actor = p.actor
        if officer is not None and officers and (ANY in officers or set(officer.roles) & set(officers)):
            return p
        if member is not None and members and (ANY in members or member.role in members):
            return p
        if member is None and officer is None:
            raise NotAuthenticated(f"this route needs a verified {' or '.join(wanted)}")
        who = ", ".join(x for x in (officer and f"{officer.actor} ({', '.join(officer.roles)})",
                                     member and f"{member.actor} ({member.role})") if x)
        raise Forbidden(f"{who} may not call this route; it needs a {' or '.join(wanted)}")

    return dependency


MemberCaller = Annotated[Principal, Depends(require(members=(ANY,)))]
CoordinatorCaller = Annotated[Principal, Depends(require(members=("coordinator",)))]
Officer = Annotated[Principal, Depends(require(officers=(ANY,)))]
Approver = Annotated[Principal, Depends(require(officers=("approver",)))]
Steward = Annotated[Principal, Depends(require(officers=("steward",)))]
Auditor = Annotated[Principal, Depends(require(officers=("auditor",), members=("regulator",)))]
Admin = Annotated[Principal, Depends(require(officers=("admin",)))]
InboxReader = Annotated[Principal, Depends(require(officers=(ANY,), members=("coordinator",)))]
MemberOrOfficer = Annotated[Principal, Depends(require(officers=(ANY,), members=(ANY,)))]

# bounded path parameters: no input turns into a 500 (an id past SQLite's 64-bit integers, a 1 MB name)
RequestId = Annotated[int, Path(ge=1, le=2**62)]
DatasetName = Annotated[str, Path(min_length=1, max_length=128)]
JobId = Annotated[str, Path(min_length=1, max_length=200)]
