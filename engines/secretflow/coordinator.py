"""The coordinator side of the SecretFlow engine: PSI, vertical training and prediction.

A RUNNING job advances through four phases, each idempotent (it starts from the task records). The
node side runs the steps on the node's one step route, ``POST /tasks/{job}/{step}``, with the typed
bodies of :mod:`engines.secretflow.steps`:

1. **ports**: every node reserves its party's ports (step ``ports``), all at once;
2. **dispatch**: the cluster (every party's endpoint) is stored once (:func:`cluster_of`), then every
   node gets its task body (step ``start``): it checks the authorization on chain and starts its party;
3. **follow**: every node's task is polled; a failed party fails the job, a party still running
   ``straggler_timeout_s`` after a peer ended is a straggler;
4. **collect**: once every party succeeded, the outputs (sealed by the node that holds them, the
   hub: :func:`hub_of`) are handed to the coordinator.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from common.threads import concurrently
from engines.base import RUNNING, Engine, JobContext, Progress, SubmitContext
from engines.errors import PartyRefused, PartyUnavailable, PortError, SpecRefused
from engines.secretflow.steps import PortsIn, StartIn
from protocols.manifest import Manifest, SecretFlowSection, as_manifest

log = logging.getLogger("dcp.engines.secretflow")

#: What the engine in this build can run (kind, algorithm): PSI alone, training with each learner,
#: and prediction with a model stored by an earlier training job (``model_from``).
RUNNABLE: set[tuple[str, str | None]] = {
    ("psi", None),
    ("vertical_train", "ss_lr"),
    ("vertical_train", "ss_xgb"),
    ("vertical_train", "sgb"),
    ("vertical_predict", "ss_lr"),
    ("vertical_predict", "ss_xgb"),
    ("vertical_predict", "sgb"),
}
#: The engine stages each kind runs (protocols.secretflow.spec.STAGE_PLANS).
KIND_STAGES: dict[str, list[str]] = {
    "psi": ["psi"],
    "vertical_train": ["psi", "train", "predict"],
    "vertical_predict": ["psi", "predict"],
}
#: Task statuses after which a party has nothing left to stop.
_NOTHING_TO_STOP = ("succeeded", "failed", "stopped", "new", "ports")


class SecretFlowEngine(Engine):
    """PSI, vertical training and prediction on SecretFlow parties, one per member."""

    name = "secretflow"
    kinds = ("psi", "vertical_train", "vertical_predict")
    outputs = {"psi": ("intersection",), "vertical_train": ("metrics", "predictions"),
               "vertical_predict": ("predictions",)}

    def complete_spec(self, spec: Any, ctx: SubmitContext | None) -> Any:
        """Refuse a valid spec the party runner of this build does not run (``EngineUnsupported``)."""
        algo = spec.model.algorithm if spec.kind != "psi" else None
        if (spec.kind, algo) not in RUNNABLE:
            what = spec.kind if algo is None else f"{spec.kind} with {algo}"
            raise SpecRefused("EngineUnsupported", (
                f"{what} is a valid job but the SecretFlow party runner in this build does not run it yet "
                f"(it runs: {', '.join(sorted(k if a is None else f'{k} with {a}' for k, a in RUNNABLE))})"
            ))
        return spec

    def used_columns(self, spec: Any, member: str) -> list[str]:
        """Join key, features, and the label at its holder (not for psi)."""
        cols = [spec.join_key, *spec.input_of(member).columns]
        if spec.label is not None and spec.label.column and spec.label.member == member and spec.kind != "psi":
            cols.append(spec.label.column)
        return cols

    def manifest_section(self, spec: Any, job_id: str) -> dict[str, Any]:
        """The protocol shown to approvers, the PSI protocol, the algorithm and its parameters."""
        return {
            "name": "secretflow",
            "protocol": protocol_name(spec),
            "psi_protocol": spec.psi_protocol,
            "algorithm": spec.model.algorithm if spec.kind != "psi" else None,
            "params": spec.model.params if spec.kind != "psi" else {},
        }

    def advance(self, ctx: JobContext) -> Progress:
        """Ports, dispatch, follow, collect (the module doc), as far as each goes now."""
        job_id, manifest = ctx.job_id, as_manifest(ctx.manifest)
        hub = hub_of(manifest)
        tasks = ctx.tasks()
        members = [t.member for t in tasks]
        # 1. ports (every node asked at once; answers handled in task order)
        fresh = [t for t in tasks if t.status == "new"]
        answers = concurrently(fresh, lambda t: ctx.call(t.member, "POST", f"/tasks/{job_id}/ports", PortsIn(
            peers=[m for m in members if m != t.member], label_party=hub).model_dump()))
        for t, (got, error) in zip(fresh, answers, strict=True):
            if isinstance(error, PartyRefused):
                return Progress("failed", f"{t.member} refused to prepare the task: {error.error}: {error.node_detail}")
            if isinstance(error, PartyUnavailable):
                return ctx.silent(t.member, error)
            if error is not None:
                raise error
            ctx.update_task(t.member, endpoint_json=json.dumps(got), status="ports")
        # 2. cluster and dispatch: each node checks the authorization on chain and answers at once
        # (it extracts in the background): the start calls go out together
        cluster = ctx.cluster()
        if cluster is None:
            cluster = cluster_of(ctx.tasks())
            ctx.update_job(cluster=cluster, stage="dispatch")
        ready = [t for t in ctx.tasks() if t.status == "ports"]
        answers = concurrently(ready, lambda t: ctx.call(
            t.member, "POST", f"/tasks/{job_id}/start", task_body(manifest, t.member, cluster).model_dump(mode="json")))
        for t, (_, error) in zip(ready, answers, strict=True):
            if isinstance(error, PartyRefused):
                if error.error != "TaskExists":
                    return Progress("failed", f"{t.member} refused the task: {error.error}: {error.node_detail}")
            elif isinstance(error, PartyUnavailable):
                return ctx.silent(t.member, error)
            elif error is not None:
                raise error
            ctx.update_task(t.member, status="running")
        # 3. follow
        tasks = ctx.tasks()
        for i, t in enumerate(tasks):
            if t.status != "running":
                continue
            try:
                got = ctx.call(t.member, "GET", f"/tasks/{job_id}")
            except (PartyUnavailable, PartyRefused) as exc:
                return ctx.silent(t.member, exc)
            values: dict[str, Any] = {"stage": got.get("stage"), "detail_json": json.dumps(got)}
            if got["status"] in ("failed", "stopped"):
                tasks[i] = ctx.update_task(t.member, **values, status="failed", error=got.get("error") or got["status"])
                where = ", ".join(f"{o.member} {o.stage or o.status}" for o in tasks)
                return Progress("failed", f"{t.member}'s task failed: {tasks[i].error} (stages then: {where})")
            if got["status"] == "succeeded":
                values["status"] = "succeeded"
            tasks[i] = ctx.update_task(t.member, **values)
        late = straggler(tasks, ctx.settings.straggler_timeout_s)
        if late:
            return Progress("failed", late)
        stages = sorted({t.stage for t in tasks if t.stage})
        if stages:
            ctx.update_job(stage=",".join(stages))
        if not all(t.status == "succeeded" for t in ctx.tasks()):
            return RUNNING
        # 4. outputs, sealed to the requester by the node that holds them
        results: dict[str, dict[str, Any]] = {}
        for o in manifest.outputs:
            try:
                got = ctx.call(hub, "GET", f"/tasks/{job_id}/outputs/{o.name}")
            except PortError as exc:
                return Progress("failed", f"collecting output {o.name!r} failed: {exc.detail}")
            base64.b64decode(got["envelope_b64"], validate=True)
            results[o.name] = {"name": o.name, "receiver": got["receiver"],
                               "envelope_b64": got["envelope_b64"], "sm3": got["sm3"]}
        return Progress("done", results=results)

    def abort(self, ctx: JobContext) -> None:
        """Stop every party still running (its node kills the process group and deletes the extract)."""
        for t in ctx.tasks():
            if t.status in _NOTHING_TO_STOP:
                continue
            try:
                ctx.call(t.member, "POST", f"/tasks/{ctx.job_id}/stop")
                ctx.update_task(t.member, status="stopped")
            except PortError as exc:
                log.warning("job %s: could not stop %s: %s", ctx.job_id, t.member, exc.detail)


def protocol_name(spec: Any) -> str:
    """A short engine/protocol label (shown to approvers)."""
    if spec.kind == "psi":
        return f"secretflow/psi-{spec.psi_protocol}"
    if spec.kind == "vertical_predict":
        return f"secretflow/psi-{spec.psi_protocol}+{spec.model.algorithm}-predict"
    return f"secretflow/psi-{spec.psi_protocol}+{spec.model.algorithm}"


def hub_of(manifest: Manifest | dict[str, Any]) -> str:
    """The party that holds a SecretFlow job's outputs: the label holder, or (psi, no label) the
    requester when it brings data, else the first input's member."""
    m = as_manifest(manifest)
    if m.label is not None:
        return m.label.member
    members = [i.member for i in m.inputs]
    return m.requester if m.requester in members else members[0]


def cluster_of(tasks: list[Any]) -> dict[str, Any]:
    """The job's cluster (``protocols.secretflow.spec.ClusterSpec`` JSON): every party's endpoint, as
    its node reserved it (the task records' ``endpoint_json``, in task order), and the host they share.
    The one place a party's peer addresses are put together."""
    eps = [json.loads(t.endpoint_json or "{}") for t in tasks]
    return {"host": eps[0]["host"], "parties": [e["endpoint"] for e in eps]}


def task_body(manifest: Manifest | dict[str, Any], member: str, cluster: dict[str, Any]) -> StartIn:
    """What ``member``'s node gets to start its party (the ``start`` step's body)."""
    m = as_manifest(manifest)
    inp = m.input_of(member)
    engine = m.engine
    assert isinstance(engine, SecretFlowSection), f"a {m.kind} job has no SecretFlow section"
    return StartIn(
        job_id=m.job_id,
        party=member,
        cluster=cluster,
        join_key=m.join_key or "",
        label_party=hub_of(m),
        label_column=m.label.column if m.label else None,
        psi_protocol=engine.psi_protocol,  # type: ignore[arg-type]  # the spec allowed only the three
        # the engine's ModelParams: the approved parameters and the algorithm they belong to
        model={**engine.params, **({"algorithm": engine.algorithm} if engine.algorithm else {})},
        inputs=[{"dataset": inp.dataset, "columns": inp.columns}],
        features=inp.features,
        receivers={o.name: [o.receiver] for o in m.outputs},
        timeout_s=m.timeout_s,
        # the stages of every kind but training (which runs the engine's default, as it always did)
        stages=KIND_STAGES[m.kind] if m.kind in KIND_STAGES and m.kind != "vertical_train" else None,
        model_from=m.model_from,
    )


def straggler(tasks: list[Any], limit_s: float, now: float | None = None) -> str | None:
    """Why the job's still-running tasks are stuck, if a task of the job ended ``limit_s`` or more ago.

    The parties of one job leave together (the engine's last step is a barrier), within seconds of
    each other; a party that is still running long after a peer's task ended waits on a party that
    has left, and would wait until the job's timeout."""
    running = [t for t in tasks if t.status == "running"]
    ended = sorted(
        (float(f), t.member)
        for t in tasks
        if t.status == "succeeded" and (f := json.loads(t.detail_json or "{}").get("finished_at")) is not None
    )
    if not running or not ended:
        return None
    first, who = ended[0]
    waited = (time.time() if now is None else now) - first
    if waited < limit_s:
        return None
    late = ", ".join(f"{t.member} (stage {t.stage or 'unknown'})" for t in running)
    return (f"{late} still running {waited:.0f}s after {who}'s task ended: a party that outlives its peers "
            f"waits on one that has left")
