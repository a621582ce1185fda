"""A party that outlives its peers: the coordinator fails the job by name and stops that party.

The parties of one job leave together (the engine's last step is a barrier). A party still running
long after a peer's task ended waits on a party that has left; without this check the job would stay
RUNNING until its timeout (ten minutes by default)."""

from __future__ import annotations

import json
import re
import time

import pytest
from sqlmodel import Session

from coordinator.models import JobState, TaskRecord
from engines.secretflow.coordinator import straggler

from .test_spec import base

S = JobState


def _task(member: str, status: str, stage: str, finished_at: float | None = None) -> TaskRecord:
    detail = {"status": status, "stage": stage, **({"finished_at": finished_at} if finished_at else {})}
    return TaskRecord(job_id="job-x", member=member, status=status, stage=stage, detail_json=json.dumps(detail))


def test_straggler_names_the_late_party_and_how_long_it_outlived_the_first_to_end():
    now = 1_000_000.0
    tasks = [_task("bank", "succeeded", "predict:done", now - 130), _task("tax", "succeeded", "predict:done", now - 128),
             _task("power", "running", "train:start")]
    why = straggler(tasks, 120.0, now=now)
    assert why is not None
    assert why.startswith("power (stage train:start) still running 130s after bank's task ended")
    assert "outlives its peers" in why


@pytest.mark.parametrize("tasks", [
    # nobody ended yet
    [_task("bank", "running", "train:start"), _task("tax", "running", "train:start")],
    # one ended, but within the limit
    [_task("bank", "succeeded", "predict:done", 1_000_000.0 - 119), _task("tax", "running", "predict:start")],
    # everyone ended
    [_task("bank", "succeeded", "predict:done", 1.0), _task("tax", "succeeded", "predict:done", 2.0)],
    # an ended task that did not say when (an older node) is no evidence
    [_task("bank", "succeeded", "predict:done"), _task("tax", "running", "predict:start")],
])
def test_no_straggler(tasks):
    assert straggler(tasks, 120.0, now=1_000_000.0) is None


class _Node:
    """The answers of one node's task API (what the coordinator polls)."""

    def __init__(self, calls: list[tuple[str, str]], member: str, answer: dict) -> None:
        self.calls, self.member, self.answer = calls, member, answer

    def _call(self, method: str, path: str, json: dict | None = None) -> dict:
        """The two calls the engine makes of a running task: GET /tasks/{job} and POST /tasks/{job}/stop."""
        if (method, path.rsplit("/", 1)[-1]) == ("POST", "stop"):
            self.calls.append((self.member, "stop"))
            return {"status": "stopped"}
        assert method == "GET" and path.count("/") == 2, (method, path)
        self.calls.append((self.member, "task"))
        return dict(self.answer)


def _running_job(coord, answers: dict[str, dict]) -> tuple[str, list[tuple[str, str]]]:
    from coordinator.spec import parse_spec

    job = coord.submit(parse_spec(base())).job_id
    for to in (S.PENDING_APPROVAL, S.AUTHORIZED, S.RUNNING):
        coord.lifecycle.transition(job, to)
    with Session(coord.engine) as s:
        j = coord._job(s, job)
        j.cluster_json = json.dumps({"host": "127.0.0.1", "parties": []})
        s.add(j)
        s.commit()
    for t in coord._tasks(job):  # the records submission made: dispatched, now running
        t.status = "running"
        coord._save(t)
    assert sorted(t.member for t in coord._tasks(job)) == sorted(answers)
    calls: list[tuple[str, str]] = []
    coord.node = lambda m: _Node(calls, m, answers[m])
    coord._revoked = lambda j: None  # the authorization is live (no chain in this test)
    return job, calls


def test_the_coordinator_fails_a_job_whose_party_outlives_its_peers_and_stops_it(coord):
    job, calls = _running_job(coord, {
        "bank": {"status": "succeeded", "stage": "predict:done", "finished_at": time.time() - 200},
        "tax": {"status": "running", "stage": "psi:start"},
    })
    assert coord.step(job) == S.FAILED
    j = coord.get_job(job)
    assert j.state == "FAILED"
    assert re.match(r"tax \(stage psi:start\) still running 2\d\ds after bank's task ended", j.reason), j.reason
    assert ("tax", "stop") in calls and ("bank", "stop") not in calls  # only the party still running is stopped


def test_a_peer_that_ended_moments_ago_is_waited_for(coord):
    job, calls = _running_job(coord, {
        "bank": {"status": "succeeded", "stage": "predict:done", "finished_at": time.time() - 5},
        "tax": {"status": "running", "stage": "predict:start"},
    })
    assert coord.step(job) == S.RUNNING
    assert not any(c[1] == "stop" for c in calls)
