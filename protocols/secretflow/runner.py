"""Run a vertical SecretFlow job as one real process per party, and never leave one behind.

:func:`run_vertical_job` allocates free loopback ports, writes each party its own
config, starts ``python -m protocols.secretflow.party`` per party (each in its own
session, so a whole process group can be stopped), streams their JSON progress
lines to an optional callback and watches them. The first party to exit non-zero
fails the run: the others are stopped (SIGTERM to the group, SIGKILL after a
grace period) and :class:`PartyFailedError` carries that party's stderr tail.
A timeout, Ctrl-C or SIGTERM to the runner stop every party the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from common.net import free_ports
from common.settings import project_root
from protocols.secretflow.errors import (
    EmptyIntersectionError,
    JobSpecError,
    ModelInvalidError,
    PartyFailedError,
    PartyInputError,
    RunCancelledError,
    RunTimeoutError,
    SingleClassLabelError,
)
from protocols.secretflow.lifeline import PARENT_ENV
from protocols.secretflow.party import staging_dir
from protocols.secretflow.spec import (
    ClusterSpec,
    PartyConfig,
    PartyEndpoint,
    PartyExit,
    PartyResult,
    RunResult,
    VerticalJobSpec,
    psi_peers,
)
from protocols.secretflow.traces import remove_psi_traces

PARTY_MODULE = "protocols.secretflow.party"
ProgressCallback = Callable[[dict[str, Any]], None]
_TAIL_LINES = 40


def build_party_configs(spec: VerticalJobSpec, ports: list[int] | None = None) -> dict[str, PartyConfig]:
    """One config per party, on freshly allocated ports (or ``ports``, for tests)."""
    names = sorted(p.name for p in spec.parties)
    wanted = [(n, kind) for n in names for kind in ("sf", "spu")]
    wanted += [(n, f"psi:{peer}") for n in names for peer in psi_peers(n, spec.label_party, names)]
    if ports is None:  # each party's ports are free on its own address
        ports = []
        for n in names:
            mine = [w for w in wanted if w[0] == n]
            ports += free_ports(len(mine), spec.party_hosts.get(n, spec.host))
        wanted = [w for n in names for w in wanted if w[0] == n]
    bound = {(spec.party_hosts.get(w[0], spec.host), port) for w, port in zip(wanted, ports, strict=False)}
    if len(ports) < len(wanted) or len(bound) != len(ports):
        raise JobSpecError(f"need {len(wanted)} distinct ports, got {ports}")
    by = dict(zip(wanted, ports, strict=False))
    endpoints = [
        PartyEndpoint(
            name=n,
            host=spec.party_hosts.get(n),
            sf_port=by[(n, "sf")],
            spu_port=by[(n, "spu")],
            psi_ports={peer: by[(n, f"psi:{peer}")] for peer in psi_peers(n, spec.label_party, names)},
        )
        for n in names
    ]
    connect_timeout = min(60.0, spec.timeout_s)
    cluster = ClusterSpec(
        host=spec.host, parties=endpoints, connect_timeout_s=connect_timeout, recv_timeout_s=spec.timeout_s
    )
    return {
        p.name: PartyConfig(
            job_id=spec.job_id,
            cluster=cluster,
            me=p.model_copy(
                update={
                    "input_csv": p.input_csv.resolve(),
                    "output_dir": p.output_dir.resolve(),
                    "model_dir": p.model_dir.resolve() if p.model_dir is not None else None,
                }
            ),
            join_key=spec.join_key,
            label_party=spec.label_party,
            label_column=spec.label_column,
            stages=spec.stages,
            psi_protocol=spec.psi_protocol,
            spu_protocol=spec.spu_protocol,
            model=spec.model,
        )
        for p in spec.parties
    }


@dataclass
class _Party:
    name: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    stdout_log: Path
    result: PartyResult | None = None
    error_message: str = ""
    threads: list[threading.Thread] = field(default_factory=list)

    def stderr_tail(self, lines: int = _TAIL_LINES) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_stdout(party: _Party, events: queue.Queue[tuple[str, str, Any]]) -> None:
    assert party.proc.stdout is not None
    with party.stdout_log.open("w") as log:
        for line in party.proc.stdout:
            log.write(line)
            log.flush()
            text = line.strip()
            if not text.startswith("{"):
                continue
            try:
                msg = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(msg, dict) and "event" in msg:
                events.put(("line", party.name, msg))


def _wait_exit(party: _Party, events: queue.Queue[tuple[str, str, Any]]) -> None:
    rc = party.proc.wait()
    events.put(("exit", party.name, rc))


def _stop(parties: list[_Party], grace_s: float) -> None:
    """SIGTERM every party's process group, then SIGKILL what is left after ``grace_s``."""

    def signal_groups(sig: int) -> None:
        for p in parties:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.proc.pid, sig)

    signal_groups(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in parties:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    # the leader may be gone while a child of it lingers: kill the groups regardless
    signal_groups(signal.SIGKILL)
    join_by = time.monotonic() + 5  # one bound for all readers, not 5 s for each
    for p in parties:
        p.proc.wait()
        for t in p.threads:
            t.join(timeout=max(0.0, join_by - time.monotonic()))
        # closing under a reader still in readline would wait on its buffer's lock
        if p.proc.stdout is not None and not any(t.is_alive() for t in p.threads[:1]):
            p.proc.stdout.close()


class _SignalGuard:
    """While running, SIGINT and SIGTERM are noted and acted on at one safe point; during clean-up
    they are ignored.

    A signal's exception is raised by :meth:`check`, which the watch loop calls at least every 0.2 s
    — never asynchronously. An exception thrown into the middle of ``queue.get`` (its mutex held),
    ``Popen`` (a party forked but not yet recorded, so never stopped) or a lock's ``with`` can leave the
    reader threads blocked for good, after which each of them cost the stop its join timeout.
    SIGINT is taken over only while Python's default handler (KeyboardInterrupt) is in place.
    Signal handlers can only be set from the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.saved: dict[int, Any] = {}
        self.pending: int | None = None

    def __enter__(self) -> _SignalGuard:
        if self.active:
            self.saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            signal.signal(signal.SIGTERM, self._note)
            if self.saved[signal.SIGINT] is signal.default_int_handler:
                signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum: int, frame: object) -> None:
        if self.pending is None:
            self.pending = signum

    def check(self) -> None:
        """Raise for a signal received since the last call: SIGINT → KeyboardInterrupt,
        SIGTERM → :class:`RunCancelledError`."""
        if self.pending == signal.SIGINT:
            raise KeyboardInterrupt
        if self.pending == signal.SIGTERM:
            raise RunCancelledError("runner received SIGTERM; all parties were stopped")

    def shield(self) -> None:
        """Ignore further SIGINT/SIGTERM so that stopping the parties is not cut short."""
        if self.active:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            for sig, handler in self.saved.items():
                signal.signal(sig, handler)


def _failure(p: _Party, rc: int) -> PartyFailedError:
    tail = p.stderr_tail()
    if rc in (PartyExit.INPUT_MISSING, PartyExit.INPUT_INVALID):
        return PartyInputError(p.name, rc, tail, p.error_message or PartyExit(rc).name)
    if rc == PartyExit.EMPTY_INTERSECTION:
        return EmptyIntersectionError(p.name, rc, tail, p.error_message)
    if rc == PartyExit.SINGLE_CLASS:
        return SingleClassLabelError(p.name, rc, tail, p.error_message)
    if rc == PartyExit.MODEL_INVALID:
        return ModelInvalidError(p.name, rc, tail, p.error_message)
    reason = p.error_message
    if not reason and rc < 0:
        with contextlib.suppress(ValueError):
            reason = signal.Signals(-rc).name
    return PartyFailedError(p.name, rc, tail, reason)


def run_vertical_job(
    spec: VerticalJobSpec | dict[str, Any],
    on_event: ProgressCallback | None = None,
    python: str | None = None,
    grace_s: float = 5.0,
) -> RunResult:
    """Run ``spec`` with one real SecretFlow process per party; see the module docstring.

    Raises :class:`PartyInputError` / :class:`PartyFailedError` when a party fails,
    :class:`RunTimeoutError` after ``spec.timeout_s``, :class:`RunCancelledError` on
    SIGTERM; re-raises ``KeyboardInterrupt`` — always after stopping every party.
    """
    if not isinstance(spec, VerticalJobSpec):
        try:
            spec = VerticalJobSpec.model_validate(spec)
        except ValidationError as exc:
            raise JobSpecError(str(exc)) from exc
    configs = build_party_configs(spec)
    own_work = spec.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="dcp-sf-")) if own_work else spec.work_dir
    assert work is not None
    work = work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    parties: list[_Party] = []
    guard = _SignalGuard()
    try:
        with guard:
            try:
                result = _start_and_watch(spec, configs, work, parties, events, on_event, python, guard.check)
            except BaseException:
                guard.shield()
                _stop(parties, grace_s)
                for ps in spec.parties:  # a killed party cannot clean its own staging
                    shutil.rmtree(staging_dir(ps.output_dir.resolve(), spec.job_id), ignore_errors=True)
                raise
        _stop(parties, grace_s)  # all exited already; reaps and joins the readers
    finally:
        remove_psi_traces(str(work / "party-"))  # traces of parties that were killed mid-PSI
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _start_and_watch(
    spec: VerticalJobSpec,
    configs: dict[str, PartyConfig],
    work: Path,
    parties: list[_Party],
    events: queue.Queue[tuple[str, str, Any]],
    on_event: ProgressCallback | None,
    python: str | None,
    check: Callable[[], None],
) -> RunResult:
    """Start one process per party (appending to ``parties`` as it goes), then watch them; ``check``
    raises for a signal the runner received."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project_root()), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    for name, cfg in sorted(configs.items()):
        cfg_path = work / f"party-{name}.json"
        cfg_path.write_text(cfg.model_dump_json(indent=2))
        stderr_path = work / "logs" / f"{name}.stderr.log"
        # engine scratch (PSI bucket stores, spu.log) stays in the run's own dir
        tmp = work / "tmp" / name
        tmp.mkdir(parents=True, exist_ok=True)
        with stderr_path.open("w") as err:
            proc = subprocess.Popen(
                [
                    python or sys.executable,
                    "-m",
                    PARTY_MODULE,
                    "--config",
                    str(cfg_path),
                    "--party",
                    name,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=tmp,  # SPU writes spu.log into the working directory
                # its own session (a signal to our terminal is ours to handle), and it dies with us
                env={**env, "TMPDIR": str(tmp), PARENT_ENV: str(os.getpid())},
                start_new_session=True,
            )
        p = _Party(name, proc, stderr_path, work / "logs" / f"{name}.stdout.log")
        parties.append(p)
        for target in (_read_stdout, _wait_exit):
            t = threading.Thread(target=target, args=(p, events), daemon=True, name=f"sf-{name}")
            t.start()
            p.threads.append(t)
    return _watch(spec, parties, events, started, on_event, check)


def _handle_line(p: _Party, msg: dict[str, Any], on_event: ProgressCallback | None) -> None:
    if msg.get("event") == "result":
        p.result = PartyResult.model_validate(msg["result"])
    elif msg.get("event") == "error":
        p.error_message = str(msg.get("message", ""))
    if on_event is not None:
        on_event(msg)


def _watch(
    spec: VerticalJobSpec,
    parties: list[_Party],
    events: queue.Queue[tuple[str, str, Any]],
    started: float,
    on_event: ProgressCallback | None,
    check: Callable[[], None] = lambda: None,
) -> RunResult:
    """Consume progress lines and exit notices (in the order they happened) until all parties are done;
    ``check()`` at least every 0.2 s (a signal the runner received raises there)."""
    by_name = {p.name: p for p in parties}
    exited: dict[str, int] = {}
    deadline = started + spec.timeout_s
    while len(exited) < len(parties):
        check()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RunTimeoutError(spec.timeout_s, sorted(set(by_name) - set(exited)))
        try:
            kind, name, payload = events.get(timeout=min(0.2, remaining))
        except queue.Empty:
            continue
        p = by_name[name]
        if kind == "line":
            _handle_line(p, payload, on_event)
            continue
        rc = int(payload)
        exited[name] = rc
        p.threads[0].join(timeout=2)  # the stdout reader: its last lines (error / result) are queued
        if rc != 0 or p.result is None:
            _drain_lines(events, p, on_event)
        if rc != 0:
            raise _root_cause(name, rc, by_name, exited, events, on_event, label_party=spec.label_party)
        if p.result is None:
            raise PartyFailedError(name, rc, p.stderr_tail(), "exited 0 without reporting a result")
    return RunResult(
        job_id=spec.job_id,
        label_party=spec.label_party,
        psi_protocol=spec.psi_protocol,
        parties={p.name: p.result for p in parties if p.result is not None},
        elapsed_s=time.monotonic() - started,
    )


def _root_cause(
    first: str,
    rc: int,
    by_name: dict[str, _Party],
    exited: dict[str, int],
    events: queue.Queue[tuple[str, str, Any]],
    on_event: ProgressCallback | None,
    window_s: float = 1.0,
    label_party: str = "",
) -> PartyFailedError:
    """The error to report once ``first`` failed.

    When one party stops, its peers soon fail too (their links break). Exits that
    arrive within ``window_s`` are gathered; a party that *diagnosed* a problem
    (bad config or input, empty intersection) is the root cause, else the first to fail.
    """
    failures = [(first, rc)]
    deadline = time.monotonic() + window_s
    while len(exited) < len(by_name) and (left := deadline - time.monotonic()) > 0:
        try:
            kind, name, payload = events.get(timeout=left)
        except queue.Empty:
            break
        if kind == "line":
            _handle_line(by_name[name], payload, on_event)
            continue
        exited[name] = int(payload)
        by_name[name].threads[0].join(timeout=2)
        _drain_lines(events, by_name[name], on_event)
        if int(payload) != 0:
            failures.append((name, int(payload)))
    diagnosed = {
        PartyExit.CONFIG,
        PartyExit.INPUT_MISSING,
        PartyExit.INPUT_INVALID,
        PartyExit.EMPTY_INTERSECTION,
        PartyExit.SINGLE_CLASS,
        PartyExit.MODEL_INVALID,
    }
    # a diagnosis by the label holder (it sees the labels and the running intersection) reads best
    ranked = sorted(failures, key=lambda f: (f[1] not in diagnosed, f[0] != label_party))
    name, code = ranked[0]
    return _failure(by_name[name], code)


def _drain_lines(
    events: queue.Queue[tuple[str, str, Any]], party: _Party, on_event: ProgressCallback | None
) -> None:
    """Handle the queued lines of ``party`` now, keeping everything else queued in order."""
    others: list[tuple[str, str, Any]] = []
    while True:
        try:
            item = events.get_nowait()
        except queue.Empty:
            break
        if item[0] == "line" and item[1] == party.name:
            _handle_line(party, item[2], on_event)
        else:
            others.append(item)
    for item in others:
        events.put(item)
