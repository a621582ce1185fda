"""A party dies with the runner that started it.

The runner starts each party in a session (process group) of its own, so that a signal to the
runner's terminal does not reach the parties and the runner can stop each party's whole group. The
price: a runner that is killed outright (SIGKILL, the OOM killer, a crash) leaves its parties behind,
each waiting on its peers for ever. Linux's ``PR_SET_PDEATHSIG`` closes that: the kernel sends the
party SIGKILL the moment the thread that started it ends.

The party sets it itself, first thing in its ``__main__`` (through ctypes; no ``preexec_fn``, which is
not safe in a runner that already has reader threads), when the runner put its own pid in
``DCP_PARTY_PARENT_PID``. A runner that died between the fork and that call is caught by comparing
``getppid()`` with that pid: the party then exits at once. ``run_vertical_job`` stops every party before
it returns, so the starting thread always outlives its parties while the runner is alive.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import MutableMapping

PARENT_ENV = "DCP_PARTY_PARENT_PID"
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
#: exit code of a party whose runner was already gone when it started
ORPHANED = 3


def death_signal() -> int:
    """This process's parent-death signal (0: none)."""
    sig = ctypes.c_int(0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_PDEATHSIG) failed")
    return sig.value


def die_with_parent(environ: MutableMapping[str, str] = os.environ) -> bool:
    """If ``environ`` names the starting runner's pid: have the kernel SIGKILL this process when the
    runner's starting thread ends, and exit at once if the runner is already gone. The variable is
    removed, so this process's own children do not inherit it. Returns whether it was set."""
    want = environ.pop(PARENT_ENV, None)
    if not want:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(want):  # the runner died before the line above: nobody will stop us
        os._exit(ORPHANED)
    return True
