"""Ingest from CSV / Parquet / SQL, schema inference and edits, quality reports, bad files."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import csv_bytes, make_tax_frame, upload
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from nodes.app import create_app
from nodes.settings import GIB, NodeSettings
from tests.authkit import TEST_SCRYPT_N, officer_client, peer_entries


def _db_state(settings: NodeSettings) -> tuple[int, list[str]]:
    """(#datasets, data tables) straight from the node's SQLite file."""
    eng = create_engine(settings.resolved_database_url())
    try:
        tables = [t for t in inspect(eng).get_table_names() if t.startswith("ds_")]
        with eng.connect() as c:
            n = c.exec_driver_sql("select count(*) from dataset").scalar_one()
    finally:
        eng.dispose()
    return n, tables


def _quality(client: TestClient, name: str) -> dict[tuple[str, str], dict]:
    rep = client.get(f"/datasets/{name}/quality").json()
    return {(r["rule"], r["column"]): r for r in rep["results"]}


def test_csv_ingest_infers_schema_and_stores_rows(client, settings, tax_frame):
    r = upload(client, "tax_2024", csv_bytes(tax_frame), key_column="uscc", description="VAT 2024")
    assert r.status_code == 201, r.text
    body = r.json()
    types = {c["name"]: c["dtype"] for c in body["columns"]}
    assert types == {
        "uscc": "uscc",
        "legal_rep_id": "resident_id",
        "company_name": "string",
        "vat_paid": "float",
        "employees": "int",
        "credit_grade": "string",
        "industry": "string",
    }
    grades = {c["name"]: c["grade"] for c in body["columns"]}
    assert grades["uscc"] == 3 and grades["vat_paid"] == 2
    assert body["row_count"] == len(tax_frame)
    assert body["quality"] == {"total_rows": 60, "rows_with_issues": 0, "issues_per_rule": {}}
    # the rows really are in the node's database, typed
    ctx = client.app.state.ctx
    stored = ctx.datasets.read_frame("tax_2024")
    assert list(stored["uscc"]) == list(tax_frame["uscc"])
    assert [round(v, 2) for v in stored["vat_paid"]] == list(tax_frame["vat_paid"])
    assert list(stored["employees"]) == list(tax_frame["employees"])
    assert _db_state(settings)[0] == 1


def test_quality_report_counts_and_row_numbers(client, tax_frame):
    df = tax_frame.copy()
    good = df.loc[3, "uscc"]
    df.loc[3, "uscc"] = good[:17] + ("0" if good[17] != "0" else "1")  # bad check char, row 4
    df.loc[9, "uscc"] = df.loc[10, "uscc"]  # duplicate key: rows 10 and 11
    rid = df.loc[20, "legal_rep_id"]
    df.loc[20, "legal_rep_id"] = rid[:17] + ("0" if rid[17] != "0" else "1")  # bad ID check, row 21
    df["employees"] = df["employees"].astype(object)
    df.loc[30, "employees"] = None  # null, row 31
    df.loc[40, "employees"] = "many"  # type misfit, row 41
    hints = '{"employees": {"min_value": 1, "max_value": 300}}'
    r = upload(client, "tax_q", csv_bytes(df), key_column="uscc", columns=hints)
    assert r.status_code == 201, r.text
    q = _quality(client, "tax_q")
    assert q[("uscc_check", "uscc")]["sample_rows"] == [4]
    assert q[("duplicate_key", "uscc")]["sample_rows"] == [10, 11]
    assert q[("resident_id_check", "legal_rep_id")]["sample_rows"] == [21]
    assert q[("type_mismatch", "employees")]["sample_rows"] == [41]
    assert q[("null", "employees")]["sample_rows"] == [31, 41]
    over = [i + 1 for i, v in enumerate(tax_frame["employees"]) if v > 300 and i not in (30, 40)]
    assert q[("range", "employees")]["count"] == len(over) > 0
    # bad rows are kept, not dropped
    assert client.get("/datasets/tax_q").json()["row_count"] == 60
    stored = client.app.state.ctx.datasets.read_frame("tax_q")
    assert stored.loc[4, "uscc"] == df.loc[3, "uscc"]


def test_parquet_ingest(client, tax_frame):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(tax_frame, preserve_index=False), buf)
    r = upload(client, "tax_pq", buf.getvalue(), filename="tax.parquet", key_column="uscc")
    assert r.status_code == 201, r.text
    types = {c["name"]: c["dtype"] for c in r.json()["columns"]}
    assert types["uscc"] == "uscc" and types["vat_paid"] == "float" and types["employees"] == "int"
    stored = client.app.state.ctx.datasets.read_frame("tax_pq")
    assert list(stored["legal_rep_id"]) == list(tax_frame["legal_rep_id"])


def test_sql_ingest_from_named_sources(tmp_path, anchor, tax_frame):
    src = tmp_path / "dept.db"
    with sqlite3.connect(src) as conn:
        tax_frame.to_sql("vat", conn, index=False)
    s = NodeSettings(name="tax", work_dir=tmp_path / "node", peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N,
                     sql_sources={"tax_dw": {"url": f"sqlite:///{src}"},
                                  "pg": {"url": "postgresql://u:s3cretpw@127.0.0.1:1/db"}})
    with officer_client(create_app(s, anchor=anchor)) as client:
        r = client.post("/datasets/sql", json={"name": "vat_tbl", "source": "tax_dw", "table": "vat",
                                               "key_column": "uscc"})
        assert r.status_code == 201, r.text
        assert r.json()["row_count"] == 60 and r.json()["source"] == "sql"
        r = client.post("/datasets/sql", json={"name": "vat_big", "source": "tax_dw",
                                               "query": "select uscc, vat_paid from vat where vat_paid > 500000"})
        assert r.status_code == 201, r.text
        assert r.json()["row_count"] == int((tax_frame["vat_paid"] > 500000).sum())
        assert [c["name"] for c in r.json()["columns"]] == ["uscc", "vat_paid"]
        # bad requests: unknown source or table, non-SELECT, several statements, a URL — named errors
        for body, status, err in [
            ({"name": "x1", "source": "tax_dw", "table": "nope"}, 422, "SourceError"),
            ({"name": "x2", "source": "tax_dw", "query": "delete from vat"}, 422, "SourceError"),
            ({"name": "x3", "source": "nowhere", "table": "vat"}, 422, "SourceError"),
            ({"name": "x4", "source": "tax_dw", "table": "vat", "query": "select 1"}, 422, "InvalidRequest"),
            ({"name": "x5", "source": "tax_dw", "query": "select * from vat where 1 = 0"}, 422, "EmptyDataFile"),
            ({"name": "x6", "source": "tax_dw", "query": "select 1; drop table vat"}, 422, "SourceError"),
            ({"name": "x7", "source": "tax_dw", "query": "WITH d AS (DELETE FROM vat RETURNING *) SELECT * FROM d"},
             422, "SourceError"),
            ({"name": "x8", "source": "tax_dw", "query": "select load_extension('x')"}, 422, "SourceError"),
            ({"name": "x9", "url": f"sqlite:///{src}", "table": "vat"}, 422, "InvalidRequest"),
            ({"name": "xa", "source": "tax_dw", "table": "vat; drop table vat"}, 422, "InvalidRequest"),
        ]:
            r = client.post("/datasets/sql", json=body)
            assert (r.status_code, r.json()["error"]) == (status, err), (body, r.text)
        assert {d["name"] for d in client.get("/datasets").json()} == {"vat_tbl", "vat_big"}
        with sqlite3.connect(src) as conn:
            assert conn.execute("select count(*) from vat").fetchone() == (60,)
        # an unreachable source: the driver's text (host, password) reaches neither answer nor log
        r = client.post("/datasets/sql", json={"name": "pw", "source": "pg", "table": "t"})
        assert r.status_code == 422 and r.json()["error"] == "SourceError"
        assert "s3cretpw" not in r.text and "127.0.0.1" not in r.text
        assert "s3cretpw" not in client.get("/audit?limit=1000").text


def test_bad_files_give_named_errors_and_register_nothing(client, settings, tax_frame):
    good = csv_bytes(tax_frame)
    cases = [
        (b"", "data.csv", {}, 422, "EmptyDataFile"),
        (b"uscc,vat_paid\n", "data.csv", {}, 422, "EmptyDataFile"),
        ("企业名称,税额\n杭州振兴贸易,100\n".encode("gbk"), "data.csv", {}, 422, "BadEncoding"),
        (good, "data.csv", {"key_column": "tax_id"}, 422, "MissingKeyColumn"),
        (b'a,b\n1,"unterminated\n', "data.csv", {}, 422, "BadDataFile"),
        (b"a,a\n1,2\n", "data.csv", {}, 422, "BadDataFile"),
        (b"PAR1garbagegarbage", "data.parquet", {}, 422, "BadDataFile"),
        (good, "data.xlsx", {}, 415, "UnsupportedFormat"),
        (good, "data.csv", {"name": "../etc/passwd"}, 422, "InvalidDatasetName"),
        (good, "data.csv", {"columns": "{not json"}, 400, "BadUpload"),
        (good, "data.csv", {"columns": '{"nope": {"grade": 2}}'}, 422, "InvalidSchemaEdit"),
        (good, "data.csv", {"columns": '{"uscc": {"grade": 9}}'}, 400, "BadUpload"),
    ]
    for data, filename, fields, status, err in cases:
        fields = {"name": "bad", **fields}
        name = fields.pop("name")
        r = upload(client, name, data, filename=filename, **fields)
        assert r.status_code == status, (err, r.text)
        assert r.json()["error"] == err, r.text
    assert _db_state(settings) == (0, [])
    # a GBK file is fine once its encoding is declared
    r = upload(client, "gbk", "企业名称,税额\n杭州振兴贸易,100\n".encode("gbk"), encoding="gb18030")
    assert r.status_code == 201, r.text
    # every refusal is in the audit log
    refused = [e for e in client.get("/audit?limit=1000").json() if e["outcome"] == "refused"]
    assert len(refused) == len(cases)
    assert {e["detail"]["error"] for e in refused} >= {"EmptyDataFile", "BadEncoding", "MissingKeyColumn"}


def test_duplicate_name_conflicts_and_failed_insert_leaves_nothing(client, settings, tax_frame):
    assert upload(client, "tax", csv_bytes(tax_frame)).status_code == 201
    r = upload(client, "tax", csv_bytes(tax_frame))
    assert r.status_code == 409 and r.json()["error"] == "DatasetExists"
    assert _db_state(settings)[0] == 1 and len(_db_state(settings)[1]) == 1


def test_upload_size_limit_413(client, settings):
    big = b"a,b\n" + b"1,2\n" * (settings.max_upload_bytes // 4 + 10)
    r = upload(client, "big", big)
    assert r.status_code == 413
    assert r.json()["error"] == "UploadTooLarge"
    assert _db_state(settings) == (0, [])
    assert not settings.tmp_dir().exists() or not any(settings.tmp_dir().iterdir())


def test_upload_limit_enforced_while_streaming(client, settings):
    """No Content-Length (chunked): the app stops reading just past the limit and answers 413."""
    import asyncio

    app = client.app
    boundary = "XyZzY"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbig\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\na,b\n").encode()
    chunk = b"1,2\n" * 16384  # 64 KiB
    total_chunks = 1000  # 64 MiB offered; the limit is 256 KiB
    sent = {"bytes": 0, "chunks": 0}

    async def receive():
        if sent["chunks"] == 0:
            body = head
        elif sent["chunks"] < total_chunks:
            body = chunk
        else:
            return {"type": "http.request", "body": f"\r\n--{boundary}--\r\n".encode(), "more_body": False}
        sent["chunks"] += 1
        sent["bytes"] += len(body)
        return {"type": "http.request", "body": body, "more_body": True}

    messages = []

    async def send(msg):
        messages.append(msg)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/datasets/upload", "raw_path": b"/datasets/upload", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                    (b"transfer-encoding", b"chunked"), (b"host", b"127.0.0.1"),
                        (b"authorization", client.headers["authorization"].encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}, "app": app,
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    assert b'"UploadTooLarge"' in body
    assert sent["bytes"] <= settings.max_upload_bytes + len(chunk)  # stopped reading at the limit
    assert _db_state(settings) == (0, [])
    assert not any(settings.tmp_dir().iterdir())  # the partial upload was removed


def test_default_upload_limit_is_2gib():
    assert NodeSettings().max_upload_bytes == 2 * GIB


def test_schema_edit(client, tax_dataset):
    r = client.patch(
        "/datasets/tax_2024/schema",
        json={
            "description": "VAT paid per enterprise, 2024",
            "columns": [
                {"name": "vat_paid", "description": "VAT paid (CNY)", "grade": 3, "category": "tax_amount",
                 "min_value": 0, "max_value": 500000},
                {"name": "employees", "dtype": "float"},
                {"name": "industry", "grade": 1},
            ],
        },
    )
    assert r.status_code == 200, r.text
    cols = {c["name"]: c for c in r.json()["columns"]}
    assert cols["vat_paid"]["grade"] == 3 and cols["vat_paid"]["category"] == "tax_amount"
    assert cols["employees"]["dtype"] == "float"
    assert r.json()["description"] == "VAT paid per enterprise, 2024"
    stored = client.app.state.ctx.datasets.read_frame("tax_2024")
    assert all(isinstance(v, float) for v in stored["employees"])
    over = int((tax_dataset["vat_paid"] > 500000).sum())
    assert r.json()["quality"]["issues_per_rule"] == {"range": over}
    # bad edits: unknown column, a type the cells do not fit, grade out of 1..4, min > max
    for edit, err in [
        ({"columns": [{"name": "nope", "grade": 2}]}, "InvalidSchemaEdit"),
        ({"columns": [{"name": "company_name", "dtype": "int"}]}, "InvalidSchemaEdit"),
        ({"columns": [{"name": "uscc", "grade": 5}]}, "InvalidRequest"),
        ({"columns": [{"name": "employees", "min_value": 10, "max_value": 1}]}, "InvalidSchemaEdit"),
    ]:
        r = client.patch("/datasets/tax_2024/schema", json=edit)
        assert r.status_code == 422 and r.json()["error"] == err, r.text
    # failed edits changed nothing
    cols = {c["name"]: c for c in client.get("/datasets/tax_2024").json()["columns"]}
    assert cols["company_name"]["dtype"] == "string" and cols["uscc"]["grade"] == 3


def test_delete_dataset(client, settings, tax_dataset):
    assert client.delete("/datasets/tax_2024").status_code == 204
    assert client.get("/datasets/tax_2024").json()["error"] == "DatasetNotFound"
    assert _db_state(settings) == (0, [])
    assert client.delete("/datasets/tax_2024").status_code == 404


def test_catalog_is_metadata_only(client, tax_dataset):
    cat = client.get("/catalog").json()
    assert len(cat) == 1
    e = cat[0]
    assert e["node"] == "tax" and e["name"] == "tax_2024" and e["row_count"] == 60
    assert e["max_grade"] == 3 and len(e["schema_hash"]) == 64
    assert set(e) == {"node", "name", "description", "key_column", "row_count", "columns", "max_grade",
                      "schema_hash", "quality", "updated_at"}
    # the schema hash follows grade edits
    client.patch("/datasets/tax_2024/schema", json={"columns": [{"name": "industry", "grade": 1}]})
    assert client.get("/catalog/tax_2024").json()["schema_hash"] != e["schema_hash"]


def test_mock_data_same_schema_no_real_values(client, tax_dataset):
    client.patch("/datasets/tax_2024/schema", json={"columns": [{"name": "industry", "grade": 1}]})
    r = client.get("/datasets/tax_2024/mock?rows=200&seed=3")
    assert r.status_code == 200
    mock = pd.DataFrame(r.json())
    assert list(mock.columns) == list(tax_dataset.columns) and len(mock) == 200
    from common.ids import is_valid_resident_id, is_valid_uscc

    assert all(is_valid_uscc(v) for v in mock["uscc"]) and all(is_valid_resident_id(v) for v in mock["legal_rep_id"])
    assert not set(mock["uscc"]) & set(tax_dataset["uscc"])
    assert not set(mock["legal_rep_id"]) & set(tax_dataset["legal_rep_id"])
    assert not set(mock["company_name"]) & set(tax_dataset["company_name"])
    assert not set(mock["vat_paid"]) & set(tax_dataset["vat_paid"])
    lo, hi = tax_dataset["vat_paid"].min(), tax_dataset["vat_paid"].max()
    assert mock["vat_paid"].between(lo, hi).all()
    assert abs(mock["vat_paid"].mean() - tax_dataset["vat_paid"].mean()) < 0.25 * tax_dataset["vat_paid"].std() * 3
    # public (grade-1) low-cardinality labels are kept; other text is pseudonymised
    assert set(mock["industry"]) <= set(tax_dataset["industry"]) | {"OTHER"}
    assert not set(mock["credit_grade"]) & set(tax_dataset["credit_grade"])
    # deterministic per seed
    assert client.get("/datasets/tax_2024/mock?rows=200&seed=3").json() == r.json()


def test_make_tax_frame_is_stable():
    assert make_tax_frame().equals(make_tax_frame())


def test_settings_from_yaml_and_toml_and_env(tmp_path: Path, monkeypatch):
    from nodes.errors import ConfigError
    from nodes.settings import load_node_settings

    y = tmp_path / "node.yaml"
    y.write_text("name: power\nport: 9123\nwork_dir: state\nmax_upload_bytes: 1000\n")
    s = load_node_settings(y)
    assert (s.name, s.port, s.max_upload_bytes) == ("power", 9123, 1000)
    assert s.work_dir == (tmp_path / "state").resolve()
    t = tmp_path / "node.toml"
    t.write_text('name = "court"\nport = 9124\n')
    assert load_node_settings(t).name == "court"
    for bad, text in [("n.ini", "x"), ("missing.yaml", None), ("b.yaml", "port: notaport\n"), ("c.yaml", "bogus: 1\n")]:
        p = tmp_path / bad
        if text is not None:
            p.write_text(text)
        try:
            load_node_settings(p)
        except ConfigError:
            pass
        else:
            raise AssertionError(f"{bad} should be refused")
    monkeypatch.setenv("DCP_NODE_PORT", "9555")
    assert load_node_settings(y).port == 9555  # env beats the file
