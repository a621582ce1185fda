"""``dcp up`` / ``dcp down``: a local federation from one config file."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``up`` and ``down``."""

    @app.command("up")
    def up(config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False,
                                       help="federation.yaml")) -> None:
        """Start anvil, deploy the contracts, admit the members, start every node and the coordinator."""
        from rich.console import Console

        from coordinator.errors import CoordinatorError
        from federation.launcher import load_federation_config
        from federation.launcher import up as fed_up

        console = Console(stderr=True)
        try:
            cfg = load_federation_config(config)
            with console.status("starting the federation…"):
                state = fed_up(cfg, on_step=lambda m: console.log(m))
        except CoordinatorError as exc:
            typer.echo(f"{exc.name}: {exc.detail}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"coordinator {state.coordinator_url}")
        for name, url in state.nodes.items():
            typer.echo(f"node {name:<12} {url}")
        for name, url in state.consoles.items():  # officers sign in with password + one-time code
            files = state.officer_password_files.get(name, {})
            where = next(iter(files.values())).parent if files else "?"
            typer.echo(f"console {name:<9} {url}/  officers {', '.join(files)}: passwords and TOTP secrets in {where}")
        typer.echo(f"chain {state.rpc_url} registry {state.registry}")
        typer.echo(f"state {state.work_dir / 'federation.state.json'}  (dcp down --config {config})")

    @app.command("down")
    def down(
        config: Path = typer.Option(None, "--config", "-c", help="the federation.yaml given to dcp up"),
        work_dir: Path = typer.Option(None, help="or the federation's work_dir"),
    ) -> None:
        """Stop every process of the federation started by ``dcp up``."""
        from common.settings import DcpSettings
        from coordinator.errors import CoordinatorError
        from federation.launcher import down as fed_down
        from federation.launcher import load_federation_config

        try:
            wd = work_dir or (load_federation_config(config).work_dir if config else DcpSettings().work_dir / "federation")
            stopped = fed_down(wd)
        except CoordinatorError as exc:
            typer.echo(f"{exc.name}: {exc.detail}", err=True)
            raise typer.Exit(1) from None
        typer.echo("stopped: " + ", ".join(stopped))
