"""``dcp node``: run a department node and talk to a running one."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _serve_gmtls(fastapi_app: object, settings: object) -> None:
    """Serve the node over 国密 mutual TLS only; its calls to the coordinator pin the coordinator's key."""
    from protocols.gmtls.config import http_client
    from protocols.gmtls.context import server_context
    from protocols.gmtls.server import serve

    tls = settings.tls  # NodeSettings
    ctx_ = fastapi_app.state.ctx
    members = ctx_.chain.client.members if ctx_.chain is not None else None
    try:
        directory = tls.directory(members)
        ctx = server_context(tls.credentials(), directory.is_known)
        recorder = getattr(ctx_.approvals, "recorder", None)
        if recorder is not None and getattr(recorder, "coordinator_url", None):
            recorder.http = http_client(tls, directory, {"coordinator": recorder.coordinator_url})
    except (OSError, ValueError) as exc:  # CertificateError is a ValueError
        typer.echo(f"tls: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    directory.keep_fresh()
    typer.echo(f"国密 TLS only on https://{settings.host}:{settings.port}: TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3, "
               "client certificate required")
    serve(fastapi_app, settings.host, settings.port, ctx, log_level="warning")


def _http(member: str | None):  # noqa: ANN202 - httpx or an httpx.Client
    """How the CLI reaches a node: plain ``httpx``, or — when the federation in ``$DCP_FEDERATION_DIR``
    (default ``<work_dir>/federation``) runs 国密 TLS — a client acting as ``member`` (``--member``/``$DCP_MEMBER``)."""
    import os

    import httpx

    from common.settings import DcpSettings
    from coordinator.errors import FederationError
    from coordinator.federation import client_for, read_state

    try:
        state = read_state(os.environ.get("DCP_FEDERATION_DIR") or DcpSettings().work_dir / "federation")
    except FederationError:
        return httpx
    if not state.gmtls:
        return httpx
    if not member:
        typer.echo("the federation speaks 国密 TLS only: say which member you act as (--member or $DCP_MEMBER)",
                   err=True)
        raise typer.Exit(2)
    return client_for(state, member)


def register(app: typer.Typer) -> None:
    """Add the ``node`` command group to the CLI."""
    node = typer.Typer(help="A department node: datasets, catalog, policy, approvals, audit log, tasks.", no_args_is_help=True)
    app.add_typer(node, name="node")
    member_opt = typer.Option(None, "--member", "-m", envvar="DCP_MEMBER", help="the member you act as over 国密 TLS")

    @node.command("start")
    def start(
        config: Path = typer.Option(None, "--config", "-c", help="node config (.yaml/.toml)"),
        port: int = typer.Option(None, help="override the configured port"),
        host: str = typer.Option(None, help="override the configured address (never 0.0.0.0)"),
        rpc: str = typer.Option(None, "--rpc", help="chain JSON-RPC URL (chain_rpc_url)"),
        registry: str = typer.Option(None, "--registry", help="Registry contract address (chain_registry)"),
        deployment: Path = typer.Option(
            None, "--deployment", help="deployment JSON with registry (and rpc_url), e.g. federation.state.json"
        ),
        coordinator: str = typer.Option(None, "--coordinator", help="coordinator base URL (coordinator_url)"),
    ) -> None:
        """Run the node's HTTP service (uvicorn) until interrupted.

        With a chain (``--rpc`` and ``--registry``, or ``--deployment``, or the config) the node approves
        on chain, anchors its audit head there and executes tasks; the keystore passphrase comes from
        ``keystore_passphrase``/``DCP_NODE_KEYSTORE_PASSPHRASE`` or ``keystore_passphrase_file``."""
        import uvicorn

        from nodes.app import create_app
        from nodes.errors import NodeError
        from nodes.settings import load_node_settings

        given = {"port": port, "host": host, "chain_rpc_url": rpc, "chain_registry": registry,
                 "chain_deployment_file": deployment, "coordinator_url": coordinator}
        overrides = {k: v for k, v in given.items() if v is not None}
        try:
            settings = load_node_settings(config, **overrides)
            fastapi_app = create_app(settings)
        except NodeError as exc:
            typer.echo(f"{exc.name}: {exc.detail}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"node {settings.name} on http://{settings.host}:{settings.port} (db {settings.resolved_database_url()})"
        )
        chain = fastapi_app.state.ctx.chain
        if chain is not None:
            typer.echo(f"chain-wired as {chain.account}; audit anchors every {settings.anchor_interval_s:g}s")
        if settings.tls is None:
            uvicorn.run(fastapi_app, host=settings.host, port=settings.port, log_level="warning")
            return
        _serve_gmtls(fastapi_app, settings)

    @node.command("ingest")
    def ingest(
        file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or Parquet file"),
        name: str = typer.Option(..., help="dataset name"),
        url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
        key_column: str = typer.Option(None, help="key column (e.g. the USCC)"),
        encoding: str = typer.Option("utf-8"),
        token: str = typer.Option(None, envvar="DCP_NODE_ADMIN_TOKEN", help="admin token"),
        member: str = member_opt,
    ) -> None:
        """Upload a file to a running node and print its quality summary."""

        data = {"name": name, "encoding": encoding}
        if key_column:
            data["key_column"] = key_column
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with file.open("rb") as fh:
            r = _http(member).post(
                f"{url}/datasets/upload",
                data=data,
                files={"file": (file.name, fh)},
                headers=headers,
                timeout=None,
            )
        body = r.json()
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        typer.echo(
            json.dumps(
                {"name": body["name"], "rows": body["row_count"], "quality": body["quality"]},
                ensure_ascii=False,
                indent=2,
            )
        )

    @node.command("catalog")
    def catalog(url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
                member: str = member_opt) -> None:
        """Print a running node's catalog (metadata only)."""
        from rich.console import Console
        from rich.table import Table

        r = _http(member).get(f"{url}/catalog", timeout=30)
        r.raise_for_status()
        t = Table("dataset", "rows", "columns", "max grade", "rows with issues", "updated")
        for e in r.json():
            q = e.get("quality") or {}
            t.add_row(
                e["name"],
                str(e["row_count"]),
                ", ".join(f"{c['name']}:{c['dtype']}/g{c['grade']}" for c in e["columns"]),
                str(e["max_grade"]),
                str(q.get("rows_with_issues", "-")),
                e["updated_at"],
            )
        Console().print(t)

    @node.command("anchor")
    def anchor(url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
               token: str = typer.Option(None, envvar="DCP_NODE_ADMIN_TOKEN", help="admin token"),
               member: str = member_opt) -> None:
        """Anchor the node's audit head now (on chain when the node is chain-wired)."""

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = _http(member).post(f"{url}/audit/anchor", headers=headers, timeout=120)
        body = r.json()
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        typer.echo(f"anchored entry {body['seq']} ({body['hash'][:16]}…) in {body['ref']}")

    @node.command("task")
    def task(job_id: str = typer.Argument(..., help="the job"),
             url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
             member: str = member_opt) -> None:
        """Show this node's task of a job: status, stage, rows, outputs, receipt."""

        r = _http(member).get(f"{url}/tasks/{job_id}", timeout=30)
        body = r.json()
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        typer.echo(json.dumps(body, ensure_ascii=False, indent=2))
