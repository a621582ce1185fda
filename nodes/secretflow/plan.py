"""What a SecretFlow task may run at this node, checked before anything is extracted.

* :func:`check_slice`: the requested dataset, columns, features and receivers are within the slice
  this node approved (:class:`ColumnNotApproved`, :class:`TaskMismatch`);
* :func:`plan`: the engine stages of the kind this node approved, and this party's model part: a
  training task keeps one (:func:`model_dir`); a vertical_predict task uses the one a training job of
  this node left, on the same columns and features (:class:`ModelNotAvailable`,
  :class:`PredictColumnsMismatch`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engines.secretflow.steps import StartIn
from nodes.errors import ColumnNotApproved, NodeError, TaskMismatch
from nodes.models import NodeTask

#: The engine stages each SecretFlow kind may run (the node derives them from the kind it approved).
KIND_STAGES: dict[str, tuple[tuple[str, ...], ...]] = {
    "psi": (("psi",),),
    "vertical_train": (("psi", "train", "predict"), ("psi", "train")),
    "vertical_predict": (("psi", "predict"),),
}


class ModelNotAvailable(NodeError):
    """A vertical_predict task names a training job that this node did not run to success, or whose
    stored model part is gone."""

    status_code = 422


class PredictColumnsMismatch(NodeError):
    """A vertical_predict task asks for other columns or features than the training job used here."""

    status_code = 422


def model_dir(work_dir: Path, job_id: str) -> Path:
    """Where a node keeps its private model part of training job ``job_id`` (never sent anywhere)."""
    from protocols.crypto.approvals import job_key

    return work_dir / "models" / job_key(job_id).hex()[:32]


def check_slice(member: str, body: StartIn, approved: dict[str, Any]) -> None:
    """The requested data and outputs are within what this node approved."""
    by_ds = {a["dataset"]: a["columns"] for a in approved.get("inputs", [])}
    for inp in body.inputs:
        if inp.dataset not in by_ds:
            raise ColumnNotApproved(f"dataset {inp.dataset!r} is not in the approved manifest")
        extra = [c for c in inp.columns if c not in by_ds[inp.dataset]]
        if extra:
            raise ColumnNotApproved(f"columns {extra} of {inp.dataset!r} are beyond the approved manifest")
        if len(set(inp.columns)) != len(inp.columns):
            raise TaskMismatch(f"columns of {inp.dataset!r} are listed twice")
    cols = set(body.inputs[0].columns)
    beyond = [f for f in body.features if f not in cols]
    if beyond:
        raise ColumnNotApproved(f"features {beyond} are not among the approved columns")
    if body.join_key not in cols:
        raise TaskMismatch(f"the join key {body.join_key!r} is not among this node's approved columns")
    if body.label_party == member and body.label_column and body.label_column not in cols:
        raise TaskMismatch(f"the label {body.label_column!r} is not among this node's approved columns")
    allowed = approved.get("receivers", {})
    for name, who in body.receivers.items():
        if name not in allowed or any(w not in allowed[name] for w in who):
            raise TaskMismatch(f"output {name!r} to {who} is not what this node approved")


def plan(
    body: StartIn, approved: dict[str, Any], own_model_dir: Path, trained: NodeTask | None,
) -> tuple[tuple[str, ...], Path | None]:
    """The engine stages and this party's model dir, from the kind this node approved.

    ``trained`` is this node's task of the job ``body.model_from`` names (None when it has none). A
    vertical_predict task must name the training job of the approved manifest; that job must have been
    this node's own and have succeeded, its model part must still be here, and the predict columns and
    features must equal the training task's (else a named error)."""
    kind = approved.get("kind")
    plans = KIND_STAGES.get(str(kind))
    if plans is None:
        raise TaskMismatch(f"a {kind} job does not run on the SecretFlow party")
    stages = tuple(body.stages) if body.stages is not None else plans[0]
    if stages not in plans:
        raise TaskMismatch(f"a {kind} job runs stages {[list(p) for p in plans]}, not {list(stages)}")
    if kind != "vertical_predict":
        if body.model_from is not None:
            raise TaskMismatch(f"a {kind} job uses no stored model (model_from {body.model_from!r})")
        return stages, (own_model_dir if "train" in stages else None)
    ref = body.model_from
    if ref is None or ref != approved.get("model_from"):
        raise TaskMismatch(
            f"the task names model_from {ref!r}; this node approved {approved.get('model_from')!r}"
        )
    if trained is None:
        raise ModelNotAvailable(f"job {ref!r} did not run on this node; it holds no model part of it")
    if trained.status != "succeeded" or not trained.model_dir:
        raise ModelNotAvailable(f"job {ref!r} is {trained.status} on this node and left no model part")
    if not (Path(trained.model_dir) / "model.json").is_file():
        raise ModelNotAvailable(f"the model part of job {ref!r} is gone from this node")
    used = json.loads(trained.datasets_json or "[]")
    if not used:
        raise ModelNotAvailable(f"job {ref!r} recorded no columns on this node")
    want, got = list(used[0]["columns"]), list(body.inputs[0].columns)
    dropped = [c for c in want if c not in got]
    feats = used[0].get("features")
    # the same columns, except that scoring rows without an outcome may leave out the training label
    if [c for c in want if c in got] != got or len(dropped) > 1 or (
        feats is not None and any(c in feats for c in dropped)
    ):
        raise PredictColumnsMismatch(
            f"the columns {body.inputs[0].columns} differ from those job {ref!r} trained on here {used[0]['columns']}"
        )
    if "features" in used[0] and list(body.features) != list(used[0]["features"]):
        raise PredictColumnsMismatch(
            f"the features {body.features} differ from those job {ref!r} trained on here {used[0]['features']}"
        )
    return stages, Path(trained.model_dir)
