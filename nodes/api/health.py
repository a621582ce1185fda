from __future__ import annotations

from fastapi import APIRouter

from nodes.api.deps import Ctx

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: Ctx) -> dict[str, str]:
    """Liveness and the node's name (open: says nothing but that the node is up)."""
    return {"status": "ok", "node": ctx.settings.name}
