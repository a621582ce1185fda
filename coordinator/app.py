"""The coordinator's HTTP service: ``create_app(settings)``; routes are thin (coordinator/api/*)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.asgi import BodyLimit
from coordinator.api import directory, jobs
from coordinator.errors import CoordinatorError
from coordinator.service import Coordinator
from coordinator.settings import CoordinatorSettings

log = logging.getLogger("dcp.coordinator")


def create_app(settings: CoordinatorSettings, coord: Coordinator | None = None) -> FastAPI:
    """The coordinator app over its own database; the scheduler runs while the app does."""
    coord = coord or Coordinator(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.worker:
            coord.start_worker()
        yield
        coord.close()

    docs = settings.docs_enabled
    app = FastAPI(title="dcp coordinator", version="0.1.0", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.add_middleware(BodyLimit, cap=lambda: settings.max_body_bytes)
    app.state.coord = coord

    @app.exception_handler(CoordinatorError)
    async def _named(_request: Request, exc: CoordinatorError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.name, "detail": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse(status_code=422, content={"error": "InvalidRequest", "detail": detail})

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return JSONResponse(status_code=500, content={"error": "InternalError", "detail": type(exc).__name__})

    for r in (directory.router, jobs.router):
        app.include_router(r)
    return app
