"""The node side of on-chain approval: an ``ApprovalRecorder`` (see ``nodes.services.approvals``).

When a department approves, its node signs the approval (SM2 + BLS) over its own slice of the
manifest. This recorder then puts the approval on chain from the department's own account, but
only after checking, without trusting the coordinator, that:

1. the job manifest the coordinator serves hashes (SM3) to the terms' ``manifest_hash``;
2. this node's slice (inputs, purpose, receivers, expiry, max runs) is exactly what that manifest says;
3. the terms name the right job key, expiry and max runs, and include this node's dataset ids.
"""

from __future__ import annotations

from typing import Any

import httpx

from coordinator.errors import NodeRefused, NodeUnavailable
from coordinator.manifest import dataset_chain_id, manifest_sm3, slice_matches


class ApprovalTermsMismatch(NodeRefused):
    """The coordinator's job manifest or terms disagree with what the department approved."""

    def __init__(self, member: str, detail: str) -> None:
        super().__init__(member, 409, "ApprovalTermsMismatch", detail)


class ChainApprovalRecorder:
    """Records a node's approval on chain (``Authorizations.approve`` from the node's account)."""

    def __init__(self, member: str, chain: Any, account: str, coordinator_url: str, timeout: float = 10.0) -> None:
        self.member = member
        self.chain = chain
        self.account = account
        self.coordinator_url = coordinator_url.rstrip("/")
        self.timeout = timeout

    def fetch(self, job_id: str) -> dict[str, Any]:
        """The coordinator's manifest and terms of ``job_id``."""
        try:
            r = httpx.get(f"{self.coordinator_url}/jobs/{job_id}/manifest", timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise NodeUnavailable(f"coordinator did not answer: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise ApprovalTermsMismatch(self.member, f"coordinator has no manifest for {job_id}: {r.text[:200]}")
        return r.json()

    def check(self, node_manifest: dict[str, Any], served: dict[str, Any]) -> Any:
        """The terms to approve, after every check (ApprovalTermsMismatch otherwise)."""
        from contracts.models import Terms
        from protocols.crypto.approvals import job_key

        manifest, terms = served["manifest"], Terms.model_validate(served["terms"])
        job_id = node_manifest["job_id"]
        if manifest_sm3(manifest) != terms.manifest_hash:
            raise ApprovalTermsMismatch(self.member, "the job manifest does not hash to the terms' manifest hash")
        if not slice_matches(manifest, self.member, node_manifest):
            raise ApprovalTermsMismatch(self.member, "the job manifest says something else about this node's data")
        if terms.job_id != job_key(job_id) or terms.expiry != manifest["expiry_unix"] or (
            terms.max_runs != manifest["max_runs"]
        ):
            raise ApprovalTermsMismatch(self.member, "the terms do not match the manifest (job, expiry or runs)")
        mine = [dataset_chain_id(self.member, i["dataset"]) for i in node_manifest["inputs"]]
        if not set(mine) <= set(terms.dataset_ids):
            raise ApprovalTermsMismatch(self.member, "the terms do not name this node's datasets")
        return terms, mine

    def record_approval(self, approval: Any, manifest: dict[str, Any]) -> str:
        """Approve on chain; the transaction hash is the reference kept in the node's inbox."""
        terms, mine = self.check(manifest, self.fetch(approval.job_id))
        tx = self.chain.approve(self.account, terms, mine)
        return "0x" + bytes(tx.tx_hash).hex()
