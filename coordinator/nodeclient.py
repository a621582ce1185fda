"""HTTP calls from the coordinator to the nodes (catalog, policy, approvals inbox, tasks).

Connection problems become :class:`NodeUnavailable`; named refusals become :class:`NodeRefused`
carrying the node's error name, so callers can tell "the tax node is down" from "the tax node's
policy forbids this column"."""

from __future__ import annotations

from typing import Any

import httpx

from coordinator.errors import NodeRefused, NodeUnavailable


class NodeClient:
    """A small typed wrapper over one node's HTTP API."""

    def __init__(self, member: str, base_url: str, timeout: float = 10.0, http: httpx.Client | None = None,
                 token: str | None = None) -> None:
        """``http``: a client to share (the coordinator's worker polls every node every few hundred ms, and
        ``httpx.request`` builds a client and its TLS context per call, ~25 ms of CPU); None = one per call.
        ``token``: an officer's session token of that node, sent with every call (the inbox is an
        officer's or the coordinator's to read)."""
        self.member = member
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = http
        self._token = token

    @property
    def http(self) -> httpx.Client | None:
        """The shared client (connection pool, e.g. over 国密 TLS) this client calls through; None = one per call."""
        return self._http

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
              token: str | None = None, timeout: float | None = None) -> Any:
        token = token or self._token
        try:
            r = (self._http or httpx).request(
                method,
                f"{self.base_url}{path}",
                json=json,
                params=params,
                timeout=timeout or self.timeout,
                headers={"Authorization": f"Bearer {token}"} if token else None,
            )
        except httpx.HTTPError as exc:
            raise NodeUnavailable(f"node {self.member} at {self.base_url} did not answer: {type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                error, detail = str(body.get("error", r.status_code)), str(body.get("detail", ""))
            except ValueError:
                error, detail = f"HTTP{r.status_code}", r.text[:300]
            if r.status_code >= 500 and error in ("InternalError", f"HTTP{r.status_code}"):
                raise NodeUnavailable(f"node {self.member} failed: {error}: {detail}")
            raise NodeRefused(self.member, r.status_code, error, detail)
        return r.json() if r.content else None

    # catalog and policy
    def health(self) -> Any:
        return self._call("GET", "/health")

    def catalog(self) -> list[dict[str, Any]]:
        return self._call("GET", "/catalog")

    def policy(self) -> dict[str, Any]:
        return self._call("GET", "/policy")

    # approvals inbox
    def submit_approval(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/approvals", json=body)

    def approvals(self, status: str | None = None, job_id: str | None = None, limit: int | None = None,
                  offset: int = 0) -> list[dict[str, Any]]:
        """The node's requests (of ``status``, of ``job_id``), oldest first; ``limit`` from ``offset``
        (None: all of them)."""
        params: dict[str, Any] = {k: v for k, v in {"status": status, "job_id": job_id, "limit": limit}.items() if v}
        if offset:
            params["offset"] = offset
        return self._call("GET", "/approvals", params=params or None)

    def approval(self, request_id: int) -> dict[str, Any]:
        return self._call("GET", f"/approvals/{request_id}")

    def find_approval(self, job_id: str) -> dict[str, Any] | None:
        """The node's request of ``job_id`` (None if it has none): the node looks it up by job."""
        for a in self.approvals(job_id=job_id):
            if a["job_id"] == job_id:
                return a
        return None

    def decide(self, request_id: int, approve: bool, reason: str | None = None, token: str | None = None) -> Any:
        """Approve or reject an inbox request (what a department does through its node)."""
        path = f"/approvals/{request_id}/{'approve' if approve else 'reject'}"
        body = None if approve else {"reason": reason or "rejected"}
        return self._call("POST", path, json=body, token=token, timeout=max(self.timeout, 60.0))

    # tasks
    def task(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{job_id}")

    def stop_task(self, job_id: str) -> Any:
        return self._call("POST", f"/tasks/{job_id}/stop")

    def output(self, job_id: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{job_id}/outputs/{name}")
