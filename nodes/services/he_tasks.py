"""This node's part in ``he_score`` and ``secure_stats`` jobs (CKKS on TenSEAL, ``protocols/he``).

The coordinator relays bytes and sums ciphertexts (``engines/ckks/coordinator.py``); everything that
touches a key or a row happens here, after the node checked for itself:

* **start** — the manifest it is given hashes (SM3) to the manifest hash of the live authorization
  on chain; if it holds data for the job, it approved exactly that manifest, the authorization covers
  its datasets and has runs left, and its policy still allows the job (the checks of every task,
  ``TaskService.check_authorization``); if it is the requester without data, the authorization's
  requester is its own account. The HE parameters come from that manifest, nothing else. The
  requester makes the CKKS key pair: the secret context goes into a 0700 private directory,
  SM4-GCM-encrypted under a key derived from the node's SM2 key, and is deleted when the job ends.
  Every contributor of a masked job makes a fresh X25519 mask key (kept the same way).
* **prepare** (requester, he_score) — its model (stored here, never sent in the clear) must carry the
  commitment the manifest names and weigh exactly the columns the manifest lists, in that order;
  the rows are the intersection of the aligning job (sealed to this node); it encrypts each
  department's weights, seals the ordered key list to each department's SM2 key, and encrypts its
  own partial (intercept included).
* **contribute** (department) — he_score: checks that the key list it receives is exactly as long
  as the intersection it computed itself in the aligning job, without duplicates, every key in its
  dataset; then partial scores of its approved columns. secure_stats: the minimum group size (the
  stricter of the query's and this node's policy) on its own rows, the ε budget of the dataset
  (policy ``privacy_budgets``, spent ε in the node's ledger), noise, encryption. The usage receipt
  goes on chain **before** the ciphertext leaves; a refusal releases nothing and charges nothing.
* **finish** (requester) — ``check_total`` (all contributors, nobody else), decrypts the total only,
  seals the result to its own SM2 key, records its receipt, deletes its secrets.

Every refusal is a named error (the HE protocol's error name for protocol refusals) and is audited.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from nodes.errors import ChainUnavailable, NodeError, NotAuthorized, TaskNotFound
from nodes.models import (
    ApprovalRecord,
    HeModel,
    HeTask,
    JobCheck,
    NodeTask,
    TaskStatus,
    task_may_move,
    utcnow,
)
from nodes.services.audit import AuditLog
from nodes.services.chain import NodeChain, manifest_sm3
from nodes.services.datasets import DatasetService
from nodes.services.policy import PolicyService
from nodes.services.receipts import record_receipt, seal_for
from nodes.settings import NodeSettings

HE_KINDS = ("he_score", "secure_stats")
_REFUSAL_403 = {"MinimumGroupSizeViolation", "PrivacyBudgetExceeded", "NoPrivacyBudget", "TooFewDepartments"}


# ---------------------------------------------------------------- errors


class HeRefused(NodeError):
    """An HE protocol refusal (``protocols.he.errors``), reported under the protocol error's own name."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.status_code = 403 if error in _REFUSAL_403 else 422

    @property
    def name(self) -> str:
        """``MinimumGroupSizeViolation``, ``PrivacyBudgetExceeded``, ``MalformedCiphertext`` …"""
        return self.error


class AlignmentMismatch(NodeError):
    """The rows an he_score job asks for are not the intersection this node computed in the aligning job."""

    status_code = 409


class HeModelNotFound(NodeError):
    status_code = 404


class ModelMismatch(NodeError):
    """The stored model does not carry the manifest's commitment, or weighs other columns than it lists."""

    status_code = 409


class HeStepRefused(NodeError):
    """A step out of order or for a role this node does not have in the job."""

    status_code = 409


# ---------------------------------------------------------------- API models


class HeModelIn(BaseModel):
    """A scoring model: ``logit = intercept + Σ_member Σ_column weight · value``."""

    model_config = ConfigDict(extra="forbid")

    intercept: float = 0.0
    weights: dict[str, dict[str, float]] = Field(min_length=1, description="member -> column -> weight")

    @field_validator("weights")
    @classmethod
    def _finite(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for member, cols in v.items():
            if not all(np.isfinite(w) for w in cols.values()):
                raise ValueError(f"weights of {member!r} must be finite")
        return v


class HeModelOut(BaseModel):
    name: str
    commitment: str
    features: dict[str, list[str]]
    created_at: datetime


class HeStartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest: dict[str, Any]


class HePrepareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mask_group: dict[str, Any] | None = None
    aligned_by: dict[str, Any]
    """The aligning job's output as the coordinator holds it: job_id, name, receiver, envelope_b64, sm3."""


class HeContributeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_context_b64: str
    mask_group: dict[str, Any] | None = None
    enc_weights_b64: str | None = None
    keys_b64: str | None = None


class HeFinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_b64: str


class HeTaskOut(BaseModel):
    job_id: str
    kind: str
    roles: list[str]
    status: str
    stage: str | None
    error: str | None
    rows: int | None
    result_hash: str | None
    receipt_tx: str | None


class BudgetOut(BaseModel):
    dataset: str
    budget: float | None
    spent: float
    remaining: float | None


# ---------------------------------------------------------------- the service


@dataclass
class _Checked:
    kind: str
    manifest: dict[str, Any]
    manifest_hash: str
    spec: Any  # protocols.he.jobs.HeScoreJobSpec | SecureStatsJobSpec
    roles: list[str]
    inputs: list[dict[str, Any]]  # this node's inputs in the manifest


def _b64(data: str | None, what: str) -> bytes:
    if not data:
        raise HeRefused("MalformedCiphertext", f"{what} is missing")
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        raise HeRefused("MalformedCiphertext", f"{what} is not base64") from None


def _he(exc: Exception) -> HeRefused:
    return HeRefused(type(exc).__name__, str(exc)[:500])


class HeService:
    """The HE steps of this node (see the module docstring)."""

    def __init__(
        self,
        settings: NodeSettings,
        engine: Engine,
        audit: AuditLog,
        datasets: DatasetService,
        policy: PolicyService,
        tasks: Any,
        chain: NodeChain | None,
        keys: Any,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.audit = audit
        self.datasets = datasets
        self.policy = policy
        self.tasks = tasks
        self.chain = chain
        self._keys = keys  # () -> MemberKeys (loaded once, by the approvals service)
        self.member = settings.name
        self.work_root = settings.work_dir / "he"
        self._lock = threading.Lock()
        self._ledger: Any = None

    @classmethod
    def from_context(cls, ctx: Any) -> HeService:
        """Wire the service over a ``NodeContext``; HE tasks a previous run left running are failed."""
        svc = cls(ctx.settings, ctx.engine, ctx.audit, ctx.datasets, ctx.policy, ctx.tasks, ctx.chain,
                  ctx.approvals.keys)
        svc.recover()
        return svc

    def recover(self) -> int:
        """Fail the HE tasks a previous run of this node left running; delete their secrets."""
        with Session(self.engine) as session:
            stale = [t.job_id for t in session.exec(select(HeTask).where(HeTask.status == "running"))]
        for job_id in stale:
            self._end(job_id, "failed", "the node restarted during the task")
        return len(stale)

    def ledger(self) -> Any:
        """The node's ε ledger (its own database)."""
        if self._ledger is None:
            from protocols.he.budget import PrivacyLedger

            self._ledger = PrivacyLedger(self.settings.resolved_database_url())
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    # ------------------------------------------------------------ models

    def put_model(self, name: str, body: HeModelIn, actor: str) -> HeModelOut:
        """Store (or replace) a scoring model; its commitment is what a job manifest names."""
        from protocols.crypto.approvals import canonical_json
        from protocols.crypto.sm3 import sm3_hex

        if not name or len(name) > 100 or not all(c.isalnum() or c in "_.-" for c in name):
            raise ModelMismatch(f"model name {name!r}: letters, digits, '_', '.', '-' (at most 100)")
        salt = secrets.token_hex(16)
        model = body.model_dump()
        commitment = sm3_hex(canonical_json({"model": model, "salt": salt}))
        with self.audit.transaction() as session:
            rec = session.exec(select(HeModel).where(HeModel.name == name)).first() or HeModel(
                name=name, model_json="{}", salt="", commitment="")
            rec.model_json, rec.salt, rec.commitment, rec.created_at = json.dumps(model), salt, commitment, utcnow()
            session.add(rec)
            self.audit.append(session, actor=actor, action="he.model.put", target=name,
                              detail={"commitment": commitment,
                                      "features": {m: sorted(c) for m, c in body.weights.items()}})
            session.flush()
            return self._model_out(rec)

    @staticmethod
    def _model_out(rec: HeModel) -> HeModelOut:
        m = json.loads(rec.model_json)
        return HeModelOut(name=rec.name, commitment=rec.commitment, created_at=rec.created_at,
                          features={k: list(v) for k, v in m["weights"].items()})

    def get_model(self, name: str) -> HeModelOut:
        return self._model_out(self._model(name))

    def _model(self, name: str) -> HeModel:
        with Session(self.engine) as session:
            rec = session.exec(select(HeModel).where(HeModel.name == name)).first()
        if rec is None:
            raise HeModelNotFound(f"no scoring model {name!r} on this node")
        return rec

    def budget(self, dataset: str) -> BudgetOut:
        """A dataset's ε budget (from the policy) and what its ledger says was spent."""
        self.datasets.get(dataset)
        b = self.policy.current().privacy_budgets.get(dataset)
        spent = self.ledger().spent(dataset)
        return BudgetOut(dataset=dataset, budget=b, spent=spent, remaining=None if b is None else max(b - spent, 0.0))

    # ------------------------------------------------------------ storage

    def _row(self, session: Session, job_id: str) -> HeTask | None:
        return session.exec(select(HeTask).where(HeTask.job_id == job_id)).first()

    def _get(self, job_id: str) -> HeTask:
        with Session(self.engine) as session:
            t = self._row(session, job_id)
        if t is None:
            raise TaskNotFound(f"no HE task for job {job_id!r} on this node")
        return t

    def get(self, job_id: str) -> HeTaskOut:
        t = self._get(job_id)
        return HeTaskOut(job_id=t.job_id, kind=t.kind, roles=json.loads(t.roles), status=t.status, stage=t.stage,
                         error=t.error, rows=t.rows, result_hash=t.result_hash, receipt_tx=t.receipt_tx)

    def _update(self, job_id: str, audit: dict[str, Any] | None = None, **values: Any) -> HeTask:
        with self.audit.transaction() as session:
            t = self._row(session, job_id)
            assert t is not None
            if "status" in values and not task_may_move(t.status, values["status"]):
                raise HeStepRefused(f"the HE task of job {job_id!r} is {t.status}; it cannot become {values['status']}")
            for k, v in values.items():
                setattr(t, k, v)
            session.add(t)
            if audit is not None:
                self.audit.append(session, target=job_id, **audit)
            session.flush()
            return t

    def _at_rest_key(self, job_id: str) -> bytes:
        from protocols.crypto.sm3 import sm3_kdf

        return sm3_kdf(self._keys().sm2.private_key + b"|dcp-he-at-rest|" + job_id.encode(), 16)

    def _put_secret(self, t: HeTask, name: str, data: bytes) -> None:
        from protocols.crypto import sm4

        assert t.private_dir is not None
        path = Path(t.private_dir) / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(sm4.encrypt(self._at_rest_key(t.job_id), data, f"{t.job_id}/{name}".encode()))

    def _secret(self, t: HeTask, name: str) -> bytes:
        from protocols.crypto import sm4

        if t.private_dir is None or not (Path(t.private_dir) / name).is_file():
            raise HeStepRefused(f"job {t.job_id!r}: this node holds no {name} (was the job started here?)")
        return sm4.decrypt(self._at_rest_key(t.job_id), (Path(t.private_dir) / name).read_bytes(),
                           f"{t.job_id}/{name}".encode())

    def _public_dir(self, job_id: str) -> Path:
        from protocols.crypto.approvals import job_key

        d = self.work_root / job_key(job_id).hex()[:32]
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def _end(self, job_id: str, status: str, error: str | None = None, audit: dict[str, Any] | None = None,
             **values: Any) -> HeTask:
        t = self._get(job_id)
        if t.private_dir:
            shutil.rmtree(t.private_dir, ignore_errors=True)
        removed = not t.private_dir or not Path(t.private_dir).exists()
        a = audit or {"actor": "node", "action": f"he.{status}", "detail": {}}
        a["detail"] = {**a.get("detail", {}), "secrets_deleted": removed, **({"error": error[:300]} if error else {})}
        return self._update(job_id, status=status, error=error, private_dir=None, finished_at=utcnow(),
                            audit=a, **values)

    def _refuse(self, job_id: str, exc: NodeError) -> NodeError:
        """Fail the task (its secrets deleted) and hand back the error to raise."""
        try:
            if self._get(job_id).status == TaskStatus.RUNNING.value:  # an ended task keeps how it ended
                self._end(job_id, TaskStatus.FAILED.value, f"{exc.name}: {exc.detail}")
        except TaskNotFound:
            pass
        return exc

    # ------------------------------------------------------------ checks

    def _check(self, job_id: str, manifest: dict[str, Any]) -> _Checked:
        """The manifest is the one authorized on chain, and this node may take part (module docstring)."""
        from protocols.crypto.approvals import job_key
        from protocols.he.errors import HeError
        from protocols.he.jobs import parse_job

        if self.chain is None:
            raise ChainUnavailable("this node is not wired to a chain; it runs nothing without an authorization on chain")
        kind = manifest.get("kind")
        if manifest.get("job_id") != job_id or kind not in HE_KINDS:
            raise NotAuthorized(f"the manifest is not that of the HE job {job_id!r}")
        mhash = manifest_sm3(manifest)
        mine = [i for i in manifest.get("inputs", []) if i.get("member") == self.member]
        if mine:
            with Session(self.engine) as session:
                approval = session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == job_id)).first()
            if approval is None or approval.status != "approved":
                raise NotAuthorized(f"this node has not approved job {job_id!r}")
            if approval.job_manifest_hash and approval.job_manifest_hash != mhash.hex():
                raise NotAuthorized("the manifest sent is not the one this node approved")
            approved = json.loads(approval.manifest_json)
            if approved.get("inputs") != [{"dataset": i["dataset"], "columns": i["columns"]} for i in mine]:
                raise NotAuthorized("the manifest uses other data of this node than it approved")
            auth = self.tasks.guard.check(job_id, [i["dataset"] for i in mine], approval)
            self.policy.enforce(JobCheck.model_validate({
                "kind": kind, "requester": manifest["requester"], "requester_role": manifest["requester_role"],
                "purpose": manifest["purpose"],
                "inputs": [{"dataset": i["dataset"], "columns": i["columns"]} for i in mine],
            }))
        elif manifest.get("requester") == self.member:
            auth = self.tasks.guard.live(job_id)
            if str(auth.terms.requester).lower() != self.chain.account.lower():
                raise NotAuthorized(f"the authorization of job {job_id!r} names another requester")
        else:
            raise NotAuthorized(f"this node has no part in job {job_id!r}")
        if bytes(auth.terms.manifest_hash) != mhash or auth.terms.job_id != job_key(job_id):
            raise NotAuthorized("the manifest sent is not the one authorized on chain")
        try:
            spec = parse_job(kind, manifest["engine"]["he"])
        except (HeError, KeyError, TypeError) as exc:
            raise _he(exc) if isinstance(exc, HeError) else NotAuthorized("the manifest has no HE section") from None
        roles = []
        if manifest["requester"] == self.member:
            roles.append("requester")
        if self.member in spec.departments:
            roles.append("department")
        if spec.job_id != job_id or not roles:
            raise NotAuthorized(f"this node has no role in job {job_id!r}")
        return _Checked(kind, manifest, mhash.hex(), spec, roles, mine)

    def _running(self, job_id: str, role: str) -> tuple[HeTask, _Checked]:
        t = self._get(job_id)
        if t.status != "running":
            raise HeStepRefused(f"the HE task of job {job_id!r} is {t.status}")
        if role not in json.loads(t.roles):
            raise HeStepRefused(f"this node is not the {role} of job {job_id!r}")
        manifest = json.loads((self._public_dir(job_id) / "manifest.json").read_text())
        try:
            self.tasks.guard.live(job_id)
        except NodeError as exc:
            raise self._refuse(job_id, exc) from None
        from protocols.he.jobs import parse_job

        spec = parse_job(t.kind, manifest["engine"]["he"])
        mine = [i for i in manifest["inputs"] if i["member"] == self.member]
        return t, _Checked(t.kind, manifest, t.manifest_hash, spec, json.loads(t.roles), mine)

    def _mask(self, t: HeTask, c: _Checked, group: dict[str, Any] | None) -> Any:
        from pydantic import ValidationError

        from protocols.he.masks import MaskGroup

        if not c.spec.masked:
            if group:
                raise HeRefused("MaskError", "the job is unmasked but a mask group was sent")
            return None
        try:
            g = MaskGroup.model_validate(group or {})
        except ValidationError as exc:
            raise HeRefused("MaskError", f"mask group: {exc.errors()[0]['msg']}") from None
        if g.job_id != t.job_id or sorted(g.members) != c.spec.contributors:
            raise HeRefused("MaskError", f"the mask group must be this job's contributors {c.spec.contributors}")
        return g, self._secret(t, "mask.key")

    # ------------------------------------------------------------ steps

    def start(self, job_id: str, body: HeStartIn, actor: str) -> dict[str, Any]:
        """Check everything; the requester makes the CKKS keys; contributors make mask keys."""
        from protocols.he.context import make_context
        from protocols.he.masks import mask_keypair

        with self._lock:
            with Session(self.engine) as session:
                existing = self._row(session, job_id)
            if existing is not None:
                stored = self._public_dir(job_id) / "start.json"
                if existing.status == "running" and stored.is_file():
                    return json.loads(stored.read_text())
                raise HeStepRefused(f"the HE task of job {job_id!r} is already {existing.status}")
            c = self._check(job_id, body.manifest)
            root = self.settings.tmp_dir()
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            private = Path(tempfile.mkdtemp(prefix="he-", dir=root))  # mode 0700
            with self.audit.transaction() as session:
                session.add(HeTask(job_id=job_id, kind=c.kind, roles=json.dumps(c.roles), stage="start",
                                   manifest_hash=c.manifest_hash, private_dir=str(private)))
                self.audit.append(session, actor=actor, action="he.start", target=job_id, detail={
                    "kind": c.kind, "roles": c.roles, "manifest_hash": c.manifest_hash,
                    "datasets": [i["dataset"] for i in c.inputs]})
        t = self._get(job_id)
        out: dict[str, Any] = {"member": self.member, "roles": c.roles}
        try:
            if "requester" in c.roles:
                pair = make_context(c.spec.params)
                self._put_secret(t, "secret.ctx", pair.secret)
                out["public_context_b64"] = base64.b64encode(pair.public).decode()
                out["context_fingerprint"] = pair.fingerprint
            if c.spec.masked and self.member in c.spec.contributors:
                priv, pub = mask_keypair()
                self._put_secret(t, "mask.key", priv)
                out["mask_public_key"] = pub.hex()
        except Exception as exc:
            from protocols.he.errors import HeError

            raise self._refuse(job_id, _he(exc) if isinstance(exc, HeError) else HeRefused(
                "InvalidParameters", type(exc).__name__)) from None
        pub_dir = self._public_dir(job_id)
        (pub_dir / "manifest.json").write_text(json.dumps(c.manifest))
        if "public_context_b64" in out:
            (pub_dir / "public.ctx").write_bytes(base64.b64decode(out["public_context_b64"]))
        (pub_dir / "start.json").write_text(json.dumps(out))
        self._update(job_id, stage="started")
        return out

    def prepare(self, job_id: str, body: HePrepareIn, actor: str) -> dict[str, Any]:
        """Requester of an he_score job: encrypted weights, sealed key lists, its own partial."""
        from protocols.he.errors import HeError

        t, c = self._running(job_id, "requester")
        if c.kind != "he_score":
            raise HeStepRefused("only an he_score job has a prepare step")
        try:
            return self._prepare(t, c, body, actor)
        except HeError as exc:
            raise self._refuse(job_id, _he(exc)) from None
        except NodeError as exc:
            raise self._refuse(job_id, exc) from None

    def _prepare(self, t: HeTask, c: _Checked, body: HePrepareIn, actor: str) -> dict[str, Any]:
        from protocols.crypto.envelope import open_, seal
        from protocols.crypto.errors import CryptoError
        from protocols.crypto.sm3 import sm3_digest
        from protocols.he.score import encrypt_weights, own_partial

        assert self.chain is not None
        job_id, spec, engine = t.job_id, c.spec, c.manifest["engine"]
        rec = self._model(engine["model"])
        if rec.commitment != engine["model_commitment"]:
            raise ModelMismatch(f"model {rec.name!r} does not carry the commitment the manifest names")
        model = json.loads(rec.model_json)
        weights: dict[str, dict[str, float]] = model["weights"]
        wanted = {**{d: cols for d, cols in spec.departments.items()}, self.member: spec.requester_features}
        for m, cols in wanted.items():
            if set(weights.get(m, {})) != set(cols):
                raise ModelMismatch(f"model {rec.name!r} weighs {sorted(weights.get(m, {}))} of {m}; "
                                    f"the manifest lists {sorted(cols)}")
        extra = sorted(set(weights) - set(wanted))
        if extra:
            raise ModelMismatch(f"model {rec.name!r} also weighs members {extra} the job does not include")
        # the rows: the aligning job's intersection, sealed to this node
        a = body.aligned_by
        if a.get("job_id") != engine["aligned_by"] or a.get("receiver") != self.member:
            raise AlignmentMismatch("the aligning output is not the one the manifest names, or not this node's")
        try:
            data = open_(self._keys().sm2.private_key, _b64(a.get("envelope_b64"), "the aligning output"),
                         f"{a['job_id']}/{a.get('name')}".encode())
        except CryptoError as exc:
            raise AlignmentMismatch(f"the aligning output does not open with this node's key: {type(exc).__name__}") from None
        if sm3_digest(data).hex() != a.get("sm3"):
            raise AlignmentMismatch("the aligning output does not match its SM3")
        join_key = c.manifest["join_key"]
        keys = pd.read_csv(io.BytesIO(data), dtype={join_key: str}, usecols=[join_key])[join_key].tolist()
        if len(keys) != spec.n_rows or len(set(keys)) != len(keys):
            raise AlignmentMismatch(f"the aligning output holds {len(keys)} keys, the job scores {spec.n_rows}")
        own_input = c.inputs[0]
        x = self._rows(own_input["dataset"], join_key, spec.requester_features, keys)
        w_own = np.asarray([weights[self.member][col] for col in spec.requester_features], dtype=float)
        own = float(model["intercept"]) + (x @ w_own if len(w_own) else np.zeros(len(keys)))
        public = (self._public_dir(job_id) / "public.ctx").read_bytes()
        mask = self._mask(t, c, body.mask_group)
        out: dict[str, Any] = {"enc_weights": {}, "keys": {}}
        for dept, cols in sorted(spec.departments.items()):
            w = [weights[dept][col] for col in cols]  # in the manifest's order
            out["enc_weights"][dept] = base64.b64encode(encrypt_weights(public, w)).decode()
            key = self.chain.member_sm2_key(dept)
            if key is None:
                raise NotAuthorized(f"department {dept!r} is not an active member on chain")
            sealed = seal(key, json.dumps(keys).encode(), f"{job_id}/keys/{dept}".encode())
            out["keys"][dept] = base64.b64encode(sealed).decode()
        out["own_partial_b64"] = base64.b64encode(own_partial(public, own, self.member, mask)).decode()
        self._put_secret(t, "keys.json", json.dumps(keys).encode())
        self._update(job_id, stage="prepared", rows=len(keys), audit={
            "actor": actor, "action": "he.prepare", "detail": {
                "model": rec.name, "commitment": rec.commitment, "rows": len(keys),
                "departments": sorted(spec.departments)}})
        return out

    def _rows(self, dataset: str, join_key: str, columns: list[str], keys: list[str]) -> np.ndarray:
        """``columns`` of ``dataset`` for ``keys`` in that order (AlignmentMismatch if a key is missing)."""
        from protocols.he.errors import InvalidInput

        frame = self.datasets.read_frame(dataset, [join_key, *columns])
        frame[join_key] = frame[join_key].astype(str)
        if frame[join_key].duplicated().any():
            raise AlignmentMismatch(f"dataset {dataset!r} has duplicate {join_key!r} values; rows cannot be aligned")
        frame = frame.set_index(join_key)
        if len(pd.Index(keys).difference(frame.index)) > 0:
            raise AlignmentMismatch("the key list is not within this node's dataset (not the aligning intersection)")
        if not columns:
            return np.zeros((len(keys), 0))
        block = frame.loc[keys, columns]
        try:
            x = block.apply(pd.to_numeric).to_numpy(dtype=float)
        except (ValueError, TypeError):
            raise InvalidInput(f"columns {columns} of {dataset!r} are not numeric") from None
        return x

    def contribute(self, job_id: str, body: HeContributeIn, actor: str) -> dict[str, Any]:
        """Department: check, compute, record the receipt, then release the ciphertext."""
        from protocols.he.errors import HeError

        t, c = self._running(job_id, "department")
        done = self._public_dir(job_id) / "contribution.json"
        if done.is_file():
            return json.loads(done.read_text())
        try:
            return self._contribute(t, c, body, actor, done)
        except HeError as exc:
            raise self._refuse(job_id, _he(exc)) from None
        except NodeError as exc:
            raise self._refuse(job_id, exc) from None

    def _contribute(self, t: HeTask, c: _Checked, body: HeContributeIn, actor: str, done: Path) -> dict[str, Any]:
        from protocols.crypto.sm3 import sm3_digest
        from protocols.he.context import context_fingerprint, load_public_context

        job_id = t.job_id
        public = _b64(body.public_context_b64, "the public context")
        load_public_context(public)  # refuses a secret key inside, re-checks 128-bit security
        mask = self._mask(t, c, body.mask_group)
        inp = c.inputs[0]
        if c.kind == "he_score":
            rows, contribution = self._partial(t, c, body, public, inp, mask)
        else:
            rows, contribution = self._stats(t, c, public, inp, mask)
        result_hash = sm3_digest(contribution)
        tx = self._receipt(t, inp["dataset"], rows, result_hash)
        out = {"member": self.member, "contribution_b64": base64.b64encode(contribution).decode(),
               "context_fingerprint": context_fingerprint(public), "receipt_tx": tx}
        done.write_text(json.dumps(out))
        detail = {"dataset": inp["dataset"], "columns": inp["columns"], "rows": rows,
                  "result_hash": result_hash.hex(), "receipt_tx": tx}
        if "requester" in c.roles:  # a requester that also contributes finishes later
            self._update(job_id, stage="contributed", receipt_tx=tx, result_hash=result_hash.hex(), rows=rows,
                         audit={"actor": actor, "action": "he.contribute", "detail": detail})
        else:
            self._end(job_id, "succeeded", stage="done", receipt_tx=tx, result_hash=result_hash.hex(), rows=rows,
                      audit={"actor": actor, "action": "he.contribute", "detail": detail})
        return out

    def _partial(
        self, t: HeTask, c: _Checked, body: HeContributeIn, public: bytes, inp: dict[str, Any], mask: Any
    ) -> tuple[int, bytes]:
        from protocols.crypto.envelope import open_
        from protocols.crypto.errors import CryptoError
        from protocols.he.score import partial_scores

        job_id, manifest = t.job_id, c.manifest
        try:
            keys = json.loads(open_(self._keys().sm2.private_key, _b64(body.keys_b64, "the key list"),
                                    f"{job_id}/keys/{self.member}".encode()))
        except (CryptoError, ValueError) as exc:
            raise AlignmentMismatch(f"the key list does not open with this node's key: {type(exc).__name__}") from None
        ref = manifest["engine"]["aligned_by"]
        with Session(self.engine) as session:
            task = session.exec(select(NodeTask).where(NodeTask.job_id == ref)).first()
            approval = session.exec(select(ApprovalRecord).where(ApprovalRecord.job_id == ref)).first()
        if task is None or task.status != "succeeded" or approval is None:
            raise AlignmentMismatch(f"this node ran no PSI in job {ref!r}; it cannot check the rows")
        if approval.requester != manifest["requester"]:
            raise AlignmentMismatch(f"job {ref!r} was not requested by {manifest['requester']!r}")
        if not isinstance(keys, list) or len(keys) != task.intersection_rows or len(set(map(str, keys))) != len(keys):
            raise AlignmentMismatch(f"the key list is not the intersection this node computed in job {ref!r}")
        if len(keys) != c.spec.n_rows:
            raise AlignmentMismatch(f"the key list has another length than the job's {c.spec.n_rows} rows")
        cols = c.spec.departments[self.member]
        x = self._rows(inp["dataset"], manifest["join_key"], list(cols), [str(k) for k in keys])
        enc_w = _b64(body.enc_weights_b64, "the encrypted weights")
        return len(keys), partial_scores(public, enc_w, x, self.member, mask)

    def _stats(self, t: HeTask, c: _Checked, public: bytes, inp: dict[str, Any], mask: Any) -> tuple[int, bytes]:
        from protocols.crypto.sm3 import sm3_kdf
        from protocols.he.errors import InvalidInput
        from protocols.he.stats import department_contribution, noise_rng

        query = c.spec.query
        frame = self.datasets.read_frame(inp["dataset"], [query.column])
        col = frame[query.column].astype(object).where(frame[query.column].notna(), np.nan)
        try:
            values = pd.to_numeric(col).to_numpy(dtype=float)
        except (ValueError, TypeError):
            raise InvalidInput(f"column {query.column!r} of {inp['dataset']!r} is not numeric") from None
        policy = self.policy.current()
        ledger = rng = None
        if query.epsilon is not None:
            ledger = self.ledger()
            if inp["dataset"] in policy.privacy_budgets:
                ledger.set_budget(inp["dataset"], policy.privacy_budgets[inp["dataset"]])
            node_secret = sm3_kdf(self._keys().sm2.private_key + b"|dcp-dp-noise", 32)
            rng = noise_rng(node_secret, t.job_id, inp["dataset"])
        contribution = department_contribution(
            public, query, values, self.member, ledger=ledger, dataset_id=inp["dataset"], charge_id=t.job_id,
            rng=rng, mask=mask, min_group_size=policy.min_group_size,
        )
        return int(np.isfinite(values).sum()), contribution

    def _receipt(self, t: HeTask, dataset: str, rows: int, result_hash: bytes) -> str:
        assert self.chain is not None
        return record_receipt(self.chain, self.member, t.job_id, dataset, rows, result_hash, t.started_at)

    def finish(self, job_id: str, body: HeFinishIn, actor: str) -> dict[str, Any]:
        """Requester: check the total, decrypt it, seal the result to itself, record its receipt."""
        from protocols.he.errors import HeError

        with Session(self.engine) as session:
            t0 = self._row(session, job_id)
        if t0 is not None and t0.status == "succeeded" and "requester" in json.loads(t0.roles):
            return {"outputs": list(json.loads(t0.outputs_json).values())}
        t, c = self._running(job_id, "requester")
        try:
            return self._finish(t, c, body, actor)
        except HeError as exc:
            raise self._refuse(job_id, _he(exc)) from None
        except NodeError as exc:
            raise self._refuse(job_id, exc) from None

    def _finish(self, t: HeTask, c: _Checked, body: HeFinishIn, actor: str) -> dict[str, Any]:
        from protocols.crypto.sm3 import sm3_digest
        from protocols.he.context import context_fingerprint
        from protocols.he.jobs import check_total
        from protocols.he.score import decrypt_scores
        from protocols.he.stats import decrypt_stats

        assert self.chain is not None
        job_id, spec = t.job_id, c.spec
        total = _b64(body.total_b64, "the total")
        check_total(spec, total)
        fp = context_fingerprint((self._public_dir(job_id) / "public.ctx").read_bytes())
        secret = self._secret(t, "secret.ctx")
        if c.kind == "he_score":
            keys = json.loads(self._secret(t, "keys.json"))
            logits = decrypt_scores(secret, total, spec.n_rows, context=fp)
            frame = pd.DataFrame({c.manifest["join_key"]: keys, "logit": logits,
                                  "probability": 1.0 / (1.0 + np.exp(-logits))})
            name, data, rows = "scores", frame.to_csv(index=False).encode(), len(keys)
        else:
            res = decrypt_stats(secret, spec.query, total, context=fp)
            name, data, rows = "stats", res.model_dump_json().encode(), 0
        del secret
        digest = sm3_digest(data)
        sealed = seal_for(self.chain, self.member, job_id, name, data)
        out = {"name": name, "receiver": self.member, "sm3": digest.hex(),
               "envelope_b64": base64.b64encode(sealed).decode()}
        tx, result_hash = t.receipt_tx, t.result_hash
        if c.inputs and c.kind == "he_score":  # the requester's own dataset took part: its receipt
            tx = self._receipt(t, c.inputs[0]["dataset"], rows, digest)
            result_hash = digest.hex()
        self._end(job_id, "succeeded", stage="done", receipt_tx=tx, result_hash=result_hash, rows=rows or t.rows,
                  outputs_json=json.dumps({name: out}),
                  audit={"actor": actor, "action": "he.finish", "detail": {
                      "output": name, "sm3": digest.hex(), "receiver": self.member, "receipt_tx": tx,
                      "contributors": spec.contributors}})
        return {"outputs": [out]}

    def stop(self, job_id: str, actor: str) -> HeTaskOut:
        """Drop the job: secrets deleted; idempotent."""
        t = self._get(job_id)
        if t.status == "running":
            self._end(job_id, "stopped", "stopped on request",
                      audit={"actor": actor, "action": "he.stop", "detail": {}})
        return self.get(job_id)
