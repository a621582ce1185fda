"""Faults in a real federation (anvil, contracts, the coordinator and three nodes in their own processes,
国密 TLS).

The coordinator killed at every transition of a job: one small ``secure_stats`` job, the
coordinator restarted each time with the next fault-injection point (``DCP_FAULT_EXIT``: just before, or
just after, it commits the move to PENDING_APPROVAL, AUTHORIZED, RUNNING, SUCCEEDED). Every restart
resumes from the stored state; the job ends SUCCEEDED once, each state entered once, one receipt per
dataset on chain (no run recorded twice), and the bank's result is right."""

from __future__ import annotations

import json
import os
import random
import signal

import numpy as np
import pandas as pd
import psutil
import pytest

from common.ids import random_uscc
from coordinator.errors import FederationError
from coordinator.lifecycle import FAULT_ENV, FAULT_EXIT_CODE
from federation.launcher import read_state, respawn
from nodes.services.chain import dataset_chain_id
from protocols.crypto.approvals import job_key

from .fedkit import DiagnosingClient, chain, started

POINTS = [f"{when}:{state}" for state in ("PENDING_APPROVAL", "AUTHORIZED", "RUNNING", "SUCCEEDED")
          for when in ("before", "after")]
GRADES = {"secure_stats": 3}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultfed")
    (root / "data").mkdir()
    r = random.Random(9)
    members = [{"name": "bank", "role": "bank", "datasets": [], "policy": {"max_grade": GRADES}}]
    values = {}
    for name, n in (("tax", 30), ("power", 24)):
        frame = pd.DataFrame({"uscc": [random_uscc(r) for _ in range(n)], "employees": np.arange(10, 10 + n)})
        frame.to_csv(root / "data" / f"{name}.csv", index=False)
        values[name] = frame["employees"].to_numpy()
        members.append({"name": name, "role": "department", "policy": {"max_grade": GRADES, "min_group_size": 5},
                        "datasets": [{"name": f"{name}_stats", "file": str(root / "data" / f"{name}.csv"),
                                      "key_column": "uscc"}]})
    with started(root, members, {"node_timeout_s": 6.0, "poll_interval_s": 0.2}) as state:
        yield {"state": state, "root": root, "values": values,
               "client": DiagnosingClient(state.coordinator_url, root, state=state)}


def _spec(a: str = "tax", b: str = "power") -> dict:
    return {"kind": "secure_stats", "requester": "bank", "purpose": f"employment of SME borrowers ({a}, {b})",
            "inputs": [{"member": a, "dataset": f"{a}_stats", "columns": ["employees"]},
                       {"member": b, "dataset": f"{b}_stats", "columns": ["employees"]}],
            "he": {"statistics": ["count", "sum"], "min_group_size": 5}, "expires_in_s": 900}


def _coordinator(state, point: str | None) -> psutil.Process | None:
    """Kill the running coordinator (if any) and start it again with fault point ``point``; None when it
    reached that point (and ended) before it answered its first health check."""
    pid = read_state(state.work_dir).pids.get("coordinator")
    if pid is not None and psutil.pid_exists(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if point is None:
        os.environ.pop(FAULT_ENV, None)
    else:
        os.environ[FAULT_ENV] = point
    try:
        return psutil.Process(respawn(state.work_dir, "coordinator"))
    except FederationError as exc:
        if f"exited with {FAULT_EXIT_CODE}" in str(exc):
            return None
        raise
    finally:
        os.environ.pop(FAULT_ENV, None)


def _died(proc: psutil.Process | None, timeout: float = 120.0) -> bool:
    if proc is None:
        return True
    try:
        return proc.wait(timeout) == FAULT_EXIT_CODE
    except psutil.TimeoutExpired:
        return False


def test_coordinator_killed_at_every_transition_recovers(fed):
    # the coordinator it restarts last serves the module's federation on (the federation's own teardown
    # checks that nothing of it is left running)
    st, c = fed["state"], fed["client"]
    proc = _coordinator(st, POINTS[0])
    job = c.submit(_spec())
    approved = False
    for i, point in enumerate(POINTS):
        if point.endswith("AUTHORIZED") and not approved:  # the requests are in the inboxes by now
            for member in ("tax", "power"):
                assert c.approve(job, member, st.nodes[member])["status"] == "approved"
            approved = True
        assert _died(proc), f"the coordinator did not stop at {point} (job {c.status(job).state.value})"
        nxt = POINTS[i + 1] if i + 1 < len(POINTS) else None
        proc = _coordinator(st, nxt)
    final = c.wait(job, timeout=120)
    assert final.state.value == "SUCCEEDED", final.reason
    assert [e["to"] for e in final.events] == ["SUBMITTED", "PENDING_APPROVAL", "AUTHORIZED", "RUNNING", "SUCCEEDED"]
    ch = chain(fed)
    for member in ("tax", "power"):
        assert ch.runs(job_key(job), dataset_chain_id(member, f"{member}_stats")) == 1
    got = json.loads(fed["client"].result(job, "stats", st.keys_dir / "bank.keystore.json", st.passphrase_of("bank")))
    everyone = np.concatenate([fed["values"]["tax"], fed["values"]["power"]])
    assert got["count"] == len(everyone) and got["sum"] == pytest.approx(everyone.sum(), abs=1e-3)

