"""Artifacts match a fresh solc compile; every Solidity error has its Python class; the anvil
runner cleans up; the CLI deploys, audits (exit codes, JSON) and exports Besu allowlists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts import errors as E
from contracts.anvil import AnvilNode
from contracts.build import all_artifacts, compile_sources, drift
from contracts.client import ChainClient, decode_revert
from contracts.models import MemberAdmission, Role

from .conftest import h


def test_artifacts_have_not_drifted() -> None:
    fresh = compile_sources()
    assert set(fresh) >= {"Registry", "Authorizations", "Receipts"}
    assert fresh["Registry"].settings["evmVersion"] == "prague"
    assert fresh["Registry"].solcVersion.startswith("0.8.37")
    assert drift(fresh) == [], "run `python -m contracts.build` and commit contracts/artifacts"


def test_drift_is_detected(tmp_path: Path) -> None:
    arts = all_artifacts()
    for name, a in arts.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(a.model_dump(), indent=1, sort_keys=True) + "\n")
    assert drift(arts, tmp_path) == []
    tampered = arts["Receipts"].model_copy(update={"bytecode": arts["Receipts"].bytecode[:-2] + "00"})
    assert drift({**arts, "Receipts": tampered}, tmp_path) == ["Receipts"]


def test_every_solidity_error_has_a_python_class() -> None:
    names = {i["name"] for a in all_artifacts().values() for i in a.abi if i["type"] == "error"}
    assert names <= set(E.REVERT_CLASSES), names - set(E.REVERT_CLASSES)
    assert isinstance(decode_revert(b""), E.UnknownRevert)
    assert isinstance(decode_revert("0xdeadbeef"), E.UnknownRevert)


def test_anvil_starts_and_stops(no_leaked_processes) -> None:
    with AnvilNode() as node:
        pid = node.pid
        assert node.web3().eth.chain_id == 31337
    assert node.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(E.AnvilError):
        AnvilNode(binary=Path("/nonexistent/anvil")).start()


@pytest.mark.slow
def test_cli_deploy_audit_and_besu(tmp_path: Path, no_leaked_processes) -> None:
    from dcp.cli import build_app

    app, runner = build_app(), CliRunner()
    from eth_account import Account

    from protocols.crypto.keystore import create_keystore

    keys_dir = tmp_path / "keys"
    gov_keys, stores = [], []
    for i in range(3):
        (keys_dir / f"gov-{i}.passphrase").parent.mkdir(exist_ok=True)
        (keys_dir / f"gov-{i}.passphrase").write_text(f"pass-{i}\n")
        path, k = create_keystore(keys_dir, f"gov-{i}", f"pass-{i}", scrypt_n=2**10)
        stores += ["--governor-keystore", str(path)]
        gov_keys.append(k)
    signers = {a.address: a for a in (Account.from_key(k.chain_private_key) for k in gov_keys)}
    govs = list(signers)
    with AnvilNode() as node:
        out = tmp_path / "deployment.json"
        w3 = node.web3()
        acc = w3.eth.accounts
        # no governors named: refused, and anvil's unlocked accounts are not taken instead
        r = runner.invoke(app, ["chain", "deploy", "--rpc", node.url, "--out", str(out)])
        assert r.exit_code == 2 and "name the governors" in r.output and not out.exists()
        r = runner.invoke(app, ["chain", "deploy", "--rpc", node.url, *stores[:4], "--passphrase-file",
                                str(keys_dir / "gov-1.passphrase"), "--passphrase-file",
                                str(keys_dir / "gov-0.passphrase"), "--out", str(out)])
        assert r.exit_code == 2 and "WrongPassphrase" in r.output and not out.exists()
        r = runner.invoke(app, ["chain", "deploy", "--rpc", node.url, *stores, "--out", str(out)])
        assert r.exit_code == 0, r.output
        dep = json.loads(out.read_text())
        client = ChainClient.connect(w3, dep["registry"], signers=signers)
        assert client.deployment.receipts == dep["receipts"] and client.governors() == govs
        assert not set(govs) & set(acc)
        # an unlocked development account cannot govern: it is not a governor on chain
        with pytest.raises(E.NotGovernor):
            ChainClient.connect(w3, dep["registry"]).admit(acc[:3], MemberAdmission(
                account=acc[7], role=Role.DEPARTMENT, name="intruder", sm2_public_key=os.urandom(64)))
        assert [m.name for m in client.members()] == []
        enode = "enode://" + "ab" * 64 + "@10.0.0.5:30303"
        client.admit(govs, MemberAdmission(account=acc[3], role=Role.COORDINATOR, name="coord",
                                              sm2_public_key=os.urandom(64), enode=enode))
        client.admit(govs, MemberAdmission(account=acc[5], role=Role.DEPARTMENT, name="tax",
                                              sm2_public_key=os.urandom(64)))
        client.register_dataset(acc[5], h("tax.vat"), h("schema"), 2)

        audit = ["audit", "--rpc", node.url, "--registry", dep["registry"]]
        r = runner.invoke(app, audit)
        assert r.exit_code == 0, r.output
        assert "no findings" in r.output

        # a run of 0 s: its times were not measured (the contract takes it; the audit flags it)
        from contracts.models import Terms, UsageReceipt

        now = w3.eth.get_block("latest")["timestamp"]
        t = Terms(job_id=h("j"), manifest_hash=h("m"), dataset_ids=(h("tax.vat"),), requester=acc[3],
                  expiry=now + 3600, max_runs=2)
        client.approve(acc[5], t)
        client.authorize(acc[3], t)
        client.record_usage(acc[5], UsageReceipt(job_id=t.job_id, dataset_id=h("tax.vat"), row_count=5,
                                                 result_hash=h("r"), started_at=now, finished_at=now))
        client.record_usage(acc[5], UsageReceipt(job_id=t.job_id, dataset_id=h("tax.vat"), row_count=6,
                                                 result_hash=h("r2"), started_at=now - 4, finished_at=now))
        t2 = Terms(job_id=h("other"), manifest_hash=h("m2"), dataset_ids=(h("tax.vat"),), requester=acc[3],
                   expiry=now + 3600, max_runs=1)
        client.approve(acc[5], t2)
        client.authorize(acc[3], t2)
        r = runner.invoke(app, [*audit, "--json"])
        assert r.exit_code == 1, r.output
        report = json.loads(r.output)
        assert [f["kind"] for f in report["findings"]] == ["receipt_run_too_short"]
        assert report["findings"][0]["job_id"] == "0x" + h("j").hex()
        assert report["contracts_genuine"] is True and report["bls_verified_by"] == "chain"
        job = report["jobs"][0]
        assert (job["job_id"], job["manifest_hash"], job["approvers"]) == ("0x" + h("j").hex(), "0x" + h("m").hex(),
                                                                          [acc[5]])
        assert job["runs_used"] == {"0x" + h("tax.vat").hex(): 2} and job["findings"] == 1
        assert [(x["node"], x["row_count"], x["result_hash"], x["started_at"], x["finished_at"], x["flags"])
                for x in job["receipts"]] == [(acc[5], 5, "0x" + h("r").hex(), now, now, ["receipt_run_too_short"]),
                                              (acc[5], 6, "0x" + h("r2").hex(), now - 4, now, [])]
        assert all(x["block_time"] >= now and x["late"] is False for x in job["receipts"])
        # --job narrows the listing and the findings (by 0x key or by the coordinator's job id)
        r = runner.invoke(app, [*audit, "--json", "--job", "0x" + h("other").hex()])
        assert r.exit_code == 0, r.output
        narrowed = json.loads(r.output)
        assert [j["job_id"] for j in narrowed["jobs"]] == ["0x" + h("other").hex()] and narrowed["findings"] == []
        assert narrowed["receipts_count"] == 2  # totals stay whole
        r = runner.invoke(app, [*audit, "--job", "no-such-job"])
        assert r.exit_code == 0 and "no authorization for job" in r.output
        r = runner.invoke(app, audit)
        assert r.exit_code == 1 and "receipt_run_too_short" in r.output

        r = runner.invoke(app, ["audit", "--rpc", node.url, "--registry", acc[9]])
        assert r.exit_code == 2 and "DeploymentError" in r.output

        # Besu allowlists: active members + governors; enodes from the registry and a file
        enodes = tmp_path / "enodes.json"
        enodes.write_text(json.dumps({acc[5]: "enode://" + "cd" * 64 + "@10.0.0.6:30303"}))
        perms_dir = tmp_path / "besu"
        r = runner.invoke(app, ["chain", "besu-permissions", "--rpc", node.url, "--registry", dep["registry"],
                                "--out", str(perms_dir), "--enodes", str(enodes)])
        assert r.exit_code == 0, r.output
        text = (perms_dir / "permissions_config.toml").read_text()
        lists = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        accounts, nodes = json.loads(lists["accounts-allowlist"]), json.loads(lists["nodes-allowlist"])
        assert set(accounts) == {*govs, acc[3], acc[5]}
        assert set(nodes) == {enode, "enode://" + "cd" * 64 + "@10.0.0.6:30303"}
        # a removed member drops out of both lists
        client.remove(govs, acc[3])
        r = runner.invoke(app, ["chain", "besu-permissions", "--rpc", node.url, "--registry", dep["registry"],
                                "--out", str(perms_dir)])
        assert r.exit_code == 0 and "has no enode" in r.output
        text = (perms_dir / "permissions_config.toml").read_text()
        assert acc[3] not in text and enode not in text
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({acc[5]: "http://not-an-enode"}))
        r = runner.invoke(app, ["chain", "besu-permissions", "--rpc", node.url, "--registry", dep["registry"],
                                "--out", str(perms_dir), "--enodes", str(bad)])
        assert r.exit_code == 2 and "InvalidInput" in r.output
