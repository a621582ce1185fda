"""``dcp keys`` end to end, as a user runs it (a real ``python -m dcp`` process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from protocols.crypto import bls, keystore


def _dcp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "DCP_KEYSTORE_PASSPHRASE"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "dcp", "keys", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def test_keys_lifecycle(tmp_path: Path, no_leaked_processes: None) -> None:
    pw = tmp_path / "pw"
    pw.write_text("open sesame\n")
    r = _dcp(
        "new",
        "--member",
        "housing-fund",
        "--out",
        str(tmp_path),
        "--passphrase-file",
        str(pw),
        "--kdf-cost",
        "1024",
    )
    assert r.returncode == 0, r.stderr
    path = tmp_path / "housing-fund.keystore.json"
    assert str(path) in r.stdout
    first = keystore.read_public(path)
    assert first.chain_address in r.stdout

    # creating it again refuses to overwrite
    r = _dcp(
        "new",
        "--member",
        "housing-fund",
        "--out",
        str(tmp_path),
        "--passphrase-file",
        str(pw),
        "--kdf-cost",
        "1024",
    )
    assert r.returncode == 2 and "KeystoreExists" in r.stderr

    # show --check with the env passphrase; a wrong one exits non-zero with a named error
    r = _dcp(
        "show",
        "-m",
        "housing-fund",
        "--dir",
        str(tmp_path),
        "--check",
        env={"DCP_KEYSTORE_PASSPHRASE": "open sesame"},
    )
    assert r.returncode == 0 and "passphrase    ok" in r.stdout, r.stderr
    r = _dcp("show", "-k", str(path), "--check", env={"DCP_KEYSTORE_PASSPHRASE": "open sesam"})
    assert r.returncode == 2 and "WrongPassphrase" in r.stderr

    # export-public gives the Registry's JSON, with a valid proof of possession
    out = tmp_path / "public.json"
    r = _dcp("export-public", "-k", str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    exported = json.loads(out.read_text())
    assert exported["member"] == "housing-fund" and exported["key_version"] == 1
    assert bls.pop_verify(bytes.fromhex(exported["bls_public_key"]), bytes.fromhex(exported["bls_pop"]))
    assert "private" not in out.read_text()

    # rotate: new keys, version 2, old file archived
    r = _dcp("rotate", "-k", str(path), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    second = keystore.read_public(path)
    assert second.key_version == 2 and second.bls_public_key != first.bls_public_key
    archived = list((tmp_path / "archive").iterdir())
    assert len(archived) == 1 and keystore.read_public(archived[0]) == first


def test_keys_bad_input(tmp_path: Path, no_leaked_processes: None) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    r = _dcp(
        "new",
        "--member",
        "../evil",
        "--out",
        str(tmp_path),
        "--passphrase-file",
        str(pw),
        "--kdf-cost",
        "1024",
    )
    assert r.returncode == 2 and "InvalidMemberName" in r.stderr
    junk = tmp_path / "junk.keystore.json"
    junk.write_text('{"format": "something-else"}')
    r = _dcp("export-public", "-k", str(junk))
    assert r.returncode == 2 and "MalformedKeystore" in r.stderr
    r = _dcp("show", "-m", "nobody", "--dir", str(tmp_path))
    assert r.returncode == 2 and "MalformedKeystore" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.keystore.json", "pw"]
