"""Free-port allocation on the loopback interface (ports are never hard-coded).

Ports are picked at random *below* the kernel's ephemeral range (``ip_local_port_range``, usually
32768–60999). A port taken from that range (``bind(0)``) can be handed out again as the source port of
any outgoing connection — an HTTP poll, an RPC call — in the seconds between allocation and the moment
the engine binds it, and the engine then fails with "brpc server failed start". Ports below the range are
never chosen by the kernel on its own, so only another explicit allocation can race for them.

That race is closed too: every allocation on a host is recorded in a host-wide lease file
(``/tmp/dcp-port-leases-<uid>.json``, under an ``flock``), and a port leased in the last
:data:`LEASE_S` seconds is never handed out again. Five nodes on one machine each allocate their
party's ports for the same job at the same moment; without the leases two of them picked the same port
about once in 150 jobs (~18 ports from ~22,000), and the second party to bind it failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_LOWEST = 10_000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: How long an allocated port stays reserved for whoever asked for it (its engine binds it well before).
LEASE_S = 900.0


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def lease_file() -> Path:
    """The host-wide lease file: ``DCP_PORT_LEASES`` if set, else in ``/tmp`` whatever ``TMPDIR`` says
    (a party's ``TMPDIR`` is private to its task)."""
    if os.environ.get("DCP_PORT_LEASES"):
        return Path(os.environ["DCP_PORT_LEASES"])
    base = Path("/tmp") if os.access("/tmp", os.W_OK) else Path(tempfile.gettempdir())
    return base / f"dcp-port-leases-{os.getuid()}.json"


@contextlib.contextmanager
def _leases() -> Iterator[dict[int, float]]:
    """The live leases (port -> expiry), locked for the block; what the block leaves in it is saved."""
    path = lease_file()
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                raw = json.loads(path.read_text() or "{}")
                now = time.time()
                live = {int(p): float(t) for p, t in raw.items() if float(t) > now}
            except (OSError, ValueError, AttributeError, TypeError):
                live = {}  # missing or damaged: start again (the bind check still guards)
            yield live
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({str(p): t for p, t in live.items()}))
            tmp.replace(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _bindable(host: str, port: int) -> socket.socket | None:
    """A socket bound to ``port`` if any binder could take it, else None. No ``SO_REUSEADDR``: with it,
    a port that a closed connection still holds in TIME_WAIT (a server that ran on it a minute ago)
    passes, and a binder without the option (a plain ``bind``) then fails with "Address already in
    use"; without it the port passes only when every binder can take it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return None
    return s


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``n`` distinct ports that were free on ``host`` a moment ago and that no other allocation
    on this host holds a lease on (outside the ephemeral range when the machine leaves room below it,
    else whatever the kernel hands out)."""
    with _leases() as leased:
        ports = _pick(n, host, set(leased))
        until = time.time() + LEASE_S
        leased.update(dict.fromkeys(ports, until))
    return ports


def _pick(n: int, host: str, avoid: set[int]) -> list[int]:
    socks: list[socket.socket] = []
    rng = random.SystemRandom()
    high = _ephemeral_low() - 1
    try:
        if high - _LOWEST >= 1000:
            for _ in range(50 * n):
                if len(socks) == n:
                    break
                port = rng.randint(_LOWEST, high)
                if port in avoid:
                    continue
                s = _bindable(host, port)
                if s is not None:
                    socks.append(s)
                    avoid.add(port)
        while len(socks) < n:  # no room below the ephemeral range, or it is crowded
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            if s.getsockname()[1] in avoid:
                s.close()
                continue
            avoid.add(s.getsockname()[1])
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One free port on ``host``."""
    return free_ports(1, host)[0]
