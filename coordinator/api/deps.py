"""Shared route dependencies."""

from __future__ import annotations

from fastapi import Request

from coordinator.service import Coordinator


def get_coord(request: Request) -> Coordinator:
    """The coordinator service of this app."""
    return request.app.state.coord
