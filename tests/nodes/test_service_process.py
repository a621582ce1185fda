"""The real service: `dcp node start` in a subprocess on a free port, spoken to over HTTP."""

from __future__ import annotations

import os
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
    """A node process with officers made by ``dcp node user add``: their sessions work over plain
    HTTP, member routes need the TLS peer key (401 without), the database is 0600 and the work
    directory 0700."""
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"name: power\nport: {port}\nwork_dir: state\nmax_upload_bytes: 200000\nanchor_file: anchors.jsonl\n"
                   "officer_scrypt_n: 1024\n")
    pw = tmp_path / "pw"
    pw.write_text("steward and admin password")
    pw.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "dcp", "node", "user", "add", "wang", "-r", "steward", "-r", "admin",
                          "-r", "auditor", "-c", str(cfg), "--password-file", str(pw)],
                         capture_output=True, text=True, timeout=60, cwd=project_root())
    assert out.returncode == 0, out.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg)],
        cwd=project_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "login", "wang", "--url", url,
                              "--password-file", str(pw)], capture_output=True, text=True, timeout=60,
                             cwd=project_root())
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        frame = make_tax_frame(80)
        r = httpx.post(f"{url}/datasets/upload", data={"name": "power_use", "key_column": "uscc"},
                       files={"file": ("p.csv", csv_bytes(frame), "text/csv")}, timeout=30)
        assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
        r = httpx.post(f"{url}/datasets/upload", data={"name": "power_use", "key_column": "uscc"},
                       files={"file": ("p.csv", csv_bytes(frame), "text/csv")}, timeout=30, headers=auth)
        assert r.status_code == 201, r.text
        # plain HTTP proves no member: member routes refuse
        r = httpx.get(f"{url}/catalog")
        assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")

        # a streamed (chunked, no Content-Length) upload over the limit is cut off with 413
        def body():
            yield (b"--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbig\r\n--B\r\n"
                   b"Content-Disposition: form-data; name=\"file\"; filename=\"b.csv\"\r\n\r\na,b\n")
            for _ in range(200):  # ~13 MB offered
                yield b"1,2\n" * 16384

        try:
            r = httpx.post(f"{url}/datasets/upload", content=body(),
                           headers={"content-type": "multipart/form-data; boundary=B", **auth}, timeout=30)
            assert r.status_code == 413 and r.json()["error"] == "UploadTooLarge"
        except httpx.TransportError:
            pass  # the server may close the connection while the client is still sending
        assert [e["name"] for e in httpx.get(f"{url}/datasets", headers=auth).json()] == ["power_use"]
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "anchor", "--url", url],
                             capture_output=True, text=True, timeout=60, cwd=project_root(),
                             env={**os.environ, "DCP_NODE_TOKEN": token})
        assert out.returncode == 0, out.stderr
        v = httpx.get(f"{url}/audit/verify", headers=auth).json()
        assert v["ok"] and v["checked"] >= 3
        src = tmp_path / "more.csv"
        src.write_bytes(csv_bytes(make_tax_frame(10, seed=2)))
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "ingest", str(src), "--name", "more",
                              "--key-column", "uscc", "--url", url, "--token", token],
                             capture_output=True, text=True, timeout=60, cwd=project_root())
        assert out.returncode == 0, out.stderr
        assert '"rows": 10' in out.stdout
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "ingest", str(src), "--name", "more", "--url", url,
                              "--token", token], capture_output=True, text=True, timeout=60, cwd=project_root())
        assert out.returncode == 1 and "DatasetExists" in out.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    db = tmp_path / "state" / "power.db"
    assert db.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "session.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "anchors.jsonl").read_text().count('"node": "power"') == 1


def test_start_with_bad_config_exits_nonzero(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nhost: 0.0.0.0\n")
    out = subprocess.run([sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=project_root())
    assert out.returncode == 2 and "ConfigError" in out.stderr


@pytest.mark.slow
def test_chain_wired_node_process(tmp_path: Path, kit, no_leaked_processes):
    """`dcp node start --rpc --registry --coordinator` with the passphrase from a 0600 file (the
    environment is not read): the process anchors on chain (periodically and through `dcp node anchor`);
    a policy change takes two stewards."""
    from conftest import PASSPHRASE
    from typer.testing import CliRunner

    from dcp.cli import build_app

    path, keys = kit.members["tax"]
    port = free_port()
    pass_file = tmp_path / "passphrase"
    pass_file.write_text(PASSPHRASE)
    pass_file.chmod(0o600)
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"name: tax\nport: {port}\nwork_dir: state\nkeystore_path: {path}\nanchor_interval_s: 0.5\n"
                   f"keystore_passphrase_file: {pass_file}\nofficer_scrypt_n: 1024\n")
    pw = tmp_path / "pw"
    pw.write_text("a steward's password")
    pw.chmod(0o600)
    for officer in ("li", "wang"):
        out = CliRunner().invoke(build_app(), ["node", "user", "add", officer, "-r", "steward", "-r", "admin",
                                               "-r", "auditor", "-c", str(cfg), "--password-file", str(pw)])
        assert out.exit_code == 0, out.output
    env = {k: v for k, v in os.environ.items() if k != "DCP_NODE_KEYSTORE_PASSPHRASE"}
    snap = kit.w3.provider.make_request("evm_snapshot", [])["result"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg), "--rpc", kit.anvil.url,
         "--registry", kit.registry, "--coordinator", kit.board_url],
        cwd=project_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def login(name: str) -> dict[str, str]:
        r = httpx.post(f"{url}/officers/login", json={"name": name, "password": "a steward's password"})
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def set_policy(policy: dict) -> httpx.Response:
        pid = httpx.put(f"{url}/policy", json=policy, headers=li).json()["id"]
        return httpx.post(f"{url}/proposals/{pid}/confirm", headers=wang)

    try:
        _wait_up(url, proc)
        li, wang = login("li"), login("wang")
        account = keys.public.chain_address
        assert set_policy({"min_group_size": 4}).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and kit.admin.latest_anchor(account) is None:
            time.sleep(0.2)
        first = kit.admin.latest_anchor(account)
        assert first is not None, "the node process did not anchor on chain"
        r = set_policy({"min_group_size": 5})
        assert r.status_code == 200 and r.json()["min_group_size"] == 5
        out = subprocess.run([sys.executable, "-m", "dcp", "node", "anchor", "--url", url],
                             capture_output=True, text=True, timeout=60, cwd=project_root(),
                             env={**os.environ, "DCP_NODE_TOKEN": li["Authorization"].split()[1]})
        assert out.returncode == 0, out.stderr
        head = httpx.get(f"{url}/audit/head", headers=li).json()
        latest = kit.admin.latest_anchor(account)
        assert latest.entry_count == head["seq"] - 1 and latest.sequence > first.sequence
        assert latest.head_hash.hex()[:16] in out.stdout
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        kit.w3.provider.make_request("evm_revert", [snap])
