"""SecretFlow's node side as an ``engines.base.NodeEngine``: the steps the coordinator calls at one party.

Both steps come through the node's one step route (``POST /tasks/{job_id}/{step}``,
:mod:`nodes.services.steps`), their bodies validated against :mod:`engines.secretflow.steps`:

* ``ports`` (a step that only reserves: this node approved the job; no data is read): reserve the
  party's ports and record the task ``ports``; idempotent;
* ``start``: the route has checked the approval, the authorization on chain (the one guard) and the
  node's policy; this step then checks the task (ports reserved here, not started before, addressed to
  this node and to the endpoint it reserved: :class:`TaskExists`, :class:`TaskMismatch`), the approved
  slice and the stage plan (:mod:`nodes.secretflow.plan`), records the task ``running`` and answers at
  once; the party runs in its own thread (:mod:`nodes.secretflow.run`).

A node with a 国密 gateway (:attr:`SecretFlowNode.gateway`, ``nodes.services.gateway.NodeGateway``)
opens the job's routes at ``start`` (the parties: the owners of the datasets the on-chain authorization
names; each peer's address from the node's settings, its key from the Registry) and gives its party the
cluster rewritten to 127.0.0.1 routes, never the body's peer addresses; the task's end (success,
failure, stop, recovery) closes them. Without a gateway the body's cluster is used as before.

A node that restarts fails the parties it was running (their process groups killed, their extracts
deleted) and kills the warm party a previous run left. Every state change is persisted before it is
acted on, and audited.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from common.net import free_ports
from engines.base import NodeEngine
from engines.secretflow.steps import PREPARES, STEPS, PortsIn, PortsOut, Started, StartIn
from nodes.errors import TaskExists, TaskMismatch
from nodes.models import utcnow
from nodes.secretflow.plan import check_slice, model_dir, plan
from nodes.secretflow.processes import WarmEngine, is_party, kill_orphan_warm
from nodes.secretflow.run import PartyRunner, Run, party_job_id, remove_tree
from nodes.services.datasets import DatasetService
from nodes.services.tasks import TaskService

log = logging.getLogger("dcp.node")


def party_cluster(body: StartIn) -> Any:
    """The cluster this node's party dials (``protocols.secretflow.spec.ClusterSpec``): every party's
    address as the coordinator assembled it (``engines.secretflow.coordinator.cluster_of``), waiting
    for a peer at most the job's time. The one place a party's peer addresses are read."""
    from protocols.secretflow.spec import ClusterSpec

    return ClusterSpec.model_validate({**body.cluster, "recv_timeout_s": body.timeout_s})


class SecretFlowNode(NodeEngine):
    """One node's SecretFlow parties (the node builds one; the coordinator side is
    ``engines.secretflow.coordinator.SecretFlowEngine``)."""

    kinds = ("psi", "vertical_train", "vertical_predict")
    steps = STEPS
    prepares = PREPARES

    def __init__(self, tasks: TaskService, datasets: DatasetService) -> None:
        self.tasks = tasks
        self.member = tasks.member
        self.settings = tasks.settings
        self.runner = PartyRunner(tasks, datasets)

    @property
    def gateway(self) -> Any:
        """The node's running gateway (None: engine links go direct, as on one machine)."""
        return self.runner.gateway

    @gateway.setter
    def gateway(self, gateway: Any) -> None:
        self.runner.gateway = gateway

    def job_parties(self, task: Any) -> list[str]:
        """The job's parties as the chain says: the owners of the datasets its live authorization names."""
        from nodes.services.gateway import PeerAddressRefused

        chain, names = self.tasks.chain, set()
        if chain is None or task.auth is None:
            raise PeerAddressRefused("a gateway routes only jobs with an authorization on chain")
        for did in task.auth.terms.dataset_ids:
            ds = chain.dataset(bytes(did))
            name = chain.member_name(ds.owner) if ds is not None else None
            if name is None:
                raise PeerAddressRefused(f"dataset 0x{bytes(did).hex()} has no active owner in the Registry")
            names.add(name)
        return sorted(names)

    @property
    def warm(self) -> WarmEngine | None:
        """The node's warm party (None unless ``warm_engine``)."""
        return self.runner.warm

    def open(self) -> None:
        """At node start (after recovery): kill the warm party a previous run left; with
        ``warm_engine``, start this run's."""
        home = self.settings.work_dir / "engine"
        if kill_orphan_warm(home, self.tasks.scratch_root):
            log.warning("killed the warm engine process a previous run of node %s left", self.member)
        if self.settings.warm_engine and self.runner.warm is None:
            self.runner.warm = WarmEngine(home, self.tasks.scratch_root, self.runner.busy,
                                          self.settings.work_dir.resolve(),
                                          on_demand=self.settings.warm_engine_on_demand,
                                          idle_s=self.settings.warm_engine_idle_s)
            self.runner.warm.start()

    def step(self, task: Any, name: str, body: BaseModel) -> dict[str, Any]:
        """``ports`` or ``start`` (the module docstring)."""
        if isinstance(body, PortsIn):
            return self.ports(task, body).model_dump()
        assert isinstance(body, StartIn)
        return self.start(task, body).model_dump()

    def ports(self, task: Any, req: PortsIn) -> PortsOut:
        """Reserve this node's ports for the job's party (idempotent)."""
        from protocols.secretflow.spec import PartyEndpoint, psi_peers

        with self.tasks._lock:
            t = self.tasks.find(task.job_id)
            if t is not None:
                return PortsOut(host=self.settings.host, endpoint=json.loads(t.endpoint_json))
            names = sorted({*req.peers, self.member})
            if req.label_party not in names:
                raise TaskMismatch(f"label party {req.label_party!r} is neither this node nor one of its peers")
            mine = psi_peers(self.member, req.label_party, names)
            ports = free_ports(2 + len(mine), self.settings.host)
            ep = PartyEndpoint(name=self.member, sf_port=ports[0], spu_port=ports[1],
                               psi_ports=dict(zip(mine, ports[2:], strict=True)))
            endpoint = json.loads(ep.model_dump_json())
            task.reserve(
                {"endpoint_json": json.dumps(endpoint), "peers_json": json.dumps(sorted(req.peers)),
                 "label_party": req.label_party},
                action="task.ports", detail={"peers": sorted(req.peers), "label_party": req.label_party},
            )
            warm = self.runner.warm
            if warm is not None and warm.on_demand:  # a job expects this node: its party starts warming
                warm.request()
            return PortsOut(host=self.settings.host, endpoint=endpoint)

    def start(self, task: Any, body: StartIn) -> Started:
        """Check the task, the slice and the plan; record it running; extract and start the party in its thread."""
        from protocols.secretflow.spec import ModelParams, PartyConfig, PartySpec

        job_id, approved = task.job_id, task.approved
        with self.tasks._lock:
            t = self.tasks._get(job_id)
            if t.status != "ports" or job_id in self.runner.runs:  # first: a refusal here changes nothing
                raise TaskExists(f"the task of job {job_id!r} is already {t.status}")
            if body.job_id != job_id:
                raise TaskMismatch(f"the body is for job {body.job_id!r}, the path for {job_id!r}")
            if body.party != self.member:
                raise TaskMismatch(f"this node is {self.member!r}, not {body.party!r}")
            approved_sets = {i["dataset"] for i in approved.get("inputs", [])}
            beyond = [i.dataset for i in body.inputs if i.dataset not in approved_sets]
            if beyond:  # the route checked the approved datasets; these too must be on chain
                task.authorize(beyond)
            check_slice(self.member, body, approved)
            trained = self.tasks.find(body.model_from) if body.model_from else None
            stages, party_model_dir = plan(body, approved, model_dir(self.settings.work_dir, job_id), trained)
            try:
                cluster = party_cluster(body)
                model = ModelParams.model_validate(body.model or {})
            except ValidationError as exc:
                e = exc.errors()[0]
                raise TaskMismatch(f"cluster or model: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None
            try:
                mine = cluster.endpoint(self.member)
            except KeyError:
                raise TaskMismatch(f"the cluster has no endpoint for {self.member!r}") from None
            if json.loads(mine.model_copy(update={"host": None}).model_dump_json()) != json.loads(t.endpoint_json):
                raise TaskMismatch("the cluster gives this node another endpoint than the ports it allocated")
            if self.gateway is not None:  # PeerAddressRefused here opens nothing and changes nothing
                cluster = self.gateway.open_task(job_id, self.job_parties(task), cluster)

            # checks passed: persist, then act
            try:
                scratch = self.tasks.scratch_root
                scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(scratch, 0o700)
                private = Path(tempfile.mkdtemp(prefix="task-", dir=scratch))  # mode 0700
                inp = body.inputs[0]
                self.tasks._update(
                    job_id, status="running", stage="extract", extract_dir=str(private), started_at=utcnow(),
                    datasets_json=json.dumps([{"dataset": inp.dataset, "columns": inp.columns, "features": body.features}]),
                    model_from=body.model_from,
                    audit={"actor": task.actor, "action": "task.authorized", "detail": {
                        "auth_digest": bytes(task.auth.digest).hex(),
                        "manifest_hash": bytes(task.auth.terms.manifest_hash).hex(),
                        "datasets": [i.dataset for i in body.inputs]}},
                )
                try:
                    cfg = PartyConfig(
                        job_id=party_job_id(job_id), cluster=cluster,
                        me=PartySpec(name=self.member, input_csv=private / "input.csv", output_dir=private / "out",
                                     features=body.features, model_dir=party_model_dir),
                        join_key=body.join_key, label_party=body.label_party, label_column=body.label_column,
                        psi_protocol=body.psi_protocol, model=model, stages=list(stages),
                    )
                    config_error = None
                except ValidationError as exc:
                    cfg, config_error = None, exc.errors()[0]["msg"]
                run = Run(job_id=job_id, port=task, private=private, dataset=inp.dataset, columns=list(inp.columns),
                          features=body.features, config=cfg,
                          receivers={n: w[0] for n, w in body.receivers.items() if w}, timeout_s=body.timeout_s,
                          join_key=body.join_key, hub=t.label_party == self.member, actor=task.actor)
                self.runner.runs[job_id] = run
            except BaseException:  # nothing of the task runs: its routes close again
                if self.gateway is not None:
                    self.gateway.close_task(job_id)
                raise
        if config_error is not None:
            self.runner.fail(run, "party config refused")
            raise TaskMismatch(f"party config: {config_error}")
        self.runner.launch(run)
        return Started(job_id=job_id, status="running")

    def stop(self, task: Any) -> None:
        """Stop the party (its whole process group); its follower records the task ``stopped``."""
        self.runner.stop(task.job_id, task.actor)

    def recover(self, task: Any) -> None:
        """A task a previous run of this node left running: kill its party, delete its extract, fail it."""
        if self.gateway is not None:
            self.gateway.close_task(task.job_id)
        t = self.tasks._get(task.job_id)
        if t.pid is not None and is_party(t.pid):
            from common.procs import kill_group

            kill_group(t.pid, 0.5)
        if t.extract_dir:
            from protocols.secretflow.traces import remove_psi_traces

            remove_psi_traces(t.extract_dir)  # a party killed with the node cannot clean up its traces
        removed = remove_tree(t.extract_dir)
        self.tasks._update(
            task.job_id, status="failed", error="the node restarted during the task", extract_dir=None,
            finished_at=utcnow(),
            audit={"actor": "node", "action": "task.fail", "outcome": "ok",
                   "detail": {"error": "node restarted", "extract_deleted": removed}},
        )

    def close(self) -> None:
        """Stop every party this node runs and its idle warm party (node shutdown)."""
        self.runner.stop_all()
