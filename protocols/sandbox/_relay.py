"""A byte relay between a TCP listener and a Unix socket (standard library only).

The low-side datasite runs in a network namespace of its own (no network at all); researchers reach it
through two relays: 127.0.0.1:port on the host -> a Unix socket in the datasite's state directory (dcp
side) -> 127.0.0.1:port inside the namespace (datasite side). Stand-alone: the datasite side imports it
in the syft venv.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve(listener: socket.socket, connect: Callable[[], socket.socket], stop: threading.Event) -> None:
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        client.settimeout(None)
        try:
            upstream = connect()
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()
    listener.close()


class Relay:
    """Accepts on ``listener`` and copies each connection both ways to a new ``connect()``."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_serve, args=(listener, connect, self._stop), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def tcp_to_unix(host: str, port: int, path: str) -> Relay:
    """Listen on ``host:port`` (TCP), forward to the Unix socket ``path``."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(64)

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s

    return Relay(ls, connect)


def unix_to_tcp(path: str, host: str, port: int) -> Relay:
    """Listen on the Unix socket ``path``, forward to ``host:port`` (TCP)."""
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(64)
    return Relay(ls, lambda: socket.create_connection((host, port), timeout=30))
