from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from nodes.api.deps import actor_of, get_ctx, require_admin
from nodes.context import NodeContext
from nodes.errors import BadUpload, SourceError
from nodes.models import DatasetOut, IngestOptions, QualityReport, SchemaEdit, SqlIngestRequest
from nodes.services.audit import sm3_hex
from nodes.services.mock import mock_frame
from nodes.services.tabular import detect_format, read_csv_text, read_parquet_text, read_sql_text
from nodes.services.uploads import parse_multipart

router = APIRouter(prefix="/datasets", tags=["datasets"])

_OPTION_FIELDS = ("name", "key_column", "description", "encoding", "delimiter")


@router.post("/upload", status_code=201)
async def upload(request: Request, ctx: NodeContext = Depends(get_ctx)) -> DatasetOut:
    """Register a dataset from a CSV or Parquet file (multipart field ``file``; fields ``name``,
    ``key_column``, ``format``, ``encoding``, ``delimiter``, ``description``, ``columns`` (JSON))."""
    actor = require_admin(request)
    s = ctx.settings
    parsed = await parse_multipart(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        s.tmp_dir(),
        s.max_upload_bytes,
    )
    try:
        raw = {k: v for k, v in parsed.fields.items() if k in _OPTION_FIELDS and v != ""}
        if "columns" in parsed.fields:
            try:
                raw["columns"] = json.loads(parsed.fields["columns"])
            except json.JSONDecodeError:
                raise BadUpload("field 'columns' is not JSON") from None
        try:
            opts = IngestOptions.model_validate(raw)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise BadUpload(f"invalid upload option {'.'.join(map(str, e['loc']))}: {e['msg']}") from None
        fmt = detect_format(parsed.filename, parsed.fields.get("format"))

        def work() -> DatasetOut:
            assert parsed.path is not None
            frame = (
                read_csv_text(parsed.path, opts.encoding, opts.delimiter)
                if fmt == "csv"
                else read_parquet_text(parsed.path)
            )
            return ctx.datasets.register(frame, opts, fmt, parsed.filename or "", actor)

        return await run_in_threadpool(work)
    finally:
        parsed.cleanup()


@router.post("/sql", status_code=201)
def ingest_sql(req: SqlIngestRequest, request: Request, ctx: NodeContext = Depends(get_ctx)) -> DatasetOut:
    """Register a dataset from an existing SQL table or SELECT query (any SQLAlchemy URL)."""
    actor = require_admin(request)
    try:
        shown = make_url(req.url).render_as_string(hide_password=True)
    except Exception:
        raise SourceError("the source URL is not a SQLAlchemy URL") from None
    ref = f"{shown} table={req.table}" if req.table else f"{shown} query=sm3:{sm3_hex(req.query.encode())[:16]}"
    frame = read_sql_text(req.url, req.table, req.query)
    return ctx.datasets.register(frame, req, "sql", ref, actor)


@router.get("")
def list_datasets(ctx: NodeContext = Depends(get_ctx)) -> list[DatasetOut]:
    """All datasets (metadata only)."""
    return ctx.datasets.list()


@router.get("/{name}")
def get_dataset(name: str, ctx: NodeContext = Depends(get_ctx)) -> DatasetOut:
    return ctx.datasets.get(name)


@router.patch("/{name}/schema")
def edit_schema(name: str, edit: SchemaEdit, request: Request, ctx: NodeContext = Depends(get_ctx)) -> DatasetOut:
    """Edit per-column type, description, grade (1–4), category and declared range."""
    return ctx.datasets.edit_schema(name, edit, require_admin(request))


@router.delete("/{name}", status_code=204)
def delete_dataset(name: str, request: Request, ctx: NodeContext = Depends(get_ctx)) -> Response:
    ctx.datasets.delete(name, require_admin(request))
    return Response(status_code=204)


@router.get("/{name}/quality")
def quality(name: str, ctx: NodeContext = Depends(get_ctx)) -> QualityReport:
    """The stored quality report: counts per rule and sample row numbers, never values."""
    return ctx.datasets.quality_report(name)


@router.get("/{name}/mock")
def mock(
    name: str,
    request: Request,
    rows: int = Query(100, ge=1),
    seed: int = 0,
    ctx: NodeContext = Depends(get_ctx),
) -> list[dict]:
    """A desensitized mock of the dataset for researchers (no real values)."""
    rows = min(rows, ctx.settings.mock_max_rows)
    metas = ctx.datasets.column_meta(name)
    df = ctx.datasets.read_frame(name)
    out = mock_frame(df, metas, rows, seed, ctx.policy.current().min_group_size)
    ctx.audit.record(actor=actor_of(request), action="dataset.mock", target=name, detail={"rows": rows, "seed": seed})
    return json.loads(out.to_json(orient="records", force_ascii=False))
