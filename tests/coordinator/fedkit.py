"""Helpers of the real-federation tests: bring a three-member federation up (anvil, contracts,
coordinator, nodes in their own processes) and down again with nothing left behind, find engine
party processes, reach the chain as a member, and wait for a job stage."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from coordinator.models import JobOut
from coordinator.sdk import DcpClient, WaitTimeout
from federation.launcher import FederationConfig, down, up
from nodes.secretflow.processes import idle_warm_party

POLICY = {"max_grade": {"vertical_train": 3}, "default_max_grade": 2}


def party_procs(root: Path) -> list[psutil.Process]:
    """The SecretFlow party processes whose command line mentions ``root``."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "protocols.secretflow.party" in cmd and str(root) in cmd and not idle_warm_party(p.pid):
            out.append(p)
    return out


def party_logs(root: Path, job: str, lines: int = 60) -> str:
    """The tail of every node's party log of ``job`` under ``root`` (the stacks a stopped or
    timed-out party wrote are at the end)."""
    from protocols.crypto.approvals import job_key

    key = job_key(job).hex()[:32]
    out = []
    for log in sorted(root.rglob(f"{key}/party.stderr.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"---- {log.relative_to(root)}\n" + "\n".join(tail))
    return "\n".join(out) or f"(no party log of {job} under {root})"


class DiagnosingClient(DcpClient):
    """A :class:`DcpClient` whose ``wait`` says where a job that is still running waits: it asks the
    federation's parties for their stacks (SIGUSR1) and prints every party log of the job, then
    raises. A job that ends FAILED prints its parties' logs too (pytest shows them if the test fails)."""

    def __init__(self, base_url: str, root: Path, signer: Any = None, state: Any = None) -> None:
        """With the federation's ``state`` the client acts as ``bank`` over 国密 TLS and signs as bank."""
        from federation.launcher import transport_for
        from protocols.crypto.keystore import load_keystore

        if signer is None and state is not None:
            signer = load_keystore(state.keys_dir / "bank.keystore.json", state.passphrase_of("bank"))
        super().__init__(base_url, signer=signer, transport=transport_for(state, "bank") if state else None)
        self.root = root
        self.state = state

    def approve(self, job_id: str, member: str, node_url: str, token: str | None = None, **kw: Any) -> Any:
        """As ``member``'s approver (the officer ``dcp up`` made on its node) unless a token is given."""
        return super().approve(job_id, member, node_url, token or self._officer(member), **kw)

    def reject(self, job_id: str, member: str, node_url: str, reason: str, token: str | None = None,
               **kw: Any) -> Any:
        return super().reject(job_id, member, node_url, reason, token or self._officer(member), **kw)

    def _officer(self, member: str) -> str | None:
        from federation.launcher import officer_token

        return officer_token(self.state, member, "approver") if self.state is not None else None

    def wait(self, job_id: str, timeout: float = 600.0, *args: Any, **kwargs: Any) -> JobOut:
        try:
            final = super().wait(job_id, timeout, *args, **kwargs)
        except WaitTimeout:
            st = self.status(job_id)
            print(f"job {job_id} still {st.state.value}; tasks: {st.tasks}")
            for p in party_procs(self.root):
                try:
                    os.kill(p.pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
            time.sleep(1.5)
            print(party_logs(self.root, job_id))
            raise
        if final.state.value == "FAILED":
            print(f"job {job_id} FAILED: {final.reason}\n{party_logs(self.root, job_id)}")
        return final


@contextmanager
def federation(root: Path, n_rows: int, seed: int, coordinator: dict[str, Any],
               node: dict[str, dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """A federation of bank, tax and power over synthetic vertical data; down (and checked) on exit.
    ``node``: member -> more of its node's settings (``MemberConfig.node``)."""
    from protocols.secretflow.synthetic import make_vertical_data

    data = make_vertical_data(root / "data", n_rows=n_rows, overlap=0.6, seed=seed)
    members = [
        {"name": p.name, "role": "bank" if p.name == "bank" else "department", "policy": POLICY,
         "datasets": [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": "uscc"}],
         "node": (node or {}).get(p.name, {})}
        for p in data.parties
    ]
    with started(root, members, coordinator) as state:
        from protocols.crypto.keystore import load_keystore

        bank = load_keystore(state.keys_dir / "bank.keystore.json", state.passphrase_of("bank"))
        yield {"state": state, "data": data, "root": root,
               "client": DiagnosingClient(state.coordinator_url, root, signer=bank, state=state)}  # the bank signs


@contextmanager
def started(root: Path, members: list[dict[str, Any]], coordinator: dict[str, Any] | None = None) -> Iterator[Any]:
    """``dcp up`` of ``members`` under ``root/fed``; on exit ``dcp down``, and nothing of it may be left
    running (no node, coordinator, anvil or engine party)."""
    cfg = FederationConfig.model_validate({
        "work_dir": str(root / "fed"), "members": members, "scrypt_n": 2**12,
        "start_timeout_s": 180.0,  # a loaded CI machine (load ≈ 20 on 2 cores) took over 60 s to start five nodes
        "coordinator": coordinator or {"node_timeout_s": 6.0, "poll_interval_s": 0.3},
    })
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    state = up(cfg)
    try:
        yield state
    finally:
        down(state.work_dir)
        time.sleep(0.5)
        left = [p for p in psutil.Process().children(recursive=True)
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"federation processes left behind: {[p.cmdline()[:4] for p in left]}"
        assert not party_procs(root)


def vertical_spec(fed: dict[str, Any], purpose: str, **over: Any) -> dict[str, Any]:
    """An SS-LR job of the bank over every member's dataset."""
    base = {
        "kind": "vertical_train", "requester": "bank", "purpose": purpose, "join_key": "uscc",
        "label": {"member": "bank", "dataset": "bank_2024", "column": "default"},
        "inputs": [{"member": p.name, "dataset": f"{p.name}_2024", "columns": p.features} for p in fed["data"].parties],
        "model": {"algorithm": "ss_lr", "params": {"epochs": 2, "batch_size": 256}},
        "expires_in_s": 900,
    }
    base.update(over)
    return base


def http(fed: dict[str, Any], member: str) -> Any:
    """An ``httpx.Client`` acting as ``member`` over the federation's 国密 mutual TLS."""
    from federation.launcher import client_for

    return client_for(fed["state"] if isinstance(fed, dict) else fed, member)


def chain(fed: dict[str, Any], member: str | None = None) -> Any:
    """A chain client of the federation, signing as ``member``'s keystore account when given."""
    from coordinator.chain import connect
    from protocols.crypto.keystore import load_keystore

    st = fed["state"]
    key = None
    if member is not None:
        keys = load_keystore(st.keys_dir / f"{member}.keystore.json", st.passphrase_of(member))
        key = keys.chain_private_key
    return connect(st.rpc_url, st.registry, key)


def wait_stage(c: DcpClient, job: str, pred: Any, timeout: float = 180) -> Any:
    """Poll the job until ``pred(status)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = c.status(job)
        if pred(st):
            return st
        time.sleep(0.2)
    raise AssertionError(f"job never reached the stage: {c.status(job)}")
