"""What a demo run records: its result (each job's line, the models' metrics, approvals, receipts), the
wall time of every stage (:class:`Clock`, and the engine's stages as the label holder's task reports
them), and the nodes' peak memory (:class:`RssSampler`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field, computed_field

from scenarios.bank_credit.federated import PostLoanSummary

# ---------------------------------------------------------------- results


class StageTime(BaseModel):
    """Wall seconds of one demo stage."""

    stage: str
    seconds: float


class ModelLine(BaseModel):
    """One model's line in the summary."""

    name: str
    role: str
    auc: float
    ks: float
    psi: float | None = None


class JobLine(BaseModel):
    """One job the demo ran: who decided what, how it ended, its receipts."""

    title: str
    kind: str
    job_id: str | None = None
    state: str = "NOT_STARTED"
    reason: str | None = None
    events: list[str] = Field(default_factory=list)
    approvals: dict[str, str] = Field(default_factory=dict)
    auto_approved: list[str] = Field(default_factory=list)
    receipts: dict[str, int] = Field(default_factory=dict)
    retried: list[str] = Field(default_factory=list)
    """Why an earlier submission of this job failed, when the bank had to submit it again."""


class DemoResult(BaseModel):
    """What the demo did and measured."""

    n_enterprises: int
    seed: int
    out_dir: Path
    bank: str
    departments: list[str]
    intersection_rows: int | None = None
    evaluation: str | None = None
    n_test: int | None = None
    models: list[ModelLine] = Field(default_factory=list)
    uplift: float | None = None
    gap_to_centralized: float | None = None
    audit_clean: bool | None = None
    audit_findings: list[str] = Field(default_factory=list)
    anchors_on_chain: int | None = None
    reconciled: dict[str, str] = Field(default_factory=dict)
    """Member -> what the reconciliation of its node's audit log with the chain found ("clean" or the findings)."""
    reconciliation_clean: bool | None = None
    report_dir: Path | None = None
    report_files: list[str] = Field(default_factory=list)
    white_list_size: int | None = None
    white_list_default_rate: float | None = None
    jobs: list[JobLine] = Field(default_factory=list)
    """Every job in the order submitted; the first is the pre-loan training (its fields are also this
    result's ``job_id``, ``state``, ``reason``, ``events``, ``approvals``, ``auto_approved``, ``receipts``)."""
    post_loan: PostLoanSummary | None = None
    scorecard_points: dict[str, float] | None = None
    """P10 / median / P90 of the WOE scorecard's points on the test rows (when that model ran)."""
    stages: list[StageTime] = Field(default_factory=list)
    peak_rss_mb: dict[str, float] = Field(default_factory=dict)

    @property
    def training(self) -> JobLine:
        """The pre-loan training job (a blank line before it was submitted)."""
        return self.jobs[0] if self.jobs else JobLine(title="pre-loan training", kind="vertical_train")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def job_id(self) -> str | None:
        """The pre-loan training job's id."""
        return self.training.job_id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def state(self) -> str:
        """How the pre-loan training job ended (``NOT_STARTED`` before it was submitted)."""
        return self.training.state

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reason(self) -> str | None:
        """Why the pre-loan training job did not succeed, if it did not."""
        return self.training.reason

    @computed_field  # type: ignore[prop-decorator]
    @property
    def events(self) -> list[str]:
        """The pre-loan training job's state transitions."""
        return self.training.events

    @computed_field  # type: ignore[prop-decorator]
    @property
    def approvals(self) -> dict[str, str]:
        """Each owner's decision on the pre-loan training job."""
        return self.training.approvals

    @computed_field  # type: ignore[prop-decorator]
    @property
    def auto_approved(self) -> list[str]:
        """The owners whose approval of the training job was automatic (``federation.yaml``)."""
        return self.training.auto_approved

    @computed_field  # type: ignore[prop-decorator]
    @property
    def receipts(self) -> dict[str, int]:
        """Usage receipts of the pre-loan training job on chain, per member."""
        return self.training.receipts

    def model(self, role: str) -> ModelLine:
        """The summary line of the model with ``role``."""
        for m in self.models:
            if m.role == role:
                return m
        raise KeyError(role)

    def seconds(self, stage: str) -> float:
        """Seconds of ``stage`` (0 when it did not run)."""
        return sum(s.seconds for s in self.stages if s.stage == stage)


class Clock:
    """Stage timer."""

    def __init__(self, result: DemoResult) -> None:
        self.result = result

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.result.stages.append(StageTime(stage=name, seconds=round(seconds, 3)))


class RssSampler:
    """Peak RSS of each service's process tree (node + its engine parties), sampled in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _tree_rss(self, pid: int) -> float:
        import psutil

        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], self._tree_rss(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


_STAGE_GROUPS = {"connect": "engine_start", "validate": "engine_start", "psi": "psi", "train": "train",
                 "predict": "predict", "woe": "train", "leave": "receipts", "done": "receipts",
                 "succeeded": "receipts"}


def _stage_group(stage: str) -> str:
    """The bench stage a node task stage belongs to (``psi:round`` → ``psi``; ``extract`` → ``run_setup``)."""
    head = stage.split(":")[0]
    if stage == "predict:done":
        return "receipts"  # the engine is done; sealing outputs, receipts on chain, clean-up
    return _STAGE_GROUPS.get(head, "run_setup")


def _record_run_stages(clock: Clock, timeline: list[tuple[float, str]], t_auth: float, t_done: float,
                       prefix: str = "") -> None:
    """Stage times of the run from the label holder's task stages as seen by polling (±0.3 s):
    each group lasts from its first sighting to the first sighting of the next group."""
    marks: list[tuple[float, str]] = [(t_auth, "run_setup")]
    for t, stage in timeline:
        group = _stage_group(stage)
        if group != marks[-1][1]:
            marks.append((t, group))
    for (t0, group), (t1, _) in zip(marks, [*marks[1:], (t_done, "")], strict=True):
        clock.add(f"{prefix}{group}", max(0.0, t1 - t0))


