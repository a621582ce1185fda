"""What a member needs on its own host, on a real anvil: its node registers its datasets on chain (once;
another schema under the same name is refused and nothing changes), and with
``auto_approve_own_requests`` a job its own member requested and signed is approved at once."""

from __future__ import annotations

import time

from conftest import TAX_FEATURES, chain_node, vertical_spec

from coordinator.manifest import node_request
from nodes.services.chain import dataset_chain_id


def _bank_csv(vertical_data) -> bytes:
    return next(p for p in vertical_data.parties if p.name == "bank").csv_path.read_bytes()


def test_a_steward_registers_a_dataset_on_chain_once(chain, vertical_data, tmp_path):
    with chain_node(chain, "bank", tmp_path / "bank", {"bank_reg": _bank_csv(vertical_data)}, role="bank") as c:
        entry = c.get("/catalog/bank_reg").json()
        r = c.post("/datasets/bank_reg/register")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "registered" and body["tx"].startswith("0x")
        on_chain = chain.admin.dataset(dataset_chain_id("bank", "bank_reg"))
        assert on_chain.owner == chain.members["bank"][1].public.chain_address
        assert bytes(on_chain.schema_hash).hex() == entry["schema_hash"] and on_chain.grade == entry["max_grade"]
        again = c.post("/datasets/bank_reg/register")
        assert again.status_code == 200 and again.json()["status"] == "already" and again.json()["tx"] is None
        audit = [e for e in c.get("/audit?limit=1000").json() if e["action"] == "dataset.chain_register"]
        assert len(audit) == 1, audit


def test_a_dataset_registered_with_another_schema_is_refused_and_nothing_changes(chain, vertical_data, tmp_path):
    chain.member("bank", "bank")
    did = chain.register_dataset("bank", "bank_other", grade=1)  # someone registered this name differently
    before = chain.admin.dataset(did)
    with chain_node(chain, "bank", tmp_path / "bank", {"bank_other": _bank_csv(vertical_data)}, role="bank") as c:
        r = c.post("/datasets/bank_other/register")
        assert r.status_code == 409 and r.json()["error"] == "ChainRefused", r.text
        assert chain.admin.dataset(did) == before
        assert not [e for e in c.get("/audit?limit=1000").json()
                    if e["action"] == "dataset.chain_register" and e.get("outcome") != "refused"]


def _own_request(chain, c, job_id: str) -> dict:
    spec = vertical_spec(TAX_FEATURES[:2])
    chain.member("tax")
    chain.register_dataset("bank", "bank_2024")
    chain.register_dataset("tax", "tax_2024")
    manifest, _ = chain.publish(spec, job_id)
    r = c.post("/approvals", json=node_request(manifest, "bank"))
    assert r.status_code == 201, r.text
    return r.json()


def _status_after(c, rid: int, seconds: float = 30.0) -> dict:
    end = time.monotonic() + seconds
    while True:
        got = c.get(f"/approvals/{rid}").json()
        if got["status"] != "pending" or time.monotonic() > end:
            return got
        time.sleep(0.2)


def test_the_requesters_own_signed_job_is_approved_without_its_approver(chain, vertical_data, tmp_path):
    with chain_node(chain, "bank", tmp_path / "bank", {"bank_2024": _bank_csv(vertical_data)}, role="bank",
                    auto_approve_own_requests=True) as c:
        filed = _own_request(chain, c, "job-own-1")
        got = _status_after(c, filed["id"])
        assert got["status"] == "approved", got
        assert got["decided_by"].startswith("member:bank")


def test_without_the_setting_the_requesters_approver_decides(chain, vertical_data, tmp_path):
    with chain_node(chain, "bank", tmp_path / "bank", {"bank_2024": _bank_csv(vertical_data)}, role="bank") as c:
        filed = _own_request(chain, c, "job-own-2")
        time.sleep(1.0)
        assert c.get(f"/approvals/{filed['id']}").json()["status"] == "pending"
