"""dcp's handle on a node's PySyft low side: starts the confined datasite and drives it.

:class:`LowSide` runs :mod:`protocols.sandbox.lowside` with the syft venv's interpreter (``.venv-syft``)
in bubblewrap: its own network namespace (only a loopback: it can reach nothing), its own PID, IPC and
UTS namespaces, ``/usr`` and its interpreter read-only, and one writable directory, its state directory
(the datasite's database and blobs); the node's files, keys and database do not exist there. As root it
runs as a uid of its own (``setpriv``). Researchers reach it on ``127.0.0.1:<port>`` through a relay in
this process to a Unix socket in the state directory.

Only mock data is published (:meth:`LowSide.publish_mock` refuses a dataset whose policy does not allow
mock publication); the private data stays with dcp, which runs approved code in
:func:`protocols.sandbox.isolate.run_isolated` and deposits the released result back with
:meth:`LowSide.deposit_result` (or a rejection with :meth:`LowSide.reject`).
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import pandas as pd
from pydantic import BaseModel

from common.net import free_port
from protocols.sandbox import _relay
from protocols.sandbox.errors import SandboxError, SandboxUnavailable
from protocols.sandbox.isolate import _UID_BASE, _UID_SPAN, _interpreter, _reap_uid

_HERE = Path(__file__).parent
ROOT = _HERE.parent.parent


class LowSideError(SandboxError):
    """The low-side datasite failed or refused an operation."""

    code = "lowside_error"


class MockPublicationRefused(SandboxError):
    """The dataset's policy does not allow publishing a mock of it to researchers."""

    code = "mock_publication_refused"


class Researcher(BaseModel):
    """Who submitted a code request (as the low side knows them)."""

    email: str | None = None
    name: str = ""
    verify_key: str = ""


class CodeRequest(BaseModel):
    """A pending PySyft code request: what the officers review and the sandbox runs."""

    request_id: str
    code: str
    code_sm3: str = ""
    function: str
    researcher: Researcher
    inputs: dict[str, str]  # the function's argument -> the dataset it reads


def syft_python(root: Path = ROOT) -> Path:
    """The syft venv's interpreter made by the bootstrap (``.venv-syft``)."""
    return root / ".venv-syft" / "bin" / "python"


def lowside_available(root: Path = ROOT) -> bool:
    """True when the syft venv and bubblewrap are there."""
    return syft_python(root).exists() and shutil.which("bwrap") is not None


class LowSide:
    """One node's confined PySyft datasite (mock data only)."""

    def __init__(self, state_dir: Path, name: str, port: int | None = None, python: Path | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.name = name
        self.port = port or free_port()
        self.python = Path(python or syft_python())
        self._proc: subprocess.Popen[bytes] | None = None
        self._relay: _relay.Relay | None = None
        self._uid: int | None = None
        self._fds: list[int] = []
        self._sel: selectors.DefaultSelector | None = None
        self._buf = b""
        self.side: str | None = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1"

    def _command(self) -> list[str]:
        root = os.geteuid() == 0
        sock = self.state_dir / "datasite.sock"
        if root:
            self._uid = _UID_BASE + _UID_SPAN + secrets.randbelow(_UID_SPAN)
            args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup",
                    "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            run_as = ["/usr/bin/setpriv", f"--reuid={self._uid}", f"--regid={self._uid}", "--clear-groups",
                      "--inh-caps=-all", "--no-new-privs", "--"]
        else:
            args = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns"]
            run_as = []
        args += ["--die-with-parent", "--new-session", "--hostname", "lowside", "--clearenv",
                 "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", str(self.state_dir / "home"),
                 "--setenv", "TMPDIR", str(self.state_dir / "tmp"), "--setenv", "USER", "syft",
                 "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONUNBUFFERED", "1",
                 "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                 "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
                 "--perms", "01777", "--tmpfs", "/dev/shm", "--perms", "01777", "--tmpfs", "/tmp"]
        # syft in dev mode rewrites its protocol_version.json: it gets a copy of its own, the venv stays read-only
        proto = next((self.python.parent.parent / "lib").glob("python3*/site-packages/syft/protocol"))
        proto_copy = self.state_dir / "syft-protocol"
        if not proto_copy.exists():
            shutil.copytree(proto, proto_copy)
        made: set[Path] = set()
        for d in [*_interpreter(self.python), self.state_dir]:
            for parent in reversed(d.parents):
                if parent != Path("/") and parent not in made:
                    args += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            fd = os.open(d, os.O_PATH | os.O_CLOEXEC)
            self._fds.append(fd)
            args += ["--bind-fd" if d == self.state_dir else "--ro-bind-fd", str(fd), str(d)]
        args += ["--bind", str(proto_copy), str(proto), "--perms", "0755", "--dir", "/lowside"]
        for mod in ("lowside.py", "_relay.py"):
            fd = os.open(_HERE / mod, os.O_RDONLY)
            self._fds.append(fd)
            args += ["--perms", "0444", "--ro-bind-data", str(fd), f"/lowside/{mod}"]
        args += ["--", *run_as, str(self.python), "-I", "/lowside/lowside.py", "--name", self.name,
                 "--port", str(self.port), "--socket", str(sock)]
        return args

    def start(self, timeout: float = 420.0) -> None:
        """Start the datasite; returns when it serves (import ≈ 25 s and launch ≈ 20 s, longer under load)."""
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the datasite's process and return at once (:meth:`wait_ready` waits for it). Call it from a
        thread that outlives the datasite: bubblewrap's ``--die-with-parent`` follows the spawning thread."""
        if not lowside_available():
            raise SandboxUnavailable("the syft venv (.venv-syft) or bubblewrap is missing: run make bootstrap")
        for sub in ("home", "tmp"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "datasite.sock").unlink(missing_ok=True)
        cmd = self._command()
        if self._uid is not None:
            for p in [self.state_dir, *self.state_dir.rglob("*")]:
                os.chown(p, self._uid, self._uid)
        log = open(self.state_dir / "datasite.log", "ab")  # noqa: SIM115 — kept for the process's life
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                      pass_fds=self._fds, start_new_session=True)
        log.close()
        self._sel = selectors.DefaultSelector()
        assert self._proc.stdout is not None
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._sel.register(self._proc.stdout, selectors.EVENT_READ)

    def wait_ready(self, timeout: float = 420.0) -> None:
        """Wait until the spawned datasite serves, then open the researchers' relay (stopped on failure)."""
        try:
            ready = self._read(timeout)
            if "ready" not in ready:
                raise LowSideError(f"the datasite did not start: {ready}")
            self.side = ready["ready"].get("side")  # PySyft's server_side_type: "low"
            self._relay = _relay.tcp_to_unix("127.0.0.1", self.port, str(self.state_dir / "datasite.sock"))
        except BaseException:
            self.stop()
            raise

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._sel is not None
        out: IO[bytes] = self._proc.stdout  # type: ignore[assignment]
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LowSideError(f"no answer from the datasite in {timeout:g} s (log: {self.state_dir / 'datasite.log'})")
            if self._sel.select(min(left, 1.0)):
                chunk = out.read(65536)
                if chunk:
                    self._buf += chunk
                elif chunk == b"":  # end of file: the datasite is gone
                    try:
                        self._proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    tail = (self.state_dir / "datasite.log").read_text(errors="replace")[-2000:]
                    raise LowSideError(f"the datasite exited ({self._proc.returncode}): {tail}")
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _call(self, op: str, timeout: float = 120.0, **kwargs: Any) -> Any:
        if self._proc is None or self._proc.poll() is not None:
            raise LowSideError("the datasite is not running")
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps({"op": op, **kwargs}) + "\n").encode())
        self._proc.stdin.flush()
        got = self._read(timeout)
        if not got.get("ok"):
            raise LowSideError(f"{op}: {got.get('error')}")
        return got.get("value")

    def publish_mock(self, dataset_id: str, mock: pd.DataFrame, allowed: bool, description: str = "") -> dict[str, Any]:
        """Publish a mock of a dataset (generated from its schema, e.g. ``nodes.services.mock.mock_frame``).

        ``allowed`` is the dataset's policy on mock publication; without it nothing is sent.
        """
        if not allowed:
            raise MockPublicationRefused(f"the policy of {dataset_id} does not allow publishing a mock")
        mock_dir = self.state_dir / "mock"
        mock_dir.mkdir(exist_ok=True)
        path = mock_dir / f"{dataset_id}.csv"
        mock.to_csv(path, index=False)
        if self._uid is not None:
            os.chown(mock_dir, self._uid, self._uid)
            os.chown(path, self._uid, self._uid)
        return self._call("publish", dataset=dataset_id, csv=str(path),
                          description=description or f"Mock of {dataset_id}: same schema, no real values.")

    def datasets(self) -> list[str]:
        """Names of the datasets the low side holds (mocks)."""
        return list(self._call("datasets"))

    def create_researcher(self, email: str, name: str, password: str, institution: str = "") -> None:
        """An account for a researcher (created by the node's officers)."""
        self._call("create_researcher", email=email, name=name, password=password, institution=institution)

    def researchers(self) -> list[dict[str, str]]:
        """The researcher (data scientist) accounts of the low side: email, name, institution."""
        return list(self._call("researchers"))

    def pending_requests(self) -> list[CodeRequest]:
        """Code requests waiting for the data owner, with the code's SM3."""
        from protocols.sandbox.isolate import code_sm3

        return [CodeRequest(**r, code_sm3=code_sm3(r["code"])) for r in self._call("pending")]

    def deposit_result(self, request_id: str, result: Any) -> None:
        """Deposit a released result into the request (approving it there): the researcher gets it."""
        self._call("deposit", request_id=request_id, result=result)

    def reject(self, request_id: str, reason: str) -> None:
        """Deny the request with the reason the researcher will read."""
        self._call("reject", request_id=request_id, reason=reason)

    def pids(self) -> list[int]:
        """Host PIDs of the datasite's process tree (bubblewrap first)."""
        import psutil

        if self._proc is None:
            return []
        try:
            root = psutil.Process(self._proc.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.Error:
            return []

    def rss_bytes(self) -> int:
        """Resident memory of the datasite's whole process tree."""
        import psutil

        if self._proc is None:
            return 0
        total = 0
        try:
            root = psutil.Process(self._proc.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            return 0
        return total

    def stop(self, timeout: float = 60.0) -> None:
        """Land the datasite (``land()`` runs inside), then make sure nothing of it is left."""
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._proc is not None:
            if self._proc.poll() is None:
                try:
                    self._call("stop", timeout=timeout)
                    self._proc.wait(timeout=timeout)
                except (LowSideError, OSError, subprocess.TimeoutExpired, ValueError):
                    pass
            if self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc = None
        if self._uid is not None:
            _reap_uid(self._uid)
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> LowSide:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
