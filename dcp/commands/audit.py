"""``dcp audit``: the regulator's audit, reading the chain only (never the coordinator's database)."""

from __future__ import annotations

import typer


def audit(
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    registry: str = typer.Option(..., help="Registry address (Authorizations/Receipts are found from it)"),
    from_block: int = typer.Option(0, help="First block to read"),
    to_block: int = typer.Option(None, help="Last block to read (default: latest)"),
    page_size: int = typer.Option(2000, help="Blocks per eth_getLogs page"),
    clock_tolerance: int = typer.Option(60, help="Seconds of node clock skew to forgive in run times "
                                                 "(the Receipts contract's TIME_TOLERANCE)"),
    min_run_seconds: int = typer.Option(1, help="A run shorter than this is a finding"),
    late_after: int = typer.Option(60, help="A receipt recorded this long after its run is reported late"),
    verify_bls: bool = typer.Option(False, "--verify-bls",
                                    help="Re-verify every BLS aggregate off chain even when the code is genuine"),
    job: str = typer.Option(None, "--job", help="Narrow the per-job listing and findings to this job "
                                                "(its id, or its 0x chain key)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report"),
) -> None:
    """Recompute from chain events whether every use of data was authorized, job by job.

    Exit code 0: nothing found; 1: findings; 2: the chain or registry could not be read.
    """
    from web3 import HTTPProvider, Web3

    from contracts.audit import run_audit
    from contracts.errors import ChainError

    job_key = _job_key(job) if job else None
    w3 = Web3(HTTPProvider(rpc, request_kwargs={"timeout": 60}))
    try:
        report = run_audit(w3, registry, from_block=from_block, to_block=to_block, page_size=page_size,
                           clock_tolerance=clock_tolerance, min_run_seconds=min_run_seconds, late_after=late_after,
                           verify_bls=verify_bls, job=job_key)
    except ChainError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - transport errors of any kind
        typer.echo(f"error: cannot read the chain at {rpc}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_table(report)
    raise typer.Exit(1 if report.findings else 0)


def _job_key(job: str) -> bytes:
    """A job's chain key: ``0x`` + 64 hex digits as given, else the key of the coordinator's job id."""
    text = job.removeprefix("0x")
    if job.startswith("0x") and len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    from protocols.crypto.approvals import job_key

    return job_key(job)


def _print_table(report) -> None:  # noqa: ANN001 - AuditReport, imported lazily
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"chain {report.chain_id}, registry {report.registry}, blocks {report.from_block}..{report.to_block}: "
        f"{report.members} members, {report.datasets} datasets, {report.authorizations_count} authorizations, "
        f"{report.receipts_count} receipts ({report.late_receipts} late), {report.anchors_count} anchors; "
        f"contracts {'genuine' if report.contracts_genuine else 'NOT the committed code'}, "
        f"BLS aggregates verified {'on chain' if report.bls_verified_by == 'chain' else 'off chain'}"
    )
    if report.job is not None:
        _print_jobs(console, report)
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


def _print_jobs(console, report) -> None:  # noqa: ANN001 - rich Console, AuditReport
    from rich.table import Table

    if not report.jobs:
        console.print(f"no authorization for job 0x{report.job.hex()}")
    for j in report.jobs:
        console.print(
            f"job 0x{j.job_id.hex()}: manifest 0x{j.manifest_hash.hex()}, approvers {', '.join(j.approvers)}"
            f"{' (one BLS aggregate)' if j.via_bls else ''}, written at {j.created_at} (block {j.created_block}), "
            f"expiry {j.expiry}, max runs {j.max_runs}, runs used {sum(j.runs_used.values())}"
            f"{f', revoked at {j.revoked_at}' if j.revoked_at else ''}"
        )
        table = Table(title=f"{len(j.receipts)} receipt(s)")
        for col in ("node", "dataset", "rows", "result", "started", "finished", "block", "late s", "flags"):
            table.add_column(col, overflow="fold")
        for r in j.receipts:
            table.add_row(r.node[:10] + "…", "0x" + r.dataset_id.hex()[:10], str(r.row_count),
                          "0x" + r.result_hash.hex()[:10], str(r.started_at), str(r.finished_at),
                          str(r.block_number), str(r.late_s) + (" late" if r.late else ""),
                          ", ".join(f.value for f in r.flags) or "-")
        console.print(table)


def register(app: typer.Typer) -> None:
    """Attach ``dcp audit``."""
    app.command("audit")(audit)
