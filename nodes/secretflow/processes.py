"""The processes of a SecretFlow party at a node: how one is spawned, its warm (pre-started) party,
and how one is stopped.

With ``warm_engine`` the node keeps one pre-started ("warm") party (:class:`WarmEngine`, the engine
already imported): a task takes it and hands it its config on stdin instead of spawning a party, and
the next one is started once no task runs. No usable warm process -> the task starts its party cold.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.procs import kill_group
from common.settings import project_root

log = logging.getLogger("dcp.node")

PARTY_MODULE = "protocols.secretflow.party"
_PR_SET_PDEATHSIG = 1
try:
    _LIBC: Any = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc: parties are still stopped by the node's shutdown and restart recovery
    _LIBC = None


def die_with_spawner() -> None:  # runs in the child between fork and exec
    """PR_SET_PDEATHSIG: the party dies with the thread that spawned it."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stacks_then_kill(proc: subprocess.Popen[str], grace: float, settle: float = 0.5) -> None:
    """Kill a party's process group (:func:`kill_group`); a party still running is first asked to
    write its threads' stacks to its log (SIGUSR1), so one that outran its time or is stopped mid-run
    leaves where it waited. A leader that has ended gets no signal of its own (its pid may be reused);
    anything left in its group is killed all the same."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(settle)
        except (ProcessLookupError, PermissionError):
            pass
    kill_group(proc.pid, grace)




WARM_PIDFILE = "warm.pid"


def party_env(tmp: Path) -> dict[str, str]:
    """The environment of a party process: the node's, the project on the path, ``TMPDIR`` = ``tmp``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project_root()), *filter(None, [env.get("PYTHONPATH")])])
    env.update({"PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)})
    return env


class WarmEngine:
    """The node's one pre-started ("warm") party process: ``python -m protocols.secretflow.party --warm``.

    A thread that lives as long as the node spawns it (PR_SET_PDEATHSIG follows the spawning thread,
    so the warm process, and the party it becomes, die with the node and not with a short-lived
    thread), in its own session (``kill_group`` kills the whole party). A task :meth:`take` s it and
    hands it the task on stdin; :meth:`request` asks for the next one, which is spawned only while
    ``busy()`` is false (a warm start-up must not steal CPU from a running engine). Its pid is kept in
    ``home/warm.pid`` so that a node restarting after a crash can kill an orphan (:func:`kill_orphan_warm`).
    """

    def __init__(self, home: Path, cwd: Path, busy: Callable[[], bool], node_dir: Path,
                 on_demand: bool = False, idle_s: float = 900.0) -> None:
        self.home = home
        self.node_dir = node_dir  # named on the warm party's command line: ps shows whose it is
        self.cwd = cwd
        self._busy = busy
        self.on_demand = on_demand
        """Spawn only on :meth:`request` from a job expecting this node (its ports reserved), never at
        :meth:`start` nor after a task; an idle warm process ends after ``idle_s``."""
        self.idle_s = idle_s
        self._proc: subprocess.Popen[str] | None = None
        self._ready_at = 0.0
        self._cond = threading.Condition()
        self._wanted = False
        self._spawning = False
        self._closed = False
        self.spawned = 0  # how many warm processes this node started
        self.expired = 0  # how many ended unused after idle_s (on demand)
        self._thread = threading.Thread(target=self._keep, name="warm-engine", daemon=True)

    @property
    def pid(self) -> int | None:
        """The idle warm process's pid (None when there is none)."""
        with self._cond:
            return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the keeper thread and (unless on demand) the first warm process."""
        self._thread.start()
        if not self.on_demand:
            self.request()

    def request(self) -> None:
        """Ask for a warm process (spawned unless there is one, a task runs, or the engine is closed)."""
        with self._cond:
            self._wanted = True
            self._cond.notify_all()

    def after_task(self) -> None:
        """A task ended: the next warm process, unless they are started on demand."""
        if not self.on_demand:
            self.request()

    def _idle_left(self) -> float | None:
        if not self.on_demand or self._proc is None:
            return None
        return self._ready_at + self.idle_s - time.monotonic()

    def _keep(self) -> None:
        while True:
            unused = None
            with self._cond:
                while not self._wanted and not self._closed:
                    left = self._idle_left()
                    if left is not None and left <= 0:  # on demand, and no job took it in time
                        unused, self._proc = self._proc, None
                        break
                    self._cond.wait(timeout=left)
                if unused is None:
                    if self._closed:
                        return
                    self._wanted = False
                    if self._proc is not None and self._proc.poll() is None:
                        continue
                    self._proc = None
            if unused is not None:
                end_process(unused)
                self._pidfile().unlink(missing_ok=True)
                self.expired += 1
                log.info("warm engine process %d ended unused after %.0f s", unused.pid, self.idle_s)
                continue
            if self._busy():  # the task's end asks again
                continue
            with self._cond:
                self._spawning = True
            proc = None
            try:
                proc = self._spawn()
            except OSError as exc:
                log.warning("the warm engine process could not be started (%s); tasks start cold", exc)
            finally:
                with self._cond:
                    self._spawning = False
                    closed = self._closed
                    if proc is not None and not closed:
                        self._proc = proc
                        self._ready_at = time.monotonic()
                    self._cond.notify_all()
            if proc is not None and closed:
                end_process(proc)
                self._pidfile().unlink(missing_ok=True)

    def _pidfile(self) -> Path:
        return self.home / WARM_PIDFILE

    def _spawn(self) -> subprocess.Popen[str]:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.home / "warm.stderr.log").open("a") as err:
            proc = subprocess.Popen(  # spawned by the keeper thread: PDEATHSIG follows the node
                [sys.executable, "-m", PARTY_MODULE, "--warm", "--node-dir", str(self.node_dir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=self.cwd, env=party_env(self.cwd), start_new_session=True,
                preexec_fn=die_with_spawner,  # noqa: PLW1509 - one prctl call, no locks
            )
        self._pidfile().write_text(str(proc.pid))
        self.spawned += 1
        log.info("warm engine process %d started", proc.pid)
        return proc

    def take(self) -> tuple[subprocess.Popen[str] | None, str]:
        """The idle warm process, now the caller's (None and why when there is no usable one)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._spawning or self._closed, timeout=10)
            proc, self._proc = self._proc, None
        if proc is None:
            return None, "no warm engine process is ready"
        self._pidfile().unlink(missing_ok=True)
        rc = proc.poll()
        if rc is not None:
            end_process(proc)
            return None, f"the warm engine process {proc.pid} had exited with {rc}"
        return proc, ""

    def close(self) -> None:
        """Kill the idle warm process and end the keeper thread (node shutdown)."""
        with self._cond:
            self._closed = True
            proc, self._proc = self._proc, None
            self._cond.notify_all()
        if proc is not None:
            end_process(proc)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._pidfile().unlink(missing_ok=True)


def end_process(proc: subprocess.Popen[str], grace: float = 1.0) -> None:
    """Kill a warm process's group, reap it and close its pipes (reaped while it is waited for: an
    unreaped leader would keep its group alive for the whole grace)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace if sig == signal.SIGTERM else 10)
        except subprocess.TimeoutExpired:
            continue
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def kill_orphan_warm(home: Path, root: Path) -> bool:
    """Kill the warm process a previous run of this node left (its pid in ``home/warm.pid``); True if one was.

    Only a warm party whose working directory is under ``root`` (this node's scratch directory) counts:
    a pid that has since been reused by anything else is left alone."""
    path = home / WARM_PIDFILE
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return False
    killed = False
    if is_party(pid) and _runs_under(pid, root):
        kill_group(pid, 0.5)
        killed = True
    path.unlink(missing_ok=True)
    return killed


def idle_warm_party(pid: int) -> bool:
    """``pid`` is a warm party that no task has taken yet (its working directory is still the node's
    scratch directory; a party that took a task works in the task's ``task-*/tmp``)."""
    if not is_party(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return b"--warm" in cmdline and not any(part.startswith("task-") for part in cwd.parts)


def _runs_under(pid: int, root: Path) -> bool:
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return cwd == root.resolve() or root.resolve() in cwd.parents



def is_party(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return PARTY_MODULE.encode() in cmdline
