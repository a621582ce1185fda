"""How a party leaves the cluster: SecretFlow's barrier on the main thread, then its queued sends
flushed, each bounded, so that no peer waits for ever and nothing blocks the party's exit."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from protocols.secretflow.events import Emit


class _LeaveTimeout(Exception):
    """The leaving barrier outran its grace (raised on the main thread by SIGALRM)."""


def _barrier_on_main_thread(barrier: Callable[[], Any], grace_s: float) -> str:
    """Run SecretFlow's barrier (its fed layer works on the main thread only), bounded by SIGALRM."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return "skipped: not on the main thread"

    def _late(signum: int, frame: Any) -> None:
        raise _LeaveTimeout

    previous = signal.signal(signal.SIGALRM, _late)
    signal.setitimer(signal.ITIMER_REAL, grace_s)
    try:
        barrier()
        return "ok"
    except _LeaveTimeout:
        return f"timeout after {grace_s:.0f} s"
    except Exception as exc:  # noqa: BLE001 - leaving anyway; the outcome is reported
        return f"error: {type(exc).__name__}: {exc}"[:200]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _flush_sends(grace_s: float) -> bool:
    """Wait (at most ``grace_s``) until this party's queued fed sends have left; True if they have."""
    import threading

    from secretflow.distributed.fed.global_context import get_global_context

    ctx = get_global_context(assert_none=False)
    executor = getattr(ctx, "_send_executor", None)
    if executor is None:
        return True
    t = threading.Thread(target=lambda: executor.shutdown(wait=True), name="fed-flush", daemon=True)
    t.start()
    t.join(grace_s)
    return not t.is_alive()


def _leave(
    after_error: bool,
    emit: Emit,
    grace_s: float | None = None,
    barrier: Callable[[], Any] | None = None,
    flush: Callable[[float], bool] | None = None,
) -> None:
    """Leave the cluster: every peer has what it needs from this party, and nothing waits for ever.

    After success: SecretFlow's barrier on the main thread (every party has ended its program, so no
    peer still waits for a message of ours, an SPU link's included), then this party's queued fed
    sends are flushed. After a failure: no barrier (a failed peer would never answer it), only the
    flush (the peers learn of the error). Each step is bounded by ``grace_s`` (30 s after success,
    10 s after an error): a peer that left without answering must not keep the job from ending.

    Nothing is torn down: SecretFlow's own shutdown ends in a garbage collection that destroys the
    SPU links (see :data:`protocols.secretflow.party._ENGINE_DEVICES`), and the party process ends with os._exit anyway.
    The outcome is an event: ``{"event": "stage", "stage": "leave", "barrier": ..., "flushed": ...}``."""
    grace = grace_s if grace_s is not None else (10.0 if after_error else 30.0)
    if barrier is None:
        from secretflow.device.driver import barrier as sf_barrier

        barrier = sf_barrier
    outcome = "skipped: after an error" if after_error else _barrier_on_main_thread(barrier, grace)
    flushed = (flush or _flush_sends)(grace)
    emit("stage", stage="leave", status="done", barrier=outcome, flushed=flushed)
    if (outcome != "ok" and not after_error) or not flushed:
        emit("warning", message=f"leaving the cluster: barrier {outcome}, sends flushed: {flushed}")
