"""``dcp up`` with ``gmtls: true``: every service serves only 国密 mutual TLS, every hop of a job
(SDK → coordinator → nodes → coordinator) runs over it, and plain HTTP or an outsider gets nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from federation.launcher import FederationConfig, client_for, down, up
from tests.coordinator.fedkit import DiagnosingClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import random

    import pandas as pd

    from common.ids import random_uscc
    from protocols.secretflow.synthetic import make_vertical_data

    root = tmp_path_factory.mktemp("gmfed")
    data = make_vertical_data(root / "data", n_rows=800, overlap=0.6, seed=5)
    policy = {"max_grade": {"vertical_train": 3, "secure_stats": 3}, "default_max_grade": 2, "min_group_size": 10}
    members = []
    rng = random.Random(7)
    for p in data.parties:
        datasets = [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": "uscc"}]
        if p.name != "bank":  # a small table for a secure_stats job (the HE engine's hops)
            path = root / "data" / f"{p.name}_stats.csv"
            pd.DataFrame({"uscc": [random_uscc(rng) for _ in range(30)], "employees": list(range(1, 31))}).to_csv(
                path, index=False)
            datasets.append({"name": f"{p.name}_stats", "file": str(path), "key_column": "uscc"})
        members.append({"name": p.name, "role": "bank" if p.name == "bank" else "department", "policy": policy,
                        "datasets": datasets})
    cfg = FederationConfig.model_validate({
        "work_dir": str(root / "fed"), "scrypt_n": 2**12, "gmtls": True,
        "coordinator": {"node_timeout_s": 6.0, "poll_interval_s": 0.3, "authorization_mode": "per_owner"},
        "members": members,
    })
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    state = up(cfg)
    try:
        yield {"state": state, "data": data, "root": root}
    finally:
        down(state.work_dir)
        time.sleep(0.5)
        left = [p for p in psutil.Process().children(recursive=True)
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"processes left behind: {[p.cmdline()[:4] for p in left]}"


def _services(state: Any) -> dict[str, str]:
    return {"coordinator": state.coordinator_url, **state.nodes}


def test_every_service_refuses_plain_http(fed):
    for name, url in _services(fed["state"]).items():
        assert url.startswith("https://"), url  # a service that speaks only TLS is named by an https URL
        with httpx.Client(timeout=5) as plain, pytest.raises(httpx.HTTPError):
            plain.get(f"{url.replace('https://', 'http://', 1)}/health")
        with pytest.raises(httpx.HTTPError):  # nor does Python's ssl (no SM4-GCM, no SM2) get through
            httpx.get(f"{url}/health", verify=False, timeout=5)
        with client_for(fed["state"], "bank", timeout=10) as member:
            assert member.get(f"{url}/health").status_code == 200, name


def test_an_outsider_certificate_is_refused_by_every_service(fed):
    from protocols.crypto import sm2
    from protocols.gmtls.certs import credential_paths, credentials_for, load_credentials
    from protocols.gmtls.client import GmTlsTransport

    state = fed["state"]
    pins = {url: load_credentials(*credential_paths(state.keys_dir, name)).public_key
            for name, url in _services(state).items()}
    outsider = credentials_for(sm2.generate_keypair().private_key, "bank")  # claims a member's name
    with httpx.Client(transport=GmTlsTransport(outsider, pins), timeout=10) as http:
        for url in _services(state).values():
            with pytest.raises(httpx.HTTPError) as err:
                http.get(f"{url}/catalog")
            assert "alert unknown ca" in str(err.value)


def test_a_job_runs_with_every_hop_over_gmtls(fed):
    state, data = fed["state"], fed["data"]
    spec = {
        "kind": "vertical_train", "requester": "bank", "purpose": "credit model over 国密 TLS (test)",
        "join_key": "uscc", "label": {"member": "bank", "dataset": "bank_2024", "column": "default"},
        "inputs": [{"member": p.name, "dataset": f"{p.name}_2024", "columns": p.features} for p in data.parties],
        "model": {"algorithm": "ss_lr", "params": {"epochs": 1, "batch_size": 256}}, "expires_in_s": 900,
    }
    # the bank over 国密 TLS, signing its request; each member's approver decides through its node
    with DiagnosingClient(state.coordinator_url, fed["root"], state=state) as client:
        job = client.submit(spec)
        for m in ("bank", "tax", "power"):
            out = client.approve(job, m, state.nodes[m])
            assert out["status"] == "approved" and out["chain_ref"].startswith("0x")
        final = client.wait(job, timeout=300)
    assert final.state.value == "SUCCEEDED", final.reason


def test_the_cli_acts_as_a_named_member_over_gmtls(fed):
    from typer.testing import CliRunner

    from dcp.cli import build_app

    work = str(fed["state"].work_dir)
    r = CliRunner().invoke(build_app(), ["job", "list", "--federation-dir", work])
    assert r.exit_code == 2 and "--member" in r.output
    r = CliRunner().invoke(build_app(), ["job", "list", "--federation-dir", work, "--member", "tax"])
    assert r.exit_code == 0, r.output
    assert "vertical_train" in r.output or "job" in r.output


def test_the_node_cli_acts_as_a_named_member_over_gmtls(fed):
    from typer.testing import CliRunner

    from dcp.cli import build_app

    state = fed["state"]
    env = {"DCP_FEDERATION_DIR": str(state.work_dir)}
    args = ["node", "catalog", "--url", state.nodes["tax"]]
    r = CliRunner().invoke(build_app(), args, env=env)
    assert r.exit_code == 2 and "--member" in r.output
    r = CliRunner().invoke(build_app(), [*args, "--member", "bank"], env=env)
    assert r.exit_code == 0, r.output
    assert "tax_2024" in r.output


def test_an_he_job_runs_over_gmtls(fed):
    """secure_stats: the coordinator relays CKKS ciphertexts between the nodes' /he routes over 国密 TLS."""
    import json

    state = fed["state"]
    spec = {
        "kind": "secure_stats", "requester": "bank", "purpose": "employment profile over 国密 TLS (test)",
        "inputs": [{"member": m, "dataset": f"{m}_stats", "columns": ["employees"]} for m in ("tax", "power")],
        "he": {"statistics": ["count", "sum", "mean"], "min_group_size": 10}, "expires_in_s": 900,
    }
    with DiagnosingClient(state.coordinator_url, fed["root"], state=state) as client:
        job = client.submit(spec)
        for m in ("tax", "power"):
            assert client.approve(job, m, state.nodes[m])["status"] == "approved"
        final = client.wait(job, timeout=180)
        assert final.state.value == "SUCCEEDED", final.reason
        got = json.loads(client.result(job, "stats", state.keys_dir / "bank.keystore.json",
                                       state.passphrase_of("bank")))
    assert got["count"] == 60 and abs(got["sum"] - 2 * sum(range(1, 31))) < 1e-3
