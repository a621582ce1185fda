"""Who is using the node console: the officer dependency, left for the officers' logins to fill.

The node console never authenticates anyone itself. :func:`create_node_console` takes an
``officer`` dependency — a FastAPI dependency returning a :class:`ConsoleOfficer` (or raising 401 /
403) — and every route declares it in its signature. Until officers' accounts and logins exist
(issue #13, branch authz), the default :func:`officer_login_required` refuses every request with
501, so a console mounted too early shows nothing and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from fastapi import HTTPException, Request


@runtime_checkable
class ConsoleOfficer(Protocol):
    """What the console needs to know of the officer: a name for the audit log, and roles
    (``approver``, ``steward``, ``auditor``, ``admin``)."""

    @property
    def name(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...


OfficerDependency = Callable[..., ConsoleOfficer]


def officer_login_required(request: Request) -> ConsoleOfficer:
    """The placeholder login: refuses (501) until the officers' logins are wired in."""
    raise HTTPException(
        status_code=501,
        detail="officer login is not wired into this node yet (officers' accounts: issue #13)",
    )


def same_origin(request: Request) -> None:
    """Refuse a form POST that another site's page made the officer's browser send (CSRF): the
    ``Origin`` (or, failing that, ``Referer``) must be this console's own origin."""
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    own = f"{request.url.scheme}://{request.url.netloc}"
    if not (origin == own or origin.startswith(own + "/")):
        raise HTTPException(status_code=403, detail="cross-site form submission refused")
