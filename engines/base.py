"""The engine contract: what the coordinator and a node need of an engine, and what they give it.

An :class:`Engine` (coordinator side) serves some job kinds: it checks their specs, writes its section
of the manifest, and advances a RUNNING job one idempotent step at a time through a
:class:`JobContext` (the coordinator's port: node calls, task records, stored results). A
:class:`NodeEngine` (node side) runs the steps the engine calls at one party, with typed bodies.
Models: FATE-Flow's ``EngineABC`` (run, kill, is_alive, cleanup), Flower's ``Strategy``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel


@dataclass(frozen=True)
class Progress:
    """Where :meth:`Engine.advance` left a job: still ``running``, ``failed`` (why) or ``done`` (outputs)."""

    state: Literal["running", "failed", "done"]
    reason: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {name, receiver, envelope_b64, sm3}


RUNNING = Progress("running")


@dataclass(frozen=True)
class PastJob:
    """An earlier job of the same coordinator, as a spec check may need it (alignment, model_from)."""

    job_id: str
    kind: str
    state: str
    requester: str
    spec: Any
    results: dict[str, Any]
    task_details: dict[str, dict[str, Any]]  # member -> what its node last reported


class SubmitContext(Protocol):
    """What the coordinator lends an engine at submission."""

    def job(self, job_id: str) -> PastJob | None: ...


class JobContext(Protocol):
    """The coordinator's port for one RUNNING job (every store write goes through it)."""

    job_id: str
    kind: str
    manifest: dict[str, Any]
    work_dir: Path  # the coordinator's scratch root (never plaintext data)
    settings: Any  # the coordinator's settings (timeouts)

    def call(self, member: str, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """Call ``member``'s node; PartyRefused / PartyUnavailable (engines.errors) on trouble."""

    def tasks(self) -> list[Any]:
        """The job's task records (member, status, stage, error, endpoint_json, detail_json, last_seen)."""

    def update_task(self, member: str, **values: Any) -> Any:
        """Set fields of ``member``'s task record (created if missing), ``last_seen`` now; the record."""

    def update_job(self, *, stage: str | None = None, cluster: dict[str, Any] | None = None) -> None:
        """Record the job's stage, or its cluster (the parties' endpoints)."""

    def cluster(self) -> dict[str, Any] | None:
        """The cluster recorded for the job, if any."""

    def silent(self, member: str, exc: Exception) -> Progress:
        """RUNNING while ``member``'s node has been silent less than node_timeout_s, else failed."""

    def result_of(self, job_id: str, name: str) -> dict[str, Any]:
        """An output of another SUCCEEDED job, sealed to its requester (as the coordinator hands it out)."""

    def results_of(self, job_id: str) -> dict[str, Any]:
        """Every output another job recorded (name -> sealed output)."""


class Engine(ABC):
    """The coordinator side of an engine."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    outputs: ClassVar[dict[str, tuple[str, ...]]]  # kind -> the outputs a job of that kind produces
    min_members: ClassVar[int] = 2  # data-owning members a job needs (a one-department engine says 1)
    needs_join_key: ClassVar[bool] = True  # the spec must name a join key
    slice_carries_engine: ClassVar[bool] = False
    """Each department's slice (what its officers review in the inbox and its node signs) carries the
    manifest's ``engine`` section too: for an engine whose node runs exactly what was approved (code)."""

    def check_spec(self, spec: Any) -> None:
        """Refuse (SpecRefused) a spec that breaks a rule of this engine (when it is parsed)."""
        return None

    def complete_spec(self, spec: Any, ctx: SubmitContext | None) -> Any:
        """At submission: refuse what this build cannot run; with ``ctx``, fill in what the coordinator knows."""
        return spec

    def used_columns(self, spec: Any, member: str) -> list[str]:
        """Every column of ``member`` the computation touches (the manifest's ``inputs[].columns``)."""
        return [*([spec.join_key] if spec.join_key else []), *spec.input_of(member).columns]

    @abstractmethod
    def manifest_section(self, spec: Any, job_id: str) -> dict[str, Any]:
        """The manifest's ``engine`` section: everything about the computation the departments sign."""

    @abstractmethod
    def advance(self, ctx: JobContext) -> Progress:
        """Advance a RUNNING job as far as it goes now; idempotent (a restarted coordinator calls it again)."""

    @abstractmethod
    def abort(self, ctx: JobContext) -> None:
        """Stop every party of a failed or revoked job and drop what it left; idempotent, never raises."""

    def cleanup(self, ctx: JobContext) -> None:
        """Drop the coordinator's scratch of a SUCCEEDED job."""
        return None


class NodePort(Protocol):
    """What a node lends the companion service of one engine (:meth:`NodeEngine.service`)."""

    member: str
    state_dir: Path  # the service's own directory under the node's work_dir (0700)
    coordinator_url: str | None

    def keys(self) -> Any:
        """The node's member keys (SM2): the service signs what it submits in the member's name."""

    def coordinator_http(self) -> Any:
        """An ``httpx.Client`` to the coordinator (国密 TLS pinning its key when the node speaks it)."""

    def datasets(self) -> list[str]:
        """The names of the node's datasets."""

    def columns(self, dataset: str) -> list[str]:
        """The columns of ``dataset`` (StepRefused ``DatasetNotFound`` if the node has no such dataset)."""

    def grades(self, dataset: str) -> dict[str, int]:
        """The sensitivity grade (1-4) of each column of ``dataset``."""

    def policy(self) -> dict[str, Any]:
        """The node's current policy (``max_grade`` per kind, ``default_max_grade``, ``min_group_size``, …)."""

    def mock(self, dataset: str, rows: int, seed: int) -> Any:
        """A desensitized mock of ``dataset`` (a DataFrame: same schema, no real value), audited."""

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """Append one entry to the node's audit log."""


class NodeService(ABC):
    """A long-running companion an engine runs beside a node, configured in the node's settings
    (``engines: {<engine name>: {...}}``): started when the node serves, stopped when it stops (nothing
    of it outlives the node). Its officers manage it through ``/engines/{name}/{collection}``: any
    officer reads, an ``admin`` officer creates (the node's routes say so; the service never sees an
    unauthenticated call)."""

    @abstractmethod
    def start(self) -> None:
        """Start (in the background: return at once)."""

    @abstractmethod
    def close(self) -> None:
        """Stop everything the service runs; idempotent, never raises."""

    def status(self) -> dict[str, Any]:
        """What an officer sees of the service (state, addresses; no secret)."""
        return {}

    def read(self, collection: str) -> Any:
        """The items of ``collection`` (StepRefused, e.g. 404 for an unknown one)."""
        raise KeyError(collection)

    def create(self, collection: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
        """Create an item of ``collection`` for officer ``actor`` (StepRefused on a refusal)."""
        raise KeyError(collection)


class NodeEngine(ABC):
    """The node side of an engine: the steps the coordinator calls at one party."""

    kinds: ClassVar[tuple[str, ...]]
    steps: ClassVar[dict[str, type[BaseModel]]]  # step name -> its body
    prepares: ClassVar[frozenset[str]] = frozenset()
    """Steps that only reserve the task (read no data, e.g. ports): they run once this node approved the
    job, before its authorization is on chain, and record the task ``ports`` (``task.reserve``). An
    engine with such steps runs its other steps only on a task one of them reserved."""

    @abstractmethod
    def step(self, task: Any, name: str, body: BaseModel) -> dict[str, Any]:
        """Run step ``name`` of an authorized task (``task``: the node's TaskContext port)."""

    def stop(self, task: Any) -> None:
        """Stop whatever the task still runs and delete its secrets; idempotent."""
        return None

    def recover(self, task: Any) -> None:
        """After a node restart: end (or resume) a task that was running."""
        return None

    def close(self) -> None:
        """At node shutdown: stop whatever the engine still runs at this node; idempotent."""
        return None

    def service(self, port: NodePort, config: dict[str, Any]) -> NodeService | None:
        """The companion service the node's settings configure for this engine (``config``: its section;
        ValueError if malformed); None when the engine has none."""
        return None
