"""Faults and load in a real federation (anvil, contracts, the coordinator and five nodes — the bank
and four departments — in their own processes, 国密 TLS), one federation for the module.

The coordinator killed at every transition of a job: one small ``secure_stats`` job, the
coordinator restarted each time with the next fault-injection point (``DCP_FAULT_EXIT``: just before, or
just after, it commits the move to PENDING_APPROVAL, AUTHORIZED, RUNNING, SUCCEEDED). Every restart
resumes from the stored state; the job ends SUCCEEDED once, each state entered once, one receipt per
dataset on chain (no run recorded twice), and the bank's result is right.

Load (#18.5): twenty small ``secure_stats`` jobs submitted at once over pairs of the four departments
all end SUCCEEDED with every receipt on chain (one run per job and dataset); while they wait for their
approvals, 100 concurrent readers of a department's approvals inbox all get a 200 listing exactly the
requests filed there. (This load found two faults: the pure-Python BLS check of ≈ 2.5 s a job under load
held the burst in PENDING_APPROVAL, and the receipt path's doubled gas price ran the accounts dry.)"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor

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
WARM = "DCP_NODE_WARM_ENGINE"


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultfed")
    (root / "data").mkdir()
    r = random.Random(9)
    members = [{"name": "bank", "role": "bank", "datasets": [], "policy": {"max_grade": GRADES}}]
    values = {}
    for name, n in (("tax", 30), ("power", 24), ("social", 20), ("court", 16)):
        frame = pd.DataFrame({"uscc": [random_uscc(r) for _ in range(n)], "employees": np.arange(10, 10 + n)})
        frame.to_csv(root / "data" / f"{name}.csv", index=False)
        values[name] = frame["employees"].to_numpy()
        members.append({"name": name, "role": "department", "policy": {"max_grade": GRADES, "min_group_size": 5},
                        "datasets": [{"name": f"{name}_stats", "file": str(root / "data" / f"{name}.csv"),
                                      "key_column": "uscc"}]})
    before = os.environ.get(WARM)
    os.environ[WARM] = "0"  # secure_stats runs no SecretFlow party: five warm ones would only load the machine
    try:
        t0 = time.monotonic()
        with started(root, members, {"node_timeout_s": 30.0, "poll_interval_s": 0.2}) as state:
            print(f"five-member federation up in {time.monotonic() - t0:.1f} s")
            yield {"state": state, "root": root, "values": values,
                   "client": DiagnosingClient(state.coordinator_url, root, state=state)}
    finally:
        if before is None:
            os.environ.pop(WARM, None)
        else:
            os.environ[WARM] = before


def _spec(a: str = "tax", b: str = "power", batch: int | None = None) -> dict:
    what = f"batch {batch}, " if batch is not None else ""
    return {"kind": "secure_stats", "requester": "bank", "purpose": f"employment of SME borrowers ({what}{a}, {b})",
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


PAIRS = [("tax", "power"), ("social", "court"), ("tax", "social"), ("power", "court"), ("tax", "court"),
         ("power", "social")]


def test_twenty_jobs_at_once_and_a_hundred_inbox_readers(fed, no_leaked_processes):
    from federation.launcher import client_for, officer_token

    st, c = fed["state"], fed["client"]
    pairs = [PAIRS[i % len(PAIRS)] for i in range(20)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        jobs = list(pool.map(lambda ip: c.submit(_spec(*ip[1], batch=ip[0])), enumerate(pairs)))
    assert len(set(jobs)) == 20
    submitted = time.monotonic()

    # tax's inbox, once the coordinator has filed every request of tax's jobs there
    at_tax = {j for j, p in zip(jobs, pairs, strict=True) if "tax" in p}
    url = f"{st.nodes['tax']}/approvals"
    with client_for(st, "tax", headers={"Authorization": f"Bearer {officer_token(st, 'tax', 'approver')}"},
                    timeout=300) as inbox:
        deadline = time.monotonic() + 90
        filed: set[str] = set()
        while time.monotonic() < deadline:
            filed = {a["job_id"] for a in inbox.get(url, params={"status": "pending"}).json()}
            if filed >= at_tax:
                break
            time.sleep(0.5)
        assert filed == at_tax, f"tax's inbox has {len(filed)} of its {len(at_tax)} requests"

        def read(_: int) -> tuple[int, set[str]]:
            r = inbox.get(url, params={"status": "pending"})
            return r.status_code, ({a["job_id"] for a in r.json()} if r.status_code == 200 else set())

        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(read, range(100)))
    read_s = time.monotonic()
    assert [code for code, _ in answers] == [200] * 100
    assert all(got == at_tax for _, got in answers), "an inbox reader got other requests than those filed"

    with ThreadPoolExecutor(8) as pool:
        decided = list(pool.map(lambda jm: c.approve(jm[0], jm[1], st.nodes[jm[1]])["status"],
                                [(j, m) for j, p in zip(jobs, pairs, strict=True) for m in p]))
    assert decided == ["approved"] * 40
    approved = time.monotonic()
    finals = [c.wait(j, timeout=600) for j in jobs]
    assert [f.state.value for f in finals] == ["SUCCEEDED"] * 20, [f.reason for f in finals]
    done = time.monotonic()

    ch = chain(fed)
    missing = [(j, m) for j, p in zip(jobs, pairs, strict=True) for m in p
               if ch.runs(job_key(j), dataset_chain_id(m, f"{m}_stats")) != 1]
    assert not missing, f"receipts not on chain (exactly once) for {missing}"
    print(f"20 jobs: submitted {submitted - t0:.1f} s, inbox filled + 100 readers {read_s - submitted:.1f} s, "
          f"40 approvals {approved - read_s:.1f} s, all SUCCEEDED {done - approved:.1f} s")
