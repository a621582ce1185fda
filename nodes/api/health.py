from __future__ import annotations

from fastapi import APIRouter, Depends

from nodes.api.deps import get_ctx
from nodes.context import NodeContext

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: NodeContext = Depends(get_ctx)) -> dict[str, str]:
    """Liveness and the node's name."""
    return {"status": "ok", "node": ctx.settings.name}
