"""The coordinator's service layer: directory, catalog, submission, and the job scheduler.

:class:`Coordinator` owns the database, the lifecycle and the outbound clients (nodes, chain).
:meth:`Coordinator.step` advances one job by one state; the worker thread calls it for every live
job every ``poll_interval_s``. Every step is idempotent and starts from what is stored, so a
restarted coordinator simply carries on."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, or_
from sqlalchemy.orm import load_only
from sqlmodel import Session, select

from common.threads import concurrently
from coordinator.db import init_db, make_engine
from coordinator.errors import (
    ChainUnavailable,
    CoordinatorError,
    IllegalTransition,
    JobNotFound,
    NodeRefused,
    NodeUnavailable,
    NotAllowed,
    ResultNotReady,
    UnknownMember,
)
from coordinator.lifecycle import Lifecycle
from coordinator.manifest import build_manifest, manifest_sm3, node_request, terms_of
from coordinator.models import (
    TERMINAL,
    ApprovalRecord,
    ApprovalState,
    CatalogEntry,
    Job,
    JobEvent,
    JobOut,
    JobState,
    Member,
    PolicySnapshot,
    ResultOut,
    SubmitOut,
    TaskRecord,
    approval_may_move,
    aware,
    utcnow,
)
from coordinator.nodeclient import NodeClient
from coordinator.ports import JobPort, SubmitPort
from coordinator.settings import CoordinatorSettings
from coordinator.spec import JobSpec, complete_spec
from coordinator.validation import check_against_catalog, check_model_from, resolve_published
from engines import registry
from engines.base import Progress

log = logging.getLogger("dcp.coordinator")
S = JobState
RECEIPT_PENDING = "receipt pending"
"""The stage of a job whose engine is done while a node's usage receipt waits in its queue for the chain."""
A = ApprovalState


class Coordinator:
    """One coordinator over its own database."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.resolved_database_url())
        init_db(self.engine)
        self.lifecycle = Lifecycle(self.engine)
        self._chain: Any = None
        self._keys: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._chain_lock = threading.Lock()
        self._catalog_lock = threading.Lock()
        self._http: Any = None
        self._http_lock = threading.Lock()
        self._keydir: Any = None  # protocols.identity.KeyDirectory: the members' keys
        self._bls_keys: dict[bytes, Any] = {}  # registered BLS keys already validated (subgroup) -> G1 point

    # ------------------------------------------------------------------ plumbing

    def keys(self) -> Any:
        """The coordinator's member keys (chain account)."""
        if self._keys is None:
            from protocols.crypto.keystore import load_keystore

            s = self.settings
            passphrase = s.passphrase()
            if s.keystore_path is None or passphrase is None:
                raise ChainUnavailable("the coordinator has no keystore (keystore_path, keystore_passphrase_file)")
            self._keys = load_keystore(s.keystore_path, passphrase)
        return self._keys

    def chain(self) -> Any:
        """The chain client (signing as the coordinator); ChainUnavailable if not configured."""
        if self._chain is None:
            from coordinator.chain import connect

            s = self.settings
            if not s.rpc_url or not s.registry_address:
                raise ChainUnavailable("no chain configured (rpc_url and registry_address)")
            self._chain = connect(s.rpc_url, s.registry_address, self.keys().chain_private_key)
        return self._chain

    @property
    def account(self) -> str:
        """The coordinator's chain address."""
        return self.keys().public.chain_address

    def node(self, member: str, timeout: float | None = None) -> NodeClient:
        """A client of ``member``'s node (``timeout``: longer than the usual calls, for an engine's steps)."""
        url = self.settings.nodes.get(member)
        if url is None:
            with Session(self.engine) as session:
                m = session.get(Member, member)
                url = m.node_url if m else None
        if not url:
            raise UnknownMember(f"member {member!r} has no node URL")
        return NodeClient(member, url, timeout or self.settings.http_timeout_s, http=self._http_client())

    def _http_client(self) -> Any:
        """The coordinator's one HTTP client (connection pool) for every node call."""
        with self._http_lock:
            if self._http is None:
                import httpx

                tls = self.settings.tls
                if tls is None:
                    self._http = httpx.Client()
                else:  # 国密 mutual TLS, pinning each node's key in the Registry
                    from protocols.gmtls.config import http_client

                    self._http = http_client(tls, self.key_directory(), self.settings.nodes)
            return self._http

    def key_directory(self) -> Any:
        """The coordinator's one directory of the members' keys (``protocols.identity.member_directory``),
        shared by its 国密 TLS layer, its clients' pins and its routes: the chain's Registry (read
        without a signing key), else ``peers``, else the TLS known-keys file. Its staleness bound:
        ``identity_cache_s``, or the ``tls`` section's ``registry_ttl_s`` if smaller."""
        if self._keydir is None:  # cheap to make; a race makes two, one is kept
            from protocols.identity import member_directory

            s = self.settings
            ttl = s.identity_cache_s if s.tls is None else min(s.identity_cache_s, s.tls.registry_ttl_s)
            if s.rpc_url and s.registry_address:
                from coordinator.chain import connect

                reader = connect(s.rpc_url, s.registry_address)  # reads only: no signing key
                self._keydir = member_directory(reader.members, ttl_s=ttl)
            else:
                self._keydir = member_directory(peers=s.peers, known_keys=s.tls.known_keys if s.tls else None,
                                                ttl_s=ttl)
        return self._keydir

    def close(self) -> None:
        """Stop the worker and release the database and the HTTP connections."""
        self.stop_worker()
        self.engine.dispose()
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    # ------------------------------------------------------------------ directory and catalog

    def sync_members(self) -> list[Member]:
        """Mirror the Registry's members into the directory (node URLs from the settings)."""
        chain = self.chain()
        out = []
        with Session(self.engine) as session:
            for m in chain.members():
                rec = session.get(Member, m.name) or Member(name=m.name, role=m.role.name.lower())
                rec.role, rec.account, rec.active = m.role.name.lower(), m.account, m.active
                rec.sm2_public_key, rec.bls_public_key = bytes(m.sm2_public_key).hex(), bytes(m.bls_public_key).hex()
                rec.node_url = self.settings.nodes.get(m.name, rec.node_url)
                rec.synced_at = utcnow()
                session.add(rec)
                out.append(rec)
            session.commit()
            for r in out:
                session.refresh(r)
        return out

    def members(self) -> list[Member]:
        with Session(self.engine) as session:
            return list(session.exec(select(Member).order_by(Member.name)))

    def upsert_member(self, name: str, role: str, node_url: str | None = None, account: str | None = None) -> None:
        """Add a member by hand (tests, or a federation without a chain)."""
        with Session(self.engine) as session:
            rec = session.get(Member, name) or Member(name=name, role=role)
            rec.role, rec.node_url, rec.account, rec.active = role, node_url, account, True
            session.add(rec)
            session.commit()

    def refresh_catalog(self) -> dict[str, str]:
        """Pull every node's catalog and policy; member -> "ok" or the error.

        One refresh at a time: two interleaved ones would each delete the rows they saw and both
        re-add a member's entries (a UNIQUE (member, dataset) violation)."""
        with self._catalog_lock:
            return self._refresh_catalog()

    def _refresh_catalog(self) -> dict[str, str]:
        status: dict[str, str] = {}
        for m in self.members():
            if not (m.node_url or self.settings.nodes.get(m.name)):
                continue
            client = self.node(m.name)
            try:
                entries, policy = client.catalog(), client.policy()
            except CoordinatorError as exc:
                status[m.name] = f"{exc.name}: {exc.detail}"
                continue
            with Session(self.engine) as session:
                # whatever rows the member has now, deleted by one statement before the new ones go in
                session.execute(sa_delete(CatalogEntry).where(CatalogEntry.member == m.name))
                for e in entries:
                    cols = e.get("columns", [])
                    cats = sorted({c.get("category") for c in cols if c.get("category")})
                    text = " ".join([e["name"], e.get("description", ""), *(c["name"] for c in cols),
                                     *(c.get("description", "") for c in cols), *cats]).lower()
                    session.add(CatalogEntry(
                        member=m.name, dataset=e["name"], description=e.get("description", ""),
                        key_column=e.get("key_column"), row_count=e.get("row_count", 0),
                        max_grade=e.get("max_grade", 0), schema_hash=e.get("schema_hash", ""),
                        columns_json=json.dumps(cols, ensure_ascii=False), categories=",".join(cats), text=text,
                        updated_at=_iso(e.get("updated_at")),
                    ))
                snap = session.get(PolicySnapshot, m.name) or PolicySnapshot(member=m.name, policy_json="{}")
                snap.policy_json, snap.pulled_at = json.dumps(policy), utcnow()
                session.add(snap)
                session.commit()
            status[m.name] = "ok"
        return status

    def search_catalog(
        self, q: str | None = None, member: str | None = None, category: str | None = None,
        max_grade: int | None = None, department: str | None = None,
    ) -> list[CatalogEntry]:
        """Datasets matching a keyword, a member/department, a column category and a grade ceiling."""
        member = member or department
        with Session(self.engine) as session:
            rows = list(session.exec(select(CatalogEntry).order_by(CatalogEntry.member, CatalogEntry.dataset)))
        out = []
        for r in rows:
            if member and r.member != member:
                continue
            if q and not all(w in r.text for w in q.lower().split()):
                continue
            if category and category not in r.categories.split(","):
                continue
            if max_grade is not None and r.max_grade > max_grade:
                continue
            out.append(r)
        return out

    # ------------------------------------------------------------------ submission

    def _validation_inputs(self) -> tuple[dict, dict, dict]:
        with Session(self.engine) as session:
            members = {
                m.name: {"role": m.role, "active": m.active, "node_url": m.node_url or self.settings.nodes.get(m.name)}
                for m in session.exec(select(Member))
            }
            catalog = {
                (e.member, e.dataset): {c["name"]: c for c in json.loads(e.columns_json)}
                for e in session.exec(select(CatalogEntry))
            }
            policies = {p.member: json.loads(p.policy_json) for p in session.exec(select(PolicySnapshot))}
        return members, catalog, policies

    def submit(self, spec: JobSpec, request: dict[str, Any] | None = None) -> SubmitOut:
        """Validate ``spec`` against the directory, catalog and policies; store it as SUBMITTED.

        ``request``: the requester's verified signed request (``protocols.signed_request``); it becomes
        the manifest's ``request`` section, which every data owner's node verifies again."""
        members, catalog, policies = self._validation_inputs()
        named = {spec.requester, *(i.member for i in spec.inputs)}
        if not named <= set(members) and self.settings.rpc_url and self.settings.registry_address:
            try:  # a member admitted on chain since the last mirror (or none yet)
                self.sync_members()
            except Exception as exc:  # noqa: BLE001 — the check below names the unknown member either way
                log.warning("could not mirror the Registry's members: %s", exc)
            members, catalog, policies = self._validation_inputs()
        if any((i.member, i.dataset) not in catalog for i in spec.inputs):
            self.refresh_catalog()  # a dataset may have been published since the last pull
            members, catalog, policies = self._validation_inputs()
        spec = resolve_published(spec, catalog, policies)
        check_against_catalog(spec, members, catalog, policies)
        spec = complete_spec(spec, SubmitPort(self))
        if spec.model_from is not None:
            check_model_from(spec, self._training_of(spec.model_from))
        job_id = "job-" + uuid.uuid4().hex[:16]
        manifest = build_manifest(spec, job_id, members[spec.requester]["role"])
        if request is not None:
            manifest["request"] = request
        mhash = manifest_sm3(manifest).hex()
        with Session(self.engine) as session:
            session.add(Job(
                job_id=job_id, kind=spec.kind, requester=spec.requester, purpose=spec.purpose,
                spec_json=spec.model_dump_json(), manifest_json=json.dumps(manifest, ensure_ascii=False),
                manifest_hash=mhash, expires_at=datetime.fromisoformat(manifest["expiry"]), max_runs=spec.max_runs,
                authorization_mode=self.authorization_mode_for(spec.members),
            ))
            session.add(JobEvent(job_id=job_id, from_state=None, to_state=S.SUBMITTED.value))
            for member in spec.members:
                req = node_request(manifest, member)
                session.add(ApprovalRecord(job_id=job_id, member=member, request_hash=req["manifest_hash"]))
                session.add(TaskRecord(job_id=job_id, member=member))
            session.commit()
        log.info("job %s submitted by %s (%s)", job_id, spec.requester, spec.kind)
        return SubmitOut(job_id=job_id, state=S.SUBMITTED, manifest_hash=mhash)

    # ------------------------------------------------------------------ reads

    def _job(self, session: Session, job_id: str) -> Job:
        job = session.exec(select(Job).where(Job.job_id == job_id)).first()
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        return job

    def get_job(self, job_id: str) -> Job:
        with Session(self.engine) as session:
            return self._job(session, job_id)

    def job_out(self, job_id: str) -> JobOut:
        with Session(self.engine) as session:
            j = self._job(session, job_id)
        return self._outs([j])[0]

    def _outs(self, jobs: list[Job]) -> list[JobOut]:
        """The records of ``jobs`` (in their order): their approvals, tasks and events read
        for all of them at once (three queries, however many jobs)."""
        ids = [j.job_id for j in jobs]
        if not ids:
            return []
        approvals: dict[str, dict[str, str]] = {i: {} for i in ids}
        tasks: dict[str, dict[str, Any]] = {i: {} for i in ids}
        events: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        with Session(self.engine) as session:
            # plain rows of the columns shown (no ORM objects: a page holds ~10 of them per job)
            for job_id, member, status in session.exec(select(
                    ApprovalRecord.job_id, ApprovalRecord.member, ApprovalRecord.status)
                    .where(ApprovalRecord.job_id.in_(ids))):  # type: ignore[attr-defined]
                approvals[job_id][member] = status
            for job_id, member, status, stage, error in session.exec(select(
                    TaskRecord.job_id, TaskRecord.member, TaskRecord.status, TaskRecord.stage, TaskRecord.error)
                    .where(TaskRecord.job_id.in_(ids))):  # type: ignore[attr-defined]
                tasks[job_id][member] = {"status": status, "stage": stage, "error": error}
            for job_id, frm, to, reason, at in session.exec(select(
                    JobEvent.job_id, JobEvent.from_state, JobEvent.to_state, JobEvent.reason, JobEvent.at)
                    .where(JobEvent.job_id.in_(ids)).order_by(JobEvent.id)):  # type: ignore[attr-defined]
                events[job_id].append({"from": frm, "to": to, "reason": reason, "at": aware(at).isoformat()})
        return [JobOut(
            job_id=j.job_id, kind=j.kind, requester=j.requester, purpose=j.purpose, state=JobState(j.state),
            reason=j.reason, stage=j.stage, manifest_hash=j.manifest_hash, expires_at=aware(j.expires_at),
            created_at=aware(j.created_at), updated_at=aware(j.updated_at), approvals=approvals[j.job_id],
            tasks=tasks[j.job_id], events=events[j.job_id],
        ) for j in jobs]

    def list_jobs(self, state: str | None = None, requester: str | None = None) -> list[JobOut]:
        """Every job (oldest first) in ``state`` of ``requester`` (None: any)."""
        return self.page_jobs(state, requester)[1]

    def page_jobs(self, state: str | None = None, requester: str | None = None, q: str | None = None,
                  limit: int | None = None, offset: int = 0, newest_first: bool = False) -> tuple[int, list[JobOut]]:
        """One page of the jobs in ``state`` of ``requester`` whose id, purpose or kind hold every
        word of ``q`` (any case): ``(how many match in all, the page's records)``. The page is one
        query reading only the listed columns of only its rows (never a job's spec or manifest), the
        total one ``count``; the page's approvals, tasks and events three more (:meth:`_outs`) —
        never a query per job."""
        conds: list[Any] = []
        if state:
            conds.append(Job.state == state)
        if requester:
            conds.append(Job.requester == requester)
        for word in (q or "").lower().split():
            conds.append(or_(*(func.lower(col).contains(word, autoescape=True)
                               for col in (Job.job_id, Job.purpose, Job.kind))))
        order = Job.id.desc() if newest_first else Job.id.asc()  # type: ignore[union-attr]
        listed = load_only(Job.id, Job.job_id, Job.kind, Job.requester, Job.purpose, Job.state,  # type: ignore[arg-type]
                           Job.reason, Job.stage, Job.manifest_hash, Job.expires_at, Job.created_at, Job.updated_at)
        with Session(self.engine) as session:
            query = select(Job).options(listed).where(*conds).order_by(order).offset(max(0, offset))
            if limit is not None:
                query = query.limit(limit)
            jobs = list(session.exec(query))
            if limit is None and offset <= 0:
                total = len(jobs)
            else:
                total = int(session.exec(select(func.count()).select_from(Job).where(*conds)).one())
        return total, self._outs(jobs)

    def manifest_of(self, job_id: str) -> dict[str, Any]:
        """The manifest, its hash and the chain terms (what a node checks before approving on chain)."""
        j = self.get_job(job_id)
        manifest = json.loads(j.manifest_json)
        terms = json.loads(j.terms_json) if j.terms_json else self._terms(j, manifest)
        return {"manifest": manifest, "manifest_hash": j.manifest_hash, "terms": terms,
                "authorization_mode": j.authorization_mode or "per_owner"}

    def authorization_mode_for(self, members: list[str]) -> str:
        """The authorization mode of a new job over ``members``' datasets (coordinator.authorization)."""
        from coordinator.authorization import choose_mode

        with Session(self.engine) as session:
            keys = [(m.bls_public_key if (m := session.get(Member, name)) else "") for name in members]
        return choose_mode(self.settings.authorization_mode, keys)

    def _terms(self, j: Job, manifest: dict[str, Any]) -> dict[str, Any]:
        with Session(self.engine) as session:
            m = session.get(Member, j.requester)
        if m is None or not m.account:
            raise UnknownMember(f"requester {j.requester!r} has no chain account in the directory")
        terms = terms_of(manifest, m.account)
        data = json.loads(terms.model_dump_json())
        with Session(self.engine) as session:
            job = self._job(session, j.job_id)
            job.terms_json = json.dumps(data)
            session.add(job)
            session.commit()
        return data

    def result(self, job_id: str, name: str) -> ResultOut:
        """An output of a SUCCEEDED job, sealed to the requester's SM2 key."""
        j = self.get_job(job_id)
        if j.state != S.SUCCEEDED.value:
            raise ResultNotReady(f"job {job_id} is {j.state}; results exist only for SUCCEEDED jobs")
        results = json.loads(j.results_json or "{}")
        if name not in results:
            raise NotAllowed(f"job {job_id} has no output {name!r} (it has {', '.join(sorted(results))})")
        return ResultOut(job_id=job_id, **results[name])

    def revoke(self, job_id: str, by: str, reason: str | None = None) -> JobOut:
        """The requester withdraws its job; running tasks are stopped."""
        j = self.get_job(job_id)
        if by != j.requester:
            raise NotAllowed(f"only the requester {j.requester!r} can withdraw job {job_id}")
        src = self.lifecycle.transition(job_id, S.REVOKED, reason or f"withdrawn by {by}")
        if src in (S.AUTHORIZED, S.RUNNING):
            self._stop_tasks(job_id)
        return self.job_out(job_id)

    # ------------------------------------------------------------------ scheduler

    def start_worker(self) -> None:
        """Start the background scheduler thread."""
        if self._thread is not None:
            return
        # what the first job needs, imported now rather than inside its first step
        import coordinator.authorization  # noqa: F401
        import protocols.crypto.approvals  # noqa: F401

        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dcp-coordinator-worker", daemon=True)
        self._thread.start()

    def stop_worker(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.settings.poll_interval_s)

    def tick(self) -> None:
        """One pass over every live job."""
        with Session(self.engine) as session:
            live = list(session.exec(select(Job.job_id).where(Job.state.notin_([t.value for t in TERMINAL]))))
        for job_id in live:
            if self._stop.is_set():
                return
            try:
                self.step(job_id)
            except IllegalTransition:
                pass  # another thread (an API call) moved the job first
            except Exception:  # noqa: BLE001 - one job's trouble must not stop the others
                log.exception("step of %s failed", job_id)

    def step(self, job_id: str) -> JobState:
        """Advance ``job_id`` by what its stored state calls for; the state afterwards."""
        j = self.get_job(job_id)
        state = JobState(j.state)
        manifest = json.loads(j.manifest_json)
        if state in TERMINAL:
            return state
        now = datetime.now(timezone.utc)
        if state in (S.SUBMITTED, S.PENDING_APPROVAL, S.AUTHORIZED) and now >= aware(j.expires_at):
            self.lifecycle.transition(job_id, S.EXPIRED, f"expired at {manifest['expiry']} before it ran")
            return S.EXPIRED
        if state == S.SUBMITTED:
            self.lifecycle.transition(job_id, S.PENDING_APPROVAL, expect=S.SUBMITTED)
            state = S.PENDING_APPROVAL
        if state == S.PENDING_APPROVAL:
            return self._step_approvals(j, manifest)
        if state == S.AUTHORIZED:
            return self._step_authorized(j, manifest)
        if state == S.RUNNING:
            return self._step_running(j, manifest)
        return state

    # -- approvals

    def _approvals(self, job_id: str) -> list[ApprovalRecord]:
        with Session(self.engine) as session:
            return list(session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == job_id)))

    def _save(self, rec: Any) -> None:
        with Session(self.engine) as session:
            session.add(rec)
            session.commit()
            session.refresh(rec)

    def _step_approvals(self, j: Job, manifest: dict[str, Any]) -> JobState:
        job_id = j.job_id

        def ask(a: ApprovalRecord) -> dict[str, Any] | None:
            """The node's answer for ``a``: the request it filed (unsent) or its current state (pending)."""
            client = self.node(a.member)
            if a.status == A.UNSENT:
                try:
                    return client.submit_approval(node_request(manifest, a.member))
                except NodeRefused as exc:
                    if exc.error != "ApprovalExists":
                        raise
                    got = client.find_approval(job_id)
                    if got is None:
                        raise
                    return got
            if a.status == A.PENDING and a.node_request_id is not None:
                return client.approval(a.node_request_id)
            return None

        records = self._approvals(job_id)
        asking = [a for a in records if a.status == A.UNSENT or (a.status == A.PENDING and a.node_request_id is not None)]
        answers = dict(zip((a.member for a in asking), concurrently(asking, ask), strict=True))  # every node at once
        for a in records:
            got, error = answers.get(a.member, (None, None))
            if isinstance(error, NodeRefused):
                self.lifecycle.transition(job_id, S.REJECTED, f"{a.member}'s node refused the request: "
                                          f"{error.error}: {error.node_detail}")
                return S.REJECTED
            if isinstance(error, NodeUnavailable):
                log.warning("job %s: %s", job_id, error.detail)
                continue
            if error is not None:
                raise error
            if got is not None and not approval_may_move(a.status, got["status"]):
                return self._fail(job_id, f"{a.member}'s node answered approval status {got['status']!r} "
                                          f"for a request that was {a.status}")
            if got is not None and a.status == A.UNSENT:
                if got["manifest_hash"] != a.request_hash:
                    a.status, a.reason = A.REJECTED.value, f"{a.member} hashed the request differently"
                else:
                    a.node_request_id, a.status = got["id"], got["status"]
                a.updated_at = utcnow()
                self._save(a)
            elif got is not None and got["status"] != A.PENDING:
                a.status, a.reason = got["status"], got.get("reason")
                a.approval_json = json.dumps(got["approval"]) if got.get("approval") else None
                a.updated_at = utcnow()
                self._save(a)
            if a.status == A.REJECTED:
                self.lifecycle.transition(job_id, S.REJECTED, f"{a.member} rejected: {a.reason or 'no reason given'}")
                return S.REJECTED
            if a.status == A.EXPIRED:
                self.lifecycle.transition(job_id, S.EXPIRED, f"{a.member}'s approval request expired")
                return S.EXPIRED
        # every signed approval that came in is verified (all of this pass at once: one BLS batch)
        unverified = [a for a in self._approvals(job_id) if a.status == A.APPROVED and not a.verified]
        if unverified:
            problems = self._verify_approvals(j, manifest, unverified)
            for a in unverified:
                if problems.get(a.member):
                    self.lifecycle.transition(job_id, S.FAILED,
                                              f"{a.member}'s approval is invalid: {problems[a.member]}")
                    return S.FAILED
        if not all(a.status == A.APPROVED and a.verified for a in self._approvals(job_id)):
            return S.PENDING_APPROVAL
        # every owner approved: the authorization goes on chain (as the job's mode says), then AUTHORIZED
        pending = self._authorize_on_chain(j, manifest)
        if pending is not None:
            return pending
        self.lifecycle.transition(job_id, S.AUTHORIZED, expect=S.PENDING_APPROVAL)
        return self._step_authorized(self.get_job(job_id), manifest)

    def _terms_model(self, j: Job, manifest: dict[str, Any]) -> Any:
        from contracts.models import Terms

        data = json.loads(j.terms_json) if j.terms_json else self._terms(j, manifest)
        return Terms.model_validate(data)

    def _verify_approvals(self, j: Job, manifest: dict[str, Any], recs: list[ApprovalRecord]) -> dict[str, str | None]:
        """Verify several signed approvals of ``j`` together (``coordinator.authorization.verify_approvals``);
        the verified ones are marked; member -> problem (None when fine)."""
        from coordinator.authorization import verify_approvals

        terms = self._terms_model(j, manifest)
        t0 = time.perf_counter()
        problems = verify_approvals(self.chain(), {a.member: a.approval_json for a in recs}, job_id=j.job_id,
                                    terms=terms, key_cache=self._bls_keys)
        log.info("job %s: verified %d approval(s) in %.2fs", j.job_id, len(recs), time.perf_counter() - t0)
        for a in recs:
            if problems.get(a.member) is None:
                a.verified = True
                self._save(a)
        return problems

    def _authorize_on_chain(self, j: Job, manifest: dict[str, Any]) -> JobState | None:
        """Write the authorization unless it is on chain. None once it is; PENDING_APPROVAL while an
        owner's on-chain approval is missing (per_owner); FAILED when it cannot be written."""
        from contracts.errors import ChainError
        from coordinator.authorization import (
            AggregateIncomplete,
            aggregate_signature,
            owners_approved_on_chain,
        )

        chain = self.chain()
        terms = self._terms_model(j, manifest)
        if chain.authorization(terms.job_id) is not None:
            return None
        mode = j.authorization_mode or "per_owner"
        try:
            if mode == "bls_aggregate":
                signed = {a.member: a.approval_json for a in self._approvals(j.job_id) if a.verified and a.approval_json}
                signature = aggregate_signature(chain, terms, signed)
                with self._chain_lock:
                    tx = chain.authorize_with_bls(self.account, terms, signature)
            else:
                if not owners_approved_on_chain(chain, terms):
                    return S.PENDING_APPROVAL  # an owner's node has not put its approval on chain yet
                with self._chain_lock:
                    tx = chain.authorize(self.account, terms)
        except (ChainError, AggregateIncomplete) as exc:
            name = getattr(exc, "error_name", "") or type(exc).__name__
            return self._fail(j.job_id, f"the authorization was refused ({mode}): {name}: {exc}")
        with Session(self.engine) as session:
            job = self._job(session, j.job_id)
            job.auth_tx = "0x" + bytes(tx.tx_hash).hex()
            session.add(job)
            session.commit()
        log.info("job %s authorized on chain (%s)", j.job_id, mode)
        return None

    # -- authorization and run

    def _revoked(self, j: Job) -> str | None:
        """The reason if the on-chain authorization was revoked (None while live)."""
        auth = self.chain().authorization(bytes.fromhex(json.loads(j.manifest_json)["job_key"]))
        if auth is not None and auth.revoked_at:
            return f"authorization revoked on chain at {datetime.fromtimestamp(auth.revoked_at, timezone.utc).isoformat()}"
        return None

    def _step_authorized(self, j: Job, manifest: dict[str, Any]) -> JobState:
        job_id = j.job_id
        pending = self._authorize_on_chain(j, manifest)  # written already, unless an older coordinator left it
        if pending is not None:
            return S.AUTHORIZED if pending == S.PENDING_APPROVAL else pending
        reason = self._revoked(j)
        if reason:
            self.lifecycle.transition(job_id, S.REVOKED, reason)
            return S.REVOKED
        self.lifecycle.transition(job_id, S.RUNNING, expect=S.AUTHORIZED)
        return self._step_running(self.get_job(job_id), manifest)

    def _tasks(self, job_id: str) -> list[TaskRecord]:
        with Session(self.engine) as session:
            return list(session.exec(select(TaskRecord).where(TaskRecord.job_id == job_id).order_by(TaskRecord.id)))

    def _fail(self, job_id: str, reason: str) -> JobState:
        self.lifecycle.transition(job_id, S.FAILED, reason)
        self._stop_tasks(job_id)
        return S.FAILED

    def _stop_tasks(self, job_id: str) -> None:
        """The job's engine stops every party (idempotent, never raises)."""
        j = self.get_job(job_id)
        registry.engine_for(j.kind).abort(JobPort(self, j, json.loads(j.manifest_json)))

    def _training_of(self, job_id: str) -> dict[str, Any] | None:
        """The kind, state and spec of job ``job_id`` (a vertical_predict's ``model_from``), or None."""
        with Session(self.engine) as session:
            job = session.exec(select(Job).where(Job.job_id == job_id)).first()
        if job is None:
            return None
        return {"kind": job.kind, "state": job.state, "spec": JobSpec.model_validate_json(job.spec_json)}

    def _step_running(self, j: Job, manifest: dict[str, Any]) -> JobState:
        """The one running step of every kind: the revocation check, the engine's advance, then (once
        the engine is done) every usage receipt on chain, the results, and SUCCEEDED once."""
        job_id = j.job_id
        engine = registry.engine_for(j.kind)
        port = JobPort(self, j, manifest)
        reason = self._revoked(j)
        if reason:
            self.lifecycle.transition(job_id, S.REVOKED, reason)
            engine.abort(port)
            return S.REVOKED
        progress: Progress = engine.advance(port)
        if progress.state == "failed":
            return self._fail(job_id, progress.reason or "the engine failed the job")
        if progress.state == "running":
            return S.RUNNING
        # receipts: every dataset used has its receipt on chain, or nothing is handed out. A node whose
        # receipt could not reach the chain keeps it queued and sends it when the chain answers: the job
        # waits ("receipt pending") until the authorization's expiry, after which the chain refuses it.
        terms = self._terms_model(j, manifest)
        chain = self.chain()
        missing = [d.hex()[:12] for d in terms.dataset_ids if chain.runs(terms.job_id, d) < 1]
        if missing and time.time() < terms.expiry:
            if self.get_job(job_id).stage != RECEIPT_PENDING:  # the engine may have set its own stage
                with Session(self.engine) as session:
                    job = self._job(session, job_id)
                    job.stage = RECEIPT_PENDING
                    session.add(job)
                    session.commit()
                log.info("job %s: receipt pending for dataset(s) %s", job_id, ", ".join(missing))
            return S.RUNNING
        if missing:
            return self._fail(job_id, f"no usage receipt on chain for dataset(s) {', '.join(missing)} "
                                      "by the authorization's expiry")
        with Session(self.engine) as session:
            job = self._job(session, job_id)
            job.results_json, job.stage = json.dumps(progress.results), "done"
            session.add(job)
            session.commit()
        self.lifecycle.transition(job_id, S.SUCCEEDED, expect=S.RUNNING)
        engine.cleanup(port)
        return S.SUCCEEDED


def _iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_for(coord: Coordinator, job_id: str, states: set[JobState], timeout: float = 60.0) -> JobState:
    """Poll until ``job_id`` reaches one of ``states`` (tests and the SDK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = coord.lifecycle.state(job_id)
        if st in states:
            return st
        time.sleep(0.1)
    return coord.lifecycle.state(job_id)
