"""FastAPI app factory of the department node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.asgi import BodyLimit
from nodes.api import approvals, audit, catalog, datasets, engines, health, officers, policy, stored, tasks
from nodes.context import NodeContext
from nodes.errors import NodeError
from nodes.services.approvals import ApprovalRecorder
from nodes.services.audit import AuditAnchor
from nodes.services.chain import NodeChain
from nodes.settings import NodeSettings

log = logging.getLogger("dcp.node")


def _refusal(request: Request, ctx: NodeContext, error: str, detail: str) -> None:
    try:
        ctx.audit.record(
            actor=getattr(request.state, "dcp_actor", "unauthenticated"),
            action=f"{request.method} {request.url.path}",
            target=str(next((request.path_params[k] for k in ("job_id", "name", "request_id")
                             if k in request.path_params), "")),
            outcome="refused",
            detail={"error": error, "detail": detail},
        )
    except Exception:  # the refusal itself must still reach the client
        log.exception("could not record a refusal in the audit log")


UPLOAD_PATHS = ("/datasets/upload",)
"""Routes that stream their body under their own cap (``max_upload_bytes``); every other body is
capped at ``max_body_bytes`` by :class:`common.asgi.BodyLimit` before it is parsed."""


async def anchor_periodically(ctx: NodeContext, interval: float) -> None:
    """Anchor the audit head every ``interval`` seconds when something new was logged."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(ctx.audit.anchor_if_new, "node")
        except Exception as exc:  # noqa: BLE001 - a chain outage must not stop the service; retried next tick
            log.warning("periodic audit anchoring failed: %s", getattr(exc, "detail", exc))


def create_app(
    settings: NodeSettings,
    anchor: AuditAnchor | None = None,
    recorder: ApprovalRecorder | None = None,
    chain: NodeChain | None = None,
) -> FastAPI:
    """The node's HTTP service over its own database (created if missing); see NodeContext.build."""
    ctx = NodeContext.build(settings, anchor, recorder, chain)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ticker = None
        if ctx.audit.anchor_backend is not None and settings.anchor_interval_s > 0:
            ticker = asyncio.create_task(anchor_periodically(ctx, settings.anchor_interval_s))
        ctx.companions.start()  # the engines' services (settings ``engines``); closed with ctx
        try:
            yield
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await run_in_threadpool(ctx.close)

    docs = settings.docs_enabled
    app = FastAPI(title=f"dcp node {settings.name}", version="0.1.0", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None)
    async def _too_big(scope: dict, detail: str) -> None:
        await run_in_threadpool(_refusal, Request(scope), ctx, "BodyTooLarge", detail)

    def step_cap() -> int:  # engine steps carry the ciphertexts the coordinator relays
        return settings.max_step_body_bytes

    app.add_middleware(BodyLimit, cap=lambda: settings.max_body_bytes, exempt=UPLOAD_PATHS, on_refusal=_too_big,
                       prefix_caps=(("/tasks/", step_cap),))
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

    for r in (health.router, datasets.router, catalog.router, policy.router, approvals.router, audit.router,
              officers.router, tasks.router, stored.router, engines.router):
        app.include_router(r)
    return app
