"""A job whose parties are done while a node's usage receipt waits in that node's queue (the chain was
down when it was due): the coordinator keeps it RUNNING with the stage "receipt pending" and hands out
no result; it succeeds once the receipt is on chain, and fails only after the authorization's expiry
(when the chain would refuse the receipt). The node's side, on a real anvil: tests/nodes/test_receipt_queue.py."""

from __future__ import annotations

import base64
import json
import time

from sqlmodel import Session

from coordinator.manifest import terms_of
from coordinator.models import JobState

from .test_spec import base

S = JobState


class _Chain:
    """What the coordinator reads of the chain in a running job's last step: the runs per dataset."""

    def __init__(self) -> None:
        self.runs_of: dict[bytes, int] = {}

    def runs(self, job_id: bytes, dataset_id: bytes) -> int:
        return self.runs_of.get(dataset_id, 0)


class _Node:
    def __init__(self, member: str) -> None:
        self.member = member

    def _call(self, method: str, path: str, json: dict | None = None) -> dict:
        if "/outputs/" in path:
            name = path.rsplit("/", 1)[-1]
            return {"name": name, "receiver": "bank", "sm3": "00" * 32,
                    "envelope_b64": base64.b64encode(b"sealed").decode()}
        return {"status": "succeeded", "stage": "done", "finished_at": time.time()}


def _done_job(coord, expiry_in: int = 3600) -> tuple[str, _Chain]:
    from coordinator.spec import parse_spec

    job = coord.submit(parse_spec(base())).job_id
    for to in (S.PENDING_APPROVAL, S.AUTHORIZED, S.RUNNING):
        coord.lifecycle.transition(job, to)
    with Session(coord.engine) as s:
        j = coord._job(s, job)
        manifest = json.loads(j.manifest_json)
        manifest["expiry_unix"] = int(time.time()) + expiry_in
        j.manifest_json = json.dumps(manifest)
        j.terms_json = terms_of(manifest, "0x" + "11" * 20).model_dump_json()
        j.cluster_json = json.dumps({"host": "127.0.0.1", "parties": []})
        s.add(j)
        s.commit()
    for t in coord._tasks(job):
        t.status = "running"
        coord._save(t)
    chain = _Chain()
    coord._chain = chain
    coord.node = _Node
    coord._revoked = lambda j: None
    return job, chain


def test_a_pending_receipt_holds_the_job_until_it_is_on_chain(coord):
    job, chain = _done_job(coord)
    assert coord.step(job) == S.RUNNING
    j = coord.get_job(job)
    assert (j.state, j.stage) == ("RUNNING", "receipt pending")
    assert not j.results_json  # nothing handed out while a receipt is missing
    assert coord.step(job) == S.RUNNING  # still waiting, nothing failed
    assert coord.get_job(job).stage == "receipt pending"
    terms = json.loads(coord.get_job(job).terms_json)
    for d in terms["dataset_ids"]:
        chain.runs_of[bytes.fromhex(d.removeprefix("0x"))] = 1
    assert coord.step(job) == S.SUCCEEDED
    assert json.loads(coord.get_job(job).results_json)


def test_a_receipt_still_missing_at_the_authorizations_expiry_fails_the_job(coord):
    job, _ = _done_job(coord, expiry_in=-1)
    assert coord.step(job) == S.FAILED
    assert "by the authorization's expiry" in coord.get_job(job).reason
