"""The approvals inbox: requests from the coordinator, shown as a readable manifest, approved or
rejected with a reason. Policy is re-checked on approval.

Approving signs (SM2 + BLS, the node's keystore) the chain's approval digest of the job's terms
(:mod:`protocols.crypto.approvals`), after the recorder has fetched those terms from the coordinator
and checked them against what this inbox shows (``nodes.services.chain.ChainApprovalRecorder``). So
a node approves only when it is wired to a chain; without one it refuses with ChainUnavailable."""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from nodes.errors import (
    ApprovalExists,
    ApprovalNotFound,
    ApprovalNotPending,
    ChainUnavailable,
    ManifestMismatch,
    RequestExpired,
)
from nodes.models import (
    ApprovalRecord,
    ApprovalRequestIn,
    ApprovalRequestOut,
    ApprovalStatus,
    JobCheck,
    utcnow,
)
from nodes.services.audit import AuditLog
from nodes.services.datasets import DatasetService
from nodes.services.policy import PolicyService
from nodes.settings import NodeSettings
from protocols.manifest import slice_of


@runtime_checkable
class ApprovalRecorder(Protocol):
    """Checks a job's chain terms before the node signs, and records the signed approval."""

    def prepare(self, job_id: str, node_manifest: dict[str, Any]) -> Any:
        """The checked terms to sign: an object with ``terms``, ``digest`` (32 bytes), ``mode``,
        ``terms_json`` and ``job_manifest_hash`` (``nodes.services.chain.PreparedApproval``)."""
        ...

    def record(self, prepared: Any, approval: Any) -> str | None:
        """Record the signed approval (on chain when the mode asks for it); a reference or None."""
        ...


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def manifest_of(req: ApprovalRequestIn) -> dict[str, Any]:
    """The canonical manifest this node signs (``protocols.manifest.slice_of``)."""
    return slice_of(req)


class ApprovalService:
    def __init__(
        self,
        settings: NodeSettings,
        engine: Engine,
        audit: AuditLog,
        policy: PolicyService,
        datasets: DatasetService,
        recorder: ApprovalRecorder | None = None,
        keys: Any = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.audit = audit
        self.policy = policy
        self.datasets = datasets
        self.recorder = recorder
        self._keys: Any = keys
        self._next_due: datetime | None = None
        """When the earliest pending request expires (None: not known yet); reads skip
        :meth:`expire_overdue`'s write transaction until then."""
        self._due_known = False

    # ------------------------------------------------------------ keys

    def keys(self) -> Any:
        """The node's MemberKeys, decrypted once per service."""
        if self._keys is None:
            from nodes.services.chain import load_node_keys

            self._keys = load_node_keys(self.settings)
        return self._keys

    # ------------------------------------------------------------ views

    def _summary(self, m: dict[str, Any], column_meta: Any = None) -> list[str]:
        column_meta = column_meta or self.datasets.column_meta
        lines = [
            f"{m['requester']} ({m['requester_role']}) asks to run a {m['kind']} job with {m['protocol']}.",
            f"Purpose: {m['purpose']}",
        ]
        for inp in m["inputs"]:
            try:
                metas = {c.name: c for c in column_meta(inp["dataset"])}
            except Exception:
                metas = {}
            cols = ", ".join(
                f"{c} ({metas[c].dtype}, grade {metas[c].grade}{', ' + metas[c].category if metas[c].category else ''})"
                if c in metas else f"{c} (unknown column)"
                for c in inp["columns"]
            )
            lines.append(f"Uses dataset {inp['dataset']}: {cols}.")
        engine = m.get("engine")
        if isinstance(engine, dict) and isinstance(engine.get("code"), str):  # an engine that runs reviewed code
            lines.append(f"Runs this code (SM3 {engine.get('code_sm3')}, {len(engine['code'].splitlines())} lines, "
                         f"function {engine.get('function')!r}); it is shown in full in the manifest's engine section.")
        for out, who in m["receivers"].items():
            lines.append(f"Output {out!r} goes to: {', '.join(who)}.")
        lines.append(f"Valid until {m['expiry']}; at most {m['max_runs']} run(s). Job {m['job_id']}.")
        return lines

    def _out(self, r: ApprovalRecord, column_meta: Any = None) -> ApprovalRequestOut:
        m = json.loads(r.manifest_json)
        return ApprovalRequestOut(
            id=r.id, job_id=r.job_id, status=r.status, manifest=m, manifest_hash=r.manifest_hash,
            summary=self._summary(m, column_meta), reason=r.reason,
            approval=json.loads(r.approval_json) if r.approval_json else None, chain_ref=r.chain_ref,
            decided_by=r.decided_by, decided_at=r.decided_at, created_at=r.created_at,
        )

    def _get(self, session: Session, request_id: int) -> ApprovalRecord:
        r = session.get(ApprovalRecord, request_id)
        if r is None:
            raise ApprovalNotFound(f"no approval request {request_id}")
        return r

    def list(self, status: str | None = None) -> list[ApprovalRequestOut]:
        """Every request (of ``status``), oldest first."""
        return self.find(status)[1]

    def find(self, status: str | None = None, job_id: str | None = None, offset: int = 0,
             limit: int | None = None, newest_first: bool = False) -> tuple[int, list[ApprovalRequestOut]]:
        """``(how many requests match, one page of them)``: of ``status`` and of ``job_id`` (None:
        any), ``limit`` (None: all) from ``offset``, oldest or newest first. The page and its count are
        one query (a window count); only the page's requests are put in words."""
        self.expire_overdue()
        conds: list[Any] = []
        if status:
            conds.append(ApprovalRecord.status == status)
        if job_id is not None:
            conds.append(ApprovalRecord.job_id == job_id)
        order = ApprovalRecord.id.desc() if newest_first else ApprovalRecord.id.asc()  # type: ignore[union-attr]
        with Session(self.engine) as session:
            q = select(ApprovalRecord, func.count().over()).where(*conds).order_by(order).offset(max(0, offset))
            if limit is not None:
                q = q.limit(limit)
            rows = list(session.exec(q))
            total = int(rows[0][1]) if rows else int(session.exec(
                select(func.count()).select_from(ApprovalRecord).where(*conds)).one())
            # one column lookup per dataset, not per request: a 1,000-request inbox lists in ms, not seconds
            column_meta = functools.cache(self.datasets.column_meta)
            return total, [self._out(r, column_meta) for r, _ in rows]

    def counts(self) -> dict[str, int]:
        """How many requests are in each status (overdue ones marked expired first)."""
        self.expire_overdue()
        with Session(self.engine) as session:
            q = select(ApprovalRecord.status, func.count()).group_by(ApprovalRecord.status)
            return {status: n for status, n in session.exec(q)}

    def page(self, status: str | None, offset: int, limit: int) -> list[ApprovalRequestOut]:
        """Requests (of ``status``, or all), newest first, ``limit`` from ``offset``: one page of the
        inbox without reading the rest (call :meth:`counts` first to mark overdue ones expired)."""
        with Session(self.engine) as session:
            q = select(ApprovalRecord).order_by(ApprovalRecord.id.desc()).offset(offset).limit(limit)
            if status:
                q = q.where(ApprovalRecord.status == status)
            column_meta = functools.cache(self.datasets.column_meta)
            return [self._out(r, column_meta) for r in session.exec(q)]

    def get(self, request_id: int) -> ApprovalRequestOut:
        with Session(self.engine) as session:
            return self._out(self._get(session, request_id))

    # ------------------------------------------------------------ changes

    @staticmethod
    def _job(m: dict[str, Any]) -> JobCheck:
        return JobCheck.model_validate({k: m.get(k) for k in (
            "kind", "requester", "requester_role", "purpose", "inputs", "aggregate_group_size")})

    def submit(self, req: ApprovalRequestIn, actor: str) -> ApprovalRequestOut:
        """File a request in the inbox after checking its hash, expiry and this node's policy."""
        from protocols.crypto.approvals import manifest_hash

        m = manifest_of(req)
        h = manifest_hash(m).hex()
        if req.manifest_hash is not None and req.manifest_hash.lower().removeprefix("0x") != h:
            raise ManifestMismatch("the manifest hash sent does not match the SM3 of the manifest sent")
        if _aware(req.expiry) <= datetime.now(timezone.utc):
            raise RequestExpired(f"job {req.job_id!r} expired at {m['expiry']}")
        self.policy.enforce(self._job(m))
        with self.audit.transaction() as session:
            if session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == req.job_id)).first():
                raise ApprovalExists(f"job {req.job_id!r} is already in the inbox")
            r = ApprovalRecord(job_id=req.job_id, requester=req.requester, kind=req.kind,
                               manifest_json=json.dumps(m, ensure_ascii=False), manifest_hash=h,
                               expires_at=_aware(req.expiry))
            session.add(r)
            session.flush()
            self.audit.append(session, actor=actor, action="approval.request", target=req.job_id,
                              detail={"manifest_hash": h, "requester": req.requester, "kind": req.kind})
            self._due_at(_aware(req.expiry))
            return self._out(r)

    def expire_overdue(self) -> int:
        """Mark pending requests past their expiry as expired (each one audited).

        Only when one is due: the service remembers the earliest pending expiry (read once from the
        store, lowered by :meth:`submit`), so a read of the inbox before then costs no transaction
        and no scan — with 1,000 requests every page read used to take the writer lock and walk
        every pending row."""
        now = utcnow()
        if self._due_known and (self._next_due is None or now < self._next_due):
            return 0
        n = 0
        nearest: datetime | None = None
        with self.audit.transaction() as session:
            for r in session.exec(select(ApprovalRecord).where(ApprovalRecord.status == ApprovalStatus.PENDING.value)):
                expires = _aware(r.expires_at)
                if expires <= now:
                    r.status, r.decided_at, r.decided_by = ApprovalStatus.EXPIRED.value, now, "node"
                    session.add(r)
                    self.audit.append(session, actor="node", action="approval.expire", target=r.job_id)
                    n += 1
                elif nearest is None or expires < nearest:
                    nearest = expires
        self._next_due, self._due_known = nearest, True
        return n

    def _due_at(self, expires: datetime) -> None:
        """A new pending request expires at ``expires``: the next expiry pass may come sooner."""
        if self._due_known and (self._next_due is None or expires < self._next_due):
            self._next_due = expires

    def approve(self, request_id: int, actor: str) -> ApprovalRequestOut:
        """Re-check policy, check the job's chain terms, sign their approval digest, record it."""
        from protocols.crypto.approvals import sign_approval

        self.expire_overdue()
        with Session(self.engine) as session:
            r = self._get(session, request_id)
        if r.status == "expired":
            raise RequestExpired(f"job {r.job_id!r} expired before it was approved")
        if r.status != ApprovalStatus.PENDING.value:
            raise ApprovalNotPending(f"job {r.job_id!r} is already {r.status}")
        m = json.loads(r.manifest_json)
        self.policy.enforce(self._job(m))  # the policy may have changed since the request came in
        keys = self.keys()
        if self.recorder is None:
            raise ChainUnavailable(
                "this node is not wired to a chain: an approval signs the job's chain terms, so approving needs "
                "chain_rpc_url and chain_registry (or chain_deployment_file) and coordinator_url"
            )
        prepared = self.recorder.prepare(r.job_id, m)
        approval = sign_approval(keys, r.job_id, bytes(prepared.terms.manifest_hash), prepared.digest)
        ref = self.recorder.record(prepared, approval)
        with self.audit.transaction() as session:
            r = self._get(session, request_id)
            if r.status != ApprovalStatus.PENDING.value:
                raise ApprovalNotPending(f"job {r.job_id!r} is already {r.status}")
            r.status, r.decided_by, r.decided_at = ApprovalStatus.APPROVED.value, actor, utcnow()
            r.approval_json, r.chain_ref = approval.model_dump_json(), ref
            r.terms_json, r.job_manifest_hash = prepared.terms_json, prepared.job_manifest_hash
            session.add(r)
            self.audit.append(session, actor=actor, action="approval.approve", target=r.job_id,
                              detail={"manifest_hash": r.manifest_hash, "chain_ref": ref, "mode": prepared.mode,
                                      "job_manifest_hash": prepared.job_manifest_hash, "digest": approval.digest,
                                      "sm2_sig": approval.sm2_sig[:16]})
            return self._out(r)

    def reject(self, request_id: int, reason: str, actor: str) -> ApprovalRequestOut:
        with self.audit.transaction() as session:
            r = self._get(session, request_id)
            if r.status != ApprovalStatus.PENDING.value:
                raise ApprovalNotPending(f"job {r.job_id!r} is already {r.status}")
            r.status, r.reason, r.decided_by, r.decided_at = ApprovalStatus.REJECTED.value, reason, actor, utcnow()
            session.add(r)
            self.audit.append(session, actor=actor, action="approval.reject", target=r.job_id,
                              detail={"manifest_hash": r.manifest_hash, "reason": reason})
            return self._out(r)
