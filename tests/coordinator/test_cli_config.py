"""CLI and federation-config errors: named, non-zero, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.net import free_port
from coordinator.errors import FederationError, InvalidFederationConfig
from coordinator.spec import load_spec
from dcp.cli import build_app
from federation.launcher import down, load_federation_config

EXAMPLES = Path(__file__).resolve().parents[2] / "coordinator" / "examples"
runner = CliRunner()


def test_example_files_validate(tmp_path):
    spec = load_spec(EXAMPLES / "credit_job.yaml")
    assert spec.kind == "vertical_train" and spec.members == ["bank", "tax", "power"]
    cfg_text = (EXAMPLES / "federation.yaml").read_text()
    (tmp_path / "data").mkdir()
    for n in ("bank", "tax", "power"):
        (tmp_path / "data" / f"{n}.csv").write_text("uscc\n")
    (tmp_path / "federation.yaml").write_text(cfg_text)
    cfg = load_federation_config(tmp_path / "federation.yaml")
    assert [m.name for m in cfg.members] == ["bank", "tax", "power"]
    assert cfg.members[1].policy["negative_list"] == ["criminal"]


def test_federation_config_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("members: [{name: bank, role: bank}]\n")
    with pytest.raises(InvalidFederationConfig, match="members: List should have at least 2 items"):
        load_federation_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(
        "members: [{name: bank, role: bank, datasets: [{name: d, file: nope.csv}]}, {name: tax, role: department}]\n")
    with pytest.raises(InvalidFederationConfig, match="dataset file of bank/d not found"):
        load_federation_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("members: [{name: bank, role: king}, {name: tax, role: department}]\n")
    with pytest.raises(InvalidFederationConfig, match="members.0.role"):
        load_federation_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text(
        "coordinator: {host: 0.0.0.0}\nmembers: [{name: bank, role: bank}, {name: tax, role: department}]\n")
    with pytest.raises(InvalidFederationConfig, match="never bind all interfaces"):
        load_federation_config(tmp_path / "d.yaml")
    with pytest.raises(FederationError, match="no federation is up"):
        down(tmp_path)


def test_cli_up_bad_config_and_down_without_state(tmp_path):
    app = build_app()
    (tmp_path / "f.yaml").write_text("members: []\n")
    r = runner.invoke(app, ["up", "--config", str(tmp_path / "f.yaml")])
    assert r.exit_code == 1 and "InvalidFederationConfig" in r.output
    r = runner.invoke(app, ["down", "--work-dir", str(tmp_path)])
    assert r.exit_code == 1 and "FederationError: no federation is up" in r.output


def test_down_on_a_connect_view_refuses_and_keeps_it(tmp_path):
    """`dcp down` on a directory written by `dcp connect` stops nothing, says so, and keeps the view."""
    app = build_app()
    keys = tmp_path / "keys"
    keys.mkdir()
    view = tmp_path / "fed"
    r = runner.invoke(app, ["connect", "--member", "bank", "--keys-dir", str(keys), "--rpc", "http://127.0.0.1:9",
                            "--registry", "0x" + "11" * 20, "--coordinator", "https://127.0.0.1:9",
                            "--node", "bank=https://127.0.0.1:9", "--federation-dir", str(view)])
    assert r.exit_code == 0, r.output
    before = (view / "federation.state.json").read_text()
    r = runner.invoke(app, ["down", "--work-dir", str(view)])
    assert r.exit_code == 1 and "written by `dcp connect`" in r.output and "nothing to stop" in r.output
    assert (view / "federation.state.json").read_text() == before


def test_cli_job_commands_name_their_errors(tmp_path):
    app = build_app()
    dead = f"http://127.0.0.1:{free_port()}"
    spec = EXAMPLES / "credit_job.yaml"
    r = runner.invoke(app, ["job", "submit", str(spec), "--coordinator", dead, "--federation-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no federation is up" in r.output  # no keys to sign the request with
    from protocols.crypto.keystore import create_keystore

    path, _ = create_keystore(tmp_path / "keys", "bank", "bank passphrase", scrypt_n=2**10)
    pf = tmp_path / "pf"
    pf.write_text("bank passphrase")
    pf.chmod(0o600)
    r = runner.invoke(app, ["job", "submit", str(spec), "--coordinator", dead, "--keystore", str(path),
                            "--passphrase-file", str(pf)])
    assert r.exit_code == 1 and "NodeUnavailable" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: mine_bitcoin\nrequester: bank\n")
    r = runner.invoke(app, ["job", "submit", str(bad), "--coordinator", dead])
    assert r.exit_code == 1 and "UnknownJobKind" in r.output
    r = runner.invoke(app, ["job", "list", "--federation-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no federation is up" in r.output
