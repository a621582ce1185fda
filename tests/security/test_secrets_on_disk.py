"""Secrets on disk: one passphrase per keystore in a 0600 file, never the environment; officers made
by ``dcp up`` with random passwords in 0600 files; node databases 0600, work directories 0700."""

from __future__ import annotations

import stat

import pytest

from federation.launcher import FederationState, _bootstrap_officers, secret_file
from nodes.errors import ConfigError
from nodes.settings import NodeSettings


def mode(path) -> int:  # noqa: ANN001
    return stat.S_IMODE(path.stat().st_mode)


def test_passphrase_never_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DCP_NODE_KEYSTORE_PASSPHRASE", "from the environment")
    assert NodeSettings(name="tax", work_dir=tmp_path).passphrase() is None
    f = tmp_path / "pass"
    f.write_text("from the file\n")
    f.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        NodeSettings(name="tax", work_dir=tmp_path, keystore_passphrase_file=f).passphrase()
    f.chmod(0o600)
    assert NodeSettings(name="tax", work_dir=tmp_path, keystore_passphrase_file=f).passphrase() == "from the file"


def test_one_secret_per_member_and_officers_for_each_node(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    files = {m: secret_file(keys / f"{m}.passphrase") for m in ("bank", "tax", "coordinator", "governor-1")}
    texts = {m: f.read_text() for m, f in files.items()}
    assert len(set(texts.values())) == 4 and all(len(t) >= 32 for t in texts.values())
    assert all(mode(f) == 0o600 for f in files.values())
    assert secret_file(files["tax"]).read_text() == texts["tax"]  # kept on a second dcp up
    state = FederationState(name="f", work_dir=tmp_path, rpc_url="http://x", registry="0x0", coordinator_url="http://c",
                            nodes={}, pids={}, keys_dir=keys, passphrase_files=files, accounts={})
    assert state.passphrase_of("tax") == texts["tax"]
    node_dir = tmp_path / "nodes" / "tax"
    node_dir.mkdir(parents=True)
    cfg = node_dir / "node.yaml"
    cfg.write_text(f"name: tax\nwork_dir: {node_dir}\nofficer_scrypt_n: 1024\n")
    officers = _bootstrap_officers(cfg, node_dir / "officers")
    assert set(officers) == {"steward", "steward2", "approver", "auditor", "admin"}
    assert all(mode(f) == 0o600 for f in officers.values()) and mode(node_dir / "officers") == 0o700
    assert mode(node_dir / "tax.db") == 0o600 and mode(node_dir / "session.key") == 0o600
    from nodes.app import create_app

    app = create_app(NodeSettings(name="tax", work_dir=node_dir, officer_scrypt_n=1024))
    svc = app.state.ctx.officers
    assert {(o.name, tuple(o.roles)) for o in svc.list()} == {
        ("steward", ("steward",)), ("steward2", ("steward",)), ("approver", ("approver",)),
        ("auditor", ("auditor",)), ("admin", ("admin",))}
    assert svc.login("approver", officers["approver"].read_text()).roles == ["approver"]
    assert mode(node_dir) == 0o700
    app.state.ctx.close()
