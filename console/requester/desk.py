"""What the requester's console does for the bank: the coordinator's catalog and job list, a job
submitted as a request signed with the bank's own key (as ``dcp job submit`` / ``DcpClient.submit``
does), and the job's outputs opened with the bank's key on the bank's node.

The console never holds a key the node does not hold already: a :class:`RequesterDesk` is built from
the bank node's own keystore and its 国密 TLS credentials (the node's identity towards the
coordinator), so the browser never sees a key and the coordinator never sees a plaintext result.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

from console.web import Page
from coordinator.models import JobOut
from coordinator.sdk import DcpClient


class ResultUnavailable(Exception):
    """An output could not be fetched or opened (named reason in ``str``)."""


class RequesterDesk:
    """The bank's side of the coordinator, for the console: ``member`` is the bank's member name,
    ``client`` a :class:`DcpClient` over the bank's 国密 TLS transport signing with ``keys``
    (the bank's ``MemberKeys``)."""

    def __init__(self, member: str, client: DcpClient, keys: Any, regulator_url: str | None = None) -> None:
        self.member = member
        self.client = client
        self.keys = keys
        self.regulator_url = regulator_url.rstrip("/") if regulator_url else None
        client.signer = keys

    @classmethod
    def from_federation(cls, state: Any, member: str, regulator_url: str | None = None) -> RequesterDesk:
        """The desk of ``member`` in a federation ``dcp up`` started (its keystore, its TLS identity)."""
        from federation.launcher import transport_for
        from protocols.crypto.keystore import load_keystore

        keys = load_keystore(Path(state.keys_dir) / f"{member}.keystore.json", state.passphrase_of(member))
        client = DcpClient(state.coordinator_url, transport=transport_for(state, member))
        return cls(member, client, keys, regulator_url)

    @classmethod
    def from_node(cls, ctx: Any) -> RequesterDesk:
        """The desk of a running bank node (its ``NodeContext``): the node's own keystore, its
        coordinator (``coordinator_url``) reached over the node's 国密 TLS credentials pinning the
        coordinator's registered key (``tls``), and ``regulator_console_url`` for the receipts' links."""
        from protocols.gmtls.client import GmTlsTransport
        from protocols.gmtls.config import member_pins

        settings = ctx.settings
        if not settings.coordinator_url:
            raise ValueError(f"node {settings.name}: no coordinator_url, so no requester console")
        keys = ctx.approvals.keys()  # the node's keystore, opened once (KeysUnavailable without one)
        transport = None
        if settings.tls is not None:
            transport = GmTlsTransport(settings.tls.credentials(),  # pins from the node's one member directory
                                       member_pins(ctx.members, {"coordinator": settings.coordinator_url}))
        client = DcpClient(settings.coordinator_url, timeout=settings.coordinator_timeout_s, transport=transport)
        return cls(settings.name, client, keys, settings.regulator_console_url)

    # ---------------------------------------------------------------- coordinator reads

    def catalog(self, q: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """The coordinator's catalog (all of its entries matching ``q``; ``member``: one owner only)."""
        rows = self.client.catalog(q=q or None)
        return [r for r in rows if not member or r["member"] == member]

    def jobs(self, state: str | None = None, q: str | None = None, number: int = 1, size: int = 20) -> Page[JobOut]:
        """Page ``number`` (from 1; clamped into range, so a stale link still lands) of the bank's own
        jobs, newest first, in ``state`` and holding every word of ``q``: the coordinator reads and
        sends only that page (``DcpClient.page``)."""
        n = max(1, number)
        total, items = self.client.page(state or None, self.member, q or None, limit=size, offset=(n - 1) * size)
        last = max(1, math.ceil(total / size))
        if n > last:  # past the end: the last page
            n = last
            total, items = self.client.page(state or None, self.member, q or None, limit=size, offset=(n - 1) * size)
        return Page(items=items, number=n, size=size, total=total)

    def job(self, job_id: str) -> JobOut:
        return self.client.status(job_id)

    # ---------------------------------------------------------------- signed writes

    def submit(self, spec: dict[str, Any]) -> str:
        """Submit ``spec`` as a request signed with the bank's SM2 key; the job id (or RemoteError)."""
        return self.client.submit({**spec, "requester": self.member})

    def withdraw(self, job_id: str, reason: str) -> JobOut:
        """Withdraw a job (a signed withdrawal)."""
        return self.client.revoke(job_id, by=self.member, reason=reason)

    # ---------------------------------------------------------------- results

    def result(self, job_id: str, name: str) -> bytes:
        """Output ``name`` of ``job_id``, opened with the bank's SM2 key here (and checked against its SM3)."""
        from coordinator.sdk import RemoteError
        from protocols.crypto.envelope import open_
        from protocols.crypto.sm3 import sm3_digest

        try:
            got = self.client._call("GET", f"/jobs/{job_id}/results/{name}")
        except RemoteError as exc:
            raise ResultUnavailable(exc.remote_detail) from None
        try:
            data = open_(self.keys.sm2.private_key, base64.b64decode(got["envelope_b64"]), f"{job_id}/{name}".encode())
        except Exception as exc:  # noqa: BLE001 - any failure to open is one answer: not ours / damaged
            raise ResultUnavailable(f"the output {name} does not open with {self.member}'s key: {type(exc).__name__}") from None
        if sm3_digest(data).hex() != got["sm3"]:
            raise ResultUnavailable(f"the output {name} does not match its SM3 hash")
        return data

    def regulator_link(self, job_id: str) -> str | None:
        """The regulator console's page of the job's authorization and receipts (the chain's job key)."""
        if not self.regulator_url:
            return None
        from protocols.crypto.approvals import job_key

        return f"{self.regulator_url}/jobs/0x{job_key(job_id).hex()}"
