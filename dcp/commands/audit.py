"""``dcp audit``: the regulator's audit, reading the chain only (never the coordinator's database)."""

from __future__ import annotations

import json

import typer


def audit(
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    registry: str = typer.Option(..., help="Registry address (Authorizations/Receipts are found from it)"),
    from_block: int = typer.Option(0, help="First block to read"),
    to_block: int = typer.Option(None, help="Last block to read (default: latest)"),
    page_size: int = typer.Option(2000, help="Blocks per eth_getLogs page"),
    clock_tolerance: int = typer.Option(0, help="Seconds of node clock skew to forgive in run times"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report"),
) -> None:
    """Recompute from chain events whether every use of data was authorized.

    Exit code 0: nothing found; 1: findings; 2: the chain or registry could not be read.
    """
    from web3 import HTTPProvider, Web3

    from contracts.audit import run_audit
    from contracts.errors import ChainError

    w3 = Web3(HTTPProvider(rpc, request_kwargs={"timeout": 60}))
    try:
        report = run_audit(w3, registry, from_block=from_block, to_block=to_block, page_size=page_size,
                           clock_tolerance=clock_tolerance)
    except ChainError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - transport errors of any kind
        typer.echo(f"error: cannot read the chain at {rpc}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(json.loads(report.model_dump_json()), indent=2))
    else:
        _print_table(report)
    raise typer.Exit(1 if report.findings else 0)


def _print_table(report) -> None:  # noqa: ANN001 - AuditReport, imported lazily
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"chain {report.chain_id}, registry {report.registry}, blocks {report.from_block}..{report.to_block}: "
        f"{report.members} members, {report.datasets} datasets, {report.authorizations_count} authorizations, "
        f"{report.receipts_count} receipts, {report.anchors_count} anchors"
    )
    if not report.findings:
        console.print("[green]no findings[/green]")
        return
    table = Table(title=f"{len(report.findings)} finding(s)")
    table.add_column("kind", no_wrap=True)
    for col in ("block", "job", "dataset", "account", "detail"):
        table.add_column(col, overflow="fold")
    for f in report.findings:
        table.add_row(
            f.kind.value,
            str(f.block_number),
            ("0x" + f.job_id.hex()[:10]) if f.job_id else "-",
            ("0x" + f.dataset_id.hex()[:10]) if f.dataset_id else "-",
            (f.account[:10] + "…") if f.account else "-",
            f.detail,
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Attach ``dcp audit``."""
    app.command("audit")(audit)
