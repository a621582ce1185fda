"""The vectorized ingest and extract keep every guarantee of the cell-by-cell ones: the same ID
verdicts, the same typed cells and misfits, named errors for malformed files at any size, and an
extract that writes what was stored (ints stay ints, NULLs stay empty)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import csv_bytes, make_tax_frame, upload
from fastapi.testclient import TestClient

from common.ids import USCC_ALPHABET, id_check_char, is_valid_resident_id, is_valid_uscc, random_uscc
from nodes.app import create_app
from nodes.services.audit import FileAnchor
from nodes.services.quality import valid_resident_id_mask, valid_uscc_mask
from nodes.services.tabular import convert_column, infer_dtype
from nodes.settings import NodeSettings
from tests.authkit import officer_client


@pytest.fixture
def big_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = NodeSettings(name="tax", work_dir=tmp_path / "node", max_upload_bytes=64 * 1024 * 1024)
    with officer_client(create_app(settings, anchor=FileAnchor(tmp_path / "anchors.jsonl"))) as c:
        yield c


def test_vectorized_id_checks_agree_with_the_per_code_checks():
    rng = random.Random(3)
    good = [random_uscc(rng, rng.choice(["330100", "110101"])) for _ in range(3000)]
    codes: list[object] = list(good)
    codes += [c[:17] + rng.choice(USCC_ALPHABET) for c in good[:1500]]  # about 1 in 31 stays right
    codes += [c.lower() for c in good[:200]]  # case-insensitive
    codes += [c[:5] + "I" + c[6:] for c in good[:50]]  # a letter outside the alphabet
    codes += ["", "abc", "ı" * 18, "ß" * 18, "９" * 18, good[0] + "0", None, 12345]
    codes += [c[:17] + "é" for c in good[:20]]  # 18 characters, not ASCII
    s = pd.Series(codes, dtype=object)
    want = np.array([is_valid_uscc(c) for c in codes])
    got = valid_uscc_mask(s)
    assert (got == want).all()
    assert 3000 + 200 < int(got.sum()) < 3000 + 200 + 150  # valid codes pass, nearly all altered ones fail

    ids: list[object] = []
    for _ in range(3000):
        body = "".join(rng.choice("0123456789") for _ in range(17))
        ids.append(body + (id_check_char(body) if rng.random() < 0.5 else rng.choice("0123456789Xx")))
    ids += [i[:17] + "x" for i in ids[:50] if i[17] in "Xx"]
    ids += ["", "1" * 17, "1" * 19, "ABCDEFGHIJKLMNOPQR", None, "12345678901234567é"]
    r = pd.Series(ids, dtype=object)
    want = np.array([is_valid_resident_id(i) for i in ids])
    got = valid_resident_id_mask(r)
    assert (got == want).all()
    assert 1400 < int(got.sum()) < 1900


def test_typed_cells_and_misfits_by_row_number():
    cells = pd.Series(["12", "-3", "+4", "007", None, "1e3", "١٢", "9" * 16], index=range(1, 9), dtype=object)
    conv = convert_column(cells, "int")
    assert conv.values == [12, -3, 4, None, None, None, None, None]
    assert conv.mismatched_rows == [4, 6, 7, 8]
    conv = convert_column(pd.Series(["1.5", ".5", "2e-3", "x", None], index=range(1, 6), dtype=object), "float")
    assert conv.values == [1.5, 0.5, 0.002, None, None] and conv.mismatched_rows == [4]
    conv = convert_column(pd.Series(["2024-02-29", "2023-02-29", "yes"], index=range(1, 4), dtype=object), "date")
    assert conv.values == ["2024-02-29", None, None] and conv.mismatched_rows == [2, 3]
    conv = convert_column(pd.Series(["Yes", "0", "maybe"], index=range(1, 4), dtype=object), "bool")
    assert conv.values == [True, False, None] and conv.mismatched_rows == [3]
    # inference: 95 % of the cells must fit; a column that misses early gives up, with the same answer
    ints = pd.Series([str(i) for i in range(1000)], dtype=object)
    assert infer_dtype("n", ints) == "int"
    assert infer_dtype("n", pd.concat([ints[:951], pd.Series(["x"] * 49)], ignore_index=True)) == "int"
    assert infer_dtype("n", pd.concat([ints[:949], pd.Series(["x"] * 51)], ignore_index=True)) == "string"
    assert infer_dtype("n", pd.Series(["x"] * 100 + [str(i) for i in range(900)], dtype=object)) == "string"
    assert infer_dtype("n", pd.Series([f"{i}.5" for i in range(1000)], dtype=object)) == "float"


def test_large_ingest_keeps_quality_report_and_extract_round_trips(big_client, tmp_path):
    client = big_client
    n = 20_000
    df = make_tax_frame(n, seed=11)
    df["employees"] = df["employees"].astype(str)
    df.loc[df.index[::1000], "employees"] = ""  # NULL ints
    df.loc[df.index[7], "employees"] = "many"  # a misfit
    df.loc[df.index[9], "uscc"] = df.loc[df.index[9], "uscc"][:17] + ("0" if df.loc[df.index[9], "uscc"][17] != "0" else "1")
    df.loc[df.index[11], "uscc"] = df.loc[df.index[10], "uscc"]  # a duplicate key
    df["company_name"] = "  " + df["company_name"] + "  "  # surrounding blanks are stripped
    df.loc[df.index[13], "industry"] = "   "  # a blank cell is NULL
    df["active"] = ["true" if i % 3 else "false" for i in range(n)]
    r = upload(client, "big", csv_bytes(df), key_column="uscc")
    assert r.status_code == 201, r.text
    cols = {c["name"]: c["dtype"] for c in r.json()["columns"]}
    assert cols == {"uscc": "uscc", "legal_rep_id": "resident_id", "company_name": "string", "vat_paid": "float",
                    "employees": "int", "credit_grade": "string", "industry": "string", "active": "bool"}
    q = {(x["rule"], x["column"]): x for x in client.get("/datasets/big/quality").json()["results"]}
    assert q[("type_mismatch", "employees")]["sample_rows"] == [8]
    assert q[("null", "employees")]["count"] == n // 1000 + 1
    assert q[("uscc_check", "uscc")]["sample_rows"] == [10]
    assert q[("duplicate_key", "uscc")]["sample_rows"] == [11, 12]
    assert q[("null", "industry")]["sample_rows"] == [14]
    ctx = client.app.state.ctx
    stored = ctx.datasets.read_frame("big")
    assert stored.loc[1, "company_name"] == df.loc[df.index[0], "company_name"].strip()
    assert stored.loc[2, "employees"] == int(df.loc[df.index[1], "employees"]) and stored.loc[1, "employees"] is None
    assert stored.loc[2, "active"] is True and stored.loc[1, "active"] is False
    dest = tmp_path / "x" / "input.csv"
    assert ctx.datasets.extract_csv("big", ["uscc", "employees", "vat_paid", "active"], dest) == n
    back = pd.read_csv(dest, dtype=str, keep_default_na=False)
    assert list(back.columns) == ["uscc", "employees", "vat_paid", "active"]
    assert back.loc[1, "employees"] == str(int(df.loc[df.index[1], "employees"]))  # "37", never "37.0"
    assert back.loc[0, "employees"] == "" and back.loc[7, "employees"] == ""
    assert back.loc[0, "active"] == "False" and back.loc[1, "active"] == "True"
    assert np.allclose(back["vat_paid"].astype(float), df["vat_paid"].astype(float))
    assert list(back["uscc"]) == [u.upper() for u in df["uscc"]]


def test_malformed_large_files_still_get_named_errors(big_client):
    client = big_client
    good = csv_bytes(make_tax_frame(5_000, seed=5))
    cases = [
        (good + b'"91330106MA2B3C4D5E,unterminated\n', "BadDataFile"),
        (good[:-200] + b"\xff" + good[-200:], "BadEncoding"),  # one bad byte near the end
        (b"uscc,_row\n" + b"91330106MA2B3C4D5E,1\n" * 3000, "BadDataFile"),
        (b"a,b,a\n" + b"1,2,3\n" * 3000, "BadDataFile"),
    ]
    for data, err in cases:
        r = upload(client, "bad", data)
        assert (r.status_code, r.json().get("error")) == (422, err), (err, r.text[:300])
    assert client.get("/datasets").json() == []
