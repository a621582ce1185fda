"""``dcp node``: run a department node and talk to a running one."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``node`` command group to the CLI."""
    node = typer.Typer(help="A department node: datasets, catalog, policy, audit log.", no_args_is_help=True)
    app.add_typer(node, name="node")

    @node.command("start")
    def start(
        config: Path = typer.Option(None, "--config", "-c", help="node config (.yaml/.toml)"),
        port: int = typer.Option(None, help="override the configured port"),
        host: str = typer.Option(None, help="override the configured address (never 0.0.0.0)"),
    ) -> None:
        """Run the node's HTTP service (uvicorn) until interrupted."""
        import uvicorn

        from nodes.app import create_app
        from nodes.errors import NodeError
        from nodes.settings import load_node_settings

        overrides = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
        try:
            settings = load_node_settings(config, **overrides)
            fastapi_app = create_app(settings)
        except NodeError as exc:
            typer.echo(f"{exc.name}: {exc.detail}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"node {settings.name} on http://{settings.host}:{settings.port} (db {settings.resolved_database_url()})"
        )
        uvicorn.run(fastapi_app, host=settings.host, port=settings.port, log_level="warning")

    @node.command("ingest")
    def ingest(
        file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or Parquet file"),
        name: str = typer.Option(..., help="dataset name"),
        url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
        key_column: str = typer.Option(None, help="key column (e.g. the USCC)"),
        encoding: str = typer.Option("utf-8"),
        token: str = typer.Option(None, envvar="DCP_NODE_ADMIN_TOKEN", help="admin token"),
    ) -> None:
        """Upload a file to a running node and print its quality summary."""
        import httpx

        data = {"name": name, "encoding": encoding}
        if key_column:
            data["key_column"] = key_column
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with file.open("rb") as fh:
            r = httpx.post(
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
    def catalog(url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL")) -> None:
        """Print a running node's catalog (metadata only)."""
        import httpx
        from rich.console import Console
        from rich.table import Table

        r = httpx.get(f"{url}/catalog", timeout=30)
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
