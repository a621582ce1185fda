"""FastAPI app factory of the department node."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from nodes.api import approvals, audit, catalog, datasets, health, policy
from nodes.api.deps import actor_of
from nodes.context import NodeContext
from nodes.errors import NodeError
from nodes.services.approvals import ApprovalRecorder
from nodes.services.audit import AuditAnchor
from nodes.settings import NodeSettings

log = logging.getLogger("dcp.node")


def _refusal(request: Request, ctx: NodeContext, error: str, detail: str) -> None:
    try:
        ctx.audit.record(
            actor=actor_of(request),
            action=f"{request.method} {request.url.path}",
            outcome="refused",
            detail={"error": error, "detail": detail},
        )
    except Exception:  # the refusal itself must still reach the client
        log.exception("could not record a refusal in the audit log")


def create_app(
    settings: NodeSettings, anchor: AuditAnchor | None = None, recorder: ApprovalRecorder | None = None
) -> FastAPI:
    """The node's HTTP service over its own database (created if missing)."""
    ctx = NodeContext.build(settings, anchor, recorder)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()

    app = FastAPI(title=f"dcp node {settings.name}", version="0.1.0", lifespan=lifespan)
    app.state.ctx = ctx

    @app.exception_handler(NodeError)
    async def _node_error(request: Request, exc: NodeError) -> JSONResponse:
        _refusal(request, ctx, exc.name, exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"error": exc.name, "detail": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc and message only: pydantic's "input" could echo what the client sent
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        _refusal(request, ctx, "InvalidRequest", detail)
        return JSONResponse(status_code=422, content={"error": "InvalidRequest", "detail": detail})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        _refusal(request, ctx, "InternalError", type(exc).__name__)
        return JSONResponse(status_code=500, content={"error": "InternalError", "detail": type(exc).__name__})

    for r in (health.router, datasets.router, catalog.router, policy.router, approvals.router, audit.router):
        app.include_router(r)
    return app
