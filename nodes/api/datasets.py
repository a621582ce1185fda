from __future__ import annotations

import json

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from nodes.api.deps import Ctx, DatasetName, MemberOrOfficer, Officer, Steward
from nodes.errors import BadUpload
from nodes.models import DatasetOut, IngestOptions, QualityReport, SchemaEdit
from nodes.services.datasets import register_on_chain
from nodes.services.mock import mock_frame
from nodes.services.officers import ProposalOut
from nodes.services.sql_sources import SqlSourceIngest, read_source
from nodes.services.tabular import detect_format, read_csv_text, read_parquet_text
from nodes.services.uploads import parse_multipart

router = APIRouter(prefix="/datasets", tags=["datasets"])

_OPTION_FIELDS = ("name", "key_column", "description", "encoding", "delimiter")


@router.post("/{name}/register")
def register(name: DatasetName, officer: Steward, ctx: Ctx) -> dict:
    """A data steward registers the dataset on chain from the node's own account (id, schema SM3, highest
    grade): without it no authorization can name the dataset. Idempotent for an unchanged schema."""
    return register_on_chain(ctx.datasets, ctx.chain, name, officer.actor)


@router.post("/upload", status_code=201)
async def upload(request: Request, officer: Steward, ctx: Ctx) -> DatasetOut:
    """Register a dataset from a CSV or Parquet file (multipart field ``file``; fields ``name``,
    ``key_column``, ``format``, ``encoding``, ``delimiter``, ``description``, ``columns`` (JSON))."""
    actor = officer.actor
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
def ingest_sql(req: SqlSourceIngest, officer: Steward, ctx: Ctx) -> DatasetOut:
    """Register a dataset from a table or one SELECT of a data source named in the node's settings."""
    frame, ref = read_source(ctx.settings.sql_sources, req)
    return ctx.datasets.register(frame, req, "sql", ref, officer.actor)


@router.get("")
def list_datasets(officer: Officer, ctx: Ctx) -> list[DatasetOut]:
    """All datasets (metadata only)."""
    return ctx.datasets.list()


@router.get("/{name}")
def get_dataset(name: DatasetName, officer: Officer, ctx: Ctx) -> DatasetOut:
    return ctx.datasets.get(name)


@router.patch("/{name}/schema", status_code=202)
def edit_schema(name: DatasetName, edit: SchemaEdit, officer: Steward, ctx: Ctx) -> ProposalOut:
    """Propose per-column type, description, grade (1–4), category and declared range changes; a
    different steward confirms (``POST /proposals/{id}/confirm``)."""
    assert officer.officer is not None
    ctx.datasets.get(name)  # 404 now rather than at confirmation
    p = ctx.officers.propose("schema", name, edit.model_dump(mode="json", exclude_unset=True), officer.officer)
    ctx.audit.record(actor=officer.actor, action="dataset.schema.propose", target=name,
                     detail={"proposal": p.id, "edit": p.body})
    return p


@router.delete("/{name}", status_code=204)
def delete_dataset(name: DatasetName, officer: Steward, ctx: Ctx) -> Response:
    ctx.datasets.delete(name, officer.actor)
    return Response(status_code=204)


@router.get("/{name}/quality")
def quality(name: DatasetName, officer: Officer, ctx: Ctx) -> QualityReport:
    """The stored quality report: counts per rule and sample row numbers, never values."""
    return ctx.datasets.quality_report(name)


@router.get("/{name}/mock")
def mock(
    name: DatasetName,
    caller: MemberOrOfficer,
    ctx: Ctx,
    rows: int = Query(100, ge=1, le=1_000_000),
    seed: int = Query(0, ge=0, le=2**32 - 1),
) -> list[dict]:
    """A desensitized mock of the dataset for researchers (no real values)."""
    rows = min(rows, ctx.settings.mock_max_rows)
    metas = ctx.datasets.column_meta(name)
    df = ctx.datasets.read_frame(name)
    out = mock_frame(df, metas, rows, seed, ctx.policy.current().min_group_size)
    ctx.audit.record(actor=caller.actor, action="dataset.mock", target=name, detail={"rows": rows, "seed": seed})
    return json.loads(out.to_json(orient="records", force_ascii=False))
