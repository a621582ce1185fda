"""Catalog refreshes that overlap (an API call, a submission that pulls a newly published dataset)
each end "ok" and leave exactly the node's datasets, once each: a real node over HTTP."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlmodel import Session, select

from common.net import free_port
from coordinator.models import CatalogEntry
from coordinator.service import Coordinator
from coordinator.settings import CoordinatorSettings


@pytest.fixture
def node_url(tmp_path):
    import uvicorn

    from nodes.app import create_app
    from nodes.services.audit import FileAnchor
    from nodes.settings import NodeSettings
    from tests.authkit import TEST_SCRYPT_N, AsPeer, add_officer, peer_entries

    app = create_app(NodeSettings(name="tax", work_dir=tmp_path / "node", peers=peer_entries(),
                                  officer_scrypt_n=TEST_SCRYPT_N), anchor=FileAnchor(tmp_path / "a.jsonl"))
    steward = add_officer(app, "wang", ["steward"])
    port = free_port()
    # the coordinator's calls carry its key as the 国密 TLS server would put it in the scope
    server = uvicorn.Server(uvicorn.Config(AsPeer(app, "coordinator"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    for name in ("tax_2024", "tax_2025"):
        rows = "uscc,vat_paid\n" + "".join(f"9133010{i:011d},{i * 10.5}\n" for i in range(50))
        r = httpx.post(f"{url}/datasets/upload", data={"name": name, "key_column": "uscc"},
                       files={"file": ("t.csv", rows.encode())}, timeout=60,
                       headers={"Authorization": f"Bearer {steward}"})
        assert r.status_code == 201, r.text
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_overlapping_refreshes_all_succeed_and_keep_one_entry_per_dataset(tmp_path, node_url):
    c = Coordinator(CoordinatorSettings(work_dir=tmp_path / "coord", worker=False))
    try:
        c.upsert_member("tax", "department", node_url)
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(lambda _: c.refresh_catalog(), range(12)))
        assert results == [{"tax": "ok"}] * 12
        with Session(c.engine) as s:
            got = sorted((e.member, e.dataset, e.row_count) for e in s.exec(select(CatalogEntry)))
        assert got == [("tax", "tax_2024", 50), ("tax", "tax_2025", 50)]
    finally:
        c.close()
