"""SQL ingest from the data sources the node's admin named in the settings (``sql_sources``).

A request names a source, never a URL. The statement is parsed (sqlglot) and must be exactly one
SELECT (or a UNION/INTERSECT/EXCEPT of SELECTs) with no data-changing part anywhere — a
``WITH x AS (DELETE … RETURNING …) SELECT …`` is refused — and it then runs on a read-only
connection (SQLite: ``mode=ro`` and ``PRAGMA query_only``; other databases: a read-only
transaction that is rolled back). Errors say what went wrong in the node's words: the driver's
message, which could carry rows or paths, never reaches a response.
"""

from __future__ import annotations

import re

import pandas as pd
from pydantic import Field, model_validator
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from nodes.errors import EmptyDataFile, SourceError
from nodes.models import IngestOptions
from nodes.settings import SqlSource

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}(\.[A-Za-z_][A-Za-z0-9_]{0,127})?$")
_FORBIDDEN_FUNCS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "pg_read_file",
                    "pg_read_binary_file", "pg_ls_dir", "lo_import", "lo_export", "dblink", "sys_exec"}
MAX_QUERY_CHARS = 20_000
_DENIED = ("Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterTable", "Command", "Pragma",
           "Returning", "Into", "Set", "TruncateTable", "Transaction", "Commit", "Rollback", "LoadData", "Use",
           "Lock", "Attach", "Detach")
"""sqlglot node types that change data or state; one anywhere in the tree refuses the query."""


class SqlSourceIngest(IngestOptions):
    """Register a dataset from a named source: a table, or one SELECT."""

    source: str = Field(min_length=1, max_length=64)
    table: str | None = Field(None, max_length=257)
    query: str | None = Field(None, max_length=MAX_QUERY_CHARS)

    @model_validator(mode="after")
    def _one_of(self) -> SqlSourceIngest:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table or query")
        if self.table is not None and not _IDENT.match(self.table):
            raise ValueError("table must be a plain (optionally schema-qualified) identifier")
        return self


def check_select(query: str, dialect: str) -> None:
    """Raise SourceError unless ``query`` is exactly one read-only SELECT."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(query, read=_sqlglot_dialect(dialect)) if s is not None]
    except Exception:  # sqlglot's ParseError / TokenError
        raise SourceError("the query is not a SQL statement the node can check; only one SELECT is allowed") from None
    if len(statements) != 1:
        raise SourceError(f"the query holds {len(statements)} statements; exactly one SELECT is allowed")
    root = statements[0]
    if not isinstance(root, exp.Select | exp.Union | exp.Intersect | exp.Except):
        raise SourceError(f"the query is a {type(root).__name__.upper()}; only a SELECT is allowed")
    denied = tuple(getattr(exp, n) for n in _DENIED if hasattr(exp, n))
    for node in root.walk():
        if isinstance(node, denied):
            raise SourceError(f"the query contains {type(node).__name__.upper()}; only a read-only SELECT is allowed")
        if isinstance(node, exp.Anonymous | exp.Func) and str(node.name).lower() in _FORBIDDEN_FUNCS:
            raise SourceError(f"the query calls {node.name}(), which is not allowed")


def _sqlglot_dialect(backend: str) -> str | None:
    return {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql", "mssql": "tsql",
            "oracle": "oracle"}.get(backend)


def read_only_engine(source: SqlSource) -> Engine:
    """An engine on ``source`` that cannot write (SQLite read-only URI; read-only transactions)."""
    from sqlalchemy import create_engine

    url = make_url(source.url.get_secret_value())
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise SourceError("a SQLite source must name a database file")
        engine = create_engine(f"sqlite:///file:{url.database}?mode=ro&uri=true")

        @event.listens_for(engine, "connect")
        def _ro(dbapi_conn, _record) -> None:  # noqa: ANN001
            dbapi_conn.execute("PRAGMA query_only=ON")

        return engine
    engine = create_engine(url)

    @event.listens_for(engine, "begin")
    def _ro_tx(conn) -> None:  # noqa: ANN001
        if backend in ("postgresql", "mysql", "mariadb", "oracle"):
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


def read_source(sources: dict[str, SqlSource], req: SqlSourceIngest) -> tuple[pd.DataFrame, str]:
    """The rows of ``req`` as strings, and a reference to record (source name, table or query hash)."""
    from sqlalchemy import MetaData, Table, select, text

    from nodes.services.audit import sm3_hex
    from nodes.services.tabular import _stringify

    source = sources.get(req.source)
    if source is None:
        known = ", ".join(sorted(sources)) or "none configured"
        raise SourceError(f"no data source named {req.source!r} in this node's settings ({known})")
    try:
        engine = read_only_engine(source)
    except SourceError:
        raise
    except Exception as exc:  # bad URL, missing driver
        raise SourceError(f"data source {req.source!r} is misconfigured ({type(exc).__name__})") from None
    if req.query is not None:
        check_select(req.query, engine.dialect.name)
    try:
        with engine.connect() as conn:
            with conn.begin() as tx:
                if req.table is not None:
                    schema, _, name = req.table.rpartition(".")
                    t = Table(name, MetaData(), autoload_with=conn, schema=schema or None)
                    result = conn.execute(select(t))
                else:
                    result = conn.execute(text(req.query))
                cols = list(result.keys())
                rows = result.fetchall()
                tx.rollback()
    except Exception as exc:  # noqa: BLE001 - the driver's text may hold data: only its class is told
        raise SourceError(f"data source {req.source!r} could not be read ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    if len(set(cols)) != len(cols):
        raise SourceError("the source has duplicate column names")
    if not rows:
        raise EmptyDataFile("the source table or query returned no rows")
    ref = (f"source={req.source} table={req.table}" if req.table
           else f"source={req.source} query=sm3:{sm3_hex(req.query.encode())[:16]}")
    return _stringify(pd.DataFrame([tuple(r) for r in rows], columns=cols)), ref
