"""The sandbox's companion service at a department node: its PySyft low side and the bridge, run by the node.

A node whose settings have an ``engines.sandbox`` section (``node.yaml``; ``dcp up`` writes a member's
``node:`` settings there) runs, from the moment it serves until it stops:

* the **low side** (:class:`protocols.sandbox.lowside_client.LowSide`): a PySyft 0.9.5 datasite in
  bubblewrap — its own network namespace, a uid of its own, only its state directory
  (``<work_dir>/engines/sandbox/lowside``) writable; the node's database, keystore and files do not
  exist there — with the **mock** of each dataset listed in ``publish`` whose columns' grades the node's
  policy allows for sandbox jobs (the node's own mock: same schema, no real value); a dataset the policy
  forbids is refused, audited and shown in the status, and never reaches PySyft;
* the **bridge** (:class:`engines.sandbox.bridge.LowSideBridge`), polling every ``poll_s``: each code
  request becomes a ``sandbox`` job signed by the department on the researcher's behalf, reviewed by
  its officers; a released result is deposited into the request, any other end (rejected, refused by
  the output policy, expired) denies it with the reason the researcher reads in PySyft.

Researchers' accounts on the low side are created by the node's officers (``POST
/engines/sandbox/researchers``, an ``admin`` officer; ``dcp node researchers add``); any officer lists them
and the requests (``GET /engines/sandbox/researchers|requests``). Stopping the node lands the datasite and
ends its process tree (nothing is left: ``LowSide.stop``).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.base import NodePort, NodeService
from engines.errors import StepRefused
from engines.sandbox.coordinator import KIND
from protocols.sandbox.isolate import SandboxLimits
from protocols.sandbox.output_policy import OutputPolicy

log = logging.getLogger("dcp.sandbox.service")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$")


class SandboxNodeConfig(BaseModel):
    """The ``engines.sandbox`` section of a node's settings."""

    model_config = ConfigDict(extra="forbid")

    publish: list[str] = Field(default_factory=list)
    """The datasets whose mock is offered to researchers (no other dataset is ever on the low side); each is
    published only if the node's policy allows sandbox jobs on every one of its columns' grades."""
    mock_rows: int = Field(default=120, ge=10, le=100_000)
    mock_seed: int = Field(default=0, ge=0)
    port: int | None = Field(default=None, ge=1024, le=65535)
    """Where researchers reach the low side (127.0.0.1); a free port when unset."""
    poll_s: float = Field(default=2.0, gt=0, le=600)
    output_policy: OutputPolicy = Field(default_factory=OutputPolicy)
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    expires_in_s: int = Field(default=86_400, ge=60)
    start_timeout_s: float = Field(default=600.0, gt=0)


class ResearcherIn(BaseModel):
    """A researcher's account on the low side, as an officer creates it."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=6, max_length=254)
    name: str = Field(min_length=1, max_length=120)
    institution: str = Field(default="", max_length=200)
    password: str | None = Field(default=None, min_length=12, max_length=128)
    """The initial password; the node draws one (returned once, never stored or logged) when absent."""


class SandboxService(NodeService):
    """The low side and the bridge of one node (``engines.sandbox`` in its settings)."""

    def __init__(self, port: NodePort, config: SandboxNodeConfig) -> None:
        self.port = port
        self.config = config
        self.state = "stopped"  # starting, ready, failed, stopped
        self.error: str | None = None
        self.lowside: Any = None
        self.bridge: Any = None
        self.published: list[str] = []
        self.refused: dict[str, str] = {}  # dataset -> why its mock is not published
        self.last_poll: float | None = None
        self._lock = threading.Lock()  # one call at a time on the datasite's pipe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        from protocols.sandbox.lowside_client import LowSide

        self.lowside = LowSide(self.port.state_dir / "lowside", f"{self.port.member}-lowside", self.config.port)
        self.state = "starting"
        # the thread spawns the datasite and lives as long as it: bubblewrap's --die-with-parent follows it
        self._thread = threading.Thread(target=self._run, name="sandbox-lowside", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from engines.sandbox.bridge import LowSideBridge

        site = self.lowside
        try:
            (self.port.state_dir / "lowside").mkdir(parents=True, exist_ok=True)
            site.spawn()
            site.wait_ready(self.config.start_timeout_s)
            self.bridge = LowSideBridge(
                self.port.member, self.port.keys(), self.port.coordinator_http(), self.port.coordinator_url or "",
                None, site, self.port.state_dir, self.config.output_policy, self.config.limits,
                self.config.expires_in_s, node=self.port)
            self.port.audit("engine:sandbox", "sandbox.lowside.start", self.port.member,
                            {"port": site.port, "side": site.side, "publish": self.config.publish})
            self.state = "ready"
            log.info("low side of %s on 127.0.0.1:%d", self.port.member, site.port)
            while not self._stop.is_set():
                try:
                    self._publish()
                    with self._lock:
                        for o in self.bridge.poll():
                            self.port.audit("engine:sandbox", f"sandbox.request.{o.state}", o.request_id,
                                            {"job_id": o.job_id, "reason": o.reason})
                    self.last_poll = time.time()
                    self.error = None
                except Exception as exc:  # noqa: BLE001 - the coordinator may be away: tried again next tick
                    self.error = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning("sandbox bridge poll failed: %s", self.error)
                self._stop.wait(self.config.poll_s)
        except Exception as exc:  # noqa: BLE001 - reported in the status; the node keeps serving
            if not self._stop.is_set():
                self.state = "failed"
                self.error = f"{type(exc).__name__}: {exc}"[:1000]
                log.error("the sandbox low side failed: %s", self.error)
        finally:
            # dcp down gives a node 5 s between SIGTERM and SIGKILL: land briefly, then end the whole tree
            # (a node killed outright takes it along: bubblewrap dies with this thread, and its PID namespace)
            site.stop(timeout=3.0)
            if self.state != "failed":
                self.state = "stopped"

    def policy_allows(self, dataset: str) -> str | None:
        """Why the node's policy forbids putting ``dataset`` before researchers (None: it allows it): a sandbox
        job reads the whole table, so every column's grade must be within the policy's grade for the kind."""
        policy = self.port.policy()
        ceiling = int(policy.get("max_grade", {}).get(KIND, policy.get("default_max_grade", 2)))
        over = sorted(c for c, g in self.port.grades(dataset).items() if g > ceiling)
        if over:
            return (f"the node's policy allows sandbox jobs up to grade {ceiling}; column(s) {', '.join(over)} "
                    "are graded higher")
        return None

    def _publish(self) -> None:
        """Publish the mock of each listed dataset the policy allows, once the node has it (it may be
        ingested after start); a refused one is reported in the status and the audit log, never sent."""
        from protocols.sandbox.lowside_client import MockPublicationRefused

        have = set(self.port.datasets())
        for dataset in self.config.publish:
            if dataset in self.published or dataset in self.refused or dataset not in have:
                continue
            why = self.policy_allows(dataset)
            try:
                with self._lock:
                    if why is not None:
                        self.lowside.publish_mock(dataset, None, allowed=False)
                    got = self.bridge.publish(dataset, rows=self.config.mock_rows, seed=self.config.mock_seed)
            except MockPublicationRefused:
                self.refused[dataset] = why or "refused"
                self.port.audit("engine:sandbox", "sandbox.mock.refuse", dataset, {"reason": why})
                continue
            self.published.append(dataset)
            self.port.audit("engine:sandbox", "sandbox.mock.publish", dataset, {"rows": got.get("rows")})

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self.state == "starting" and self.lowside is not None:
            proc = self.lowside._proc  # still launching: end it now, the thread then stops and cleans up
            if proc is not None and proc.poll() is None:
                import os
                import signal

                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        thread.join(timeout=120)

    # ------------------------------------------------------------ what officers see and do

    def status(self) -> dict[str, Any]:
        site = self.lowside
        return {"state": self.state, "error": self.error, "side": getattr(site, "side", None),
                "url": site.url if site else None, "port": site.port if site else None,
                "published": list(self.published), "refused": dict(self.refused), "last_poll": self.last_poll}

    def _ready(self) -> Any:
        if self.state != "ready":
            raise StepRefused("LowSideNotReady", f"the low side is {self.state}" + (f": {self.error}" if self.error else ""),
                              503)
        return self.lowside

    def read(self, collection: str) -> Any:
        if collection == "researchers":
            site = self._ready()
            with self._lock:
                return site.researchers()
        if collection == "requests":
            jobs = dict(self.bridge.jobs) if self.bridge else {}  # a copy: the bridge's thread adds to it
            return [{"request_id": k, **v} for k, v in jobs.items()]
        raise StepRefused("CollectionNotFound", f"the sandbox service has no {collection!r}", 404)

    def create(self, collection: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
        if collection != "researchers":
            raise StepRefused("CollectionNotFound", f"the sandbox service creates no {collection!r}", 404)
        try:
            r = ResearcherIn.model_validate(body)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise StepRefused("InvalidRequest", f"{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
        if not EMAIL.match(r.email):
            raise StepRefused("InvalidRequest", "email: not an e-mail address")
        site = self._ready()
        password = r.password or secrets.token_urlsafe(12)
        with self._lock:
            if any(u["email"].lower() == r.email.lower() for u in site.researchers()):
                raise StepRefused("ResearcherExists", f"the low side already has an account {r.email}", 409)
            site.create_researcher(r.email, r.name, password, institution=r.institution)
        self.port.audit(actor, "sandbox.researcher.create", r.email, {"name": r.name, "institution": r.institution})
        out = {"email": r.email, "name": r.name, "institution": r.institution, "url": site.url, "port": site.port}
        if r.password is None:
            out["password"] = password  # shown once to the officer, who hands it to the researcher
        return out


def make_service(port: NodePort, config: dict[str, Any]) -> SandboxService:
    """The service of a node's ``engines.sandbox`` section (ValueError if it is malformed)."""
    return SandboxService(port, SandboxNodeConfig.model_validate(config))
