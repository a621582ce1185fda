"""Run a local ``anvil`` node as a subprocess on a free loopback port, and always stop it.

    with AnvilNode() as node:
        w3 = node.web3()

The node runs in its own process group; :meth:`AnvilNode.stop` terminates the whole group
(SIGTERM, then SIGKILL) so nothing is left behind even if anvil forked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from common.net import free_port
from common.settings import DcpSettings
from contracts.errors import AnvilError

#: anvil's default mnemonic accounts are unlocked; this many are funded.
DEFAULT_ACCOUNTS = 20


class AnvilNode:
    """An anvil process bound to 127.0.0.1 on a free port."""

    def __init__(
        self,
        binary: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        accounts: int = DEFAULT_ACCOUNTS,
        chain_id: int = 31337,
        hardfork: str | None = None,
        startup_timeout: float = 30.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.binary = Path(binary) if binary else DcpSettings().anvil_bin
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.accounts = accounts
        self.chain_id = chain_id
        self.hardfork = hardfork
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def url(self) -> str:
        """The JSON-RPC URL (only while running)."""
        if self.port is None:
            raise AnvilError("anvil is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The anvil process id while running."""
        return self._proc.pid if self._proc else None

    def start(self) -> AnvilNode:
        """Start anvil and wait until it answers JSON-RPC; :class:`AnvilError` if it cannot."""
        if self._proc is not None:
            raise AnvilError("anvil already started")
        if not self.binary.exists():
            raise AnvilError(f"anvil binary not found at {self.binary}; run scripts/bootstrap.sh")
        attempts = 1 if self._requested_port else 3
        last_error = ""
        for _ in range(attempts):
            port = self._requested_port or free_port(self.host)
            cmd = [
                str(self.binary),
                "--host", self.host,
                "--port", str(port),
                "--accounts", str(self.accounts),
                "--chain-id", str(self.chain_id),
                "--silent",
            ]
            if self.hardfork:
                cmd += ["--hardfork", self.hardfork]
            cmd += self.extra_args
            self._log = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(
                cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
            self.port = port
            try:
                self._wait_ready()
                return self
            except AnvilError as exc:
                last_error = str(exc)
                self.stop()
        raise AnvilError(f"anvil did not start: {last_error}")

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AnvilError(f"anvil exited with code {self._proc.returncode}: {self._output()}")
            try:
                req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=1.0) as resp:  # noqa: S310 - loopback only
                    if int(json.loads(resp.read())["result"], 16) == self.chain_id:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, ValueError):
                time.sleep(0.05)
        raise AnvilError(f"anvil did not answer on {self.url} within {self.startup_timeout}s: {self._output()}")

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        """Stop the process group (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        elif proc is not None:
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def web3(self):  # noqa: ANN201 - web3 imported lazily
        """A :class:`web3.Web3` connected to this node."""
        from web3 import HTTPProvider, Web3

        return Web3(HTTPProvider(self.url, request_kwargs={"timeout": 60}))

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
