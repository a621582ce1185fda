"""``dcp keys new`` / ``rotate`` write the member's 国密 TLS certificate carrying its SM2 identity key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from protocols.crypto import keystore
from protocols.gmtls.certs import credential_paths, load_credentials


def _dcp(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DCP_KEYSTORE_PASSPHRASE"}
    return subprocess.run([sys.executable, "-m", "dcp", "keys", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_keys_new_and_rotate_write_the_identity_certificate(tmp_path: Path, no_leaked_processes: None) -> None:
    pw = tmp_path / "pw"
    pw.write_text("open sesame\n")
    r = _dcp("new", "-m", "tax", "--out", str(tmp_path), "--passphrase-file", str(pw), "--kdf-cost", "1024")
    assert r.returncode == 0, r.stderr
    cert_path, key_path = credential_paths(tmp_path, "tax")
    assert str(cert_path) in r.stdout and str(key_path) in r.stdout
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    public = keystore.read_public(tmp_path / "tax.keystore.json")
    first = load_credentials(cert_path, key_path)
    assert first.public_key.hex() == public.sm2_public_key  # the Registry's key, not a TLS-only one

    r = _dcp("rotate", "-m", "tax", "--dir", str(tmp_path), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    rotated = load_credentials(cert_path, key_path)
    assert rotated.public_key.hex() == keystore.read_public(tmp_path / "tax.keystore.json").sm2_public_key
    assert rotated.public_key != first.public_key

    key_path.unlink()
    r = _dcp("cert", "-m", "tax", "--dir", str(tmp_path), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert load_credentials(cert_path, key_path).public_key == rotated.public_key
