"""Dependencies shared by the routes: the node context, the acting user, the admin check."""

from __future__ import annotations

import hmac

from fastapi import Request

from nodes.context import NodeContext
from nodes.errors import Unauthorized


def get_ctx(request: Request) -> NodeContext:
    """The node context of this app."""
    return request.app.state.ctx


def actor_of(request: Request) -> str:
    """Who is asking (``X-DCP-Actor``; the console and the coordinator set it)."""
    return request.headers.get("x-dcp-actor", "anonymous")[:128]


def require_admin(request: Request) -> str:
    """Check the admin token on state-changing routes; return the actor."""
    token = request.app.state.ctx.settings.admin_token
    if token:
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("this request changes the node's state and needs the admin token")
    return actor_of(request)
