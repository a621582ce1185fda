"""Free-port allocation on the loopback interface (ports are never hard-coded).

Ports are picked at random *below* the kernel's ephemeral range (``ip_local_port_range``, usually
32768–60999). A port taken from that range (``bind(0)``) can be handed out again as the source port of
any outgoing connection — an HTTP poll, an RPC call — in the seconds between allocation and the moment
the engine binds it, and the engine then fails with "brpc server failed start". Ports below the range are
never chosen by the kernel on its own, so only another explicit allocation can race for them.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10_000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return None
    return s


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``n`` distinct ports that were free on ``host`` a moment ago (outside the ephemeral range
    when the machine leaves room below it, else whatever the kernel hands out)."""
    socks: list[socket.socket] = []
    rng = random.SystemRandom()
    high = _ephemeral_low() - 1
    try:
        if high - _LOWEST >= 1000:
            for _ in range(50 * n):
                if len(socks) == n:
                    break
                s = _bindable(host, rng.randint(_LOWEST, high))
                if s is not None:
                    socks.append(s)
        while len(socks) < n:  # no room below the ephemeral range, or it is crowded
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One free port on ``host``."""
    return free_ports(1, host)[0]
