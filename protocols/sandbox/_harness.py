"""Runs inside the sandbox (bubblewrap, prlimit): loads the inputs, calls the approved function, writes
``result.json`` to the output directory, and turns each kind of refusal into its own exit code.

Stand-alone on purpose: it imports nothing of dcp's (only the standard library, pandas and numpy of the
interpreter it is started with). The namespaces and limits are the enforcement; the audit hook below only
names a refusal early and clearly (code that bypasses it still meets an empty file system and no network).
"""

from __future__ import annotations

import ast
import errno
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

EXIT = {"code_failed": 10, "memory_exceeded": 11, "process_limit": 12, "network_denied": 13,
        "file_denied": 14, "write_denied": 15, "output_refused": 16}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_NET_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETDOWN}


class Refused(BaseException):  # not an Exception: `except Exception` in the code cannot swallow it
    def __init__(self, kind: str, what: str) -> None:
        super().__init__(f"{kind}: {what}")
        self.kind = kind


def _under(path: str, prefixes: list[str]) -> bool:
    p = os.path.normpath(os.path.join("/", path))
    return any(p == q or p.startswith(q.rstrip("/") + "/") for q in prefixes)


def _hook_factory(job: dict) -> Callable[[str, tuple], None]:
    read_ok = job["read_prefixes"]
    write_ok = job["write_prefixes"]

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if not isinstance(path, (str, bytes)):
                return
            path = os.fsdecode(path)
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and not _under(path, write_ok):
                raise Refused("write_denied", path)
            if not _under(path, read_ok + write_ok):
                raise Refused("file_denied", path)
        elif event == "socket.__new__":
            family = args[1]
            if family != socket.AF_UNIX:  # -1 (the default) means AF_INET
                raise Refused("network_denied", f"socket family {family}")
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
                       "socket.gethostbyname", "socket.gethostbyaddr"):
            raise Refused("network_denied", event)
        elif event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod",
                       "os.symlink", "os.link", "shutil.rmtree"):
            path = args[0]
            if isinstance(path, (str, bytes)) and not _under(os.fsdecode(path), write_ok):
                raise Refused("write_denied", f"{event} {os.fsdecode(path)}")

    return hook


def _classify(exc: BaseException, job: dict) -> str | None:
    """The exit-code name for an exception that escaped the code (None: an ordinary failure)."""
    if isinstance(exc, Refused):
        return exc.kind
    if isinstance(exc, MemoryError):
        return "memory_exceeded"
    if isinstance(exc, BlockingIOError) or (isinstance(exc, RuntimeError) and "new thread" in str(exc)):
        return "process_limit"
    if isinstance(exc, socket.gaierror) or (isinstance(exc, OSError) and exc.errno in _NET_ERRNOS):
        return "network_denied"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "output_refused"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        name = exc.filename if isinstance(exc.filename, str) else ""
        return "write_denied" if not name or _under(name, job["read_prefixes"]) else "file_denied"
    if isinstance(exc, FileNotFoundError) and isinstance(exc.filename, str):
        # the sandbox's /tmp starts empty: a path missing there (or anywhere outside the read-only
        # mounts) is one the code expected from outside its world, e.g. the node's files
        if not _under(exc.filename, job["read_prefixes"] + ["/out"]):
            return "file_denied"
    return None


def _to_json(value: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return {"table": {"columns": [str(c) for c in value.columns],
                          "index": [_to_json(i) for i in value.index.tolist()],
                          "data": [[_to_json(v) for v in row] for row in value.itertuples(index=False)]}}
    if isinstance(value, pd.Series):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_to_json(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _load_function(code: str, entrypoint: str) -> Callable[..., Any]:
    """Module of the code with the decorators of ``entrypoint`` removed (``@sy.syft_function`` is the low
    side's business); returns the function."""
    tree = ast.parse(code, filename="<approved code>")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entrypoint:
            node.decorator_list = []
    namespace = {"__name__": "approved_code"}
    exec(compile(tree, "<approved code>", "exec"), namespace)  # noqa: S102 — the approved code, in the sandbox
    fn = namespace.get(entrypoint)
    if not callable(fn):
        raise NameError(f"the code defines no function {entrypoint!r}")
    return fn


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the size limit raises EFBIG instead
    import numpy  # noqa: F401 — loaded before the hook, like the interpreter itself
    import pandas as pd

    frames = {name: pd.read_csv(path) for name, path in job["inputs"].items()}
    os.chdir(job["output_dir"])
    sys.addaudithook(_hook_factory(job))
    try:
        fn = _load_function(job["code"], job["entrypoint"])
        result = fn(**frames)
        text = json.dumps(_to_json(result), ensure_ascii=False)
        with open(os.path.join(job["output_dir"], "result.json"), "w") as out:
            out.write(text)
        sys.stdout.flush()
    except BaseException as exc:  # noqa: BLE001 — every way out is classified
        kind = _classify(exc, job) or "code_failed"
        try:
            sys.stderr.write(f"\n[sandbox] {kind}: {type(exc).__name__}: {exc}\n")
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(EXIT[kind])
    os._exit(0)


if __name__ == "__main__":
    main()
