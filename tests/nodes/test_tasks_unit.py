"""Task pieces that need no chain: restart recovery and what engine messages may say."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlmodel import Session

from nodes.app import create_app
from nodes.models import ApprovalRecord, NodeTask
from nodes.secretflow.run import scrub
from tests.authkit import officer_client


def test_restart_fails_running_tasks_and_deletes_their_extracts(settings, anchor):
    with officer_client(create_app(settings, anchor=anchor)) as c:
        engine = c.app.state.ctx.engine
        private = settings.tmp_dir() / "task-left-behind"
        private.mkdir(parents=True, mode=0o700)
        (private / "input.csv").write_text("uscc,vat\n91330106MA2B3C4D5E,1.0\n")
        with Session(engine) as s:
            # a party this node started: its job was approved here (the kind names the engine that recovers it)
            s.add(ApprovalRecord(job_id="job-crash", requester="bank", kind="vertical_train", status="approved",
                                 manifest_hash="00" * 32, expires_at=datetime.now(timezone.utc) + timedelta(hours=1),
                                 manifest_json=json.dumps({"kind": "vertical_train", "requester": "bank", "inputs": []})))
            s.add(NodeTask(job_id="job-crash", status="running", endpoint_json=json.dumps({"name": "tax"}),
                           extract_dir=str(private), pid=2**22 + 1))
            s.add(NodeTask(job_id="job-ready", status="ports", endpoint_json=json.dumps({"name": "tax"})))
            s.commit()
    with officer_client(create_app(settings, anchor=anchor)) as c:  # the node comes back
        t = c.get("/tasks/job-crash").json()
        assert (t["status"], t["error"]) == ("failed", "the node restarted during the task")
        assert not private.exists()
        assert c.get("/tasks/job-ready").json()["status"] == "ports"
        fail = [e for e in c.get("/audit?limit=100").json() if e["action"] == "task.fail"]
        assert [(e["target"], e["detail"]["extract_deleted"]) for e in fail] == [("job-crash", True)]
        assert c.get("/audit/verify").json()["ok"]
        # a stopped "ports" task stays stopped; stopping again is idempotent
        assert c.post("/tasks/job-ready/stop").json() == {"status": "stopped"}
        assert c.post("/tasks/job-ready/stop").json() == {"status": "stopped"}


def test_engine_messages_lose_anything_value_like():
    msg = ("INPUT_INVALID: /x/input.csv: join key 'uscc' has 2 duplicate values, e.g. '91330106MA2B3C4D5E'; "
           "feature column 'tax_vat_paid' is not numeric (123456.78, 330106199001011234)")
    out = scrub(msg)
    assert "91330106MA2B3C4D5E" not in out and "123456.78" not in out and "330106199001011234" not in out
    assert "'uscc'" in out and "'tax_vat_paid'" in out and "INPUT_INVALID" in out and "2 duplicate" in out
