"""Ingest faults that lose nothing and leave nothing (#18.4): a node process killed with SIGKILL while it
ingests leaves no dataset, no data table and (after its restart) no upload file, and the same file then
ingests cleanly; a full disk (a small tmpfs this test mounts) during an upload or while the rows are
written gives the named error ``DiskFull`` and keeps nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import csv_bytes, make_tax_frame, small_tmpfs, upload
from fastapi.testclient import TestClient

from common.net import free_port
from common.settings import project_root
from nodes.app import create_app
from nodes.settings import NodeSettings
from tests.authkit import TEST_SCRYPT_N, officer_client, peer_entries


def _csv(n: int, seed: int) -> bytes:
    """``n`` rows of tax-bureau data (2,000 distinct rows repeated: cheap to make)."""
    import pandas as pd

    base = make_tax_frame(2_000, seed=seed)
    return csv_bytes(pd.concat([base] * (n // 2_000) + [base.head(n % 2_000)], ignore_index=True))


def _tables(db: Path) -> tuple[list[str], list[str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM dataset")]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'ds_%'")]
    return names, tables


def _start(cfg: Path, url: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg)], cwd=project_root(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("node did not come up")


def _login(url: str, pw: Path) -> dict:
    r = httpx.post(f"{url}/officers/login", json={"name": "wang", "password": pw.read_text()}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_a_node_killed_during_ingest_keeps_no_half_dataset(tmp_path, no_leaked_processes):
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"name: power\nport: {port}\nwork_dir: {tmp_path / 'state'}\nmax_upload_bytes: 100000000\n"
                   f"anchor_file: {tmp_path / 'anchors.jsonl'}\nofficer_scrypt_n: 1024\n")
    pw = tmp_path / "pw"
    pw.write_text("steward password")
    pw.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "dcp", "node", "user", "add", "wang", "-r", "steward", "-c", str(cfg),
                          "--password-file", str(pw)], capture_output=True, text=True, timeout=60, cwd=project_root())
    assert out.returncode == 0, out.stderr
    data = _csv(30_000, seed=3)
    url = f"http://127.0.0.1:{port}"
    db, tmp = tmp_path / "state" / "power.db", tmp_path / "state" / "tmp"
    proc = _start(cfg, url)
    try:
        auth = _login(url, pw)
        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the node dies under it
                httpx.post(f"{url}/datasets/upload", headers=auth, data={"name": "big", "key_column": "uscc"},
                           files={"file": ("big.csv", data, "text/csv")}, timeout=120)

        sent = threading.Thread(target=send, daemon=True)
        sent.start()
        deadline = time.monotonic() + 60  # the whole file has arrived: the node is parsing and ingesting it
        while time.monotonic() < deadline and not any(p.stat().st_size >= len(data) for p in tmp.glob("upload-*")):
            time.sleep(0.02)
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sent.join(30)
        assert _tables(db) == ([], []), "a killed ingest left a dataset behind"
        assert list(tmp.glob("upload-*")), "the test did not kill the node while it held the upload"
        proc = _start(cfg, url)  # the restart sweeps the cut-short upload
        assert not list(tmp.glob("upload-*"))
        auth = _login(url, pw)
        r = httpx.post(f"{url}/datasets/upload", headers=auth, data={"name": "big", "key_column": "uscc"},
                       files={"file": ("big.csv", data, "text/csv")}, timeout=120)
        assert r.status_code == 201, r.text
        assert r.json()["row_count"] == 30_000
        names, tables = _tables(db)
        assert names == ["big"] and len(tables) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def small_disk(tmp_path):  # noqa: ANN201
    """A 3 MiB tmpfs mounted in the test's own directory (unmounted afterwards)."""
    with small_tmpfs(tmp_path / "small", "size=3m") as mnt:
        yield mnt


def test_a_full_disk_during_ingest_is_named_and_keeps_nothing(small_disk):
    settings = NodeSettings(name="tax", work_dir=small_disk / "node", max_upload_bytes=64 * 1024 * 1024,
                            peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N, require_signed_requests=False)
    app = create_app(settings)
    db, tmp = small_disk / "node" / "tax.db", small_disk / "node" / "tmp"
    with officer_client(app) as c:
        assert isinstance(c, TestClient)
        # the upload itself does not fit
        r = upload(c, "huge", _csv(30_000, seed=4), key_column="uscc")
        assert r.status_code == 507 and r.json()["error"] == "DiskFull", r.text
        assert not list(tmp.glob("upload-*")) and _tables(db) == ([], [])
        # the upload fits, its rows in the database do not
        r = upload(c, "large", _csv(20_000, seed=5), key_column="uscc")
        assert r.status_code == 507 and r.json()["error"] == "DiskFull", r.text
        assert not list(tmp.glob("upload-*")) and _tables(db) == ([], [])
        # and a file that fits is still taken
        r = upload(c, "small", _csv(200, seed=6), key_column="uscc")
        assert r.status_code == 201, r.text
        assert _tables(db)[0] == ["small"]
