"""The catalog: metadata any member may read."""
from __future__ import annotations

from fastapi import APIRouter

from nodes.api.deps import Ctx, DatasetName, MemberCaller
from nodes.models import CatalogEntry

router = APIRouter(prefix="/catalog", tags=["catalog"])


@router.get("")
def catalog(caller: MemberCaller, ctx: Ctx) -> list[CatalogEntry]:
    """Metadata the coordinator pulls: schema, grades, row count, quality summary, update time."""
    return ctx.datasets.catalog()


@router.get("/{name}")
def catalog_entry(name: DatasetName, caller: MemberCaller, ctx: Ctx) -> CatalogEntry:
    return ctx.datasets.catalog_entry(name)
