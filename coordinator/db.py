"""The coordinator's own database (SQLite file by default, any SQLAlchemy URL)."""

from __future__ import annotations

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from coordinator.models import CoordBase


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout (API and worker threads share it)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:  # noqa: ANN001
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


#: Columns added after the first release: (table, column, SQL type), added to older databases.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (("job", "authorization_mode", "VARCHAR"),)


def init_db(engine: Engine) -> None:
    """Create missing tables, and add the columns an older database lacks."""
    CoordBase.metadata.create_all(engine)
    insp = inspect(engine)
    for table, column, sql_type in ADDED_COLUMNS:
        if column not in {c["name"] for c in insp.get_columns(table)}:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
