"""The coordinator side of the CKKS engine: ``he_score`` and ``secure_stats``.

Submission, approvals, the on-chain authorization, receipts and results are those of every kind
(``coordinator/service.py``); :class:`CkksEngine` adds what differs:

* :meth:`CkksEngine.check_spec` validates the ``he`` section of a spec with ``protocols.he.jobs.parse_job``
  (named errors: ``TooFewDepartments``, ``InvalidQuery`` … reported under their own names);
* :meth:`CkksEngine.complete_spec` fills what the coordinator knows at submission (the row count of
  the PSI that aligns the rows of an ``he_score`` job);
* :meth:`CkksEngine.manifest_section` is what departments sign beyond the usual fields:
  ``engine.he`` — the protocol spec (CKKS parameters, departments and their columns in weight
  order, the query, masks, minimum group) — so nothing about the computation is left unsigned;
* :meth:`CkksEngine.advance` runs an authorized job. The coordinator only **relays bytes and sums
  ciphertexts**: it holds the public CKKS context, never the secret one, never a plaintext.

Run (every call is a step of the node's one step route, ``POST /tasks/{job_id}/{step}``, run by
:class:`engines.ckks.node.CkksNodeEngine`; every node re-checks the authorization on chain before it
does anything):

1. ``start`` on every participant: the requester's node makes the CKKS key pair (the secret stays
   in its private directory, SM4-encrypted, deleted at job end) and returns the public context with
   its SM2 signature over the context's fingerprint; every contributor returns a fresh X25519 mask
   key, signed with its SM2 key, when the job is masked (``protocols/he/binding.py``). The
   coordinator relays the signatures; a department checks them before it contributes.
2. ``prepare`` (he_score only) on the requester: it opens the intersection of the PSI job the
   spec names (``he.aligned_by``, sealed to the requester), encrypts each department's weights,
   seals the ordered key list to each department's SM2 key, and encrypts its own partial.
3. ``contribute`` on every department: partial scores (he_score) or the statistics contribution
   (secure_stats, after the minimum-group check and the ε charge); the node records its usage
   receipt on chain before it releases the ciphertext.
4. The coordinator sums the ciphertexts and runs ``check_total`` (every contributor, nobody else).
5. ``finish`` on the requester: decrypts the total only, seals the result to its receiver's SM2
   key, records its receipt, deletes the secret context; the coordinator collects the sealed output
   (``GET /tasks/{job_id}/outputs/{name}``).

Row alignment for he_score: the rows are those of the intersection of a preceding job of this
requester that ran PSI with every department (``psi``, ``vertical_train`` or ``vertical_predict``,
``he.aligned_by``); each department checks that the key list it receives has exactly the size of
the intersection it computed itself in that job, has no duplicates, and that every key is in its
dataset. It learns nothing beyond that PSI's output, which it already holds.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from engines.base import Engine, JobContext, Progress, SubmitContext
from engines.errors import PartyRefused, PartyUnavailable, PortError, SpecRefused

log = logging.getLogger("dcp.engines.ckks")

#: Outputs of an aligning job that carry the intersection's join keys (the requester holds them).
ALIGNING_OUTPUTS = ("intersection", "predictions")
ALIGNING_KINDS = ("psi", "vertical_train", "vertical_predict")
_HE_FIELDS = {"params", "masked", "min_departments"}
_SCORE_FIELDS = _HE_FIELDS | {"aligned_by", "model", "model_commitment", "n_rows"}
_STATS_FIELDS = _HE_FIELDS | {"statistics", "bin_edges", "lower", "upper", "min_group_size", "epsilon"}
#: A CKKS step takes longer than the usual node call: at least this long a timeout.
STEP_TIMEOUT_S = 120.0


def _invalid(detail: str) -> SpecRefused:
    return SpecRefused("InvalidJobSpec", detail)


def _unaligned(detail: str) -> SpecRefused:
    """The job named to align an he_score job's rows cannot do so (unknown, not finished, someone else's)."""
    return SpecRefused("AlignmentUnavailable", detail)


class CkksEngine(Engine):
    """CKKS on TenSEAL: the coordinator relays bytes and sums ciphertexts, never sees a secret key."""

    name = "tenseal-ckks"
    kinds = ("he_score", "secure_stats")
    outputs = {"he_score": ("scores",), "secure_stats": ("stats",)}

    # ------------------------------------------------------------ spec

    def check_spec(self, spec: Any) -> None:
        """The structure of an HE job spec, then ``parse_job`` on its protocol spec (named errors)."""
        he = spec.he or {}
        allowed = _SCORE_FIELDS if spec.kind == "he_score" else _STATS_FIELDS
        unknown = sorted(set(he) - allowed)
        if unknown:
            raise _invalid(f"he: unknown field(s) {unknown} for a {spec.kind} job (known: {sorted(allowed)})")
        if spec.label is not None:
            raise _invalid(f"label: a {spec.kind} job has no label")
        if spec.kind == "he_score":
            if spec.requester not in spec.members:
                raise _invalid(
                    "inputs: an he_score job lists the requester's own dataset (its features and the join key)"
                )
            for f in ("aligned_by", "model", "model_commitment"):
                if not isinstance(he.get(f), str) or not he[f]:
                    raise _invalid(f"he.{f}: required for an he_score job")
            if not all(c in "0123456789abcdef" for c in he["model_commitment"]) or len(he["model_commitment"]) != 64:
                raise _invalid("he.model_commitment: the SM3 (64 hex characters) the requester's node gave the model")
            for i in spec.inputs:
                if i.member != spec.requester and not i.columns:
                    raise _invalid(f"inputs: {i.member}/{i.dataset} gives no feature columns to score")
        else:
            cols = {tuple(i.columns) for i in spec.inputs}
            if len(cols) != 1 or len(next(iter(cols))) != 1:
                raise _invalid(
                    "inputs: every department of a secure_stats job names the same single column (the query's)"
                )
        protocol_spec(spec, "submission", n_rows=int(he.get("n_rows") or 1))

    def complete_spec(self, spec: Any, ctx: SubmitContext | None) -> Any:
        """Fill in what the coordinator knows: the aligned row count of an he_score job (checked if given)."""
        if spec.kind != "he_score" or ctx is None:
            return spec
        he = dict(spec.he or {})
        ref = he["aligned_by"]
        job = ctx.job(ref)
        if job is None:
            raise _unaligned(f"he.aligned_by: no job {ref!r}")
        if job.kind not in ALIGNING_KINDS or job.state != "SUCCEEDED":
            raise _unaligned(
                f"he.aligned_by: job {ref} is a {job.state} {job.kind} job; it must be a SUCCEEDED "
                f"{'/'.join(ALIGNING_KINDS)} job"
            )
        if job.requester != spec.requester:
            raise _unaligned(f"he.aligned_by: job {ref} was requested by {job.requester}, not {spec.requester}")
        if not any(n in job.results for n in ALIGNING_OUTPUTS):
            raise _unaligned(f"he.aligned_by: job {ref} has no intersection output for the requester")
        if job.spec.join_key != spec.join_key:
            raise _unaligned(f"he.aligned_by: job {ref} joined on {job.spec.join_key!r}, not {spec.join_key!r}")
        missing = [m for m in spec.members if m not in job.task_details]
        if missing:
            raise _unaligned(f"he.aligned_by: {missing} did not take part in job {ref}")
        rows = {d.get("intersection_rows") for d in job.task_details.values()}
        if len(rows) != 1 or not isinstance(next(iter(rows)), int) or next(iter(rows)) < 1:
            raise _unaligned(f"he.aligned_by: the parties of job {ref} report different intersections")
        n = int(next(iter(rows)))
        if he.get("n_rows") not in (None, n):
            raise _unaligned(f"he.n_rows: {he['n_rows']} but the intersection of job {ref} has {n} rows")
        he["n_rows"] = n
        return spec.model_copy(update={"he": he})

    def manifest_section(self, spec: Any, job_id: str) -> dict[str, Any]:
        """The protocol spec (``engine.he``), the aligning job and the model's commitment."""
        p = protocol_spec(spec, job_id)
        he = spec.he or {}
        return {
            "name": "tenseal-ckks",
            "protocol": f"he/ckks-{spec.kind}{'+masks' if p.masked else ''}",
            "he": json.loads(p.model_dump_json()),
            "aligned_by": he.get("aligned_by"),
            "model": he.get("model"),
            "model_commitment": he.get("model_commitment"),
        }

    # ------------------------------------------------------------ the run

    def advance(self, ctx: JobContext) -> Progress:
        """Start, prepare, contribute, sum, finish (the module doc); each step's answer is kept in the
        relay, so a step already answered is never called again."""
        from protocols.he.errors import HeError

        job_id, kind, manifest = ctx.job_id, ctx.kind, ctx.manifest
        he = manifest["engine"]["he"]
        requester = manifest["requester"]
        departments = sorted(he["departments"])
        contributors = sorted({*departments, requester}) if kind == "he_score" else departments
        participants = participants_of(manifest)
        relay = _Relay(ctx.work_dir, job_id)
        timeout = max(ctx.settings.http_timeout_s, STEP_TIMEOUT_S)

        def call(member: str, step: str, body: dict[str, Any]) -> dict[str, Any]:
            return ctx.call(member, "POST", f"/tasks/{job_id}/{step}", body, timeout=timeout)

        member = requester
        try:
            # 1. start: keys at the requester, mask keys at every contributor
            ctx.update_job(stage="he:start")
            for member in participants:
                if relay.get(f"start.{member}.json") is None:
                    got = call(member, "start", {"manifest": manifest})
                    relay.put(f"start.{member}.json", got)
                    ctx.update_task(member, status="running", stage="start")
            started = {m: relay.get(f"start.{m}.json") or {} for m in participants}
            public_b64 = started[requester]["public_context_b64"]
            public = _b64(public_b64)
            group = sigs = None
            if he.get("masked"):
                group = {"job_id": job_id, "members": {m: started[m]["mask_public_key"] for m in contributors}}
                sigs = {m: started[m]["mask_key_signature"] for m in contributors}
            # 2. prepare (he_score): encrypted weights, sealed key lists, the requester's own partial
            prep: dict[str, Any] = {}
            if kind == "he_score":
                ctx.update_job(stage="he:prepare")
                member = requester
                prep = relay.get("prepare.json") or {}
                if not prep:
                    ref = manifest["engine"]["aligned_by"]
                    name = next(n for n in ALIGNING_OUTPUTS if n in ctx.results_of(ref))
                    prep = call(requester, "prepare", {"mask_group": group, "mask_signatures": sigs,
                                                       "aligned_by": ctx.result_of(ref, name)})
                    relay.put("prepare.json", prep)
                    ctx.update_task(requester, stage="prepared")
            # 3. contributions
            ctx.update_job(stage="he:contribute")
            for member in departments:
                if relay.get(f"contrib.{member}.json") is None:
                    body: dict[str, Any] = {"public_context_b64": public_b64, "mask_group": group,
                                            "mask_signatures": sigs,
                                            "context_signature": started[requester]["context_signature"]}
                    if kind == "he_score":
                        body["enc_weights_b64"] = prep["enc_weights"][member]
                        body["keys_b64"] = prep["keys"][member]
                    got = call(member, "contribute", body)
                    if "contribution_b64" not in got:  # its task ended before and the answer was lost
                        return Progress("failed", f"{member} contributed before and its contribution was lost")
                    relay.put(f"contrib.{member}.json", got)
                    done = member != requester
                    ctx.update_task(member, status="succeeded" if done else "running", stage="contributed")
            # 4. sum under encryption, check the contributors before anything is released
            ctx.update_job(stage="he:sum")
            member = "coordinator"
            parts = [_b64(relay.get(f"contrib.{m}.json")["contribution_b64"]) for m in departments]  # type: ignore[index]
            total = _sum(kind, public, parts, prep)
            _check_total(kind, he, total)
            # 5. the requester decrypts the total only
            ctx.update_job(stage="he:finish")
            member = requester
            fin = relay.get("finish.json")
            if fin is None:
                fin = call(requester, "finish", {"total_b64": base64.b64encode(total).decode()})
                relay.put("finish.json", fin)
            outputs = [ctx.call(requester, "GET", f"/tasks/{job_id}/outputs/{o['name']}", timeout=timeout)
                       for o in fin["outputs"]]
            ctx.update_task(requester, status="succeeded", stage="done")
        except PartyRefused as exc:
            ctx.update_task(exc.member, status="failed", error=f"{exc.error}: {exc.node_detail}"[:500])
            return Progress("failed", f"{exc.member} refused: {exc.error}: {exc.node_detail}")
        except PartyUnavailable as exc:
            return ctx.silent(member, exc)
        except HeError as exc:
            return Progress("failed", f"the aggregate was refused: {type(exc).__name__}: {exc}")
        except PortError as exc:
            return Progress("failed", f"{exc.name}: {exc.detail}")
        results = {o["name"]: {k: o[k] for k in ("name", "receiver", "envelope_b64", "sm3")} for o in outputs}
        return Progress("done", results=results)

    def abort(self, ctx: JobContext) -> None:
        """Tell every participant to drop the job (the requester deletes its secret context)."""
        timeout = max(ctx.settings.http_timeout_s, STEP_TIMEOUT_S)
        for m in participants_of(ctx.manifest):
            try:
                ctx.call(m, "POST", f"/tasks/{ctx.job_id}/stop", timeout=timeout)
            except PortError as exc:
                log.warning("job %s: could not stop %s: %s", ctx.job_id, m, exc.detail)
        _Relay(ctx.work_dir, ctx.job_id).remove()

    def cleanup(self, ctx: JobContext) -> None:
        """Drop the relayed public keys and ciphertexts."""
        _Relay(ctx.work_dir, ctx.job_id).remove()


def protocol_spec(spec: Any, job_id: str, n_rows: int | None = None) -> Any:
    """The ``protocols.he.jobs`` spec of ``spec`` as job ``job_id`` (SpecRefused on any rule broken)."""
    from protocols.he.errors import HeError
    from protocols.he.jobs import parse_job

    he = dict(spec.he or {})
    common = {k: he[k] for k in _HE_FIELDS if k in he}
    if spec.kind == "he_score":
        body: dict[str, Any] = {
            **common, "job_id": job_id, "requester": spec.requester,
            "departments": {i.member: list(i.columns) for i in spec.inputs if i.member != spec.requester},
            "requester_features": list(spec.input_of(spec.requester).columns),
            "n_rows": n_rows if n_rows is not None else he.get("n_rows"),
        }
    else:
        query = {k: he[k] for k in ("statistics", "bin_edges", "lower", "upper", "min_group_size", "epsilon")
                 if k in he}
        body = {
            **common, "job_id": job_id, "requester": spec.requester,
            "departments": {i.member: i.dataset for i in spec.inputs},
            "query": {**query, "job_id": job_id, "column": spec.inputs[0].columns[0]},
        }
    try:
        return parse_job(spec.kind, body)
    except HeError as exc:
        raise SpecRefused(type(exc).__name__, str(exc)) from None


def participants_of(manifest: dict[str, Any]) -> list[str]:
    """Every node with a part in an HE job: the requester and the departments."""
    return sorted({*manifest["engine"]["he"]["departments"], manifest["requester"]})


class _Relay:
    """The coordinator's scratch for one job: what nodes returned (public keys, ciphertexts)."""

    def __init__(self, root: Path, job_id: str) -> None:
        from protocols.crypto.approvals import job_key

        self.dir = root / "he" / job_key(job_id).hex()[:32]

    def path(self, name: str) -> Path:
        return self.dir / name

    def get(self, name: str) -> dict[str, Any] | None:
        p = self.path(name)
        return json.loads(p.read_text()) if p.is_file() else None

    def put(self, name: str, value: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path(name + ".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(self.path(name))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _b64(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def _sum(kind: str, public: bytes, parts: list[bytes], prep: dict[str, Any]) -> bytes:
    from protocols.he.score import sum_partials
    from protocols.he.stats import sum_contributions

    if kind == "he_score":
        return sum_partials(public, [_b64(prep["own_partial_b64"]), *parts])
    return sum_contributions(public, parts)


def _check_total(kind: str, he: dict[str, Any], total: bytes) -> None:
    from protocols.he.jobs import check_total, parse_job

    check_total(parse_job(kind, he), total)
