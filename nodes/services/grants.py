"""The node's one authorization guard: whether a job may touch this node's data, right now.

Every engine's task path asks here before it reads a row or releases a byte (SecretFlow's start, every
step of the generic route): this node approved the job in its inbox, and **on chain**
an authorization exists, is not revoked, has not expired (chain time), is live, covers this node's
datasets, carries the manifest hash this node approved (or its on-chain approval of the digest), and has
runs left. A refusal is a :class:`NotAuthorized` (or :class:`ChainUnavailable` on a node without a chain).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from nodes.errors import ChainUnavailable, NotAuthorized
from nodes.models import ApprovalRecord
from nodes.services.chain import NodeChain, dataset_chain_id


class AuthorizationGuard:
    """The grants of this node's jobs: its inbox approvals and the authorizations on chain."""

    def __init__(self, member: str, engine: Engine, chain: NodeChain | None) -> None:
        self.member = member
        self.engine = engine
        self.chain = chain

    def approval(self, job_id: str) -> ApprovalRecord:
        """This node's approval of ``job_id`` (NotAuthorized unless it approved)."""
        with Session(self.engine) as session:
            rec = session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == job_id)).first()
        if rec is None or rec.status != "approved":
            state = "never asked" if rec is None else rec.status
            raise NotAuthorized(f"this node has not approved job {job_id!r} ({state})")
        return rec

    def live(self, job_id: str) -> Any:
        """The authorization of ``job_id``, live on chain: exists, not revoked, not expired."""
        from protocols.crypto.approvals import job_key

        if self.chain is None:
            raise ChainUnavailable("this node is not wired to a chain; it runs nothing without an authorization on chain")
        key = job_key(job_id)
        auth = self.chain.authorization(key)
        if auth is None:
            raise NotAuthorized(f"job {job_id!r} has no authorization on chain")
        if auth.revoked_at:
            raise NotAuthorized(f"the authorization of job {job_id!r} was revoked on chain at {auth.revoked_at}")
        now = self.chain.chain_time()
        if now >= auth.terms.expiry:
            raise NotAuthorized(f"the authorization of job {job_id!r} expired on chain at {auth.terms.expiry}")
        if not self.chain.is_live(key):
            raise NotAuthorized(f"the authorization of job {job_id!r} is not live on chain")
        return auth

    def check(self, job_id: str, datasets: list[str], approval: ApprovalRecord) -> Any:
        """The live authorization of ``job_id`` for this node's ``datasets``, as this node approved it."""
        from protocols.crypto.approvals import job_key

        auth = self.live(job_id)
        assert self.chain is not None
        key = job_key(job_id)
        ids = {d: dataset_chain_id(self.member, d) for d in datasets}
        for name, did in ids.items():
            if did not in auth.terms.dataset_ids:
                raise NotAuthorized(f"the authorization of job {job_id!r} does not cover dataset {name!r}")
        if approval.job_manifest_hash:
            if bytes(auth.terms.manifest_hash).hex() != approval.job_manifest_hash:
                raise NotAuthorized("the authorization on chain is for another manifest than the one this node approved")
        else:
            for name, did in ids.items():
                if not self.chain.approved_by_me(bytes(auth.digest), did):
                    raise NotAuthorized(f"this node did not approve the authorized terms on chain for {name!r}")
        for name, did in ids.items():
            used = self.chain.runs(key, did)
            if used >= auth.terms.max_runs:
                raise NotAuthorized(f"dataset {name!r} has used all {auth.terms.max_runs} run(s) of job {job_id!r}")
        return auth
