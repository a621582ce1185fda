"""Engines' companion services at a node (``engines.base.NodeService``), from the settings' ``engines``.

The node builds each configured service at start (a name no engine knows, or a malformed section, is a
:class:`nodes.errors.ConfigError`: the node does not start), starts them when it serves (the app's
lifespan) and closes them when it stops, before its database. A service reaches the node only through
an :class:`EnginePort`: the member's keys, a client to the coordinator, the datasets' names, columns and
mocks (never their rows), the audit log, and a state directory of its own under the node's work dir.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from engines import registry
from engines.base import NodeService
from engines.errors import StepRefused
from nodes.errors import ConfigError

log = logging.getLogger("dcp.node.companions")


class EnginePort:
    """What one engine's service may use of its node (``engines.base.NodePort``)."""

    def __init__(self, ctx: Any, engine: str) -> None:
        self._ctx = ctx  # NodeContext
        self.engine = engine
        self.member = ctx.settings.name
        self.coordinator_url = ctx.settings.coordinator_url
        self.state_dir = Path(ctx.settings.work_dir) / "engines" / engine
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._http: Any = None
        self._lock = threading.Lock()

    def keys(self) -> Any:
        return self._ctx.approvals.keys()

    def coordinator_http(self) -> Any:
        """The approvals' client to the coordinator (国密 TLS, set by ``dcp node start``), else plain httpx."""
        recorder = getattr(self._ctx.approvals, "recorder", None)
        http = getattr(recorder, "http", None)
        if http is not None:
            return http
        with self._lock:
            if self._http is None:
                import httpx

                self._http = httpx.Client()
            return self._http

    def datasets(self) -> list[str]:
        return [d.name for d in self._ctx.datasets.list()]

    def columns(self, dataset: str) -> list[str]:
        if dataset not in self.datasets():
            raise StepRefused("DatasetNotFound", f"this node has no dataset {dataset!r}", 404)
        return [m.name for m in self._ctx.datasets.column_meta(dataset)]

    def grades(self, dataset: str) -> dict[str, int]:
        self.columns(dataset)
        return {m.name: int(m.grade) for m in self._ctx.datasets.column_meta(dataset)}

    def policy(self) -> dict[str, Any]:
        return self._ctx.policy.current().model_dump(mode="json")

    def mock(self, dataset: str, rows: int, seed: int) -> Any:
        """The same mock ``GET /datasets/{name}/mock`` serves (capped at ``mock_max_rows``), audited."""
        from nodes.services.mock import mock_frame

        self.columns(dataset)
        rows = min(rows, self._ctx.settings.mock_max_rows)
        frame = mock_frame(self._ctx.datasets.read_frame(dataset), self._ctx.datasets.column_meta(dataset), rows,
                           seed, self._ctx.policy.current().min_group_size)
        self.audit(f"engine:{self.engine}", "dataset.mock", dataset, {"rows": rows, "seed": seed})
        return frame

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        self._ctx.audit.record(actor=actor, action=action, target=target,
                               detail=json.loads(json.dumps(detail, default=str)))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


class Companions:
    """The engines' services of one node."""

    def __init__(self, ctx: Any) -> None:
        self.services: dict[str, NodeService] = {}
        self._ports: list[EnginePort] = []
        for name, config in ctx.settings.engines.items():
            engine = registry.node_engine_named(name)
            if engine is None and name in registry.engine_names():
                raise ConfigError(f"engines: the {name} engine runs no service beside a node")
            if engine is None:
                raise ConfigError(f"engines: no engine is called {name!r} (known: {', '.join(registry.engine_names())})")
            port = EnginePort(ctx, name)
            try:
                service = engine.service(port, dict(config or {}))
            except ValueError as exc:  # pydantic's ValidationError too
                raise ConfigError(f"engines.{name}: {exc}") from None
            if service is None:
                raise ConfigError(f"engines: the {name} engine runs no service beside a node")
            self.services[name] = service
            self._ports.append(port)
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for name, service in self.services.items():
            log.info("starting the %s engine's service", name)
            service.start()

    def get(self, name: str) -> NodeService:
        if name not in self.services:
            raise StepRefused("ServiceNotFound", f"this node runs no service of an engine {name!r}", 404)
        return self.services[name]

    def close(self) -> None:
        for name, service in self.services.items():
            try:
                service.close()
            except Exception:  # noqa: BLE001 - the other services and the node still close
                log.exception("closing the %s engine's service failed", name)
        for port in self._ports:
            port.close()
