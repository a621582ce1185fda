"""Fixtures for the node tests: a node app over a fresh SQLite file and realistic department data."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from dcp.ids import id_check_char, random_uscc
from nodes.app import create_app
from nodes.services.audit import FileAnchor
from nodes.settings import NodeSettings


def make_tax_frame(n: int = 60, seed: int = 7) -> pd.DataFrame:
    """Tax-bureau style rows: USCC key, legal rep resident ID, name, VAT paid, grade, industry."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        body = f"{rng.choice(['330106', '110101'])}{rng.randint(1960, 1999)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
        rows.append(
            {
                "uscc": random_uscc(rng),
                "legal_rep_id": body + id_check_char(body),
                "company_name": f"Hangzhou Zhenxing Trading No.{1000 + i} Co Ltd",
                "vat_paid": round(rng.uniform(10_000, 900_000), 2),
                "employees": rng.randint(3, 400),
                "credit_grade": rng.choice(["A", "B", "C", "M"]),
                "industry": rng.choice(["manufacturing", "retail", "logistics"]),
            }
        )
    return pd.DataFrame(rows)


def csv_bytes(df: pd.DataFrame, encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode(encoding)


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(name="tax", work_dir=tmp_path / "node", max_upload_bytes=256 * 1024)


@pytest.fixture
def anchor(tmp_path: Path) -> FileAnchor:
    return FileAnchor(tmp_path / "anchors.jsonl")


@pytest.fixture
def client(settings: NodeSettings, anchor: FileAnchor) -> Iterator[TestClient]:
    app = create_app(settings, anchor=anchor)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def tax_frame() -> pd.DataFrame:
    return make_tax_frame()


def upload(client: TestClient, name: str, data: bytes, filename: str = "data.csv", **fields: str):
    form = {"name": name, **fields}
    return client.post("/datasets/upload", data=form, files={"file": (filename, data, "application/octet-stream")})


@pytest.fixture
def tax_dataset(client: TestClient, tax_frame: pd.DataFrame) -> pd.DataFrame:
    r = upload(client, "tax_2024", csv_bytes(tax_frame), key_column="uscc")
    assert r.status_code == 201, r.text
    return tax_frame
