"""A party's progress events: one JSON line per event, on a descriptor of their own."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

Emit = Callable[..., None]


def private_event_stream() -> Any:
    """Give the progress events a descriptor of their own and point fd 1 at stderr (the task's log).

    The engine's C++ libraries (libpsi, yacl, SPU) log to fd 1 from their own threads. On a shared
    stdout, a log line written between an event and its newline costs the event (the node reads events
    line by line; a lost ``result`` fails a run that succeeded), and the node's log of the run misses
    the engine's own lines. The new descriptor is not inherited, so no helper process the engine starts
    can hold the node's pipe open after the party has ended. Called once, when the module runs as a
    process (never in a test's own process)."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


def make_emitter(party: str, stream: Any = None) -> Emit:
    """A function that prints one JSON progress line per call."""
    out = stream or sys.stdout
    pid = os.getpid()

    def emit(event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "party": party, "pid": pid, "t": round(time.time(), 3), **fields}, default=str)
        out.write(line + "\n")  # one write: nothing can land between an event and its newline
        out.flush()

    return emit
