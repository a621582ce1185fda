"""``dcp audit``: the regulator's audit, reading the chain only (never the coordinator's database);
``dcp audit reconcile``: one node's audit log proved against the chain (:mod:`nodes.services.reconcile`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def audit(
    ctx: typer.Context,
    rpc: str = typer.Option(None, help="JSON-RPC URL of the chain"),
    registry: str = typer.Option(None, help="Registry address (Authorizations/Receipts are found from it)"),
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
    ``dcp audit reconcile --node NAME`` proves one node's audit log against the chain.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not rpc or not registry:
        typer.echo("error: --rpc and --registry are required", err=True)
        raise typer.Exit(2)
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


def reconcile_cmd(
    node: str = typer.Option(..., "--node", help="the member whose node's log is proved (its name in the Registry)"),
    member: str = typer.Option(None, "--member", "-m", help="the member you act as over 国密 TLS (a regulator)"),
    fed_dir: Path = typer.Option(None, "--federation-dir", help="where `dcp up` wrote its state"),
    node_url: str = typer.Option(None, "--node-url", help="the node's URL (default: from the federation state)"),
    rpc: str = typer.Option(None, help="JSON-RPC URL of the chain (default: from the federation state)"),
    registry: str = typer.Option(None, help="Registry address (default: from the federation state)"),
    token: str = typer.Option(None, "--token", envvar="DCP_AUDITOR_TOKEN",
                              help="an auditor officer's session token of that node, instead of a member"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report"),
) -> None:
    """Prove a node's audit log against the chain: its hash chain intact, every anchored head in the
    log, every receipt on chain in the log and every logged receipt on chain. Each difference is a
    finding naming the log entry or the transaction. Exit 0: clean; 1: findings; 2: unreadable."""
    import httpx
    from web3 import HTTPProvider, Web3

    from contracts.client import ChainClient

    state = None
    if node_url is None or rpc is None or registry is None:
        from dcp.commands.job import _state

        try:
            state = _state(fed_dir)
        except Exception as exc:  # noqa: BLE001 - no federation: the options must say everything
            typer.echo(f"error: give --node-url, --rpc and --registry, or a federation ({exc})", err=True)
            raise typer.Exit(2) from None
    node_url = node_url or (state.nodes.get(node) if state else None)
    if not node_url:
        typer.echo(f"error: no node called {node!r} in the federation", err=True)
        raise typer.Exit(2)
    transport = None
    if state is not None and state.gmtls:
        if not member and not token:
            typer.echo("error: the federation speaks 国密 TLS only: say which member you act as (--member)", err=True)
            raise typer.Exit(2)
        from federation.launcher import transport_for

        transport = transport_for(state, member or "regulator")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    w3 = Web3(HTTPProvider(rpc or state.rpc_url, request_kwargs={"timeout": 60}))
    try:
        chain_client = ChainClient.connect(w3, registry or state.registry)
        with httpx.Client(transport=transport, headers=headers, timeout=60) as http:
            from nodes.services.reconcile import reconcile_remote

            report = reconcile_remote(http, node_url, chain_client, node)
    except Exception as exc:  # noqa: BLE001 - chain, node or transport: named, exit 2
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_reconciliation(report)
    raise typer.Exit(1 if report.findings else 0)


def _print_reconciliation(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"node {report.node} ({report.account}): log entries {report.first_seq}..{report.head_seq} "
        f"({report.entries_checked} checked), {report.anchors_on_chain} anchors on chain "
        f"({report.anchors_checked} matched, {report.anchors_before_log} before the retained log), "
        f"{report.receipts_on_chain} receipts on chain / {report.receipts_in_log} in the log "
        f"({report.receipts_late} late, {report.receipts_pending} pending, {report.receipts_before_log} pruned)")
    if not report.findings:
        console.print("[green]reconciled: no findings[/green]")
        return
    table = Table(title=f"{len(report.findings)} finding(s)")
    for col in ("kind", "entry", "tx", "detail"):
        table.add_column(col, overflow="fold")
    for f in report.findings:
        table.add_row(f.kind.value, str(f.seq) if f.seq is not None else "-", f.tx or "-", f.detail)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Attach ``dcp audit`` and ``dcp audit reconcile``."""
    group = typer.Typer(help="The regulator's audit of the chain, and reconciliation of a node's log with it.")
    group.callback(invoke_without_command=True)(audit)
    group.command("reconcile")(reconcile_cmd)
    app.add_typer(group, name="audit")
