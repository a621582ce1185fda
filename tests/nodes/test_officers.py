"""Officers: accounts made with ``dcp node user``, scrypt passwords, short-lived revocable sessions,
approvals as an approver's act, and four-eyes policy and grade changes."""

from __future__ import annotations

import time

import pytest
from conftest import csv_bytes, upload
from typer.testing import CliRunner

from dcp.cli import build_app
from nodes.app import create_app
from nodes.services.officers import check_password, hash_password
from nodes.settings import NodeSettings
from tests.authkit import TEST_SCRYPT_N, AsPeer, OfficerClient, bearer, peer_entries, secret_file


def test_password_hash_is_scrypt_with_stated_parameters():
    h = hash_password("a long passphrase", n=2**14)
    algo, n, r, p, salt, key = h.split("$")
    assert (algo, n, r, p) == ("scrypt", "16384", "8", "1") and len(key) == 44  # 32 bytes, base64
    assert check_password("a long passphrase", h) and not check_password("a long passphrasE", h)
    assert hash_password("a long passphrase", n=2**14) != h  # salted


@pytest.fixture
def node_cfg(tmp_path):
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"name: tax\nwork_dir: {tmp_path / 'work'}\nofficer_scrypt_n: {TEST_SCRYPT_N}\n"
                   "peers:\n" + "".join(f"  - {{name: {p['name']}, role: {p['role']}, sm2_public_key: "
                                        f"'{p['sm2_public_key']}'}}\n" for p in peer_entries()))
    return cfg


def _cli(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(build_app(), list(args))
    return out.exit_code, out.output


def test_user_commands_and_sessions(node_cfg, tmp_path):
    pw = secret_file(tmp_path / "pw", "approver password 1")
    assert _cli("node", "user", "add", "li", "-r", "approver", "-c", str(node_cfg), "--password-file", str(pw))[0] == 0
    pw2 = secret_file(tmp_path / "pw2", "steward password 22")
    assert _cli("node", "user", "add", "wang", "-r", "steward", "-r", "auditor", "-c", str(node_cfg),
                "--password-file", str(pw2))[0] == 0
    code, out = _cli("node", "user", "add", "li", "-r", "approver", "-c", str(node_cfg), "--password-file", str(pw))
    assert code == 1 and "OfficerExists" in out
    code, out = _cli("node", "user", "add", "zhao", "-r", "boss", "-c", str(node_cfg), "--password-file", str(pw))
    assert code == 1 and "OfficerError" in out
    (tmp_path / "pw").chmod(0o644)  # a password file others may read is refused
    code, out = _cli("node", "user", "add", "zhao", "-r", "admin", "-c", str(node_cfg), "--password-file", str(pw))
    assert code == 2 and "readable by others" in out
    code, out = _cli("node", "user", "list", "-c", str(node_cfg))
    assert code == 0 and [line.split("\t")[:3] for line in out.strip().splitlines()] == [
        ["li", "approver", "active"], ["wang", "auditor,steward", "active"]]
    from nodes.settings import load_node_settings

    s = load_node_settings(node_cfg)
    with OfficerClient(AsPeer(create_app(s), "coordinator")) as c:
        r = c.post("/officers/login", json={"name": "li", "password": "wrong password"})
        assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
        r = c.post("/officers/login", json={"name": "nobody", "password": "approver password 1"})
        assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
        li = c.post("/officers/login", json={"name": "li", "password": "approver password 1"}).json()
        assert li["roles"] == ["approver"]
        assert c.get("/officers/me", headers=bearer(li["token"])).json() == {"name": "li", "roles": ["approver"],
                                                                             "node": "tax"}
        # an approver is no auditor
        r = c.get("/audit", headers=bearer(li["token"]))
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
        # a tampered token (another officer's name in the payload) is refused
        head, payload, mac = li["token"].split(".")
        import base64
        import json

        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["off"] = "wang"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        r = c.get("/officers/me", headers=bearer(f"{head}.{forged}.{mac}"))
        assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
        # logout ends the session
        assert c.post("/officers/logout", headers=bearer(li["token"])).status_code == 204
        assert c.get("/officers/me", headers=bearer(li["token"])).status_code == 401
        # a new password ends every session; disabling too
        wang = c.post("/officers/login", json={"name": "wang", "password": "steward password 22"}).json()
        assert c.get("/officers/me", headers=bearer(wang["token"])).status_code == 200
        pw3 = secret_file(tmp_path / "pw3", "a brand new password")
        assert _cli("node", "user", "passwd", "wang", "-c", str(node_cfg), "--password-file", str(pw3))[0] == 0
        assert c.get("/officers/me", headers=bearer(wang["token"])).status_code == 401
        wang = c.post("/officers/login", json={"name": "wang", "password": "a brand new password"}).json()
        assert _cli("node", "user", "disable", "wang", "-c", str(node_cfg))[0] == 0
        assert c.get("/officers/me", headers=bearer(wang["token"])).status_code == 401
        r = c.post("/officers/login", json={"name": "wang", "password": "a brand new password"})
        assert r.status_code == 401
        actions = [(e.actor, e.action, e.outcome) for e in c.app.state.ctx.audit.entries(0, 100)]
        assert ("officer:li@tax", "officer.login", "ok") in actions
        assert ("member:coordinator", "GET /audit", "refused") not in actions  # it was li, not the member
        assert ("officer:li@tax via member:coordinator", "GET /audit", "refused") in actions


def test_sessions_expire(tmp_path):
    s = NodeSettings(name="tax", work_dir=tmp_path / "n", peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N,
                     session_ttl_s=1)
    app = create_app(s)
    with OfficerClient(AsPeer(app, "coordinator")) as c:
        app.state.ctx.officers.add("li", ["approver"], "approver password 1")
        tok = c.post("/officers/login", json={"name": "li", "password": "approver password 1"}).json()["token"]
        assert c.get("/officers/me", headers=bearer(tok)).status_code == 200
        time.sleep(1.5)
        r = c.get("/officers/me", headers=bearer(tok))
        assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_four_eyes_policy_and_grades(client, tax_dataset):
    """The first steward proposes, a different one confirms; the proposer cannot confirm alone."""
    bob = client.tokens["bob"]
    before = client.get("/policy").json()["version"]
    client.confirmer = None  # no automatic second officer in this test
    r = client.put("/policy", json={"min_group_size": 3})
    assert r.status_code == 202 and r.json()["status"] == "pending" and r.json()["proposed_by"] == "alice"
    pid = r.json()["id"]
    assert client.get("/policy").json()["version"] == before  # nothing applied yet
    r = client.post(f"/proposals/{pid}/confirm")  # alice again
    assert (r.status_code, r.json()["error"]) == (403, "FourEyesViolation")
    assert client.get("/policy").json()["version"] == before
    assert [p["id"] for p in client.get("/proposals?status=pending").json()] == [pid]
    r = client.post(f"/proposals/{pid}/confirm", headers=bearer(bob))
    assert r.status_code == 200 and r.json()["min_group_size"] == 3 and r.json()["version"] == before + 1
    assert client.get(f"/proposals/{pid}").json()["status"] == "confirmed"
    r = client.post(f"/proposals/{pid}/confirm", headers=bearer(bob))
    assert (r.status_code, r.json()["error"]) == (409, "ProposalNotPending")
    # grades: same rule
    r = client.patch("/datasets/tax_2024/schema", json={"columns": [{"name": "vat_paid", "grade": 1}]})
    assert r.status_code == 202
    grade = {c["name"]: c["grade"] for c in client.get("/datasets/tax_2024").json()["columns"]}["vat_paid"]
    assert grade != 1
    r = client.post(f"/proposals/{r.json()['id']}/confirm", headers=bearer(bob))
    assert r.status_code == 200
    assert {c["name"]: c["grade"] for c in r.json()["columns"]}["vat_paid"] == 1
    log = [(e["actor"], e["action"]) for e in client.get("/audit?limit=1000").json() if e["outcome"] == "ok"]
    assert ("officer:alice@tax confirmed by officer:bob@tax via member:coordinator", "policy.set") in log


def test_proposals_expire(tmp_path):
    s = NodeSettings(name="tax", work_dir=tmp_path / "n", peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N,
                     proposal_ttl_s=0.5)
    from tests.authkit import officer_client

    with officer_client(create_app(s), four_eyes=False) as c:
        pid = c.put("/policy", json={"min_group_size": 3}).json()["id"]
        time.sleep(0.8)
        r = c.post(f"/proposals/{pid}/confirm", headers=bearer(c.tokens["bob"]))
        assert (r.status_code, r.json()["error"]) == (409, "ProposalNotPending")
        assert c.get(f"/proposals/{pid}").json()["status"] == "expired"
        assert c.get("/policy").json()["version"] == 0


def test_tax_officer_cannot_act_on_power_node(tmp_path, tax_frame):
    """A session token of tax's node is worthless at power's node (another secret, another officer table)."""
    from tests.authkit import officer_client

    mk = lambda n: NodeSettings(name=n, work_dir=tmp_path / n, peers=peer_entries(),  # noqa: E731
                                officer_scrypt_n=TEST_SCRYPT_N)
    with officer_client(create_app(mk("tax"))) as tax, officer_client(create_app(mk("power"))) as power:
        assert upload(power, "power_2024", csv_bytes(tax_frame), key_column="uscc").status_code == 201
        before = power.get("/datasets").json()
        tax_token = tax.tokens["alice"]  # an officer "alice" exists on both nodes; the token is tax's
        r = power.delete("/datasets/power_2024", headers=bearer(tax_token))
        assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
        r = power.put("/policy", json={"min_group_size": 1}, headers=bearer(tax_token))
        assert r.status_code == 401
        assert power.get("/datasets").json() == before and power.get("/policy").json()["version"] == 0


def test_reading_proposals_does_not_wait_for_the_writer(tmp_path):
    """``OfficerService.proposals`` is a read: while another thread holds the node's writer lock, the
    queue still lists at once; an overdue proposal is marked expired (then the lock is needed)."""
    import threading

    from nodes.services.officers import OfficerIdentity

    s = NodeSettings(name="tax", work_dir=tmp_path / "n", peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N,
                     proposal_ttl_s=600)
    ctx = create_app(s).state.ctx
    svc = ctx.officers
    who = OfficerIdentity(name="zhang", roles=["steward"], node="tax", session="t")
    first = svc.propose("policy", "policy", {"min_group_size": 3}, who)
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with svc._write_lock:
            held.set()
            release.wait(30)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        assert held.wait(10)
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(svc.proposals("pending")), daemon=True)
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "proposals() waited for the writer lock"
        assert [p.id for p in got[0]] == [first.id]  # type: ignore[union-attr]
    finally:
        release.set()
        t.join(10)
    svc.proposal_ttl_s = 0.2
    late = svc.propose("policy", "policy", {"min_group_size": 4}, who)
    time.sleep(0.4)
    assert [(p.id, p.status) for p in svc.proposals()] == [(first.id, "pending"), (late.id, "expired")]
    assert [p.id for p in svc.proposals("pending")] == [first.id]
