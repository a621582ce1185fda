"""Member directory and global catalog routes."""

from __future__ import annotations

import json

from fastapi import APIRouter, Query

from coordinator.api.deps import CoordDep, MemberCaller
from coordinator.models import CatalogOut, MemberOut

router = APIRouter(tags=["directory"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/members")
def members(caller: MemberCaller, coord: CoordDep) -> list[MemberOut]:
    return [MemberOut(name=m.name, role=m.role, account=m.account, active=m.active, node_url=m.node_url)
            for m in coord.members()]


@router.post("/members/sync")
def sync(caller: MemberCaller, coord: CoordDep) -> list[MemberOut]:
    """Mirror the chain Registry's members."""
    coord.sync_members()
    return members(caller, coord)


@router.post("/catalog/refresh")
def refresh(caller: MemberCaller, coord: CoordDep) -> dict[str, str]:
    """Pull every node's catalog and policy."""
    return coord.refresh_catalog()


@router.get("/catalog")
def catalog(
    caller: MemberCaller,
    coord: CoordDep,
    q: str | None = Query(None, max_length=200, description="keywords (all must match)"),
    member: str | None = Query(None, max_length=64),
    department: str | None = Query(None, max_length=64),
    category: str | None = Query(None, max_length=64),
    max_grade: int | None = Query(None, ge=1, le=4),
) -> list[CatalogOut]:
    return [
        CatalogOut(member=e.member, dataset=e.dataset, description=e.description, key_column=e.key_column,
                   row_count=e.row_count, max_grade=e.max_grade, schema_hash=e.schema_hash,
                   columns=json.loads(e.columns_json), updated_at=e.updated_at)
        for e in coord.search_catalog(q, member, category, max_grade, department)
    ]
