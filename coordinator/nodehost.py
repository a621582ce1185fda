"""``python -m coordinator.nodehost``: run a department node wired to the chain.

Builds ``nodes.app.create_app(settings, recorder=ChainApprovalRecorder(...))`` so approvals go on
chain from the node's own account, and — only while the node service has no ``/tasks`` routes of its
own — adds the interim task router of :mod:`coordinator.node_tasks`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def build_node_app(config: Path, rpc_url: str, registry: str, coordinator_url: str) -> tuple[Any, Any]:
    """The node app and its task runner (None if the node has its own tasks routes)."""
    from coordinator.chain import connect
    from coordinator.chain_recorder import ChainApprovalRecorder
    from coordinator.node_tasks import TaskRunner, tasks_router
    from nodes.app import create_app
    from nodes.settings import load_node_settings
    from protocols.crypto.keystore import load_keystore

    settings = load_node_settings(config)
    if settings.keystore_path is None or settings.keystore_passphrase is None:
        raise SystemExit(f"node {settings.name}: keystore_path and keystore_passphrase are required")
    keys = load_keystore(settings.keystore_path, settings.keystore_passphrase.get_secret_value())
    chain = connect(rpc_url, registry, keys.chain_private_key)
    account = keys.public.chain_address
    recorder = ChainApprovalRecorder(settings.name, chain, account, coordinator_url)
    app = create_app(settings, recorder=recorder)
    runner = None
    if not any(getattr(r, "path", "").startswith("/tasks") for r in app.routes):
        runner = TaskRunner(app.state.ctx, chain, account, settings.name)
        app.include_router(tasks_router(runner))
    return app, runner


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    ap = argparse.ArgumentParser(prog="python -m coordinator.nodehost")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--rpc", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--coordinator", required=True)
    args = ap.parse_args(argv)
    app, runner = build_node_app(args.config, args.rpc, args.registry, args.coordinator)
    settings = app.state.ctx.settings
    print(f"node {settings.name} on http://{settings.host}:{settings.port}", flush=True)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        if runner is not None:
            runner.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
