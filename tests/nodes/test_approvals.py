"""The approvals inbox: readable manifests, policy on submit and on approve, SM2+BLS signatures over
the chain's approval digest of the job's terms (per_owner and bls_aggregate modes)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import csv_bytes, upload

from nodes.app import create_app
from nodes.settings import NodeSettings
from protocols.crypto.approvals import manifest_hash, verify_approval
from protocols.crypto.keystore import create_keystore
from tests.authkit import officer_client, secret_file


@pytest.fixture
def keyed(tmp_path, tax_frame):
    path, keys = create_keystore(tmp_path / "keys", "tax", "correct horse", scrypt_n=2**10)
    s = NodeSettings(name="tax", work_dir=tmp_path / "node", keystore_path=path,
                     keystore_passphrase_file=secret_file(tmp_path / "pass", "correct horse"),
                     require_signed_requests=False)
    with officer_client(create_app(s)) as c:
        assert upload(c, "tax_2024", csv_bytes(tax_frame), key_column="uscc").status_code == 201
        c.put("/policy", json={"max_grade": {"psi": 3}, "default_max_grade": 2, "allowed_roles": ["bank"],
                               "negative_list": ["personal_id"]})
        yield c, keys


def _req(**kw) -> dict:
    r = {
        "job_id": "job-0001",
        "kind": "psi",
        "protocol": "secretflow/psi-rr22",
        "requester": "bank_a",
        "requester_role": "bank",
        "purpose": "find shared small-enterprise customers for pre-loan credit",
        "inputs": [{"dataset": "tax_2024", "columns": ["uscc"]}],
        "receivers": {"intersection": ["bank_a"]},
        "expiry": (datetime.now(timezone.utc) + timedelta(days=2)).isoformat(),
        "max_runs": 1,
    }
    r.update(kw)
    return r


def test_inbox_shows_the_request_and_an_unwired_node_cannot_approve(keyed):
    c, _ = keyed
    r = c.post("/approvals", json=_req())
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["status"] == "pending"
    assert "Uses dataset tax_2024: uscc (uscc, grade 3)." in item["summary"], item["summary"]
    assert "Output 'intersection' goes to: bank_a." in item["summary"]
    assert any("Purpose: find shared" in line for line in item["summary"])
    assert item["manifest_hash"] == manifest_hash(item["manifest"]).hex()
    assert [i["job_id"] for i in c.get("/approvals?status=pending").json()] == ["job-0001"]
    # an approval signs the job's chain terms: a node without a chain cannot approve, and loses nothing
    r = c.post(f"/approvals/{item['id']}/approve")
    assert (r.status_code, r.json()["error"]) == (503, "ChainUnavailable"), r.text
    assert c.get(f"/approvals/{item['id']}").json()["status"] == "pending"
    # it can still reject
    r = c.post(f"/approvals/{item['id']}/reject", json={"reason": "not this quarter"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    # decided requests cannot be decided again
    r = c.post(f"/approvals/{item['id']}/reject", json={"reason": "changed my mind"})
    assert r.status_code == 409 and r.json()["error"] == "ApprovalNotPending"
    actions = [e["action"] for e in c.get("/audit?limit=1000").json() if e["outcome"] == "ok"]
    assert actions[-2:] == ["approval.request", "approval.reject"]


@pytest.mark.parametrize("mode", ["per_owner", "bls_aggregate"])
def test_approve_signs_the_chain_digest_of_the_terms(chain, vertical_data, tmp_path, mode):
    """The node signs (SM2 + BLS) exactly the digest the contract computes for the job's terms; in
    per_owner mode it also approves on chain, in bls_aggregate mode it sends nothing."""
    from conftest import TAX_FEATURES, chain_node, vertical_spec

    from coordinator.manifest import node_request
    from protocols.crypto.approvals import Approval
    from protocols.crypto.errors import InvalidSignature
    from protocols.manifest import dataset_chain_id

    tax_csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path
    job = f"job-sign-{mode}"
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": tax_csv.read_bytes()}) as c:
        manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
        chain.board.jobs[job]["authorization_mode"] = mode
        item = c.post("/approvals", json=node_request(manifest, "tax")).json()
        r = c.post(f"/approvals/{item['id']}/approve")
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "approved" and done["decided_by"] == "officer:alice@tax via member:coordinator"
        approval = Approval.model_validate(done["approval"])
        digest = chain.admin.approval_digest(terms)
        assert approval.digest == digest.hex() == chain.admin.authorizations.functions.approvalDigest(
            terms.as_tuple()).call().hex()
        tax = chain.members["tax"][1]
        verify_approval(approval, job_id=job, manifest_hash=terms.manifest_hash, digest=digest, signer=tax.public)
        # the signature is worthless for other terms (one more run)
        other = chain.admin.approval_digest(terms.model_copy(update={"max_runs": terms.max_runs + 1}))
        with pytest.raises(InvalidSignature):
            verify_approval(approval.model_copy(update={"digest": other.hex()}), job_id=job,
                            manifest_hash=terms.manifest_hash, digest=other, signer=tax.public)
        on_chain = chain.admin.authorizations.functions.approvalOf(digest, dataset_chain_id("tax", "tax_2024")).call()
        entry = [e for e in c.get("/audit?limit=1000").json() if e["action"] == "approval.approve"][-1]
        assert entry["detail"]["mode"] == mode and entry["detail"]["digest"] == digest.hex()
        if mode == "per_owner":
            assert done["chain_ref"].startswith("0x") and on_chain == tax.public.chain_address
        else:
            assert done["chain_ref"] is None and on_chain == "0x" + "0" * 40


def test_unknown_authorization_mode_is_refused(chain, vertical_data, tmp_path):
    from conftest import TAX_FEATURES, chain_node, vertical_spec

    from coordinator.manifest import node_request

    tax_csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": tax_csv.read_bytes()}) as c:
        manifest, _ = chain.publish(vertical_spec(TAX_FEATURES[:2]), "job-mode")
        chain.board.jobs["job-mode"]["authorization_mode"] = "trust_me"
        item = c.post("/approvals", json=node_request(manifest, "tax")).json()
        r = c.post(f"/approvals/{item['id']}/approve")
        assert (r.status_code, r.json()["error"]) == (409, "ApprovalTermsMismatch")
        assert c.get(f"/approvals/{item['id']}").json()["status"] == "pending"


def test_reject_records_reason(keyed):
    c, _ = keyed
    item = c.post("/approvals", json=_req(job_id="job-2")).json()
    assert c.post(f"/approvals/{item['id']}/reject", json={"reason": ""}).status_code == 422
    r = c.post(f"/approvals/{item['id']}/reject", json={"reason": "purpose too broad"})
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["reason"] == "purpose too broad"
    last = c.get("/audit?limit=1000").json()[-1]
    assert last["action"] == "approval.reject" and last["detail"]["reason"] == "purpose too broad"


def test_refusals(keyed):
    c, _ = keyed
    cases = [
        (_req(job_id="a", manifest_hash="00" * 32), 422, "ManifestMismatch"),
        (_req(job_id="b", expiry=(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()), 410, "RequestExpired"),
        (_req(job_id="c", kind="vertical_train"), 403, "PolicyViolation"),  # uscc grade 3 > 2
        (_req(job_id="d", requester_role="researcher"), 403, "PolicyViolation"),
        (_req(job_id="e", inputs=[{"dataset": "tax_2024", "columns": ["no_such"]}]), 403, "PolicyViolation"),
    ]
    for body, status, err in cases:
        r = c.post("/approvals", json=body)
        assert (r.status_code, r.json()["error"]) == (status, err), r.text
    assert c.get("/approvals").json() == []
    ok = c.post("/approvals", json=_req(job_id="f")).json()
    assert c.post("/approvals", json=_req(job_id="f")).json()["error"] == "ApprovalExists"
    # the policy changes after the request came in: approval re-checks and refuses
    c.patch("/datasets/tax_2024/schema", json={"columns": [{"name": "uscc", "category": "personal_id"}]})
    r = c.post(f"/approvals/{ok['id']}/approve")
    assert r.status_code == 403 and "negative-list" in r.json()["detail"]
    assert c.get(f"/approvals/{ok['id']}").json()["status"] == "pending"
    assert c.get("/approvals/999").status_code == 404
    refused = [e for e in c.get("/audit?limit=1000").json() if e["outcome"] == "refused"]
    assert len(refused) == len(cases) + 3


def test_expired_requests_cannot_be_approved(keyed):
    c, _ = keyed
    item = c.post("/approvals", json=_req(job_id="soon", expiry=(datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat())).json()
    import time

    time.sleep(1.2)
    r = c.post(f"/approvals/{item['id']}/approve")
    assert r.status_code == 410 and r.json()["error"] == "RequestExpired"
    assert c.get(f"/approvals/{item['id']}").json()["status"] == "expired"


def test_approve_without_keystore_is_named_error(client, tax_dataset):
    client.put("/policy", json={"max_grade": {"psi": 3}, "allowed_roles": ["bank"]})
    item = client.post("/approvals", json=_req()).json()
    r = client.post(f"/approvals/{item['id']}/approve")
    assert r.status_code == 503 and r.json()["error"] == "KeysUnavailable"
    assert client.get(f"/approvals/{item['id']}").json()["status"] == "pending"


def test_wrong_passphrase_is_keys_unavailable(tmp_path, tax_frame):
    path, _ = create_keystore(tmp_path / "k", "tax", "right", scrypt_n=2**10)
    s = NodeSettings(name="tax", work_dir=tmp_path / "n", keystore_path=path,
                     keystore_passphrase_file=secret_file(tmp_path / "pass", "wrong"),
                     require_signed_requests=False)
    with officer_client(create_app(s)) as c:
        upload(c, "tax_2024", csv_bytes(tax_frame))
        c.put("/policy", json={"max_grade": {"psi": 3}, "allowed_roles": ["bank"]})
        item = c.post("/approvals", json=_req()).json()
        r = c.post(f"/approvals/{item['id']}/approve")
        assert r.status_code == 503 and "WrongPassphrase" in r.json()["detail"]


def test_the_inbox_api_pages_and_finds_one_job(keyed):
    """``GET /approvals?limit&offset&order&job_id``: one page and its total (``X-Total-Count``), one
    job's request by its id — what the coordinator's poll asks (``NodeClient.find_approval``)."""
    from coordinator.nodeclient import NodeClient

    c, _ = keyed
    jobs = [f"job-{i:04d}" for i in range(1, 8)]
    for job in jobs:
        assert c.post("/approvals", json=_req(job_id=job)).status_code == 201
    rid = c.get("/approvals", params={"job_id": jobs[3]}).json()[0]["id"]
    assert c.post(f"/approvals/{rid}/reject", json={"reason": "not this one"}).status_code == 200
    r = c.get("/approvals", params={"limit": 3, "order": "newest"})
    assert r.headers["X-Total-Count"] == "7" and [i["job_id"] for i in r.json()] == jobs[::-1][:3]
    r = c.get("/approvals", params={"limit": 3, "offset": 6, "order": "newest"})
    assert [i["job_id"] for i in r.json()] == [jobs[0]]
    r = c.get("/approvals", params={"limit": 3, "offset": 70})
    assert r.json() == [] and r.headers["X-Total-Count"] == "7"
    r = c.get("/approvals", params={"status": "pending", "limit": 2})
    assert r.headers["X-Total-Count"] == "6" and [i["job_id"] for i in r.json()] == jobs[:2]
    r = c.get("/approvals", params={"job_id": jobs[3]})
    assert [(i["job_id"], i["status"], i["reason"]) for i in r.json()] == [(jobs[3], "rejected", "not this one")]
    assert c.get("/approvals", params={"job_id": "job-none"}).json() == []
    assert [i["job_id"] for i in c.get("/approvals").json()] == jobs  # no limit: every request, oldest first
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"order": "any"}, {"job_id": ""}):
        assert c.get("/approvals", params=bad).status_code == 422, bad
    node = NodeClient("tax", "http://testserver")
    node._http = c  # the coordinator's client over this node's API
    assert node.find_approval(jobs[5])["job_id"] == jobs[5] and node.find_approval("job-none") is None
