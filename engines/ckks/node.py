"""The node side of the CKKS engine: this node's part in ``he_score`` and ``secure_stats`` jobs.

Every step runs through the node's one step route (``POST /tasks/{job_id}/{step}``, only the
authenticated coordinator may call it): before a step reaches :class:`CkksNodeEngine` the node has
checked that it approved the job (or, as the requester without data, that the authorization on chain
names it), that the authorization is live on chain, covers its datasets and has runs left, and its
policy. ``task`` is the node's port (``nodes/services/steps.py``, ``TaskPort``): sealing, usage
receipts, the task's status, the task's private directory, the node's keys used on its behalf.

* **start** — the manifest sent hashes (SM3) to the manifest hash of the authorization on chain and
  says about this node's data exactly what it approved. The HE parameters come from that manifest
  only. The requester makes the CKKS key pair (the secret context is SM4-GCM-encrypted in the task's
  0700 directory under a key derived from the node's SM2 key, and deleted when the task ends) and
  **signs the context's fingerprint**; every contributor of a masked job makes a fresh X25519 mask
  key and **signs it** (``protocols/he/binding.py``: SM2, over the job and its authorization's
  manifest hash).
* **prepare** (requester, he_score) — its stored model must carry the manifest's commitment and weigh
  exactly the listed columns; the rows are the intersection of the aligning job (sealed to it); it
  encrypts each department's weights, seals the ordered key list to each department's SM2 key and
  encrypts its own partial.
* **contribute** (department) — first the material: the public context must be signed by the
  requester and every mask key by its member, for this authorization (else ``MaterialNotSigned``,
  not fatal: nothing computed, nothing charged, the task unchanged). Then he_score: the key list is
  exactly the intersection it computed in the aligning job; secure_stats: minimum group, ε budget,
  noise. The usage receipt goes on chain **before** the ciphertext leaves.
* **finish** (requester) — ``check_total``, decrypt the total only, seal the result to its receiver,
  record its receipt, delete its secrets.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from engines.base import NodeEngine
from engines.errors import StepRefused

KINDS = ("he_score", "secure_stats")
_REFUSAL_403 = {"MinimumGroupSizeViolation", "PrivacyBudgetExceeded", "NoPrivacyBudget", "TooFewDepartments",
                "MaterialNotSigned", "NotAuthorized"}


# ---------------------------------------------------------------- step bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartIn(_Body):
    manifest: dict[str, Any]
    """The whole job manifest (its SM3 must be the authorization's manifest hash)."""


class PrepareIn(_Body):
    mask_group: dict[str, Any] | None = None
    mask_signatures: dict[str, str] | None = None
    """member -> its SM2 signature over its mask key (protocols.he.binding)."""
    aligned_by: dict[str, Any]
    """The aligning job's output as the coordinator holds it: job_id, name, receiver, envelope_b64, sm3."""


class ContributeIn(_Body):
    public_context_b64: str
    context_signature: str | None = None
    """The requester's SM2 signature over the context's fingerprint (protocols.he.binding)."""
    mask_group: dict[str, Any] | None = None
    mask_signatures: dict[str, str] | None = None
    enc_weights_b64: str | None = None
    keys_b64: str | None = None


class FinishIn(_Body):
    total_b64: str


# ---------------------------------------------------------------- helpers


def refused(error: str, detail: str, *, fatal: bool = True) -> StepRefused:
    status = 403 if error in _REFUSAL_403 else 409 if error in ("AlignmentMismatch", "ModelMismatch",
                                                                  "HeStepRefused") else 422
    return StepRefused(error, detail[:500], status, fatal=fatal)


def _b64(data: str | None, what: str) -> bytes:
    if not data:
        raise refused("MalformedCiphertext", f"{what} is missing")
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        raise refused("MalformedCiphertext", f"{what} is not base64") from None


class _Job:
    """What start checked, as later steps read it back from the task's directory."""

    def __init__(self, task: Any, manifest: dict[str, Any]) -> None:
        from protocols.he.jobs import parse_job
        from protocols.manifest import inputs_of, manifest_sm3

        self.manifest = manifest
        self.kind = manifest["kind"]
        self.spec = parse_job(self.kind, manifest["engine"]["he"])
        self.inputs = inputs_of(manifest, task.member)
        self.roles = [*(["requester"] if manifest["requester"] == task.member else []),
                      *(["department"] if task.member in self.spec.departments else [])]
        self.manifest_hash = manifest_sm3(manifest).hex()  # start checked it is the authorization's


class CkksNodeEngine(NodeEngine):
    """The steps of a CKKS job at one node (the module docstring)."""

    kinds = KINDS
    steps = {"start": StartIn, "prepare": PrepareIn, "contribute": ContributeIn, "finish": FinishIn}

    def step(self, task: Any, name: str, body: BaseModel) -> dict[str, Any]:
        from protocols.crypto.errors import CryptoError
        from protocols.he.errors import HeError

        try:
            if name == "start":
                assert isinstance(body, StartIn)
                return self._start(task, body)
            job = self._job(task)
            if name == "prepare":
                assert isinstance(body, PrepareIn)
                return self._prepare(task, job, body)
            if name == "contribute":
                assert isinstance(body, ContributeIn)
                return self._contribute(task, job, body)
            assert isinstance(body, FinishIn)
            return self._finish(task, job, body)
        except StepRefused as exc:
            if exc.fatal:
                task.drop_scratch()
            raise
        except HeError as exc:
            task.drop_scratch()
            raise refused(type(exc).__name__, str(exc)) from None
        except CryptoError as exc:
            task.drop_scratch()
            raise refused("AlignmentMismatch", f"an envelope does not open with this node's key: {type(exc).__name__}") from None
        except Exception:
            task.drop_scratch()  # a refusal of the node (NotAuthorized …) or a fault: no secret stays
            raise

    def stop(self, task: Any) -> None:
        task.drop_scratch()

    def recover(self, task: Any) -> None:
        task.drop_scratch()

    # ------------------------------------------------------------ storage in the task's directory

    def _put_secret(self, task: Any, name: str, data: bytes) -> None:
        import os

        from protocols.crypto import sm4

        path = task.scratch() / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(sm4.encrypt(self._at_rest(task), data, f"{task.job_id}/{name}".encode()))

    def _secret(self, task: Any, name: str) -> bytes:
        from protocols.crypto import sm4

        path = task.scratch(create=False) / name
        if not path.is_file():
            raise refused("HeStepRefused", f"job {task.job_id!r}: this node holds no {name} (was the job started here?)")
        return sm4.decrypt(self._at_rest(task), path.read_bytes(), f"{task.job_id}/{name}".encode())

    @staticmethod
    def _at_rest(task: Any) -> bytes:
        return task.node_secret(b"dcp-he-at-rest|" + task.job_id.encode(), 16)

    def _job(self, task: Any) -> _Job:
        path = task.scratch(create=False) / "manifest.json"
        if not path.is_file():
            raise refused("HeStepRefused", f"job {task.job_id!r} was not started on this node")
        return _Job(task, json.loads(path.read_text()))

    @staticmethod
    def _role(job: _Job, role: str, task: Any) -> None:
        if role not in job.roles:
            raise refused("HeStepRefused", f"this node is not the {role} of job {task.job_id!r}")

    # ------------------------------------------------------------ start

    def _start(self, task: Any, body: StartIn) -> dict[str, Any]:
        from protocols.he.context import make_context
        from protocols.he.masks import mask_keypair
        from protocols.manifest import inputs_of, manifest_sm3

        d = task.scratch()
        if (d / "start.json").is_file():
            return json.loads((d / "start.json").read_text())  # answered before: the same keys
        m = body.manifest
        mhash = manifest_sm3(m)
        if m.get("job_id") != task.job_id or m.get("kind") != task.kind or m.get("requester") != task.approved["requester"]:
            raise refused("NotAuthorized", f"the manifest is not that of job {task.job_id!r}")
        if bytes(task.auth.terms.manifest_hash) != mhash or task.approved.get("job_manifest_hash") not in (None, mhash.hex()):
            raise refused("NotAuthorized", "the manifest sent is not the one authorized on chain and approved here")
        try:
            mine = inputs_of(m, task.member)
        except (KeyError, TypeError):
            raise refused("NotAuthorized", "the manifest has no inputs") from None
        if mine != task.approved.get("inputs", []):
            raise refused("NotAuthorized", "the manifest uses other data of this node than it approved")
        try:
            job = _Job(task, m)
        except (KeyError, TypeError):
            raise refused("NotAuthorized", "the manifest has no HE section") from None
        if job.spec.job_id != task.job_id or not job.roles:
            raise refused("NotAuthorized", f"this node has no role in job {task.job_id!r}")
        out: dict[str, Any] = {"member": task.member, "roles": job.roles}
        if "requester" in job.roles:
            pair = make_context(job.spec.params)
            self._put_secret(task, "secret.ctx", pair.secret)
            (d / "public.ctx").write_bytes(pair.public)
            out["public_context_b64"] = base64.b64encode(pair.public).decode()
            out["context_fingerprint"] = pair.fingerprint
            out["context_signature"] = task.sign(_material("context", task, job, pair.fingerprint)).hex()
        if job.spec.masked and task.member in job.spec.contributors:
            priv, pub = mask_keypair()
            self._put_secret(task, "mask.key", priv)
            out["mask_public_key"] = pub.hex()
            out["mask_key_signature"] = task.sign(_material("mask_key", task, job, pub.hex())).hex()
        (d / "manifest.json").write_text(json.dumps(m))
        (d / "start.json").write_text(json.dumps(out))
        task.audit("he.start", {"kind": job.kind, "roles": job.roles, "manifest_hash": mhash.hex(),
                                "datasets": [i["dataset"] for i in mine],
                                "context_fingerprint": out.get("context_fingerprint"),
                                "mask_public_key": out.get("mask_public_key")})
        task.stage("started")
        return out

    # ------------------------------------------------------------ material checks

    def _mask(self, task: Any, job: _Job, group: dict[str, Any] | None, sigs: dict[str, str] | None) -> Any:
        from pydantic import ValidationError

        from protocols.he.binding import verify_material
        from protocols.he.masks import MaskGroup

        if not job.spec.masked:
            if group:
                raise refused("MaskError", "the job is unmasked but a mask group was sent")
            return None
        try:
            g = MaskGroup.model_validate(group or {})
        except ValidationError as exc:
            raise refused("MaskError", f"mask group: {exc.errors()[0]['msg']}") from None
        if g.job_id != task.job_id or sorted(g.members) != job.spec.contributors:
            raise refused("MaskError", f"the mask group must be this job's contributors {job.spec.contributors}")
        mine = json.loads((task.scratch(create=False) / "start.json").read_text()).get("mask_public_key")
        if g.members.get(task.member) != mine:
            raise refused("MaterialNotSigned", "the mask group does not carry the mask key this node made", fatal=False)
        for member, key in sorted(g.members.items()):
            try:
                verify_material(task.member_key(member), "mask_key", task.job_id, job.manifest_hash, member, key,
                                (sigs or {}).get(member))
            except Exception as exc:  # MaterialNotSigned: refused, nothing done, the task unchanged
                raise refused("MaterialNotSigned", str(exc), fatal=False) from None
        return g, self._secret(task, "mask.key")

    def _context(self, task: Any, job: _Job, body: ContributeIn) -> bytes:
        from protocols.he.binding import verify_material
        from protocols.he.context import context_fingerprint

        public = _b64(body.public_context_b64, "the public context")
        requester = job.manifest["requester"]
        try:
            verify_material(task.member_key(requester), "context", task.job_id, job.manifest_hash, requester,
                            context_fingerprint(public), body.context_signature)
        except Exception as exc:
            raise refused("MaterialNotSigned", str(exc), fatal=False) from None
        return public

    # ------------------------------------------------------------ prepare (requester, he_score)

    def _prepare(self, task: Any, job: _Job, body: PrepareIn) -> dict[str, Any]:
        from protocols.crypto.envelope import seal
        from protocols.crypto.sm3 import sm3_digest
        from protocols.he.score import encrypt_weights, own_partial

        self._role(job, "requester", task)
        if job.kind != "he_score":
            raise refused("HeStepRefused", "only an he_score job has a prepare step")
        d = task.scratch(create=False)
        if (d / "prepare.json").is_file():
            return json.loads((d / "prepare.json").read_text())
        mask = self._mask(task, job, body.mask_group, body.mask_signatures)
        spec, engine = job.spec, job.manifest["engine"]
        rec = task.stored(engine["model"])
        if rec is None:
            raise refused("HeModelNotFound", f"no scoring model {engine['model']!r} on this node")
        if rec["commitment"] != engine["model_commitment"]:
            raise refused("ModelMismatch", f"model {rec['name']!r} does not carry the commitment the manifest names")
        model = rec["model"]
        weights: dict[str, dict[str, float]] = model["weights"]
        wanted = {**dict(spec.departments.items()), task.member: spec.requester_features}
        for m, cols in wanted.items():
            if set(weights.get(m, {})) != set(cols):
                raise refused("ModelMismatch", f"model {rec['name']!r} weighs {sorted(weights.get(m, {}))} of {m}; "
                                               f"the manifest lists {sorted(cols)}")
        extra = sorted(set(weights) - set(wanted))
        if extra:
            raise refused("ModelMismatch", f"model {rec['name']!r} also weighs members {extra} the job does not include")
        a = body.aligned_by
        if a.get("job_id") != engine["aligned_by"] or a.get("receiver") != task.member:
            raise refused("AlignmentMismatch", "the aligning output is not the one the manifest names, or not this node's")
        data = task.open_sealed(_b64(a.get("envelope_b64"), "the aligning output"), f"{a['job_id']}/{a.get('name')}".encode())
        if sm3_digest(data).hex() != a.get("sm3"):
            raise refused("AlignmentMismatch", "the aligning output does not match its SM3")
        join_key = job.manifest["join_key"]
        keys = pd.read_csv(io.BytesIO(data), dtype={join_key: str}, usecols=[join_key])[join_key].tolist()
        if len(keys) != spec.n_rows or len(set(keys)) != len(keys):
            raise refused("AlignmentMismatch", f"the aligning output holds {len(keys)} keys, the job scores {spec.n_rows}")
        x = _rows(task, job.inputs[0]["dataset"], join_key, spec.requester_features, keys)
        w_own = np.asarray([weights[task.member][col] for col in spec.requester_features], dtype=float)
        own = float(model["intercept"]) + (x @ w_own if len(w_own) else np.zeros(len(keys)))
        public = (d / "public.ctx").read_bytes()
        out: dict[str, Any] = {"enc_weights": {}, "keys": {}}
        for dept, cols in sorted(spec.departments.items()):
            out["enc_weights"][dept] = base64.b64encode(encrypt_weights(public, [weights[dept][c] for c in cols])).decode()
            key = task.member_key(dept)
            if key is None:
                raise refused("NotAuthorized", f"department {dept!r} is not an active member on chain")
            sealed = seal(key, json.dumps(keys).encode(), f"{task.job_id}/keys/{dept}".encode())
            out["keys"][dept] = base64.b64encode(sealed).decode()
        out["own_partial_b64"] = base64.b64encode(own_partial(public, own, task.member, mask)).decode()
        self._put_secret(task, "keys.json", json.dumps(keys).encode())
        (d / "prepare.json").write_text(json.dumps(out))
        task.audit("he.prepare", {"model": rec["name"], "commitment": rec["commitment"], "rows": len(keys),
                                  "departments": sorted(spec.departments)})
        task.stage("prepared", intersection_rows=len(keys))
        return out

    # ------------------------------------------------------------ contribute (department)

    def _contribute(self, task: Any, job: _Job, body: ContributeIn) -> dict[str, Any]:
        from protocols.crypto.sm3 import sm3_digest
        from protocols.he.context import context_fingerprint, load_public_context

        self._role(job, "department", task)
        done = task.scratch(create=False) / "contribution.json"
        if done.is_file():
            return json.loads(done.read_text())
        # the material first: nothing is computed, charged or released for material nobody signed
        public = self._context(task, job, body)
        mask = self._mask(task, job, body.mask_group, body.mask_signatures)
        load_public_context(public)  # refuses a secret key inside, re-checks 128-bit security
        inp = job.inputs[0]
        if job.kind == "he_score":
            rows, contribution = self._partial(task, job, body, public, inp, mask)
        else:
            rows, contribution = self._stats(task, job, public, inp, mask)
        result_hash = sm3_digest(contribution)
        out = {"member": task.member, "contribution_b64": base64.b64encode(contribution).decode(),
               "context_fingerprint": context_fingerprint(public)}
        detail = {"dataset": inp["dataset"], "columns": inp["columns"], "rows": rows, "result_hash": result_hash.hex()}
        if "requester" in job.roles:  # it finishes later: its receipt now, before the ciphertext leaves
            out["receipt_tx"] = task.receipt(inp["dataset"], rows, result_hash)
            task.stage("contributed", receipt_tx=out["receipt_tx"], result_hash=result_hash.hex(), intersection_rows=rows)
            done.write_text(json.dumps(out))
        else:  # the receipt goes on chain with the task's end, before the ciphertext leaves
            task.drop_scratch()
            ended = task.finish({}, rows, result_hash=result_hash)
            out["receipt_tx"] = ended.get("receipt_tx")
        task.audit("he.contribute", {**detail, "receipt_tx": out["receipt_tx"]})
        return out

    def _partial(self, task: Any, job: _Job, body: ContributeIn, public: bytes, inp: dict[str, Any],
                 mask: Any) -> tuple[int, bytes]:
        from protocols.he.score import partial_scores

        try:
            keys = json.loads(task.open_sealed(_b64(body.keys_b64, "the key list"),
                                               f"{task.job_id}/keys/{task.member}".encode()))
        except ValueError as exc:
            raise refused("AlignmentMismatch", f"the key list does not open with this node's key: {type(exc).__name__}") from None
        ref = job.manifest["engine"]["aligned_by"]
        past = task.past_task(ref)
        if past is None or past["status"] != "succeeded":
            raise refused("AlignmentMismatch", f"this node ran no PSI in job {ref!r}; it cannot check the rows")
        if past["requester"] != job.manifest["requester"]:
            raise refused("AlignmentMismatch", f"job {ref!r} was not requested by {job.manifest['requester']!r}")
        if not isinstance(keys, list) or len(keys) != past["intersection_rows"] or len(set(map(str, keys))) != len(keys):
            raise refused("AlignmentMismatch", f"the key list is not the intersection this node computed in job {ref!r}")
        if len(keys) != job.spec.n_rows:
            raise refused("AlignmentMismatch", f"the key list has another length than the job's {job.spec.n_rows} rows")
        cols = job.spec.departments[task.member]
        x = _rows(task, inp["dataset"], job.manifest["join_key"], list(cols), [str(k) for k in keys])
        enc_w = _b64(body.enc_weights_b64, "the encrypted weights")
        return len(keys), partial_scores(public, enc_w, x, task.member, mask)

    def _stats(self, task: Any, job: _Job, public: bytes, inp: dict[str, Any], mask: Any) -> tuple[int, bytes]:
        from protocols.he.errors import InvalidInput
        from protocols.he.stats import department_contribution, noise_rng

        query = job.spec.query
        frame = task.read_frame(inp["dataset"], [query.column])
        col = frame[query.column].astype(object).where(frame[query.column].notna(), np.nan)
        try:
            values = pd.to_numeric(col).to_numpy(dtype=float)
        except (ValueError, TypeError):
            raise InvalidInput(f"column {query.column!r} of {inp['dataset']!r} is not numeric") from None
        policy = task.policy()
        ledger = rng = None
        if query.epsilon is not None:
            ledger = task.ledger()
            if inp["dataset"] in policy.privacy_budgets:
                ledger.set_budget(inp["dataset"], policy.privacy_budgets[inp["dataset"]])
            rng = noise_rng(task.node_secret(b"dcp-dp-noise", 32), task.job_id, inp["dataset"])
        contribution = department_contribution(
            public, query, values, task.member, ledger=ledger, dataset_id=inp["dataset"], charge_id=task.job_id,
            rng=rng, mask=mask, min_group_size=policy.min_group_size,
        )
        return int(np.isfinite(values).sum()), contribution

    # ------------------------------------------------------------ finish (requester)

    def _finish(self, task: Any, job: _Job, body: FinishIn) -> dict[str, Any]:
        from protocols.crypto.sm3 import sm3_digest
        from protocols.he.context import context_fingerprint
        from protocols.he.jobs import check_total
        from protocols.he.score import decrypt_scores
        from protocols.he.stats import decrypt_stats

        self._role(job, "requester", task)
        d = task.scratch(create=False)
        total = _b64(body.total_b64, "the total")
        check_total(job.spec, total)
        fp = context_fingerprint((d / "public.ctx").read_bytes())
        secret = self._secret(task, "secret.ctx")
        if job.kind == "he_score":
            keys = json.loads(self._secret(task, "keys.json"))
            logits = decrypt_scores(secret, total, job.spec.n_rows, context=fp)
            frame = pd.DataFrame({job.manifest["join_key"]: keys, "logit": logits,
                                  "probability": 1.0 / (1.0 + np.exp(-logits))})
            name, data, rows = "scores", frame.to_csv(index=False).encode(), len(keys)
        else:
            res = decrypt_stats(secret, job.spec.query, total, context=fp)
            name, data, rows = "stats", res.model_dump_json().encode(), 0
        del secret
        task.drop_scratch()
        # the requester's own dataset took part in he_score: its receipt (a contributing requester
        # of secure_stats recorded its receipt when it contributed)
        ended = task.finish({name: data}, rows, receipts=job.kind == "he_score")
        task.audit("he.finish", {"output": name, "sm3": sm3_digest(data).hex(), "receipt_tx": ended.get("receipt_tx"),
                                 "contributors": job.spec.contributors})
        return ended


def _material(what: str, task: Any, job: _Job, value: str) -> bytes:
    from protocols.he.binding import material_message

    return material_message(what, task.job_id, job.manifest_hash, task.member, value)  # type: ignore[arg-type]


def _rows(task: Any, dataset: str, join_key: str, columns: list[str], keys: list[str]) -> np.ndarray:
    """``columns`` of ``dataset`` for ``keys`` in that order (AlignmentMismatch if a key is missing)."""
    from protocols.he.errors import InvalidInput

    frame = task.read_frame(dataset, [join_key, *columns])
    frame[join_key] = frame[join_key].astype(str)
    if frame[join_key].duplicated().any():
        raise refused("AlignmentMismatch", f"dataset {dataset!r} has duplicate {join_key!r} values; rows cannot be aligned")
    frame = frame.set_index(join_key)
    if len(pd.Index(keys).difference(frame.index)) > 0:
        raise refused("AlignmentMismatch", "the key list is not within this node's dataset (not the aligning intersection)")
    if not columns:
        return np.zeros((len(keys), 0))
    try:
        return frame.loc[keys, columns].apply(pd.to_numeric).to_numpy(dtype=float)
    except (ValueError, TypeError):
        raise InvalidInput(f"columns {columns} of {dataset!r} are not numeric") from None

