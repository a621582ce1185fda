"""The node's own database: metadata tables and one data table per dataset."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel, create_engine

import nodes.models  # noqa: F401  (registers the tables on SQLModel.metadata)

#: SQLite connections a node's engine keeps (at least the server's 40 worker threads and the node's own).
SQLITE_POOL = 48


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets real transactional DDL (so a failed ingest leaves no table)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        db = Path(parsed.database)
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # the node's database holds its data and its audit log: owner only (SQLite gives its WAL and
        # SHM files the database file's mode)
        os.close(os.open(db, os.O_CREAT | os.O_RDWR, 0o600))
        db.chmod(0o600)
    # a connection for each of the 40 threads the server runs sync routes in, plus the node's own threads
    # (tasks, receipts, anchors): with SQLAlchemy's 5 + 10, 100 concurrent inbox readers on a loaded
    # machine waited 30 s for a connection and got 500s
    pool = {"pool_size": SQLITE_POOL, "max_overflow": 16} if parsed.database and parsed.database != ":memory:" else {}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None  # let SQLAlchemy emit BEGIN itself (DDL included)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        conn.exec_driver_sql("BEGIN")  # deferred: readers never block (WAL); writers are serialized by the audit lock

    return engine


def init_db(engine: Engine) -> None:
    """Create the metadata tables if they do not exist, and add columns newer code expects.

    Only nullable (or defaulted) columns are ever added, so an older database keeps every row."""
    SQLModel.metadata.create_all(engine)
    insp = inspect(engine)
    with engine.begin() as conn:
        for table in SQLModel.metadata.sorted_tables:
            have = {c["name"] for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name in have:
                    continue
                if not col.nullable and col.server_default is None:
                    continue  # cannot be added to existing rows without a value; never the case for our additions
                ddl = col.type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" {ddl}')
