"""The real service: `dcp node start` in a subprocess on a free port, spoken to over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import csv_bytes, make_tax_frame

from common.net import free_port
from common.settings import project_root


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"node exited early: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("node did not come up")


@pytest.mark.slow
def test_node_process_over_http(tmp_path: Path, no_leaked_processes):
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"name: power\nport: {port}\nwork_dir: state\nmax_upload_bytes: 200000\nanchor_file: anchors.jsonl\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg)],
        cwd=project_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        frame = make_tax_frame(80)
        r = httpx.post(f"{url}/datasets/upload", data={"name": "power_use", "key_column": "uscc"},
                       files={"file": ("p.csv", csv_bytes(frame), "text/csv")}, timeout=30)
        assert r.status_code == 201, r.text
        cat = httpx.get(f"{url}/catalog").json()
        assert [(e["name"], e["row_count"], e["node"]) for e in cat] == [("power_use", 80, "power")]

        # a streamed (chunked, no Content-Length) upload over the limit is cut off with 413
        def body():
            yield (b"--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbig\r\n--B\r\n"
                   b"Content-Disposition: form-data; name=\"file\"; filename=\"b.csv\"\r\n\r\na,b\n")
            for _ in range(200):  # ~13 MB offered
                yield b"1,2\n" * 16384

        try:
            r = httpx.post(f"{url}/datasets/upload", content=body(),
                           headers={"content-type": "multipart/form-data; boundary=B"}, timeout=30)
            assert r.status_code == 413 and r.json()["error"] == "UploadTooLarge"
        except httpx.TransportError:
            pass  # the server may close the connection while the client is still sending
        assert [e["name"] for e in httpx.get(f"{url}/datasets").json()] == ["power_use"]
        assert httpx.post(f"{url}/audit/anchor").status_code == 200
        v = httpx.get(f"{url}/audit/verify").json()
        assert v["ok"] and v["checked"] >= 3
        # the CLI conveniences talk to the same process
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "catalog", "--url", url],
                             capture_output=True, text=True, timeout=60, cwd=project_root())
        assert out.returncode == 0 and "power_use" in out.stdout
        src = tmp_path / "more.csv"
        src.write_bytes(csv_bytes(make_tax_frame(10, seed=2)))
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "ingest", str(src), "--name", "more",
                              "--key-column", "uscc", "--url", url],
                             capture_output=True, text=True, timeout=60, cwd=project_root())
        assert out.returncode == 0, out.stderr
        assert '"rows": 10' in out.stdout
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "ingest", str(src), "--name", "more", "--url", url],
                             capture_output=True, text=True, timeout=60, cwd=project_root())
        assert out.returncode == 1 and "DatasetExists" in out.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert (tmp_path / "state" / "power.db").exists()
    assert (tmp_path / "anchors.jsonl").read_text().count('"node": "power"') == 1


def test_start_with_bad_config_exits_nonzero(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nhost: 0.0.0.0\n")
    out = subprocess.run([sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=project_root())
    assert out.returncode == 2 and "ConfigError" in out.stderr


@pytest.mark.slow
def test_chain_wired_node_process(tmp_path: Path, kit, no_leaked_processes):
    """`dcp node start --rpc --registry --coordinator` with the passphrase from the environment:
    the process anchors on chain (periodically and through `dcp node anchor`)."""
    import os

    from conftest import PASSPHRASE

    path, keys = kit.members["tax"]
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"name: tax\nport: {port}\nwork_dir: state\nkeystore_path: {path}\nanchor_interval_s: 0.5\n")
    env = {**os.environ, "DCP_NODE_KEYSTORE_PASSPHRASE": PASSPHRASE}
    snap = kit.w3.provider.make_request("evm_snapshot", [])["result"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg), "--rpc", kit.anvil.url,
         "--registry", kit.registry, "--coordinator", kit.board_url],
        cwd=project_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        account = keys.public.chain_address
        assert httpx.put(f"{url}/policy", json={"min_group_size": 4}).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and kit.admin.latest_anchor(account) is None:
            time.sleep(0.2)
        first = kit.admin.latest_anchor(account)
        assert first is not None, "the node process did not anchor on chain"
        r = httpx.put(f"{url}/policy", json={"min_group_size": 5})
        assert r.status_code == 200
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "anchor", "--url", url],
                             capture_output=True, text=True, timeout=60, cwd=project_root())
        assert out.returncode == 0, out.stderr
        head = httpx.get(f"{url}/audit/head").json()
        latest = kit.admin.latest_anchor(account)
        assert latest.entry_count == head["seq"] - 1 and latest.sequence > first.sequence
        assert latest.head_hash.hex()[:16] in out.stdout
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "task", "job-x", "--url", url],
                             capture_output=True, text=True, timeout=60, cwd=project_root())
        assert out.returncode == 1 and "TaskNotFound" in out.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        kit.w3.provider.make_request("evm_revert", [snap])
