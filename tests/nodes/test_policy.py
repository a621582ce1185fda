"""Node policy: file + API, versioned, evaluated against jobs."""

from __future__ import annotations

from nodes.app import create_app
from nodes.settings import NodeSettings
from tests.authkit import officer_client


def _job(**kw) -> dict:
    job = {
        "kind": "vertical_train",
        "requester": "bank_a",
        "requester_role": "bank",
        "purpose": "pre-loan credit model for small enterprises",
        "inputs": [{"dataset": "tax_2024", "columns": ["uscc", "vat_paid"]}],
    }
    job.update(kw)
    return job


def test_policy_from_file_then_api(tmp_path):
    pf = tmp_path / "policy.yaml"
    pf.write_text(
        "negative_list: [criminal_record]\nmax_grade: {psi: 3, vertical_train: 2}\nmin_group_size: 20\n"
        "allowed_requesters: [bank_a, bank_b]\nallowed_roles: [bank]\n"
    )
    s = NodeSettings(name="tax", work_dir=tmp_path / "n", policy_file=pf)
    with officer_client(create_app(s)) as c:
        p = c.get("/policy").json()
        assert p["version"] == 1 and p["min_group_size"] == 20 and p["max_grade"] == {"psi": 3, "vertical_train": 2}
        r = c.put("/policy", json={**{k: p[k] for k in ("negative_list", "max_grade", "allowed_requesters")},
                                   "min_group_size": 50, "allowed_roles": ["bank", "regulator"]})
        assert r.status_code == 200 and r.json()["version"] == 2
    # restarting does not overwrite the API's newer policy with the file
    with officer_client(create_app(s)) as c:
        assert c.get("/policy").json()["min_group_size"] == 50


def test_bad_policy_refused(client, tmp_path):
    for bad in ({"min_group_size": 0}, {"max_grade": {"psi": 7}}, {"unknown_key": 1}, {"negative_list": "x"}):
        r = client.put("/policy", json=bad)
        assert r.status_code == 422 and r.json()["error"] == "InvalidRequest", bad
    assert client.get("/policy").json()["version"] == 0
    pf = tmp_path / "bad.yaml"
    pf.write_text("min_group_size: -3\n")
    from nodes.errors import InvalidPolicy
    from nodes.services.policy import load_policy_file

    try:
        load_policy_file(pf)
    except InvalidPolicy as exc:
        assert "min_group_size" in str(exc)
    else:
        raise AssertionError("a negative group size must be refused")


def test_policy_check(client, tax_dataset):
    client.patch("/datasets/tax_2024/schema", json={"columns": [
        {"name": "legal_rep_id", "grade": 4, "category": "personal_id"},
        {"name": "credit_grade", "category": "tax_credit"},
    ]})
    client.put("/policy", json={
        "negative_list": ["personal_id"], "max_grade": {"psi": 3, "vertical_train": 2}, "min_group_size": 20,
        "allowed_requesters": ["bank_a"], "allowed_roles": ["bank"],
    })
    ok = client.post("/policy/check", json=_job(kind="psi")).json()
    assert ok == {"allowed": True, "reasons": []}
    d = client.post("/policy/check", json=_job()).json()  # uscc is grade 3 > 2 for vertical_train
    assert not d["allowed"] and any("uscc has grade 3" in r for r in d["reasons"])
    d = client.post("/policy/check", json=_job(kind="psi", inputs=[{"dataset": "tax_2024", "columns": ["legal_rep_id"]}])).json()
    assert any("negative-list category 'personal_id'" in r for r in d["reasons"])
    assert any("grade 4" in r for r in d["reasons"])
    d = client.post("/policy/check", json=_job(kind="psi", requester="bank_z", requester_role="researcher")).json()
    assert len(d["reasons"]) == 2
    d = client.post("/policy/check", json=_job(kind="secure_stats", aggregate_group_size=5,
                                              inputs=[{"dataset": "tax_2024", "columns": ["vat_paid", "nope"]}])).json()
    assert any("below the minimum 20" in r for r in d["reasons"]) and any("nope does not exist" in r for r in d["reasons"])
    d = client.post("/policy/check", json=_job(kind="psi", inputs=[{"dataset": "ghost", "columns": ["a"]}])).json()
    assert not d["allowed"] and "ghost" in d["reasons"][0]
    r = client.post("/policy/check", json=_job(purpose=""))
    assert r.status_code == 422
