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

    @app.command("connect")
    def connect(
        member: str = typer.Option(..., "--member", "-m", help="the member this host acts as"),
        keys_dir: Path = typer.Option(..., "--keys-dir", exists=True, file_okay=False,
                                      help="where `dcp keys new` wrote its keystore and <member>.tls.crt/.key"),
        rpc: str = typer.Option(..., "--rpc", help="chain JSON-RPC URL"),
        registry: str = typer.Option(..., "--registry", help="Registry contract address"),
        coordinator: str = typer.Option(..., "--coordinator", help="the coordinator's URL"),
        node: list[str] = typer.Option(..., "--node", help="NAME=URL of a node (repeat; at least this member's own)"),
        passphrase_file: Path = typer.Option(None, "--passphrase-file", exists=True, dir_okay=False,
                                             help="the member's keystore passphrase (0600): signs its job requests"),
        officer: list[str] = typer.Option(None, "--officer", help="NAME=PASSWORD_FILE of an officer of this "
                                          "member's node (e.g. approver=approver.pw; repeat)"),
        coordinator_member: str = typer.Option("coordinator", help="the coordinator's member name"),
        federation_dir: Path = typer.Option(None, "--federation-dir",
                                            help="where to write it (default: $DCP_FEDERATION_DIR)"),
    ) -> None:
        """Write this host's view of a federation started elsewhere, for `dcp job` and `dcp node`.

        The file (federation.state.json) goes into --federation-dir or $DCP_FEDERATION_DIR; with that
        variable set, `dcp job …` and `dcp node …` act as --member over 国密 TLS, pinning each server's
        SM2 key as the Registry holds it. Nothing is started."""
        import os

        from federation.launcher import connect as fed_connect

        target = federation_dir or (Path(os.environ["DCP_FEDERATION_DIR"]) if os.environ.get("DCP_FEDERATION_DIR")
                                    else None)
        if target is None:
            typer.echo("say where: --federation-dir DIR or $DCP_FEDERATION_DIR", err=True)
            raise typer.Exit(2)

        def pairs(items: list[str], what: str) -> dict[str, str]:
            out = {}
            for item in items or []:
                name, sep, value = item.partition("=")
                if not sep or not name or not value:
                    typer.echo(f"{what} must be NAME=VALUE, got {item!r}", err=True)
                    raise typer.Exit(2)
                out[name] = value
            return out

        nodes = pairs(node, "--node")
        officers = {k: Path(v) for k, v in pairs(officer, "--officer").items()}
        state = fed_connect(target, member=member, keys_dir=keys_dir, rpc_url=rpc, registry=registry,
                            coordinator_url=coordinator, nodes=nodes, passphrase_file=passphrase_file,
                            officers=officers, coordinator_member=coordinator_member)
        typer.echo(f"{target / 'federation.state.json'}: {member} -> coordinator {state.coordinator_url}, "
                   f"nodes {', '.join(state.nodes)}")

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
