"""A Python SDK with the operations of ``dcp job`` — for notebooks and scripts.

    from coordinator.sdk import DcpClient
    dcp = DcpClient("http://127.0.0.1:8600")
    job = dcp.submit("spec.yaml")
    dcp.approve(job, member="tax", node_url="http://127.0.0.1:8701")   # as the tax department
    dcp.wait(job)
    metrics = dcp.result(job, "metrics", keystore="keys/bank.keystore.json", passphrase="...")
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from coordinator.errors import CoordinatorError, JobNotFound, NodeRefused, NodeUnavailable
from coordinator.models import TERMINAL, JobOut, JobState
from coordinator.nodeclient import NodeClient
from coordinator.spec import JobSpec, load_spec


class RemoteError(CoordinatorError):
    """The coordinator answered with a named error (``error`` holds its name)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.status_code = status
        self.error = error
        self.remote_detail = detail


class WaitTimeout(CoordinatorError):
    """The job did not reach a final state in time."""

    status_code = 408


class DcpClient:
    """Client of one coordinator."""

    def __init__(self, base_url: str, timeout: float = 30.0, signer: Any = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``signer``: the requester's ``MemberKeys``; every submit and revoke is signed with them
        unless a call names its own. ``transport``: e.g. ``protocols.gmtls.client.GmTlsTransport``
        (国密 mutual TLS, pinning the coordinator's and the nodes' registered keys); None = plain HTTP."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.signer = signer
        self.transport = transport
        self._http: httpx.Client | None = None  # one connection pool (a client per call costs ~25 ms of CPU)
        self._http_lock = threading.Lock()

    def close(self) -> None:
        """Release the HTTP connections (the client stays usable: the next call opens new ones)."""
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> DcpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(transport=self.transport)
            return self._http

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        return self._send(method, path, **kw).json()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The coordinator's answer (a named error raised as :class:`RemoteError` / ``JobNotFound``)."""
        try:
            r = self._client().request(method, f"{self.base_url}{path}", timeout=self.timeout, **kw)
        except httpx.HTTPError as exc:
            raise NodeUnavailable(f"coordinator at {self.base_url} did not answer: {type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": f"HTTP{r.status_code}", "detail": r.text[:300]}
            if body.get("error") == "JobNotFound":
                raise JobNotFound(body.get("detail", ""))
            raise RemoteError(r.status_code, str(body.get("error")), str(body.get("detail")))
        return r

    # jobs
    def submit(self, spec: str | Path | dict[str, Any] | JobSpec, signer: Any = None) -> str:
        """Submit a spec (file path, mapping or JobSpec); the job id. ``signer``: the requester's
        ``MemberKeys`` (protocols.crypto.keystore) — the coordinator accepts only signed requests."""
        if isinstance(spec, str | Path):
            spec = load_spec(spec)
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        signer = signer or self.signer
        if signer is not None:
            from protocols.signed_request import sign_request

            body = {"request": sign_request(signer.sm2.private_key, signer.member, body).model_dump()}
        return self._call("POST", "/jobs", json=body)["job_id"]

    def status(self, job_id: str) -> JobOut:
        return JobOut.model_validate(self._call("GET", f"/jobs/{job_id}"))

    def list(self, state: str | None = None, requester: str | None = None) -> list[JobOut]:
        params = {k: v for k, v in {"state": state, "requester": requester}.items() if v}
        return [JobOut.model_validate(j) for j in self._call("GET", "/jobs", params=params)]

    def page(self, state: str | None = None, requester: str | None = None, q: str | None = None,
             limit: int = 20, offset: int = 0, newest_first: bool = True) -> tuple[int, list[JobOut]]:
        """One page of the jobs (the coordinator reads only that page): ``(how many match in all,
        the page)``; ``q``: words that must all be in the job's id, purpose or kind."""
        params: dict[str, Any] = {k: v for k, v in {"state": state, "requester": requester, "q": q}.items() if v}
        params.update(limit=limit, offset=offset, order="newest" if newest_first else "oldest")
        r = self._send("GET", "/jobs", params=params)
        return int(r.headers["X-Total-Count"]), [JobOut.model_validate(j) for j in r.json()]

    def manifest(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/manifest")

    def revoke(self, job_id: str, by: str, reason: str | None = None, signer: Any = None) -> JobOut:
        """Withdraw a job; ``signer``: the requester's ``MemberKeys`` (a withdrawal is signed too)."""
        body: dict[str, Any] = {"by": by, "reason": reason}
        signer = signer or self.signer
        if signer is not None:
            from protocols.signed_request import sign_request

            body = {"request": sign_request(signer.sm2.private_key, signer.member, {"job_id": job_id, "reason": reason},
                                            action="revoke").model_dump()}
        return JobOut.model_validate(self._call("POST", f"/jobs/{job_id}/revoke", json=body))

    def wait(
        self, job_id: str, timeout: float = 600.0, poll: float = 0.5,
        on_update: Callable[[JobOut], None] | None = None, until: set[JobState] | None = None,
    ) -> JobOut:
        """Poll until the job is final (or in one of ``until``); ``on_update`` sees every status."""
        until = until or set(TERMINAL)
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(job_id)
            if on_update:
                on_update(st)
            if st.state in until:
                return st
            if time.monotonic() > deadline:
                raise WaitTimeout(f"job {job_id} is still {st.state.value} after {timeout:.0f}s")
            time.sleep(poll)

    def result(self, job_id: str, name: str, keystore: str | Path, passphrase: str) -> bytes:
        """Fetch an output and open it with the requester's SM2 key (the coordinator never could)."""
        from protocols.crypto.envelope import open_
        from protocols.crypto.keystore import load_keystore
        from protocols.crypto.sm3 import sm3_digest

        got = self._call("GET", f"/jobs/{job_id}/results/{name}")
        keys = load_keystore(keystore, passphrase)
        data = open_(keys.sm2.private_key, base64.b64decode(got["envelope_b64"]), f"{job_id}/{name}".encode())
        if sm3_digest(data).hex() != got["sm3"]:
            raise RemoteError(409, "ResultHashMismatch", f"output {name} does not match its SM3 {got['sm3']}")
        return data

    # directory
    def members(self) -> list[dict[str, Any]]:
        return self._call("GET", "/members")

    def catalog(self, q: str | None = None, department: str | None = None, category: str | None = None,
                max_grade: int | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"q": q, "department": department, "category": category,
                                    "max_grade": max_grade}.items() if v is not None}
        return self._call("GET", "/catalog", params=params)

    # a department's decision, through its own node
    def _inbox_request(self, job_id: str, member: str, node_url: str, wait_s: float,
                       token: str | None) -> tuple[NodeClient, int]:
        node = NodeClient(member, node_url, timeout=60.0, http=self._client() if self.transport else None, token=token)
        deadline = time.monotonic() + wait_s
        while True:
            req = node.find_approval(job_id)
            if req is not None:
                return node, int(req["id"])
            if time.monotonic() > deadline:
                raise NodeRefused(member, 404, "ApprovalNotFound", f"no request for {job_id} in {member}'s inbox")
            time.sleep(0.2)

    def approve(self, job_id: str, member: str, node_url: str, token: str | None = None, wait_s: float = 30.0) -> Any:
        """Approve ``job_id`` as ``member`` (signed by the node's keys, recorded on chain by the node). A
        request the node already approved (its own member's signed request, ``auto_approve_own_requests``)
        is answered as it stands."""
        node, rid = self._inbox_request(job_id, member, node_url, wait_s, token)
        try:
            return node.decide(rid, True)
        except NodeRefused as exc:
            got = node.approval(rid) if exc.error == "ApprovalNotPending" else None
            if got is None or got.get("status") != "approved":
                raise
            return got

    def reject(self, job_id: str, member: str, node_url: str, reason: str, token: str | None = None,
               wait_s: float = 30.0) -> Any:
        node, rid = self._inbox_request(job_id, member, node_url, wait_s, token)
        return node.decide(rid, False, reason)
