"""Route dependencies of the coordinator: the service, and who may call (a dependency type per role).

The caller is the member whose SM2 key the peer proved in the 国密 TLS handshake
(``scope["dcp.peer_sm2_public_key"]``), looked up in the coordinator's one member directory
(``Coordinator.key_directory``: the chain's Registry, cached ``identity_cache_s``, or without a chain
``peers`` of the settings). ``MemberCaller``: any active
member. Which member may act on a job (only its requester submits or withdraws it, with a signed
request) is checked in the route against the job."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Path, Request

from coordinator.errors import CoordinatorError
from coordinator.service import Coordinator
from protocols.identity import Caller, MemberDirectory, peer_key

log = logging.getLogger("dcp.coordinator")


class NotAuthenticated(CoordinatorError):
    """No verified identity: the request carried no peer key from the TLS channel."""

    status_code = 401


class UnknownMember(CoordinatorError):
    """The key the peer proved belongs to no member of the Registry."""

    status_code = 403


class MemberInactive(CoordinatorError):
    """The peer's member was removed (or its key rotated) on chain."""

    status_code = 403


class Forbidden(CoordinatorError):
    """The verified member may not do this (another member's job, or a role that may not)."""

    status_code = 403


class UnsignedRequest(CoordinatorError):
    """The job request or withdrawal is not signed by its requester (or forged, tampered with, stale)."""

    status_code = 403


class ReplayedRequest(CoordinatorError):
    """This signed request was used before."""

    status_code = 409


def get_coord(request: Request) -> Coordinator:
    """The coordinator service of this app."""
    return request.app.state.coord


def directory(coord: Coordinator) -> MemberDirectory:
    """The coordinator's member directory: its one cache of the members' keys (``key_directory``)."""
    return coord.key_directory()


def member_caller(request: Request) -> Caller:
    """The active member behind the TLS peer key; 401/403 otherwise (logged)."""
    coord = get_coord(request)
    key = peer_key(request.scope)
    if key is None:
        log.warning("refused %s %s: no peer key", request.method, request.url.path)
        raise NotAuthenticated("this route needs a member proved by its TLS certificate")
    caller = directory(coord).lookup(key)
    if caller is None:
        log.warning("refused %s %s: unknown key %s", request.method, request.url.path, key.hex()[:16])
        raise UnknownMember("the key this peer proved belongs to no member of the Registry")
    if not caller.active:
        raise MemberInactive(f"member {caller.name} is no longer active in the Registry")
    request.state.dcp_member = caller
    return caller


CoordDep = Annotated[Coordinator, Depends(get_coord)]
MemberCaller = Annotated[Caller, Depends(member_caller)]
JobId = Annotated[str, Path(min_length=1, max_length=200)]
