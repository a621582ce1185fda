"""Real SecretFlow parties started by chain-wired nodes: a two-node run that succeeds (receipts on
chain, sealed outputs, extract gone), a party that fails (extract gone, no receipt), and a stop
(process group killed, extract gone). Small data (300 rows) to keep the suite fast."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TAX_FEATURES, chain_node, small_tmpfs, vertical_spec

from common.net import free_ports
from coordinator.manifest import node_request
from nodes.services.chain import dataset_chain_id
from protocols.crypto.approvals import job_key

pytestmark = pytest.mark.slow


def _csv(vertical_data, name: str) -> Path:
    return next(p for p in vertical_data.parties if p.name == name).csv_path


def _approve_in(c, manifest: dict, member: str) -> None:
    item = c.post("/approvals", json=node_request(manifest, member))
    assert item.status_code == 201, item.text
    r = c.post(f"/approvals/{item.json()['id']}/approve")
    assert r.status_code == 200, r.text


def _task_body(manifest: dict, member: str, cluster: dict) -> dict:
    """What the coordinator sends (engines.secretflow.coordinator.task_body)."""
    inp = next(i for i in manifest["inputs"] if i["member"] == member)
    return {
        "job_id": manifest["job_id"], "party": member, "cluster": cluster, "join_key": manifest["join_key"],
        "label_party": manifest["label"]["member"], "label_column": manifest["label"]["column"],
        "psi_protocol": manifest["engine"]["psi_protocol"], "model": manifest["engine"]["params"],
        "inputs": [{"dataset": inp["dataset"], "columns": inp["columns"]}], "features": inp["features"],
        "receivers": {o["name"]: [o["receiver"]] for o in manifest["outputs"]}, "timeout_s": 240,
    }


def _wait(c, job_id: str, states: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = c.get(f"/tasks/{job_id}").json()
        if t["status"] in states:
            return t
        time.sleep(0.3)
    raise AssertionError(f"task {job_id} still {t['status']} ({t['stage']}) after {timeout}s")


def _private_dirs(c) -> list[Path]:
    return list(c.app.state.ctx.settings.tmp_dir().glob("task-*"))


def _start_two_party(chain, job: str, manifest: dict, terms, bank, tax) -> dict:
    """Both owners approve ``job``, the chain authorizes it, each node allocates its ports and starts
    its task (running); the job's cluster."""
    _approve_in(bank, manifest, "bank")
    _approve_in(tax, manifest, "tax")
    chain.authorize(terms)
    eps = {}
    for name, c in (("bank", bank), ("tax", tax)):
        peers = [m for m in ("bank", "tax") if m != name]
        r = c.post(f"/tasks/{job}/ports", json={"peers": peers, "label_party": "bank"})
        assert r.status_code == 200, r.text
        eps[name] = r.json()
    cluster = {"host": eps["bank"]["host"], "parties": [eps["bank"]["endpoint"], eps["tax"]["endpoint"]]}
    for name, c in (("bank", bank), ("tax", tax)):
        r = c.post(f"/tasks/{job}/start", json=_task_body(manifest, name, cluster))
        assert (r.status_code, r.json()) == (200, {"job_id": job, "status": "running"}), r.text
    return cluster


def test_two_nodes_run_a_job_and_record_receipts(chain, vertical_data, tmp_path, no_leaked_processes):
    job = "job-run-ok"
    tax_cols = TAX_FEATURES[:2]
    manifest, terms = chain.publish(vertical_spec(tax_cols), job)
    with chain_node(chain, "bank", tmp_path / "bank", {"bank_2024": _csv(vertical_data, "bank").read_bytes()},
                    role="bank") as bank, \
            chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()}) as tax:
        cluster = _start_two_party(chain, job, manifest, terms, bank, tax)
        # while it runs: the extract (written by the task's thread after its answer) is private and holds
        # exactly the approved columns
        deadline = time.monotonic() + 60
        while tax.get(f"/tasks/{job}").json()["stage"] == "extract" and time.monotonic() < deadline:
            time.sleep(0.05)
        private = _private_dirs(tax)
        assert len(private) == 1
        assert stat.S_IMODE(private[0].stat().st_mode) == 0o700
        head = (private[0] / "input.csv").read_text().splitlines()[0].split(",")
        assert head == ["uscc", *tax_cols]
        assert tax.post(f"/tasks/{job}/start", json=_task_body(manifest, "tax", cluster)).json()["error"] == "TaskExists"

        done = {name: _wait(c, job, {"succeeded", "failed", "stopped"}) for name, c in (("bank", bank), ("tax", tax))}
        assert {n: t["status"] for n, t in done.items()} == {"bank": "succeeded", "tax": "succeeded"}, done
        rows = done["bank"]["intersection_rows"]
        assert rows == done["tax"]["intersection_rows"]
        bank_df, tax_df = (pd.read_csv(_csv(vertical_data, n), dtype={"uscc": str}) for n in ("bank", "tax"))
        assert rows == len(set(bank_df.uscc) & set(tax_df.uscc))

        # receipts on chain, from each node's own account, with the row count and result hash it reports
        events = chain.admin.events("Receipts", "UsageRecorded")
        by_ds = {bytes(e.args["datasetId"]): e for e in events if bytes(e.args["jobId"]) == job_key(job)}
        for name, ds in (("bank", "bank_2024"), ("tax", "tax_2024")):
            ev = by_ds[dataset_chain_id(name, ds)]
            assert ev.args["node"] == chain.members[name][1].public.chain_address
            assert ev.args["rowCount"] == rows
            assert bytes(ev.args["resultHash"]).hex() == done[name]["result_hash"]
            assert "0x" + bytes(ev.tx_hash).hex() == done[name]["receipt_tx"]
            assert chain.admin.runs(job_key(job), dataset_chain_id(name, ds)) == 1

        # outputs: sealed to the bank's registered SM2 key, held by the label party only
        from protocols.crypto.envelope import open_
        from protocols.crypto.sm3 import sm3_hex

        bank_keys = chain.members["bank"][1]
        assert sorted(o["name"] for o in done["bank"]["outputs"]) == ["metrics", "predictions"]
        got = bank.get(f"/tasks/{job}/outputs/metrics").json()
        plain = open_(bank_keys.sm2.private_key, base64.b64decode(got["envelope_b64"]), f"{job}/metrics".encode())
        assert sm3_hex(plain) == got["sm3"] and got["receiver"] == "bank"
        assert json.loads(plain)["n_rows"] == rows and 0.5 < json.loads(plain)["auc"] <= 1.0
        preds = bank.get(f"/tasks/{job}/outputs/predictions").json()
        frame = pd.read_csv(io.BytesIO(open_(bank_keys.sm2.private_key, base64.b64decode(preds["envelope_b64"]),
                                             f"{job}/predictions".encode())), dtype={"uscc": str})
        assert len(frame) == rows and set(frame.columns) == {"uscc", "score", "default"}
        assert not (set(frame.columns) & set(TAX_FEATURES))
        assert tax.get(f"/tasks/{job}/outputs/predictions").json()["error"] == "OutputNotFound"

        # the extracts and every plaintext output are gone; only sealed copies stay
        for c in (bank, tax):
            assert _private_dirs(c) == []
            kept = sorted(p.name for p in c.app.state.ctx.tasks.job_dir(job).iterdir())
            assert all(n.endswith(".sealed") or n == "party.stderr.log" for n in kept), kept
            states = {"task.ports", "task.authorized", "task.start", "task.succeed", "task.fail", "task.stopped"}
            actions = [e["action"] for e in c.get("/audit?limit=1000").json() if e["target"] == job]
            assert [a for a in actions if a in states] == ["task.ports", "task.authorized", "task.start",
                                                            "task.succeed"], actions
            succeed = next(e for e in c.get("/audit?limit=1000").json() if e["action"] == "task.succeed")
            assert succeed["detail"]["extract_deleted"] is True
            # the node says where the time after the engine went: party exit, then sealing + receipt
            assert 0 <= succeed["detail"]["party_exit_s"] < 120 and 0 < succeed["detail"]["seal_receipt_s"] < 60
            assert c.get("/audit/verify").json()["ok"]
        # a second run would need a second authorization run: max_runs is 1
        assert tax.post(f"/tasks/{job}/stop").json() == {"status": "succeeded"}


def test_failing_party_leaves_no_extract_and_no_receipt(chain, vertical_data, tmp_path, no_leaked_processes):
    job = "job-run-fail"
    tax_df = pd.read_csv(_csv(vertical_data, "tax"), dtype={"uscc": str})
    tax_df.loc[::7, "tax_vat_paid"] = None  # the party refuses features with gaps
    gaps = tax_df.to_csv(index=False).encode()
    manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2], tax_dataset="tax_gaps"), job)
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_gaps": gaps}) as tax:
        body = _start_alone(chain, tax, job, manifest, terms)
        assert tax.post(f"/tasks/{job}/start", json=body).status_code == 200
        t = _wait(tax, job, {"succeeded", "failed", "stopped"}, timeout=120)
        assert t["status"] == "failed" and "INPUT_INVALID" in t["error"] and "tax_vat_paid" in t["error"]
        assert t["receipt_tx"] is None and t["outputs"] == []
        assert _private_dirs(tax) == []
        assert chain.admin.runs(job_key(job), dataset_chain_id("tax", "tax_gaps")) == 0
        fail = [e for e in tax.get("/audit?limit=1000").json() if e["action"] == "task.fail"]
        assert len(fail) == 1 and fail[0]["detail"]["extract_deleted"] is True
        assert tax.get(f"/tasks/{job}/outputs/metrics").json()["error"] == "OutputNotFound"


def test_stop_kills_the_party_and_deletes_the_extract(chain, vertical_data, tmp_path, no_leaked_processes):
    job = "job-run-stop"
    manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()}) as tax:
        body = _start_alone(chain, tax, job, manifest, terms)
        assert tax.post(f"/tasks/{job}/start", json=body).status_code == 200
        # the bank never shows up: the party waits for its peer until stopped
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and tax.get(f"/tasks/{job}").json()["stage"] in ("extract", "start", "connect"):
            time.sleep(0.2)
        pid = tax.app.state.ctx.tasks._get(job).pid
        assert pid is not None and _private_dirs(tax)
        r = tax.post(f"/tasks/{job}/stop")
        assert r.json() == {"status": "stopped"}
        assert tax.post(f"/tasks/{job}/stop").json() == {"status": "stopped"}  # idempotent
        assert _private_dirs(tax) == []
        import psutil

        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        t = tax.get(f"/tasks/{job}").json()
        assert t["status"] == "stopped" and t["receipt_tx"] is None
        # before the kill, the party wrote where it waited (every thread's stack) to its log
        party_log = (tax.app.state.ctx.tasks.job_dir(job) / "party.stderr.log").read_text()
        assert "most recent call first" in party_log and "in run_party" in party_log, party_log[-2000:]
        assert chain.admin.runs(job_key(job), dataset_chain_id("tax", "tax_2024")) == 0
        actions = [e["action"] for e in tax.get("/audit?limit=1000").json() if e["target"] == job]
        assert actions[-2:] == ["task.stop", "task.stopped"]


def _start_alone(chain, tax, job: str, manifest: dict, terms) -> dict:
    """Approve and authorize ``job`` for tax alone (its bank peer never shows up); the task body."""
    _approve_in(tax, manifest, "tax")
    chain.approve_as("bank", terms)
    chain.authorize(terms)
    ep = tax.post(f"/tasks/{job}/ports", json={"peers": ["bank"], "label_party": "bank"}).json()["endpoint"]
    p = free_ports(3)
    bank_ep = {"name": "bank", "sf_port": p[0], "spu_port": p[1], "psi_ports": {"tax": p[2]}}
    return _task_body(manifest, "tax", {"host": "127.0.0.1", "parties": [bank_ep, ep]})


def test_start_answers_before_the_extract_and_a_stop_during_it_starts_nothing(
    chain, vertical_data, tmp_path, no_leaked_processes,
):
    import threading

    job = "job-run-slow-extract"
    manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()}) as tax:
        body = _start_alone(chain, tax, job, manifest, terms)
        datasets = tax.app.state.ctx.datasets
        real_extract, gate, entered = datasets.extract_csv, threading.Event(), threading.Event()

        def held_extract(*args, **kw):  # the real extract, held until the test lets it go
            entered.set()
            assert gate.wait(60)
            return real_extract(*args, **kw)

        datasets.extract_csv = held_extract
        t0 = time.monotonic()
        r = tax.post(f"/tasks/{job}/start", json=body)
        assert (r.status_code, r.json()) == (200, {"job_id": job, "status": "running"})
        assert time.monotonic() - t0 < 30 and entered.wait(30) and not gate.is_set()  # answered mid-extract
        t = tax.get(f"/tasks/{job}").json()
        assert (t["status"], t["stage"]) == ("running", "extract")
        assert tax.app.state.ctx.tasks._get(job).pid is None  # no party yet
        threading.Timer(0.5, gate.set).start()
        assert tax.post(f"/tasks/{job}/stop").json() == {"status": "stopped"}
        assert tax.app.state.ctx.tasks._get(job).pid is None  # the extract finished, but nothing started
        assert _private_dirs(tax) == []
        actions = [e["action"] for e in tax.get("/audit?limit=1000").json() if e["target"] == job]
        # the stop is recorded when asked, the extract's task.start when it ended, then the stop takes effect
        assert actions[-3:] == ["task.stop", "task.start", "task.stopped"], actions
        assert chain.admin.runs(job_key(job), dataset_chain_id("tax", "tax_2024")) == 0


def test_a_failed_extract_fails_the_task_and_leaves_nothing(chain, vertical_data, tmp_path, no_leaked_processes):
    job = "job-run-bad-extract"
    manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()}) as tax:
        body = _start_alone(chain, tax, job, manifest, terms)

        def broken_extract(name, columns, dest, **kw):  # the disk is full
            dest.write_text("uscc\n")
            raise OSError(28, "No space left on device")

        tax.app.state.ctx.datasets.extract_csv = broken_extract
        assert tax.post(f"/tasks/{job}/start", json=body).status_code == 200
        t = _wait(tax, job, {"succeeded", "failed", "stopped"}, timeout=60)
        assert (t["status"], t["error"]) == ("failed", "the extract of tax_2024 failed: DiskFull: the node's disk is "
                                                        "full: the extract did not fit")
        assert tax.app.state.ctx.tasks._get(job).pid is None
        assert _private_dirs(tax) == []
        fail = [e for e in tax.get("/audit?limit=1000").json() if e["action"] == "task.fail"]
        assert len(fail) == 1 and fail[0]["detail"]["extract_deleted"] is True
        assert chain.admin.runs(job_key(job), dataset_chain_id("tax", "tax_2024")) == 0


@pytest.fixture
def small_tmp(tmp_path):  # noqa: ANN201
    """The tax node's scratch directory (``<work_dir>/tmp``: uploads and extracts) on a 1 MiB tmpfs this
    test mounts (unmounted afterwards); its database stays on the ordinary disk."""
    with small_tmpfs(tmp_path / "tax" / "tmp", "size=1m,mode=0700") as mnt:
        yield mnt


def _fill(disk: Path) -> Path:
    """A ballast file that fills ``disk`` (a tmpfs) up to one free page (4 KiB)."""
    ballast, page = disk / "ballast", 4096
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:  # page-aligned unbuffered writes: each takes a whole page or fails
            try:
                os.write(fd, b"\0" * page)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        os.ftruncate(fd, os.fstat(fd).st_size - page)
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free == page
    return ballast


def test_a_full_disk_during_the_extract_is_named_and_leaves_nothing(
    chain, vertical_data, tmp_path, small_tmp, no_leaked_processes,
):
    """A real full disk (#18.4): the extract does not fit in what is left of the node's scratch
    filesystem; the task fails ``the extract of tax_2024 failed: DiskFull``, no partial extract or private directory is
    left, no party started, no receipt; and once there is room the node extracts again."""
    job = "job-run-full-disk"
    manifest, terms = chain.publish(vertical_spec(TAX_FEATURES), job)
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()}) as tax:
        body = _start_alone(chain, tax, job, manifest, terms)
        before = set(small_tmp.iterdir())
        probe = small_tmp / "probe.csv"  # how large the extract is
        rows = tax.app.state.ctx.datasets.extract_csv("tax_2024", TAX_FEATURES, probe)
        need = probe.stat().st_size
        probe.unlink()
        assert rows > 0 and need > 4096
        ballast = _fill(small_tmp)  # one page of it fits: a partial file is written first

        assert tax.post(f"/tasks/{job}/start", json=body).status_code == 200
        t = _wait(tax, job, {"succeeded", "failed", "stopped"}, timeout=60)
        assert t["status"] == "failed"
        assert t["error"].startswith("the extract of tax_2024 failed: DiskFull: the node's disk is full"), t["error"]
        assert "the extract of 'tax_2024' did not fit and was removed" in t["error"]
        assert tax.app.state.ctx.tasks._get(job).pid is None  # no party
        assert set(small_tmp.iterdir()) == before | {ballast}  # no partial extract, no private directory
        assert _private_dirs(tax) == []
        fail = [e for e in tax.get("/audit?limit=1000").json() if e["action"] == "task.fail" and e["target"] == job]
        assert len(fail) == 1 and fail[0]["detail"]["extract_deleted"] is True
        assert "DiskFull" in fail[0]["detail"]["error"]
        assert chain.admin.runs(job_key(job), dataset_chain_id("tax", "tax_2024")) == 0
        # the node is not stuck: with room again, the same dataset extracts in full
        ballast.unlink()
        assert tax.app.state.ctx.datasets.extract_csv("tax_2024", TAX_FEATURES, probe) == rows
        assert probe.stat().st_size == need
