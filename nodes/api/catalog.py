from __future__ import annotations

from fastapi import APIRouter, Depends

from nodes.api.deps import get_ctx
from nodes.context import NodeContext
from nodes.models import CatalogEntry

router = APIRouter(prefix="/catalog", tags=["catalog"])


@router.get("")
def catalog(ctx: NodeContext = Depends(get_ctx)) -> list[CatalogEntry]:
    """Metadata the coordinator pulls: schema, grades, row count, quality summary, update time."""
    return ctx.datasets.catalog()


@router.get("/{name}")
def catalog_entry(name: str, ctx: NodeContext = Depends(get_ctx)) -> CatalogEntry:
    return ctx.datasets.catalog_entry(name)
