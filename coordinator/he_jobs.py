"""``he_score`` and ``secure_stats`` as job kinds: spec checks, manifest, and the coordinator's run.

Submission, approvals and the on-chain authorization are exactly those of every other kind
(``coordinator/service.py``); this module adds what differs:

* :func:`check_he_spec` validates the ``he`` section of a spec with ``protocols.he.jobs.parse_job``
  (named errors: ``TooFewDepartments``, ``InvalidQuery`` … reported under their own names);
* :func:`complete_he_spec` fills what the coordinator knows at submission (the row count of the
  PSI that aligns the rows of an ``he_score`` job);
* :func:`build_he_manifest` is the manifest departments sign: the usual fields plus
  ``engine.he`` — the protocol spec (CKKS parameters, departments and their columns in weight
  order, the query, masks, minimum group) — so nothing about the computation is left unsigned;
* :func:`step_he` runs an authorized job. The coordinator only **relays bytes and sums
  ciphertexts**: it holds the public CKKS context, never the secret one, never a plaintext.

Run (every call goes to a node's ``/he`` routes, ``nodes/api/he.py``; every node re-checks the
manifest against the authorization on chain before it does anything):

1. ``start`` on every participant: the requester's node makes the CKKS key pair (the secret stays
   in its private directory, SM4-encrypted, deleted at job end) and returns the public context;
   every contributor returns a fresh X25519 mask key when the job is masked.
2. ``prepare`` (he_score only) on the requester: it opens the intersection of the PSI job the
   spec names (``he.aligned_by``, sealed to the requester), encrypts each department's weights,
   seals the ordered key list to each department's SM2 key, and encrypts its own partial.
3. ``contribute`` on every department: partial scores (he_score) or the statistics contribution
   (secure_stats, after the minimum-group check and the ε charge); the node records its usage
   receipt on chain before it releases the ciphertext.
4. The coordinator sums the ciphertexts and runs ``check_total`` (every contributor, nobody else).
5. ``finish`` on the requester: decrypts the total only, seals the result to its own SM2 key,
   records its receipt, deletes the secret context.

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
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from coordinator.errors import CoordinatorError, InvalidJobSpec, NodeRefused, NodeUnavailable
from coordinator.models import Job, JobState, TaskRecord, utcnow
from coordinator.nodeclient import NodeClient
from coordinator.spec import HE_KINDS, JobSpec

if TYPE_CHECKING:
    from coordinator.service import Coordinator

log = logging.getLogger("dcp.coordinator.he")
S = JobState

#: Outputs of an aligning job that carry the intersection's join keys (the requester holds them).
ALIGNING_OUTPUTS = ("intersection", "predictions")
ALIGNING_KINDS = ("psi", "vertical_train", "vertical_predict")
_HE_FIELDS = {"params", "masked", "min_departments"}
_SCORE_FIELDS = _HE_FIELDS | {"aligned_by", "model", "model_commitment", "n_rows"}
_STATS_FIELDS = _HE_FIELDS | {"statistics", "bin_edges", "lower", "upper", "min_group_size", "epsilon"}


class HeSpecRefused(InvalidJobSpec):
    """The ``he`` section breaks a rule of the HE protocols; reported under the protocol error's name."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error

    @property
    def name(self) -> str:
        """The protocol error's name (``TooFewDepartments``, ``InvalidQuery`` …)."""
        return self.error


class AlignmentUnavailable(InvalidJobSpec):
    """The job named to align an he_score job's rows cannot do so (unknown, not finished, someone else's)."""


# ---------------------------------------------------------------- spec


def _he_error(exc: Exception) -> HeSpecRefused:
    return HeSpecRefused(type(exc).__name__, str(exc))


def check_he_spec(spec: JobSpec) -> None:
    """The structure of an HE job spec, then ``parse_job`` on its protocol spec (named errors)."""
    he = spec.he or {}
    allowed = _SCORE_FIELDS if spec.kind == "he_score" else _STATS_FIELDS
    unknown = sorted(set(he) - allowed)
    if unknown:
        raise InvalidJobSpec(f"he: unknown field(s) {unknown} for a {spec.kind} job (known: {sorted(allowed)})")
    if spec.label is not None:
        raise InvalidJobSpec(f"label: a {spec.kind} job has no label")
    if spec.kind == "he_score":
        if spec.requester not in spec.members:
            raise InvalidJobSpec(
                "inputs: an he_score job lists the requester's own dataset (its features and the join key)"
            )
        for f in ("aligned_by", "model", "model_commitment"):
            if not isinstance(he.get(f), str) or not he[f]:
                raise InvalidJobSpec(f"he.{f}: required for an he_score job")
        if not all(c in "0123456789abcdef" for c in he["model_commitment"]) or len(he["model_commitment"]) != 64:
            raise InvalidJobSpec("he.model_commitment: the SM3 (64 hex characters) the requester's node gave the model")
        for i in spec.inputs:
            if i.member != spec.requester and not i.columns:
                raise InvalidJobSpec(f"inputs: {i.member}/{i.dataset} gives no feature columns to score")
    else:
        cols = {tuple(i.columns) for i in spec.inputs}
        if len(cols) != 1 or len(next(iter(cols))) != 1:
            raise InvalidJobSpec(
                "inputs: every department of a secure_stats job names the same single column (the query's)"
            )
    protocol_spec(spec, "submission", n_rows=int(he.get("n_rows") or 1))


def protocol_spec(spec: JobSpec, job_id: str, n_rows: int | None = None) -> Any:
    """The ``protocols.he.jobs`` spec of ``spec`` as job ``job_id`` (HeSpecRefused on any rule broken)."""
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
        raise _he_error(exc) from None


def complete_he_spec(coord: Coordinator, spec: JobSpec) -> JobSpec:
    """Fill in what the coordinator knows: the aligned row count of an he_score job (checked if given)."""
    if spec.kind != "he_score":
        return spec
    he = dict(spec.he or {})
    ref = he["aligned_by"]
    with Session(coord.engine) as session:
        job = session.exec(select(Job).where(Job.job_id == ref)).first()
        tasks = list(session.exec(select(TaskRecord).where(TaskRecord.job_id == ref))) if job else []
    if job is None:
        raise AlignmentUnavailable(f"he.aligned_by: no job {ref!r}")
    if job.kind not in ALIGNING_KINDS or job.state != S.SUCCEEDED.value:
        raise AlignmentUnavailable(
            f"he.aligned_by: job {ref} is a {job.state} {job.kind} job; it must be a SUCCEEDED "
            f"{'/'.join(ALIGNING_KINDS)} job"
        )
    if job.requester != spec.requester:
        raise AlignmentUnavailable(f"he.aligned_by: job {ref} was requested by {job.requester}, not {spec.requester}")
    results = json.loads(job.results_json or "{}")
    if not any(n in results for n in ALIGNING_OUTPUTS):
        raise AlignmentUnavailable(f"he.aligned_by: job {ref} has no intersection output for the requester")
    ref_spec = JobSpec.model_validate_json(job.spec_json)
    if ref_spec.join_key != spec.join_key:
        raise AlignmentUnavailable(f"he.aligned_by: job {ref} joined on {ref_spec.join_key!r}, not {spec.join_key!r}")
    by_member = {t.member: t for t in tasks}
    missing = [m for m in spec.members if m not in by_member]
    if missing:
        raise AlignmentUnavailable(f"he.aligned_by: {missing} did not take part in job {ref}")
    rows = {json.loads(t.detail_json or "{}").get("intersection_rows") for t in tasks}
    if len(rows) != 1 or not isinstance(next(iter(rows)), int) or next(iter(rows)) < 1:
        raise AlignmentUnavailable(f"he.aligned_by: the parties of job {ref} report different intersections")
    n = int(next(iter(rows)))
    if he.get("n_rows") not in (None, n):
        raise AlignmentUnavailable(f"he.n_rows: {he['n_rows']} but the intersection of job {ref} has {n} rows")
    he["n_rows"] = n
    return spec.model_copy(update={"he": he})


def build_he_manifest(spec: JobSpec, job_id: str, requester_role: str) -> dict[str, Any]:
    """The manifest of an HE job: the usual one, with exactly the columns used and the protocol spec."""
    from coordinator.manifest import build_manifest

    shell = spec.model_copy(update={"join_key": spec.join_key or "-"})  # build_manifest expects a key
    manifest = build_manifest(shell, job_id, requester_role)
    manifest["join_key"] = spec.join_key
    p = protocol_spec(spec, job_id)
    for i in manifest["inputs"]:
        inp = spec.input_of(i["member"])
        i["columns"] = [*([spec.join_key] if spec.join_key else []), *inp.columns]
    he = spec.he or {}
    manifest["engine"] = {
        "name": "tenseal-ckks",
        "protocol": f"he/ckks-{spec.kind}{'+masks' if p.masked else ''}",
        "he": json.loads(p.model_dump_json()),
        "aligned_by": he.get("aligned_by"),
        "model": he.get("model"),
        "model_commitment": he.get("model_commitment"),
    }
    return manifest


# ---------------------------------------------------------------- the run


class HeNodeClient(NodeClient):
    """The ``/he`` routes of a node (CKKS steps take longer than the usual calls: a longer timeout)."""

    def he(self, job_id: str, step: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/he/{job_id}/{step}", json=body)

    def he_stop(self, job_id: str) -> Any:
        return self._call("POST", f"/he/{job_id}/stop")


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


def _client(coord: Coordinator, member: str) -> HeNodeClient:
    base = coord.node(member)
    return HeNodeClient(member, base.base_url, max(coord.settings.http_timeout_s, 120.0), http=base.http)


def _task(coord: Coordinator, job_id: str, member: str, **values: Any) -> TaskRecord:
    with Session(coord.engine) as session:
        t = session.exec(select(TaskRecord).where(TaskRecord.job_id == job_id, TaskRecord.member == member)).first()
        if t is None:
            t = TaskRecord(job_id=job_id, member=member)
        for k, v in values.items():
            setattr(t, k, v)
        t.last_seen = utcnow()
        session.add(t)
        session.commit()
        session.refresh(t)
        return t


def _set_stage(coord: Coordinator, job_id: str, stage: str) -> None:
    with Session(coord.engine) as session:
        job = session.exec(select(Job).where(Job.job_id == job_id)).first()
        if job is not None:
            job.stage = stage
            session.add(job)
            session.commit()


def abort_he(coord: Coordinator, job_id: str, members: list[str]) -> None:
    """Tell every participant to drop the job (the requester deletes its secret context)."""
    for m in members:
        try:
            _client(coord, m).he_stop(job_id)
        except CoordinatorError as exc:
            log.warning("job %s: could not stop %s: %s", job_id, m, exc.detail)
    _Relay(coord.settings.work_dir, job_id).remove()


def _fail(coord: Coordinator, job_id: str, members: list[str], reason: str) -> JobState:
    coord.lifecycle.transition(job_id, S.FAILED, reason)
    abort_he(coord, job_id, members)
    return S.FAILED


def participants_of(manifest: dict[str, Any]) -> list[str]:
    """Every node with a part in an HE job: the requester and the departments."""
    return sorted({*manifest["engine"]["he"]["departments"], manifest["requester"]})


def step_he(coord: Coordinator, j: Job, manifest: dict[str, Any]) -> JobState:
    """Advance a RUNNING he_score / secure_stats job as far as it goes (idempotent; see the module doc)."""
    from protocols.he.errors import HeError

    job_id = j.job_id
    he = manifest["engine"]["he"]
    requester = manifest["requester"]
    departments = sorted(he["departments"])
    contributors = sorted({*departments, requester}) if j.kind == "he_score" else departments
    participants = participants_of(manifest)
    reason = coord._revoked(j)
    if reason:
        coord.lifecycle.transition(job_id, S.REVOKED, reason)
        abort_he(coord, job_id, participants)
        return S.REVOKED
    relay = _Relay(coord.settings.work_dir, job_id)
    member = requester
    try:
        # 1. start: keys at the requester, mask keys at every contributor
        _set_stage(coord, job_id, "he:start")
        for member in participants:
            if relay.get(f"start.{member}.json") is None:
                got = _client(coord, member).he(job_id, "start", {"manifest": manifest})
                relay.put(f"start.{member}.json", got)
                _task(coord, job_id, member, status="running", stage="start")
        public_b64 = relay.get(f"start.{requester}.json")["public_context_b64"]  # type: ignore[index]
        public = _b64(public_b64)
        group = None
        if he.get("masked"):
            group = {"job_id": job_id, "members": {
                m: relay.get(f"start.{m}.json")["mask_public_key"] for m in contributors}}  # type: ignore[index]
        # 2. prepare (he_score): encrypted weights, sealed key lists, the requester's own partial
        prep: dict[str, Any] = {}
        if j.kind == "he_score":
            _set_stage(coord, job_id, "he:prepare")
            member = requester
            prep = relay.get("prepare.json") or {}
            if not prep:
                aligned = coord.result(manifest["engine"]["aligned_by"], _aligning_output(coord, manifest))
                prep = _client(coord, requester).he(job_id, "prepare", {
                    "mask_group": group, "aligned_by": aligned.model_dump(),
                })
                relay.put("prepare.json", prep)
                _task(coord, job_id, requester, stage="prepared")
        # 3. contributions
        _set_stage(coord, job_id, "he:contribute")
        for member in departments:
            if relay.get(f"contrib.{member}.json") is None:
                body: dict[str, Any] = {"public_context_b64": public_b64, "mask_group": group}
                if j.kind == "he_score":
                    body["enc_weights_b64"] = prep["enc_weights"][member]
                    body["keys_b64"] = prep["keys"][member]
                got = _client(coord, member).he(job_id, "contribute", body)
                relay.put(f"contrib.{member}.json", got)
                done = member != requester
                _task(coord, job_id, member, status="succeeded" if done else "running", stage="contributed")
        # 4. sum under encryption, check the contributors before anything is released
        _set_stage(coord, job_id, "he:sum")
        member = "coordinator"
        parts = [_b64(relay.get(f"contrib.{m}.json")["contribution_b64"]) for m in departments]  # type: ignore[index]
        total = _sum(j.kind, public, parts, prep)
        _check_total(j.kind, he, total)
        # 5. the requester decrypts the total only
        _set_stage(coord, job_id, "he:finish")
        member = requester
        fin = relay.get("finish.json")
        if fin is None:
            fin = _client(coord, requester).he(job_id, "finish", {"total_b64": base64.b64encode(total).decode()})
            relay.put("finish.json", fin)
        _task(coord, job_id, requester, status="succeeded", stage="done")
    except NodeRefused as exc:
        _task(coord, job_id, exc.member, status="failed", error=f"{exc.error}: {exc.node_detail}"[:500])
        return _fail(coord, job_id, participants, f"{exc.member} refused: {exc.error}: {exc.node_detail}")
    except NodeUnavailable as exc:
        with Session(coord.engine) as session:  # last_seen as it was: silence is measured from there
            t = session.exec(select(TaskRecord).where(TaskRecord.job_id == job_id, TaskRecord.member == member)).first()
        t = t or _task(coord, job_id, member)
        state = coord._unreachable(job_id, t, exc)
        if state == S.FAILED:
            abort_he(coord, job_id, participants)
        return state
    except HeError as exc:
        return _fail(coord, job_id, participants, f"the aggregate was refused: {type(exc).__name__}: {exc}")
    except CoordinatorError as exc:
        return _fail(coord, job_id, participants, f"{exc.name}: {exc.detail}")
    # receipts: every dataset used has its receipt on chain, or nothing is handed out
    terms = coord._terms_model(j, manifest)
    chain = coord.chain()
    missing = [d.hex()[:12] for d in terms.dataset_ids if chain.runs(terms.job_id, d) < 1]
    if missing:
        return _fail(coord, job_id, participants, f"no usage receipt on chain for dataset(s) {', '.join(missing)}")
    results = {o["name"]: {k: o[k] for k in ("name", "receiver", "envelope_b64", "sm3")} for o in fin["outputs"]}
    with Session(coord.engine) as session:
        job = session.exec(select(Job).where(Job.job_id == job_id)).one()
        job.results_json, job.stage = json.dumps(results), "done"
        session.add(job)
        session.commit()
    coord.lifecycle.transition(job_id, S.SUCCEEDED, expect=S.RUNNING)
    relay.remove()
    return S.SUCCEEDED


def _aligning_output(coord: Coordinator, manifest: dict[str, Any]) -> str:
    ref = coord.get_job(manifest["engine"]["aligned_by"])
    results = json.loads(ref.results_json or "{}")
    return next(n for n in ALIGNING_OUTPUTS if n in results)


def _sum(kind: str, public: bytes, parts: list[bytes], prep: dict[str, Any]) -> bytes:
    from protocols.he.score import sum_partials
    from protocols.he.stats import sum_contributions

    if kind == "he_score":
        return sum_partials(public, [_b64(prep["own_partial_b64"]), *parts])
    return sum_contributions(public, parts)


def _check_total(kind: str, he: dict[str, Any], total: bytes) -> None:
    from protocols.he.jobs import check_total, parse_job

    check_total(parse_job(kind, he), total)


def is_he(kind: str) -> bool:
    """Whether ``kind`` runs on CKKS (this module) rather than on a SecretFlow party."""
    return kind in HE_KINDS
