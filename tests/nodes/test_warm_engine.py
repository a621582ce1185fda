"""The warm engine: a node keeps one pre-started SecretFlow party (engine imported) that the next task
takes instead of spawning a party. Real chain-wired nodes, real party processes, small data (300 rows).

Covered: a job runs on the parties that were pre-started (their pids), a new warm process follows the
task, a stop kills the warm-started party, a dead warm process falls back to a cold start and the job
still succeeds, node shutdown and restart leave no warm process behind, and the party's warm entry
point (EOF -> 0, a bad handoff -> a named config error)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import TAX_FEATURES, chain_node, vertical_spec
from test_tasks_run import _csv, _start_alone, _start_two_party, _wait

from common.settings import project_root
from nodes.app import create_app
from nodes.secretflow.processes import WARM_PIDFILE, idle_warm_party, party_env
from nodes.settings import NodeSettings
from protocols.secretflow.spec import PartyExit

PARTY = [sys.executable, "-m", "protocols.secretflow.party", "--warm"]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_warm(pid: int) -> bool:
    return _alive(pid) and "--warm" in psutil.Process(pid).cmdline()


def _warm_pid(client, timeout: float = 30, not_pid: int | None = None) -> int:
    """The node's idle warm process (waits until it has one, other than ``not_pid``)."""
    sf = client.app.state.ctx.steps.node_engine("psi")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        warm = sf.warm
        pid = warm.pid if warm is not None else None
        if pid is not None and pid != not_pid and _is_warm(pid):
            return pid
        time.sleep(0.1)
    raise AssertionError(f"node {sf.member} has no warm engine process after {timeout}s")


def _audit(client, job: str, action: str) -> dict:
    return next(e for e in client.get("/audit?limit=1000").json() if e["action"] == action and e["target"] == job)


def _run_two_party_job(chain, job: str, bank, tax) -> dict[str, dict]:
    manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
    _start_two_party(chain, job, manifest, terms, bank, tax)
    return {name: _wait(c, job, {"succeeded", "failed", "stopped"}) for name, c in (("bank", bank), ("tax", tax))}


@pytest.mark.slow
def test_a_job_runs_on_the_prestarted_parties_and_new_ones_follow(chain, vertical_data, tmp_path,
                                                                  no_leaked_processes):
    job = "job-warm-ok"
    with chain_node(chain, "bank", tmp_path / "bank", {"bank_2024": _csv(vertical_data, "bank").read_bytes()},
                    role="bank", warm_engine=True) as bank, \
            chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()},
                       warm_engine=True) as tax:
        before = {"bank": _warm_pid(bank), "tax": _warm_pid(tax)}
        # the process list says whose warm party it is
        assert str((tmp_path / "tax").resolve()) in psutil.Process(before["tax"]).cmdline()
        assert tax.app.state.ctx.steps.node_engine("psi").warm.spawned == 1
        done = _run_two_party_job(chain, job, bank, tax)
        assert {n: t["status"] for n, t in done.items()} == {"bank": "succeeded", "tax": "succeeded"}, done
        assert done["bank"]["intersection_rows"] == done["tax"]["intersection_rows"] > 0
        after = {}
        for name, c in (("bank", bank), ("tax", tax)):
            # the party that ran the job is the process the node had pre-started
            assert c.app.state.ctx.tasks._get(job).pid == before[name]
            assert not _alive(before[name])
            succeed = _audit(c, job, "task.succeed")
            assert succeed["detail"]["engine"] == "warm"
            # its log is the task's, as for a cold party
            log = (c.app.state.ctx.tasks.job_dir(job) / "party.stderr.log").read_text()
            assert "Traceback" not in log
            # a new warm process once the task has ended
            after[name] = _warm_pid(c, not_pid=before[name])
            assert c.app.state.ctx.steps.node_engine("psi").warm.spawned == 2
            assert c.get("/audit/verify").json()["ok"]
        outs = sorted(o["name"] for o in done["bank"]["outputs"])
        assert outs == ["metrics", "predictions"]
    # the nodes stopped: their idle warm processes are gone (and no_leaked_processes checks the rest)
    assert not any(_alive(p) for p in after.values())
    assert not (tmp_path / "bank" / "engine" / WARM_PIDFILE).exists()


@pytest.mark.slow
def test_a_dead_warm_process_falls_back_to_a_cold_party(chain, vertical_data, tmp_path, caplog,
                                                        no_leaked_processes):
    job = "job-warm-dead"
    with chain_node(chain, "bank", tmp_path / "bank", {"bank_2024": _csv(vertical_data, "bank").read_bytes()},
                    role="bank") as bank, \
            chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()},
                       warm_engine=True) as tax:
        assert bank.app.state.ctx.steps.node_engine("psi").warm is None  # off by default
        dead = _warm_pid(tax)
        os.killpg(dead, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(dead) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(dead)
        done = _run_two_party_job(chain, job, bank, tax)
        assert {n: t["status"] for n, t in done.items()} == {"bank": "succeeded", "tax": "succeeded"}, done
        pid = tax.app.state.ctx.tasks._get(job).pid
        assert pid is not None and pid != dead
        assert _audit(tax, job, "task.succeed")["detail"]["engine"] == "cold"
        assert _audit(bank, job, "task.succeed")["detail"]["engine"] == "cold"
        # the node says so in its log (the bank node, without a warm engine, has nothing to say)
        said = [r.getMessage() for r in caplog.records if r.name == "dcp.node" and "cold" in r.getMessage()]
        assert len(said) == 1 and f"had exited with -{int(signal.SIGKILL)}" in said[0] and job in said[0], said
        _warm_pid(tax, not_pid=dead)  # the node has a warm process again


@pytest.mark.slow
def test_stop_kills_the_warm_started_party(chain, vertical_data, tmp_path, no_leaked_processes):
    job = "job-warm-stop"
    manifest, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": _csv(vertical_data, "tax").read_bytes()},
                    warm_engine=True) as tax:
        warm = _warm_pid(tax)
        body = _start_alone(chain, tax, job, manifest, terms)
        assert tax.post(f"/tasks/{job}/start", json=body).status_code == 200
        # the bank never shows up: the party waits for its peer until stopped
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and tax.get(f"/tasks/{job}").json()["stage"] in ("extract", "start",
                                                                                            "connect"):
            time.sleep(0.2)
        stage = tax.get(f"/tasks/{job}").json()["stage"]
        assert stage in ("connect:start", "connect:done", "psi:start"), stage  # the warm party runs the task
        assert tax.app.state.ctx.tasks._get(job).pid == warm
        assert not idle_warm_party(warm)  # it runs a task now
        children = psutil.Process(warm).children(recursive=True)
        assert tax.post(f"/tasks/{job}/stop").json() == {"status": "stopped"}
        assert not _alive(warm) and not any(_alive(c.pid) for c in children)
        assert list(tax.app.state.ctx.settings.tmp_dir().glob("task-*")) == []
        nxt = _warm_pid(tax, not_pid=warm)  # a new one once the task has ended
        assert idle_warm_party(nxt)
    assert not _alive(nxt)


@pytest.mark.slow
def test_a_restarted_node_kills_the_warm_process_its_previous_run_left(tmp_path, no_leaked_processes):
    work = tmp_path / "node"
    home = work / "engine"
    home.mkdir(parents=True)
    # what a node that died without PR_SET_PDEATHSIG would leave: a warm party in its own session
    scratch = work / "tmp"
    scratch.mkdir()
    orphan = subprocess.Popen(PARTY, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=party_env(scratch), cwd=scratch, start_new_session=True)
    # another node's warm party (its own scratch directory) that happens to have the pid in the file
    other = subprocess.Popen(PARTY, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=party_env(tmp_path), cwd=tmp_path, start_new_session=True)
    try:
        (home / WARM_PIDFILE).write_text(str(orphan.pid))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            "--warm" in psutil.Process(p.pid).cmdline() for p in (orphan, other)
        ):
            time.sleep(0.05)
        app = create_app(NodeSettings(name="tax", work_dir=work, anchor_interval_s=0))
        assert orphan.wait(timeout=10) != 0  # killed by the restarted node's recovery
        assert not (home / WARM_PIDFILE).exists()
        assert app.state.ctx.steps.node_engine("psi").warm is None  # warm_engine is off by default
        app.state.ctx.close()
        # a node whose pid file names a warm party that runs elsewhere (a reused pid) leaves it alone
        second = tmp_path / "second"
        (second / "engine").mkdir(parents=True)
        (second / "engine" / WARM_PIDFILE).write_text(str(other.pid))
        app = create_app(NodeSettings(name="tax", work_dir=second, anchor_interval_s=0))
        app.state.ctx.close()
        assert other.poll() is None and not (second / "engine" / WARM_PIDFILE).exists()
    finally:
        for p in (orphan, other):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_the_setting_comes_from_the_environment(monkeypatch, tmp_path):
    assert NodeSettings(work_dir=tmp_path).warm_engine is False
    monkeypatch.setenv("DCP_NODE_WARM_ENGINE", "1")
    assert NodeSettings(work_dir=tmp_path).warm_engine is True
    monkeypatch.setenv("DCP_NODE_WARM_ENGINE", "0")
    assert NodeSettings(work_dir=tmp_path).warm_engine is False


def test_the_launcher_turns_the_warm_engine_on_unless_told_otherwise():
    from federation.launcher import node_env

    assert node_env({"PATH": "/bin"})["DCP_NODE_WARM_ENGINE"] == "1"
    assert node_env({"PATH": "/bin", "DCP_NODE_WARM_ENGINE": "0"})["DCP_NODE_WARM_ENGINE"] == "0"
    assert node_env({"PATH": "/bin"})["PYTHONPATH"] == str(project_root())


@pytest.mark.slow
def test_the_warm_entry_point(tmp_path, no_leaked_processes):
    # EOF (the node stops it) -> 0, after one "warm" line
    quiet = subprocess.run(PARTY, input="", capture_output=True, text=True, env=party_env(tmp_path),
                           cwd=project_root(), timeout=120)
    lines = [json.loads(x) for x in quiet.stdout.splitlines() if x.startswith("{")]
    assert quiet.returncode == 0 and [m["event"] for m in lines] == ["warm"] and lines[0]["seconds"] > 0
    # a handoff line that is not one -> a named config error, nothing run
    bad = subprocess.run(PARTY, input=json.dumps({"config": str(tmp_path / "p.json")}) + "\n", capture_output=True,
                         text=True, env=party_env(tmp_path), cwd=project_root(), timeout=120)
    events = [json.loads(x) for x in bad.stdout.splitlines() if x.startswith("{")]
    assert bad.returncode == PartyExit.CONFIG
    assert [e["event"] for e in events] == ["warm", "error"] and events[1]["kind"] == "CONFIG"
    assert "invalid warm handoff" in events[1]["message"]
    # a handoff to a config that does not exist: the same refusal as a cold party's (exit 2)
    gone = subprocess.run(
        PARTY, input=json.dumps({"config": str(tmp_path / "nope.json"), "party": "tax", "cwd": str(tmp_path),
                                 "env": {"TMPDIR": str(tmp_path)}, "stderr": str(tmp_path / "err.log")}) + "\n",
        capture_output=True, text=True, env=party_env(tmp_path), cwd=project_root(), timeout=120)
    events = [json.loads(x) for x in gone.stdout.splitlines() if x.startswith("{")]
    assert gone.returncode == PartyExit.CONFIG and events[-1]["kind"] == "CONFIG"
    assert "cannot read config" in events[-1]["message"]
    assert "cannot read config" in (tmp_path / "err.log").read_text()  # stderr went where the handoff said
