"""Isolated execution of reviewed analysis code on a node's private data (the sandbox's high side).

:func:`run_isolated` checks that the code's SM3 equals the approved hash (code changed after approval
never runs), then runs it in a throw-away process:

* **bubblewrap** with the network, PID, IPC, UTS and cgroup namespaces unshared (no network at all: only
  a loopback of its own), ``--die-with-parent``, ``--new-session``;
* a file system of its own: ``/usr`` and the interpreter (the venv and its base, bound at their own paths)
  read-only, each input file read-only at ``/data/<name>.csv``, a small ``/tmp``, and one writable
  output directory ``/out`` — the node's database, keystore and every other file do not exist there;
* an **unprivileged uid**: as root, bubblewrap mounts with every capability dropped but SETUID/SETGID,
  and ``setpriv`` drops to a fresh uid per run (no capabilities, ``no_new_privs``) before the code
  starts, so the code is nobody on the host too and the process limit counts this run alone; as any
  other user, bubblewrap makes a user namespace (uid 65534 inside, nested user namespaces refused);
* **prlimit** limits on address space, CPU time, processes (threads count) and file size (the
  output and the captured stdout/stderr), and a wall-clock timeout enforced here by the parent.
  After the run every process of the run's uid is killed and waited for.

Inside, a harness (``_harness.py``) installs a Python audit hook that names a refusal early (socket,
open outside the mounts, write outside ``/out``); the namespaces and limits are the enforcement, which
the tests also probe past the hook (libc calls through ctypes).
* **prlimit** limits on address space, CPU time, processes (threads count) and file size (the
  output and the captured stdout/stderr), and a wall-clock timeout enforced here by the parent.

The code is a Python module text defining a function (``entrypoint``); it is called with one pandas
DataFrame per input (keyword = input name) and its return value (JSON-able, DataFrames become tables) is
the result. Each refusal is a named :mod:`protocols.sandbox.errors` exception. What may be *released*
of the result is decided afterwards by :mod:`protocols.sandbox.output_policy`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from protocols.crypto.sm3 import sm3_hex
from protocols.sandbox.errors import (
    CodeHashMismatch,
    SandboxCodeFailed,
    SandboxCpuExceeded,
    SandboxError,
    SandboxFileDenied,
    SandboxMemoryExceeded,
    SandboxNetworkDenied,
    SandboxOutputRefused,
    SandboxProcessLimit,
    SandboxTimeout,
    SandboxUnavailable,
    SandboxWriteDenied,
)

HARNESS = Path(__file__).with_name("_harness.py")
_EXIT_ERRORS: dict[int, type[SandboxError]] = {
    10: SandboxCodeFailed,
    11: SandboxMemoryExceeded,
    12: SandboxProcessLimit,
    13: SandboxNetworkDenied,
    14: SandboxFileDenied,
    15: SandboxWriteDenied,
    16: SandboxOutputRefused,
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_UID_BASE, _UID_SPAN = 1_000_000, 60_000  # per-run host uids when the node runs as root
_INNER_ID = 65534


class SandboxLimits(BaseModel):
    """Resource limits of one run."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int = Field(1 << 30, gt=0, description="address space (RLIMIT_AS)")
    cpu_seconds: int = Field(30, gt=0, description="CPU time (RLIMIT_CPU)")
    max_processes: int = Field(32, gt=3, description="processes and threads of the run's uid (RLIMIT_NPROC)")
    output_bytes: int = Field(1 << 20, gt=0, description="largest file it may write (RLIMIT_FSIZE), output in total")
    wall_seconds: float = Field(60.0, gt=0, description="wall clock, enforced by the parent")
    tmp_bytes: int = Field(64 << 20, gt=0, description="size of its private /tmp")


class SandboxResult(BaseModel):
    """What an isolated run produced (not yet checked against the output policy)."""

    code_sm3: str
    result: Any = None
    stdout: str = ""
    stderr: str = ""
    output_bytes: int = 0
    wall_seconds: float = 0.0


def code_sm3(code: str) -> str:
    """SM3 (hex) of the code text exactly as submitted (UTF-8)."""
    return sm3_hex(code.encode("utf-8"))


def check_approved(code: str, approved_sm3: str) -> str:
    """The code's SM3, or :class:`CodeHashMismatch` if it is not the approved one."""
    got = code_sm3(code)
    if got != approved_sm3.strip().lower():
        raise CodeHashMismatch(f"code SM3 {got} is not the approved {approved_sm3}: it was changed after approval")
    return got


def isolation_available() -> bool:
    """True when bubblewrap, prlimit (and setpriv, as root) are installed."""
    need = ["bwrap", "prlimit"] + (["setpriv"] if os.geteuid() == 0 else [])
    return all(shutil.which(t) for t in need)


def _interpreter_dirs(python: Path) -> list[Path]:
    """Directories the interpreter needs, bound at their own paths: the venv and the base installation."""
    probe = subprocess.run(
        [str(python), "-I", "-c", "import sys, os; print(sys.prefix); print(sys.base_prefix); "
         "print(os.path.realpath(sys.executable))"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    prefix, base, real = probe.stdout.split("\n")[:3]
    dirs = {Path(prefix), Path(base)}
    if not any(Path(real).is_relative_to(d) for d in dirs):
        dirs.add(Path(real).parent.parent)
    return sorted(d for d in dirs if not d.is_relative_to("/usr"))


_INTERPRETER_CACHE: dict[str, list[Path]] = {}


def _interpreter(python: Path) -> list[Path]:
    if str(python) not in _INTERPRETER_CACHE:
        _INTERPRETER_CACHE[str(python)] = _interpreter_dirs(python)
    return _INTERPRETER_CACHE[str(python)]


def _bwrap_args(
    python: Path, interp_dirs: list[Path], inputs: dict[str, Path], job_fd: int, harness_fd: int, out_fd: int, limits: SandboxLimits,
    fds: list[int], uid: int | None,
) -> list[str]:
    def path_fd(p: Path) -> str:
        fd = os.open(p, os.O_PATH | os.O_CLOEXEC)
        fds.append(fd)
        return str(fd)

    if uid is None:  # unprivileged node: bubblewrap makes a user namespace, uid 65534 inside
        args = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
                "--uid", str(_INNER_ID), "--gid", str(_INNER_ID)]
        run_as: list[str] = []
    else:  # root node: bubblewrap mounts as root, then setpriv drops to the run's own uid before the code
        args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup",
                "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        run_as = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                  "--no-new-privs", "--"]
    args += [
        "--die-with-parent", "--new-session", "--hostname", "sandbox",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "OPENBLAS_NUM_THREADS", "1",
        "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
    ]
    made: set[Path] = set()
    for d in interp_dirs:
        for parent in reversed(d.parents):
            if parent != Path("/") and parent not in made:  # bubblewrap would make them 0700
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        args += ["--ro-bind-fd", path_fd(d), str(d)]
    args += ["--perms", "0755", "--dir", "/data"]
    for name, src in inputs.items():
        args += ["--ro-bind-fd", path_fd(src), f"/data/{name}.csv"]
    args += ["--bind-fd", str(out_fd), "/out", "--perms", "0755", "--dir", "/sandbox",
             "--perms", "0444", "--ro-bind-data", str(job_fd), "/sandbox/job.json",
             "--perms", "0444", "--ro-bind-data", str(harness_fd), "/sandbox/harness.py",
             "--chdir", "/tmp", "--", *run_as, str(python), "-I", "-B", "/sandbox/harness.py", "/sandbox/job.json"]
    return args


def _reap_uid(uid: int, timeout: float = 10.0) -> None:
    """Kill and wait out every process of a run's own uid (the PID namespace's teardown is asynchronous)."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        left = []
        for p in psutil.process_iter(["uids", "status"]):
            uids = p.info["uids"]
            if uids and uids.real == uid and p.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(p)
                try:
                    p.kill()
                except psutil.Error:
                    pass
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _tail(path: Path, limit: int) -> str:
    data = path.read_bytes()
    return data[-limit:].decode("utf-8", "replace") if len(data) > limit else data.decode("utf-8", "replace")


def run_isolated(
    code: str,
    approved_sm3: str,
    entrypoint: str,
    inputs: dict[str, Path | str],
    limits: SandboxLimits | None = None,
    python: Path | str | None = None,
) -> SandboxResult:
    """Run approved ``code``'s ``entrypoint`` on ``inputs`` (name -> CSV file) in the sandbox.

    Raises :class:`CodeHashMismatch` before anything starts if the code is not the approved one, and one
    :class:`SandboxError` subclass per refusal; :class:`SandboxCodeFailed` when the code just fails.
    """
    sm3 = check_approved(code, approved_sm3)
    limits = limits or SandboxLimits()
    if not isolation_available():
        raise SandboxUnavailable("bubblewrap (Debian package 'bubblewrap') and prlimit are needed; run make bootstrap as root")
    if not _NAME.match(entrypoint):
        raise SandboxCodeFailed(f"entrypoint {entrypoint!r} is not a Python name")
    srcs: dict[str, Path] = {}
    for name, src in inputs.items():
        if not _NAME.match(name):
            raise SandboxCodeFailed(f"input name {name!r} is not a Python name")
        srcs[name] = Path(src).resolve(strict=True)
    python = Path(python or sys.executable)
    interp_dirs = _interpreter(python)

    work = Path(tempfile.mkdtemp(prefix="dcp-sandbox-"))
    fds: list[int] = []
    try:
        out = work / "out"
        out.mkdir(mode=0o700)
        root = os.geteuid() == 0
        uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if root else os.getuid()
        if root:
            os.chown(out, uid, uid)
        job = {
            "code": code, "entrypoint": entrypoint, "output_dir": "/out",
            "inputs": {name: f"/data/{name}.csv" for name in srcs},
            "read_prefixes": ["/usr", "/lib", "/lib64", "/bin", "/data", "/sandbox", "/proc/self", "/dev/null",
                              "/dev/urandom", "/etc/localtime"] + [str(d) for d in interp_dirs],
            "write_prefixes": ["/out", "/tmp"],
        }
        (work / "job.json").write_text(json.dumps(job))
        job_fd = os.open(work / "job.json", os.O_RDONLY)
        harness_fd = os.open(HARNESS, os.O_RDONLY)
        out_fd = os.open(out, os.O_PATH | os.O_DIRECTORY)
        fds += [job_fd, harness_fd, out_fd]
        cmd = [
            "prlimit", f"--as={limits.memory_bytes}", f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
            f"--nproc={limits.max_processes}", f"--fsize={limits.output_bytes}", "--core=0", "--",
        ]
        cmd += _bwrap_args(python, interp_dirs, srcs, job_fd, harness_fd, out_fd, limits, fds, uid if root else None)
        with open(work / "stdout", "wb") as so, open(work / "stderr", "wb") as se:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=so, stderr=se, pass_fds=fds,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise SandboxTimeout(f"stopped after {limits.wall_seconds:g} s wall clock") from None
            finally:
                wall = time.perf_counter() - t0
                if proc.poll() is None:  # an exception of our own while waiting
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                if root:
                    _reap_uid(uid)
        stdout, stderr = _tail(work / "stdout", limits.output_bytes), _tail(work / "stderr", 8192)
        if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL) and \
                "[sandbox]" not in stderr:
            raise SandboxCpuExceeded(f"stopped at its CPU-time limit of {limits.cpu_seconds} s")
        if rc in _EXIT_ERRORS:
            last = stderr.strip().rsplit("[sandbox] ", 1)[-1][:500]
            raise _EXIT_ERRORS[rc](last)
        if rc != 0:
            raise SandboxCodeFailed(f"exit status {rc}: {stderr.strip()[-500:]}")
        total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        if total > limits.output_bytes:
            raise SandboxOutputRefused(f"output is {total} bytes, over the {limits.output_bytes}-byte cap")
        result_file = out / "result.json"
        if not result_file.is_file():
            raise SandboxCodeFailed("the code left no result")
        return SandboxResult(
            code_sm3=sm3, result=json.loads(result_file.read_text()), stdout=stdout, stderr=stderr,
            output_bytes=total, wall_seconds=wall,
        )
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
