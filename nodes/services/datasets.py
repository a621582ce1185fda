"""Datasets: registration (atomic: metadata, data table, quality report and audit entry commit
together or not at all), schema edits, catalog metadata, reading and extraction."""

from __future__ import annotations

import csv
import errno
import itertools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, Table, Text, inspect
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from nodes.errors import (
    DatasetExists,
    DatasetNotFound,
    DiskFull,
    InvalidDatasetName,
    InvalidSchemaEdit,
    MissingKeyColumn,
)
from nodes.models import (
    CatalogEntry,
    ColumnMeta,
    ColumnOut,
    Dataset,
    DatasetOut,
    IngestOptions,
    QualityRecord,
    QualityReport,
    SchemaEdit,
    utcnow,
)
from nodes.services.audit import AuditLog, canonical_json, sm3_hex
from nodes.services.quality import ColumnRules, run_rules, summarize
from nodes.services.tabular import ROW_COL, _cell_str, convert_column, default_grade, infer_and_convert

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SQL_TYPES = {"int": BigInteger, "float": Float, "bool": Boolean}
_INSERT_BATCH = 20_000


def _data_table(name: str, cols: Sequence[tuple[str, str]]) -> Table:
    return Table(
        name,
        MetaData(),
        Column(ROW_COL, Integer, primary_key=True, autoincrement=False),
        *[Column(c, _SQL_TYPES.get(t, Text)(), nullable=True) for c, t in cols],
    )


def _placeholders(conn: Connection, n: int) -> list[str] | None:
    style = conn.dialect.paramstyle
    if style == "qmark":
        return ["?"] * n
    if style == "format":
        return ["%s"] * n
    if style == "numeric":
        return [f":{i + 1}" for i in range(n)]
    return None


def _insert_rows(conn: Connection, table: Table, rows: pd.Index, data: dict[str, list[object]]) -> None:
    """Insert the typed cells (one list per column, None for NULL) as rows numbered ``rows``.

    Rows go to the DB-API's ``executemany`` as plain tuples in batches (no per-row dicts)."""
    names = list(data)
    marks = _placeholders(conn, len(names) + 1)
    columns = [[int(r) for r in rows], *(list(data[n]) for n in names)]
    tuples = zip(*columns, strict=True)
    if marks is None:  # a driver with named parameters: SQLAlchemy's executemany
        keys = [ROW_COL, *names]
        while batch := [dict(zip(keys, t, strict=True)) for t in itertools.islice(tuples, _INSERT_BATCH)]:
            conn.execute(table.insert(), batch)
        return
    quote = conn.dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in [ROW_COL, *names])}) "
           f"VALUES ({', '.join(marks)})")
    while batch := list(itertools.islice(tuples, _INSERT_BATCH)):
        conn.exec_driver_sql(sql, batch)


class DatasetService:
    """Everything the node does with its datasets."""

    def __init__(self, node: str, engine: Engine, audit: AuditLog) -> None:
        self.node = node
        self.engine = engine
        self.audit = audit

    # ------------------------------------------------------------ lookups

    def _get(self, session: Session, name: str) -> Dataset:
        ds = session.exec(select(Dataset).where(Dataset.name == name)).first()
        if ds is None:
            raise DatasetNotFound(f"no dataset named {name!r} on node {self.node!r}")
        return ds

    @staticmethod
    def _columns(session: Session, ds: Dataset) -> list[ColumnMeta]:
        return list(session.exec(select(ColumnMeta).where(ColumnMeta.dataset_id == ds.id).order_by(ColumnMeta.position)))

    @staticmethod
    def _quality(session: Session, ds: Dataset) -> QualityReport | None:
        rec = session.exec(select(QualityRecord).where(QualityRecord.dataset_id == ds.id)).first()
        return QualityReport.model_validate_json(rec.report_json) if rec else None

    def _out(self, session: Session, ds: Dataset) -> DatasetOut:
        q = self._quality(session, ds)
        return DatasetOut(
            name=ds.name,
            description=ds.description,
            source=ds.source,
            key_column=ds.key_column,
            row_count=ds.row_count,
            columns=[ColumnOut.model_validate(c, from_attributes=True) for c in self._columns(session, ds)],
            quality=summarize(q.total_rows, q.rows_with_issues, q.results) if q else None,
            created_at=ds.created_at,
            updated_at=ds.updated_at,
        )

    def get(self, name: str) -> DatasetOut:
        with Session(self.engine) as session:
            return self._out(session, self._get(session, name))

    def list(self) -> list[DatasetOut]:
        with Session(self.engine) as session:
            return [self._out(session, ds) for ds in session.exec(select(Dataset).order_by(Dataset.name))]

    def quality_report(self, name: str) -> QualityReport:
        with Session(self.engine) as session:
            q = self._quality(session, self._get(session, name))
        if q is None:  # cannot happen for a registered dataset; be explicit anyway
            raise DatasetNotFound(f"no quality report for {name!r}")
        return q

    def catalog(self) -> list[CatalogEntry]:
        return [self.catalog_entry(d) for d in self.list()]

    def catalog_entry(self, d: DatasetOut | str) -> CatalogEntry:
        if isinstance(d, str):
            d = self.get(d)
        schema = [[c.name, c.dtype, c.grade, c.category] for c in d.columns]
        return CatalogEntry(
            node=self.node,
            name=d.name,
            description=d.description,
            key_column=d.key_column,
            row_count=d.row_count,
            columns=d.columns,
            max_grade=max((c.grade for c in d.columns), default=0),
            schema_hash=sm3_hex(canonical_json(schema)),
            quality=d.quality,
            updated_at=d.updated_at,
        )

    def column_meta(self, name: str) -> list[ColumnMeta]:
        with Session(self.engine) as session:
            return self._columns(session, self._get(session, name))

    # ------------------------------------------------------------ registration

    def register(self, frame: pd.DataFrame, opts: IngestOptions, source: str, source_ref: str, actor: str) -> DatasetOut:
        """Infer, convert, check quality and store ``frame`` (strings, 1-based index) atomically."""
        if not _NAME_RE.match(opts.name):
            raise InvalidDatasetName(
                "a dataset name is 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        if opts.key_column is not None and opts.key_column not in frame.columns:
            raise MissingKeyColumn(
                f"key column {opts.key_column!r} is not in the data (columns: {list(frame.columns)})"
            )
        unknown = sorted(set(opts.columns) - set(frame.columns))
        if unknown:
            raise InvalidSchemaEdit(f"column declarations for columns not in the data: {unknown}")
        metas: list[ColumnMeta] = []
        data: dict[str, list[object]] = {}
        mismatches: dict[str, list[int]] = {}
        for pos, name in enumerate(frame.columns):
            hint = opts.columns.get(name)
            dtype, conv = infer_and_convert(name, frame[name], (hint.dtype if hint and hint.dtype else None) or None)
            data[name] = conv.values
            if conv.mismatched_rows:
                mismatches[name] = conv.mismatched_rows
            metas.append(
                ColumnMeta(
                    dataset_id=0,
                    position=pos,
                    name=name,
                    dtype=dtype,
                    description=(hint.description if hint and hint.description else "") or "",
                    grade=(hint.grade if hint and hint.grade else None) or default_grade(dtype),
                    category=hint.category if hint else None,
                    min_value=hint.min_value if hint else None,
                    max_value=hint.max_value if hint else None,
                )
            )
        typed = pd.DataFrame(data, index=frame.index)
        results, flagged = run_rules(typed, [_rules(m) for m in metas], opts.key_column, mismatches)
        table_name = f"ds_{uuid.uuid4().hex[:16]}"
        with self.audit.transaction() as session:
            if session.exec(select(Dataset).where(Dataset.name == opts.name)).first() is not None:
                raise DatasetExists(f"a dataset named {opts.name!r} already exists; delete it first or pick another name")
            ds = Dataset(
                name=opts.name,
                description=opts.description,
                source=source,
                source_ref=source_ref,
                key_column=opts.key_column,
                table_name=table_name,
                row_count=len(frame),
            )
            session.add(ds)
            session.flush()
            for m in metas:
                m.dataset_id = ds.id
                session.add(m)
            conn = session.connection()
            table = _data_table(table_name, [(m.name, m.dtype) for m in metas])
            table.create(conn)
            _insert_rows(conn, table, frame.index, data)
            report = QualityReport(
                dataset=ds.name, total_rows=len(frame), rows_with_issues=flagged, results=results, created_at=utcnow()
            )
            session.add(QualityRecord(dataset_id=ds.id, report_json=report.model_dump_json()))
            self.audit.append(
                session,
                actor=actor,
                action="dataset.register",
                target=ds.name,
                detail={
                    "source": source,
                    "source_ref": source_ref,
                    "rows": len(frame),
                    "columns": [m.name for m in metas],
                    "rows_with_issues": flagged,
                },
            )
            return self._out(session, ds)

    # ------------------------------------------------------------ edits

    def edit_schema(self, name: str, edit: SchemaEdit, actor: str) -> DatasetOut:
        """Apply column edits; type changes convert the stored cells (all must fit) and re-run quality."""
        with self.audit.transaction() as session:
            ds = self._get(session, name)
            cols = {c.name: c for c in self._columns(session, ds)}
            unknown = [e.name for e in edit.columns if e.name not in cols]
            if unknown:
                raise InvalidSchemaEdit(f"no such columns in {name!r}: {unknown}")
            changed_types: dict[str, str] = {}
            for e in edit.columns:
                c = cols[e.name]
                if e.dtype is not None and e.dtype != c.dtype:
                    changed_types[c.name] = e.dtype
                for f in ("description", "grade", "category", "min_value", "max_value"):
                    v = getattr(e, f)
                    if v is not None or f in e.model_fields_set:
                        setattr(c, f, v)
            for c in cols.values():
                if c.min_value is not None and c.max_value is not None and c.min_value > c.max_value:
                    raise InvalidSchemaEdit(f"column {c.name!r}: min_value exceeds max_value")
            if edit.description is not None:
                ds.description = edit.description
            conn = session.connection()
            old = _data_table(ds.table_name, [(c.name, c.dtype) for c in cols.values()])
            df = _read(conn, old)
            if changed_types:
                data: dict[str, list[object]] = {}
                for c in cols.values():
                    if c.name in changed_types:
                        as_text = pd.Series([None if v is None else _cell_str(v) for v in df[c.name]], index=df.index, dtype=object)
                        conv = convert_column(as_text, changed_types[c.name])
                        if conv.mismatched_rows:
                            raise InvalidSchemaEdit(
                                f"{len(conv.mismatched_rows)} cells of {c.name!r} do not fit {changed_types[c.name]} "
                                f"(rows {conv.mismatched_rows[:10]})"
                            )
                        data[c.name] = conv.values
                        c.dtype = changed_types[c.name]
                    else:
                        data[c.name] = [None if pd.isna(v) else v for v in df[c.name]]
                new_name = f"ds_{uuid.uuid4().hex[:16]}"
                new = _data_table(new_name, [(c.name, c.dtype) for c in cols.values()])
                new.create(conn)
                _insert_rows(conn, new, df.index, data)
                old.drop(conn)
                ds.table_name = new_name
                df = pd.DataFrame(data, index=df.index)
            prev = self._quality(session, ds)
            # misfit cells were stored as NULL, so the re-run null rule still flags their rows
            carried = {r.column for r in (prev.results if prev else []) if r.rule == "type_mismatch"} - set(changed_types)
            results, flagged = run_rules(df, [_rules(c) for c in cols.values()], ds.key_column, None)
            results += [r for r in (prev.results if prev else []) if r.rule == "type_mismatch" and r.column in carried]
            report = QualityReport(
                dataset=ds.name, total_rows=ds.row_count, rows_with_issues=flagged, results=results, created_at=utcnow()
            )
            rec = session.exec(select(QualityRecord).where(QualityRecord.dataset_id == ds.id)).one()
            rec.report_json = report.model_dump_json()
            rec.created_at = utcnow()
            ds.updated_at = utcnow()
            for obj in (*cols.values(), ds, rec):
                session.add(obj)
            self.audit.append(
                session,
                actor=actor,
                action="dataset.schema_edit",
                target=ds.name,
                detail={"edits": [e.model_dump(exclude_unset=True) for e in edit.columns], "type_changes": changed_types},
            )
            session.flush()
            return self._out(session, ds)

    def delete(self, name: str, actor: str) -> None:
        with self.audit.transaction() as session:
            ds = self._get(session, name)
            conn = session.connection()
            if inspect(conn).has_table(ds.table_name):
                Table(ds.table_name, MetaData()).drop(conn)
            for c in self._columns(session, ds):
                session.delete(c)
            rec = session.exec(select(QualityRecord).where(QualityRecord.dataset_id == ds.id)).first()
            if rec:
                session.delete(rec)
            session.flush()
            session.delete(ds)
            self.audit.append(session, actor=actor, action="dataset.delete", target=name, detail={"rows": ds.row_count})

    # ------------------------------------------------------------ reading (inside the node only)

    def read_frame(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Typed cells indexed by row number. Never served by the API."""
        with Session(self.engine) as session:
            ds = self._get(session, name)
            metas = self._columns(session, ds)
            if columns is not None:
                missing = [c for c in columns if c not in {m.name for m in metas}]
                if missing:
                    raise InvalidSchemaEdit(f"no such columns in {name!r}: {missing}")
                metas = [m for m in metas if m.name in set(columns)]
            table = _data_table(ds.table_name, [(m.name, m.dtype) for m in metas])
            return _read(session.connection(), table, [m.name for m in metas])

    def extract_csv(self, name: str, columns: Sequence[str], dest: Path, check: ExtractCheck | None = None) -> int:
        """Write exactly ``columns`` of ``name`` to ``dest`` (CSV); return the row count.

        Streamed from the database in chunks straight into the file (no frame of the whole extract),
        each cell as pandas' ``to_csv`` writes it (floats by ``repr``, integers without ``.0``, NULL as an
        empty cell, booleans ``True``/``False``). With ``check`` the cells are checked as they are written
        (:class:`ExtractCheck`, :class:`ExtractRefused`): the party then needs no second read. A full disk
        raises :class:`DiskFull` with the partial file removed."""
        with Session(self.engine) as session:
            ds = self._get(session, name)
            metas = {m.name: m for m in self._columns(session, ds)}
            missing = [c for c in columns if c not in metas]
            if missing:
                raise InvalidSchemaEdit(f"no such columns in {name!r}: {missing}")
            dtypes = [metas[c].dtype for c in columns]
            dest.parent.mkdir(parents=True, exist_ok=True)
            checker = _Checker(check, list(columns), dtypes) if check is not None else None
            quote = session.connection().dialect.identifier_preparer.quote
            sql = (f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(ds.table_name)} "
                   f"ORDER BY {quote(ROW_COL)}")
            bools = [i for i, t in enumerate(dtypes) if t == "bool"]
            rows = 0
            cur = session.connection().connection.cursor()
            try:
                cur.execute(sql)
                with dest.open("w", newline="", encoding="utf-8") as fh:
                    out = csv.writer(fh, lineterminator="\n")
                    out.writerow(columns)
                    while chunk := cur.fetchmany(_EXTRACT_CHUNK):
                        if bools:
                            chunk = [tuple(_as_bool(v) if i in bools else v for i, v in enumerate(r)) for r in chunk]
                        if checker is not None:
                            checker.feed(chunk)
                        out.writerows(chunk)
                        rows += len(chunk)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                dest.unlink(missing_ok=True)  # no partial extract is left behind
                raise DiskFull(f"the node's disk is full: the extract of {name!r} did not fit and was removed") from None
            finally:
                cur.close()
        if checker is not None:
            checker.finish(dest, rows)
        return rows


_EXTRACT_CHUNK = 50_000


class ExtractRefused(Exception):
    """The extract cannot be a party's input (the party's own ``INPUT_INVALID``, found while writing)."""


@dataclass(frozen=True)
class ExtractCheck:
    """What a SecretFlow party would check of its input, checked by the node while it writes the extract:
    ``key`` has no empty and no repeated value, every ``numeric`` column is numbers without gaps, and
    ``label`` (if given) is 0/1 without gaps."""

    key: str
    numeric: tuple[str, ...] = ()
    label: str | None = None


def _number(v: object) -> float | None:
    """A cell as pandas would read it for a numeric column: a number, else None (a gap or text)."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return None if isinstance(v, float) and v != v else float(v)
    try:
        f = float(str(v).strip())
    except ValueError:
        raise ValueError("not numeric") from None
    return None if f != f else f


class _Checker:
    """:class:`ExtractCheck` over the chunks as they are written; the messages are the party's own."""

    def __init__(self, check: ExtractCheck, columns: list[str], dtypes: list[str]) -> None:
        self.check = check
        where = {c: i for i, c in enumerate(columns)}
        if check.key not in where:
            raise ExtractRefused(f"join key column {check.key!r} is missing (columns: {columns})")
        gone = [c for c in check.numeric if c not in where]
        if gone:
            raise ExtractRefused(f"feature columns missing: {gone}")
        if check.label and check.label not in where:
            raise ExtractRefused(f"label column {check.label!r} is missing")
        self.key = where[check.key]
        self.key_typed = dtypes[self.key] in ("int", "float", "bool")  # the other types are stored as text
        self.numeric = [(c, where[c], dtypes[where[c]] in ("int", "float", "bool")) for c in check.numeric]
        self.label = where[check.label] if check.label else None
        self.hashes = np.empty(0, dtype=np.int64)
        self._parts: list[np.ndarray] = []

    def feed(self, chunk: list[tuple[object, ...]]) -> None:
        cols = list(zip(*chunk, strict=True)) if len(chunk[0]) > 1 else [[r[0] for r in chunk]]
        keys = cols[self.key]
        if None in keys:
            raise ExtractRefused(f"join key {self.check.key!r} has empty values")
        if self.key_typed:
            keys = list(map(str, keys))  # a number key is written, and compared, as its text
        if not all(map(str.strip, keys)):
            raise ExtractRefused(f"join key {self.check.key!r} has empty values")
        self._parts.append(np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)))
        for name, i, typed in self.numeric:
            values = cols[i]
            if typed:
                if None in values:
                    raise ExtractRefused(f"feature column {name!r} has missing values")
                continue
            try:
                parsed = [_number(v) for v in values]
            except ValueError:
                raise ExtractRefused(f"feature column {name!r} is not numeric") from None
            if None in parsed:
                raise ExtractRefused(f"feature column {name!r} has missing values")
        if self.label is not None:
            try:
                labels = {_number(v) for v in cols[self.label]}
            except ValueError:
                labels = {-1.0}
            if not labels <= {0.0, 1.0}:
                shown = sorted(str(v) for v in labels)[:5]
                raise ExtractRefused(f"label column {self.check.label!r} must be 0/1, got {shown}")

    def finish(self, dest: Path, rows: int) -> None:
        """The whole-file checks: some rows, and no key twice (hashes first; the file settles a collision)."""
        if rows == 0:
            raise ExtractRefused("no rows")
        hashes = np.sort(np.concatenate(self._parts))
        self._parts = []
        same = hashes[1:] == hashes[:-1]
        if not same.any():
            return
        suspects = set(hashes[1:][same].tolist())
        seen: set[str] = set()
        dup: list[str] = []
        with dest.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader)
            for row in reader:
                k = row[self.key]
                if hash(k) in suspects:
                    if k in seen:
                        dup.append(k)
                    seen.add(k)
        if dup:
            raise ExtractRefused(f"join key {self.check.key!r} has {len(dup)} duplicate values, e.g. {dup[0]!r}")


def _rules(m: ColumnMeta) -> ColumnRules:
    return ColumnRules(m.name, m.dtype, m.min_value, m.max_value)


def _raw_columns(conn: Connection, table: Table, columns: Sequence[str]) -> tuple[list[int], list[tuple[object, ...]]]:
    """Row numbers and one tuple of raw driver values per column, in row order."""
    quote = conn.dialect.identifier_preparer.quote
    names = [ROW_COL, *columns]
    sql = f"SELECT {', '.join(quote(c) for c in names)} FROM {quote(table.name)} ORDER BY {quote(ROW_COL)}"
    cur = conn.connection.cursor()  # the DB-API cursor of this connection (inside its transaction)
    try:
        cur.execute(sql)
        rows = cur.fetchall()
    finally:
        cur.close()
    if not rows:
        return [], [() for _ in columns]
    cols = list(zip(*rows, strict=True))
    return list(cols[0]), cols[1:]


def _as_bool(v: object) -> object:
    return None if v is None else bool(v)


def _read(conn: Connection, table: Table, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Cells as Python objects (None for NULL) indexed by row number."""
    names = list(columns) if columns is not None else [c.name for c in table.c if c.name != ROW_COL]
    index, cols = _raw_columns(conn, table, names)
    data: dict[str, pd.Series] = {}
    for name, col in zip(names, cols, strict=True):
        vals = list(col)
        if isinstance(table.c[name].type, Boolean):
            vals = [_as_bool(v) for v in vals]
        data[name] = pd.Series(vals, dtype=object)
    df = pd.DataFrame(data, columns=names)
    df.index = pd.Index(index, name=ROW_COL)
    return df


def register_on_chain(datasets: DatasetService, chain: Any, name: str, actor: str) -> dict[str, Any]:
    """Register dataset ``name`` on chain from the node's own account (``chain``: a ``NodeChain``):
    its id ``dataset_chain_id(node, name)``, the SM3 of its schema and its highest grade — what every
    authorization names and every receipt counts against. Idempotent: a dataset already registered by
    this node with the same schema answers ``already``; one registered with another schema (or by
    someone else) is refused (``ChainRefused``: ingest it under a new name). Audited as ``dataset.chain_register``."""
    from nodes.errors import ChainRefused, ChainUnavailable
    from protocols.manifest import dataset_chain_id

    if chain is None:
        raise ChainUnavailable("this node is not wired to a chain (chain_rpc_url and chain_registry)")
    entry = datasets.catalog_entry(name)
    did = dataset_chain_id(datasets.node, name)
    schema = bytes.fromhex(entry.schema_hash)
    out = {"dataset": name, "dataset_id": "0x" + did.hex(), "schema_hash": entry.schema_hash,
           "grade": entry.max_grade, "owner": chain.account}
    have = chain.dataset(did)
    if have is not None:
        if str(have.owner).lower() != chain.account.lower() or bytes(have.schema_hash) != schema:
            raise ChainRefused(f"dataset {name!r} is registered on chain with another owner or schema: "
                               "ingest the changed data under a new name")
        return {**out, "status": "already", "tx": None}
    tx = chain.register_dataset(did, schema, entry.max_grade)
    with datasets.audit.transaction() as session:
        datasets.audit.append(session, actor=actor, action="dataset.chain_register", target=name,
                              detail={"dataset_id": out["dataset_id"], "schema_hash": entry.schema_hash,
                                      "grade": entry.max_grade, "tx": tx})
    return {**out, "status": "registered", "tx": tx}
