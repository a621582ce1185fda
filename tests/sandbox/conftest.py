"""Fixtures of the sandbox tests: a private dataset keyed by USCC, and node files outside the mounts."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from common.ids import random_uscc
from protocols.sandbox.isolate import SandboxLimits, isolation_available

SECRET = "TOP-SECRET-node-material-7f3a"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not isolation_available():
        skip = pytest.mark.skip(reason="bubblewrap/prlimit missing: run make bootstrap as root")
        for item in items:
            if "sandbox" in str(item.fspath) and "output_policy" not in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def private_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 enterprises of a tax department: uscc key, a sector, VAT paid, insured employees."""
    rng = random.Random(17)
    rows = [
        {"uscc": random_uscc(rng), "sector": rng.choice(["manufacturing", "retail", "services"]),
         "vat_paid": round(rng.uniform(1e4, 5e6), 2), "employees": rng.randint(1, 400)}
        for _ in range(200)
    ]
    path = tmp_path_factory.mktemp("private") / "tax_enterprises.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def node_files(tmp_path: Path) -> dict[str, Path]:
    """A node database and a keystore, real files on the host, never mounted into the sandbox."""
    db = tmp_path / "node" / "node.db"
    ks = tmp_path / "node" / "keys" / "keystore.json"
    ks.parent.mkdir(parents=True)
    db.write_text(f"sqlite-ish {SECRET} db")
    ks.write_text(f'{{"sm2_private": "{SECRET}"}}')
    return {"db": db, "keystore": ks}


@pytest.fixture
def limits() -> SandboxLimits:
    return SandboxLimits(memory_bytes=1 << 30, cpu_seconds=3, max_processes=24, output_bytes=256 * 1024,
                         wall_seconds=60.0)


def _sandbox_leftovers() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("dcp-sandbox-*")}


def _sandbox_uid_processes() -> list[int]:
    from protocols.sandbox.isolate import _UID_BASE, _UID_SPAN

    out = []
    for p in psutil.process_iter(["uids"]):
        uids = p.info["uids"]
        if uids and _UID_BASE <= uids.real < _UID_BASE + _UID_SPAN:
            out.append(p.pid)
    return out


@pytest.fixture
def clean_sandbox(no_leaked_processes: None) -> Iterator[None]:
    """After the test: no scratch directory and no process of a sandbox uid is left."""
    before = _sandbox_leftovers()
    yield
    assert _sandbox_leftovers() - before == set()
    assert _sandbox_uid_processes() == []
