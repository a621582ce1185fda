"""The node's runtime objects, built once per app (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from nodes.db import init_db, make_engine
from nodes.errors import ConfigError
from nodes.secretflow.engine import SecretFlowNode
from nodes.services.approvals import ApprovalRecorder, ApprovalService
from nodes.services.audit import AuditAnchor, AuditLog, FileAnchor
from nodes.services.chain import (
    ChainAnchor,
    ChainApprovalRecorder,
    NodeChain,
    load_node_keys,
)
from nodes.services.companions import Companions
from nodes.services.datasets import DatasetService
from nodes.services.officers import OfficerService, private_file_secret
from nodes.services.policy import PolicyService
from nodes.services.receipt_queue import ChainKeeper, ReceiptQueue
from nodes.services.requests import SeenRequest  # noqa: F401  (registers its table before init_db)
from nodes.services.steps import StepService
from nodes.services.stored_models import StoredModels
from nodes.services.tasks import TaskService
from nodes.settings import NodeSettings
from protocols.identity import MemberDirectory, member_directory


@dataclass
class NodeContext:
    settings: NodeSettings
    engine: Engine
    audit: AuditLog
    datasets: DatasetService
    policy: PolicyService
    approvals: ApprovalService
    tasks: TaskService
    officers: OfficerService
    members: MemberDirectory
    steps: StepService
    models: StoredModels
    chain: NodeChain | None = None
    keeper: ChainKeeper | None = None
    """Pending receipts and the anchors at job ends and shutdown (chain-wired nodes)."""
    gateway: Any = None
    """The node's running 国密 gateway (``nodes.services.gateway.NodeGateway``) when its settings have a
    ``gateway`` section; started with the TLS server (``dcp node start``)."""
    companions: Any = None
    """The engines' services of this node (``nodes.services.companions.Companions``; settings ``engines``),
    started by the app's lifespan and closed before the database."""

    @classmethod
    def build(
        cls,
        settings: NodeSettings,
        anchor: AuditAnchor | None = None,
        recorder: ApprovalRecorder | None = None,
        chain: NodeChain | None = None,
    ) -> NodeContext:
        """Open (and create) the database, connect the chain, seed the policy, wire the services.

        The chain comes from ``chain``, else from the settings (``chain_rpc_url`` + ``chain_registry``
        or ``chain_deployment_file``, signing with the keystore's chain key). A chain-wired node
        anchors its audit head on chain, approves on chain and executes tasks; without a chain it
        does everything else (anchors go to ``anchor_file`` if set).
        """
        settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings.work_dir.chmod(0o700)  # the node's database, secrets and extracts live here
        for stale in settings.tmp_dir().glob("upload-*"):  # an upload cut short by a crash (no request runs yet)
            stale.unlink(missing_ok=True)
        keys: Any = None
        coordinator_url = settings.coordinator_url
        if chain is None:
            target = settings.chain_target()
            if target is not None:
                keys = load_node_keys(settings)
                chain = NodeChain.connect(*target, keys=keys, member=settings.name)
        if chain is not None:
            chain.member = settings.name
            if anchor is None:
                anchor = ChainAnchor(chain)
            if recorder is None:
                recorder = ChainApprovalRecorder(chain, coordinator_url, timeout=settings.coordinator_timeout_s)
        engine = make_engine(settings.resolved_database_url())
        init_db(engine)
        members = node_directory(settings, chain)
        if anchor is None and settings.anchor_file is not None:
            anchor = FileAnchor(settings.anchor_file)
        audit = AuditLog(settings.name, engine, anchor)
        keeper = None
        if chain is not None:
            chain.receipts = ReceiptQueue(engine, audit, chain)
            keeper = ChainKeeper(chain.receipts, audit, retry_s=settings.receipt_retry_s or 2.0)
            if audit.anchor_backend is not None:
                audit.on_job_end = keeper.job_ended
        officers = OfficerService(
            settings.name, engine, private_file_secret(settings.work_dir / "session.key"),
            session_ttl_s=settings.session_ttl_s, proposal_ttl_s=settings.proposal_ttl_s,
            scrypt_n=settings.officer_scrypt_n, write_lock=audit.write_lock,
        )
        datasets = DatasetService(settings.name, engine, audit)
        policy = PolicyService(engine, audit, datasets)
        if settings.policy_file is not None:
            policy.seed_from_file(settings.policy_file)
        approvals = ApprovalService(settings, engine, audit, policy, datasets, recorder, keys=keys)
        tasks = TaskService(settings, engine, audit, datasets, policy, chain)
        secretflow = SecretFlowNode(tasks, datasets)  # the built-in node engine that keeps per-node state
        steps = StepService(tasks, keys=approvals.keys, local=[secretflow])
        steps.recover()  # the tasks a previous run left running: their engines drop what they left
        secretflow.open()
        ctx = cls(settings=settings, engine=engine, audit=audit, datasets=datasets, policy=policy,
                  approvals=approvals, tasks=tasks, steps=steps, officers=officers, members=members, chain=chain,
                  keeper=keeper, models=StoredModels(engine, audit, datasets, policy, steps.ledger))
        try:
            ctx.companions = Companions(ctx)
        except ConfigError:
            steps.close()
            engine.dispose()
            raise
        if keeper is not None:
            keeper.start()  # receipts left pending before a restart go out as soon as the chain answers
        return ctx

    def close(self) -> None:
        if self.companions is not None:
            self.companions.close()  # they use the database, the keys and the coordinator client
        self.steps.close()
        if self.keeper is not None:
            self.keeper.close()  # the last pending receipts and the shutdown anchor
        self.engine.dispose()


def node_directory(settings: NodeSettings, chain: NodeChain | None) -> MemberDirectory:
    """The node's one directory of the members' keys (``protocols.identity.member_directory``), shared
    by its 国密 TLS layer (``is_known``), its clients' pins (``key_of``), its gateway and its routes
    (``lookup``): the chain's Registry when the node is chain-wired, else ``peers``, else the TLS
    known-keys file (the same keys the TLS layer admits; a member the file gives no role is a
    ``department``). Its staleness bound: ``identity_cache_s``, or the ``tls`` section's
    ``registry_ttl_s`` if smaller."""
    ttl = settings.identity_cache_s if settings.tls is None else min(settings.identity_cache_s,
                                                                     settings.tls.registry_ttl_s)
    if chain is not None:
        node_chain = chain
        return member_directory(lambda: node_chain._call("reading the registry", node_chain.client.members),
                                ttl_s=ttl)
    known = settings.tls.known_keys if settings.tls is not None else None
    if not settings.peers and known is not None:
        try:
            from protocols.identity import file_members

            file_members(known)()  # read once now: a broken file stops the node at start
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"tls: {type(exc).__name__}: {exc}") from None
    return member_directory(peers=settings.peers, known_keys=known, ttl_s=ttl)
