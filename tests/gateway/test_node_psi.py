"""A SecretFlow PSI job between two nodes that each run their 国密 gateway (``nodes/secretflow/`` with
``nodes.services.gateway``): real nodes, coordinator, chain and parties. Each party is told only
127.0.0.1 routes; every byte between the members' engines crosses a tap between the two gateways,
and the tap sees only TLS (no key column, no identifier, no gRPC path)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from common.net import free_ports
from tests.coordinator.fedkit import DiagnosingClient, started
from tests.gateway.conftest import Tap

pytestmark = pytest.mark.slow

KEY = "uscc"
PAIR = ("bank", "tax")
POLICY = {"max_grade": {"psi": 3}, "default_max_grade": 2}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """bank and tax, each node with its gateway (``gateway`` in node.yaml), each reaching the other's
    through a tap."""
    from protocols.crypto.keystore import load_keystore
    from protocols.secretflow.synthetic import make_vertical_data

    root = tmp_path_factory.mktemp("gwfed")
    data = make_vertical_data(root / "data", n_rows=300, overlap=0.6, seed=17)
    listen = dict(zip(PAIR, free_ports(2), strict=True))
    taps = {m: Tap(listen[m]) for m in PAIR}  # taps[m]: the other member's way to m's gateway
    members = [{"name": p.name, "role": "bank" if p.name == "bank" else "department", "policy": POLICY,
                "datasets": [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": KEY}],
                "node": {"gateway": {"listen_host": "127.0.0.1", "listen_port": listen[p.name],
                                     "peers": {o: f"127.0.0.1:{taps[o].port}" for o in PAIR if o != p.name}}}}
               for p in data.parties if p.name in PAIR]
    try:
        with started(root, members) as state:
            bank = load_keystore(state.keys_dir / "bank.keystore.json", state.passphrase_of("bank"))
            yield {"state": state, "data": data, "taps": taps,
                   "client": DiagnosingClient(state.coordinator_url, root, bank, state)}
    finally:
        for t in taps.values():
            t.close()


def test_a_psi_job_between_two_gateway_nodes_runs_through_the_gateways(fed, no_leaked_processes):
    c, st, data = fed["client"], fed["state"], fed["data"]
    parties = [p for p in data.parties if p.name in PAIR]
    inputs = [{"member": p.name, "dataset": f"{p.name}_2024", "columns": []} for p in parties]
    job = c.submit({"kind": "psi", "requester": "bank", "purpose": "common customers through the gateways",
                    "join_key": KEY, "inputs": inputs, "expires_in_s": 900})
    for p in parties:
        assert c.approve(job, p.name, st.nodes[p.name])["status"] == "approved"
    final = c.wait(job, timeout=300)
    assert final.state.value == "SUCCEEDED", final.reason
    got = pd.read_csv(io.BytesIO(c.result(job, "intersection", st.keys_dir / "bank.keystore.json",
                                          st.passphrase_of("bank"))), dtype={KEY: str})
    frames = [pd.read_csv(p.csv_path, dtype={KEY: str}) for p in parties]
    expected = set(frames[0][KEY]) & set(frames[1][KEY])
    assert set(got[KEY]) == expected and len(got) == len(expected) > 0
    taps = fed["taps"]
    for m in PAIR:  # both gateways were dialled, and carried the engines' traffic both ways
        assert len(taps[m].upstream) > 1000 and len(taps[m].downstream) > 1000, m
    wire = b"".join(bytes(t.upstream) + bytes(t.downstream) for t in taps.values())
    for needle in (KEY.encode(), b"application/grpc", b"bank_2024", *(k.encode() for k in sorted(expected)[:20])):
        assert needle not in wire, needle
    # each node's audit log says what the job's links cost its gateway (bench_bank_credit --gateways reads it)
    closed = {m: gateway_close_entries(st.work_dir, m, job) for m in PAIR}
    for m in PAIR:
        (entry,) = closed[m]
        assert entry["connections"] >= 1 and 0 < entry["cpu_s"] <= entry["open_s"], (m, entry)
    # what one gateway sent is what the other delivered (plaintext; the TLS in between is not counted) —
    # up to what a party still sent while its peer's process was leaving
    for a, b in (("bank", "tax"), ("tax", "bank")):
        sent, got = closed[a][0]["sent"], closed[b][0]["received"]
        assert 1000 < sent and 0.99 * sent - 4096 <= got <= sent, (a, sent, b, got)


def gateway_close_entries(work_dir, member: str, job: str) -> list[dict]:  # noqa: ANN001
    """``member``'s node audit entries ``gateway.close`` for ``job`` (their detail)."""
    import json
    import sqlite3

    (db,) = (work_dir / "nodes" / member).glob("*.db")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT actor, detail FROM auditentry WHERE action = 'gateway.close' AND target = ?",
                            (job,)).fetchall()
    assert all(actor == "gateway" for actor, _ in rows)
    return [json.loads(detail) for _, detail in rows]
