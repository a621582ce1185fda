"""``dcp node start`` with a ``tls`` section and a file of known keys (no chain): only 国密 TLS, only
the listed members; a broken ``tls`` section stops the node with a named error."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from common.net import free_port
from protocols.crypto import sm2
from protocols.gmtls.certs import credentials_for, load_credentials, write_credentials
from protocols.gmtls.client import GmTlsTransport


def _config(tmp_path: Path, tls: dict) -> tuple[Path, int]:
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({"name": "tax", "host": "127.0.0.1", "port": port,
                                   "work_dir": str(tmp_path / "work"), "tls": tls}))
    return cfg, port


def test_node_serves_only_gmtls_to_the_members_in_its_known_keys_file(tmp_path, no_leaked_processes):
    tax, bank, outsider = (sm2.generate_keypair() for _ in range(3))
    cert, key = write_credentials(tmp_path, "tax", tax.private_key)
    known = tmp_path / "known.yaml"
    known.write_text(f"tax: {tax.public_key.hex()}\nbank: {bank.public_key.hex()}\n")
    cfg, port = _config(tmp_path, {"cert": str(cert), "key": str(key), "known_keys": str(known)})
    proc = subprocess.Popen([sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"https://127.0.0.1:{port}"
    try:
        member = httpx.Client(transport=GmTlsTransport(credentials_for(bank.private_key, "bank"),
                                                       {url: tax.public_key}), timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                health = member.get(f"{url}/health")
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.3)
        assert health.status_code == 200
        catalog = member.get(f"{url}/catalog")
        assert catalog.status_code == 200 and catalog.json() == []
        member.close()
        stranger = httpx.Client(transport=GmTlsTransport(credentials_for(outsider.private_key, "bank"),
                                                         {url: tax.public_key}), timeout=5)
        with stranger, pytest.raises(httpx.HTTPError):
            stranger.get(f"{url}/catalog")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert load_credentials(cert, key).public_key == tax.public_key
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "国密 TLS only on https://127.0.0.1" in out


def test_a_broken_tls_section_stops_the_node_with_a_named_error(tmp_path, no_leaked_processes):
    cfg, _ = _config(tmp_path, {"cert": str(tmp_path / "missing.crt"), "key": str(tmp_path / "missing.key"),
                                "known_keys": str(tmp_path / "missing.yaml")})
    r = subprocess.run([sys.executable, "-m", "dcp", "node", "start", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "tls: FileNotFoundError" in r.stderr
