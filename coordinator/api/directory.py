"""Member directory and global catalog routes."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query

from coordinator.api.deps import get_coord
from coordinator.models import CatalogOut, MemberOut
from coordinator.service import Coordinator

router = APIRouter(tags=["directory"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/members")
def members(coord: Coordinator = Depends(get_coord)) -> list[MemberOut]:
    return [MemberOut(name=m.name, role=m.role, account=m.account, active=m.active, node_url=m.node_url)
            for m in coord.members()]


@router.post("/members/sync")
def sync(coord: Coordinator = Depends(get_coord)) -> list[MemberOut]:
    """Mirror the chain Registry's members."""
    coord.sync_members()
    return members(coord)


@router.post("/catalog/refresh")
def refresh(coord: Coordinator = Depends(get_coord)) -> dict[str, str]:
    """Pull every node's catalog and policy."""
    return coord.refresh_catalog()


@router.get("/catalog")
def catalog(
    q: str | None = Query(None, description="keywords (all must match)"),
    member: str | None = Query(None),
    department: str | None = Query(None),
    category: str | None = Query(None),
    max_grade: int | None = Query(None, ge=1, le=4),
    coord: Coordinator = Depends(get_coord),
) -> list[CatalogOut]:
    return [
        CatalogOut(member=e.member, dataset=e.dataset, description=e.description, key_column=e.key_column,
                   row_count=e.row_count, max_grade=e.max_grade, schema_hash=e.schema_hash,
                   columns=json.loads(e.columns_json), updated_at=e.updated_at)
        for e in coord.search_catalog(q, member, category, max_grade, department)
    ]
