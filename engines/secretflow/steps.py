"""The steps of a SecretFlow task at a node, with their typed bodies (``POST /tasks/{job_id}/{step}``).

The coordinator's side (:mod:`engines.secretflow.coordinator`) builds these bodies; the node's side
(``nodes.secretflow``) validates every body against them before anything runs:

* ``ports`` (:class:`PortsIn` -> :class:`PortsOut`): reserve this node's party ports. It reads no data
  and runs once the node approved the job, before its authorization is on chain;
* ``start`` (:class:`StartIn`): check the authorization and the slice, extract, start the party.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField


class PortsIn(BaseModel):
    """The coordinator asks the node to reserve ports for a job's party."""

    model_config = ConfigDict(extra="forbid")

    peers: list[str] = PField(default_factory=list)
    label_party: str = PField(min_length=1)


class PortsOut(BaseModel):
    """The ports reserved: ``endpoint`` is a ``protocols.secretflow.spec.PartyEndpoint``."""

    host: str
    endpoint: dict


class TaskInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    columns: list[str] = PField(min_length=1)


class StartIn(BaseModel):
    """What the coordinator sends to start this node's party of a job."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    party: str
    cluster: dict
    """protocols.secretflow.spec.ClusterSpec JSON."""
    join_key: str
    label_party: str
    label_column: str | None = None
    """None in a psi job (no label)."""
    psi_protocol: Literal["RR22", "ECDH", "ECDH_SM2"] = "RR22"
    model: dict = PField(default_factory=dict)
    """protocols.secretflow.spec.ModelParams JSON."""
    stages: list[Literal["psi", "train", "predict"]] | None = None
    """The engine stages; None = the engine's default (psi, train, predict)."""
    model_from: str | None = PField(default=None, min_length=1, max_length=200)
    """vertical_predict: the training job (on this node) whose stored model part to use."""
    inputs: list[TaskInput] = PField(min_length=1, max_length=1)
    features: list[str] = PField(default_factory=list)
    """Empty in a psi job."""
    receivers: dict[str, list[str]] = PField(default_factory=dict)
    timeout_s: float = PField(default=600.0, gt=0, le=7 * 86400)


class Started(BaseModel):
    """``start``'s answer: the party is being started (the task's stage shows how far it got)."""

    job_id: str
    status: str


STEPS: dict[str, type[BaseModel]] = {"ports": PortsIn, "start": StartIn}
"""Step name -> its body (``engines.base.NodeEngine.steps``)."""
PREPARES: frozenset[str] = frozenset({"ports"})
"""The steps that run before the authorization is on chain (``engines.base.NodeEngine.prepares``)."""
