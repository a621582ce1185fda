"""Hostile peers against the coordinator: no job in a member's name, no withdrawal by another member,
no replay — each refused with a named error and the job table unchanged."""

from __future__ import annotations

from protocols.signed_request import sign_request
from tests.authkit import member_key
from tests.coordinator.test_spec import base


def signed(spec: dict, member: str = "bank", action: str = "submit") -> dict:
    return {"request": sign_request(member_key(member).private_key, member, spec, action=action).model_dump()}


def jobs(coord) -> list[tuple[str, str, str]]:
    return [(j.job_id, j.requester, j.state) for j in coord.list_jobs(None, None)]


def test_outsider_post_jobs_as_bank(coord, coord_client):
    before = jobs(coord)
    r = coord_client.post("/jobs", json=base(), headers={"x-test-peer": "none"})
    assert (r.status_code, r.json()["error"]) == (401, "NotAuthenticated")
    r = coord_client.post("/jobs", json=signed(base(), "outsider"), headers={"x-test-peer": "outsider"})
    assert (r.status_code, r.json()["error"]) == (403, "UnknownMember")
    assert jobs(coord) == before == []


def test_member_cannot_submit_in_another_members_name(coord, coord_client):
    before = jobs(coord)
    # tax signs its own request for a spec naming bank as requester
    r = coord_client.post("/jobs", json=signed(base(), "tax"), headers={"x-test-peer": "tax"})
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    # tax relays bank's genuine signed request
    r = coord_client.post("/jobs", json=signed(base(), "bank"), headers={"x-test-peer": "tax"})
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    # the bank itself, unsigned
    r = coord_client.post("/jobs", json=base())
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    assert jobs(coord) == before == []


def test_tampered_and_replayed_job_request(coord, coord_client):
    good = signed(base())
    tampered = {"request": {**good["request"], "spec": {**good["request"]["spec"], "purpose": "something else"}}}
    r = coord_client.post("/jobs", json=tampered)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    assert jobs(coord) == []
    r = coord_client.post("/jobs", json=good)
    assert r.status_code == 201, r.text
    before = jobs(coord)
    r = coord_client.post("/jobs", json=good)
    assert (r.status_code, r.json()["error"]) == (409, "ReplayedRequest")
    assert jobs(coord) == before and len(before) == 1


def test_revoke_in_someone_elses_name(coord, coord_client):
    job = coord_client.post("/jobs", json=signed(base())).json()["job_id"]
    before = jobs(coord)
    # the old attack: {"by": "bank"} from anyone
    r = coord_client.post(f"/jobs/{job}/revoke", json={"by": "bank"}, headers={"x-test-peer": "tax"})
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    # tax signing a withdrawal of bank's job
    r = coord_client.post(f"/jobs/{job}/revoke", json=signed({"job_id": job, "reason": "x"}, "tax", "revoke"),
                          headers={"x-test-peer": "tax"})
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    # the bank's signed withdrawal of *another* job replayed against this one
    other = signed({"job_id": "job-other", "reason": "x"}, "bank", "revoke")
    r = coord_client.post(f"/jobs/{job}/revoke", json=other)
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    # a submit signature is not a withdrawal
    r = coord_client.post(f"/jobs/{job}/revoke", json=signed({"job_id": job, "reason": "x"}, "bank", "submit"))
    assert (r.status_code, r.json()["error"]) == (403, "UnsignedRequest")
    assert jobs(coord) == before and before[0][2] == "SUBMITTED"


def test_fifty_megabyte_body_and_huge_ids(coord, coord_client):
    big = b'{"spec_yaml": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    r = coord_client.post("/jobs", content=big, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (413, "BodyTooLarge")
    for path in ("/jobs/99999999999999999999999", "/jobs/" + "j" * 5000, "/catalog?max_grade=99999999999999999999"):
        r = coord_client.get(path)
        assert r.status_code in (404, 422) and r.json()["error"] in ("JobNotFound", "InvalidRequest"), path[:40]
    assert jobs(coord) == []
    assert coord_client.get("/docs").status_code == 404 and coord_client.get("/openapi.json").status_code == 404
