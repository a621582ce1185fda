"""A warm party only for a node that expects a job (issue #19 item 5, ``warm_engine_on_demand``): none at
start, one when a job's ports are reserved, none after the task, and one that no job took ends after
``warm_engine_idle_s``. The keeper's logic over real (small) processes standing in for the party."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from nodes.secretflow.processes import WarmEngine, end_process
from nodes.settings import NodeSettings


class _Stand(WarmEngine):
    """Spawns a process that waits on stdin as the warm party does (no engine import)."""

    def _spawn(self) -> subprocess.Popen[str]:
        self.home.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        self._pidfile().write_text(str(proc.pid))
        self.spawned += 1
        return proc


def _until(pred, timeout: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_on_demand_warm_party_starts_for_a_job_and_ends_unused(tmp_path: Path, no_leaked_processes) -> None:
    w = _Stand(tmp_path / "engine", tmp_path / "tmp", lambda: False, tmp_path, on_demand=True, idle_s=1.5)
    try:
        w.start()
        time.sleep(0.5)
        assert w.pid is None and w.spawned == 0  # idle node: no warm party
        w.request()  # a job reserved this node's ports
        assert _until(lambda: w.pid is not None)
        first = w.pid
        proc, why = w.take()  # the task takes it
        assert proc is not None and proc.pid == first, why
        w.after_task()  # on demand: no next one after the task
        time.sleep(0.5)
        assert w.pid is None and w.spawned == 1
        end_process(proc)
        w.request()  # another job expects the node; nobody takes this one
        assert _until(lambda: w.pid is not None)
        unused = w.pid
        assert _until(lambda: w.pid is None and w.expired == 1, timeout=15)
        assert not psutil.pid_exists(unused) or psutil.Process(unused).status() == psutil.STATUS_ZOMBIE
        assert not (tmp_path / "engine" / "warm.pid").exists()
    finally:
        w.close()


def test_always_warm_is_unchanged(tmp_path: Path, no_leaked_processes) -> None:
    w = _Stand(tmp_path / "engine", tmp_path / "tmp", lambda: False, tmp_path, idle_s=0.5)
    try:
        w.start()
        assert _until(lambda: w.pid is not None)  # at start
        proc, _ = w.take()
        assert proc is not None
        w.after_task()
        assert _until(lambda: w.pid is not None)  # and after every task
        time.sleep(1.0)
        assert w.pid is not None and w.expired == 0  # never ends idle
        end_process(proc)
    finally:
        w.close()


def test_the_settings(monkeypatch, tmp_path: Path) -> None:
    assert NodeSettings(work_dir=tmp_path).warm_engine_on_demand is False
    monkeypatch.setenv("DCP_NODE_WARM_ENGINE_ON_DEMAND", "1")
    monkeypatch.setenv("DCP_NODE_WARM_ENGINE_IDLE_S", "60")
    s = NodeSettings(work_dir=tmp_path)
    assert (s.warm_engine_on_demand, s.warm_engine_idle_s) == (True, 60.0)
