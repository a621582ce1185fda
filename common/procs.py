"""Stopping a process group: SIGTERM, a grace period, then SIGKILL.

One helper for every process the platform starts in a group of its own: a node's engine parties and
warm process, and the services ``dcp up`` starts (``federation.launcher``)."""

from __future__ import annotations

import os
import signal
import time


def kill_group(pid: int, grace: float, *, reap: bool = False) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL whatever is left of it after ``grace`` seconds.

    Returns as soon as the group is gone. With ``reap``, a leader that is this process's child is reaped
    as it exits (an unreaped leader would keep its group alive as a zombie): for callers that hold
    only the pid. Without, the leader's ``Popen`` reaps it (a node's party, whose follower waits on it).
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap:
            _reap(pid, block=False)
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    if reap:
        _reap(pid, block=True)


def _reap(pid: int, *, block: bool) -> None:
    try:
        os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # not (or no longer) our child
        pass
