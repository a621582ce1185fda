"""``dcp chain``: deploy the contracts, list members, export Besu permissioning allowlists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

chain = typer.Typer(help="The permissioned chain: deploy contracts, inspect the registry, Besu allowlists.",
                    no_args_is_help=True)


def _web3(rpc: str):  # noqa: ANN202 - web3 imported lazily
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(rpc, request_kwargs={"timeout": 60}))
    try:
        _ = w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - any transport failure
        typer.echo(f"error: cannot reach JSON-RPC at {rpc}: {exc}", err=True)
        raise typer.Exit(2) from None
    return w3


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    raise typer.Exit(2)


@chain.command("deploy")
def deploy(
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    governor: list[str] = typer.Option(None, help="Governor address (repeat); default: the node's first 3 accounts"),
    threshold: int = typer.Option(2, help="Governor approvals a proposal needs"),
    sender: str = typer.Option(None, "--from", help="Deployer address; default: the node's first account"),
    key_env: str = typer.Option(None, help="Environment variable holding the deployer's private key (hex)"),
    out: Path = typer.Option(Path("deployment.json"), help="Where to write the deployment addresses"),
) -> None:
    """Deploy Registry, Authorizations and Receipts, bind them, and write their addresses."""
    from contracts.client import ChainClient
    from contracts.errors import ChainError

    w3 = _web3(rpc)
    signers = {}
    if key_env:
        from eth_account import Account

        key = os.environ.get(key_env)
        if not key:
            typer.echo(f"error: environment variable {key_env} is empty", err=True)
            raise typer.Exit(2)
        acct = Account.from_key(key)
        signers[acct.address] = acct
        sender = sender or acct.address
    accounts = list(w3.eth.accounts) if not (sender and governor) else []
    sender = sender or (accounts[0] if accounts else None)
    governors = list(governor) if governor else accounts[:3]
    if not sender or not governors:
        typer.echo("error: the node has no unlocked accounts; pass --from/--key-env and --governor", err=True)
        raise typer.Exit(2)
    try:
        client = ChainClient.deploy(w3, sender, governors, threshold, signers=signers)
    except ChainError as exc:
        _fail(exc)
    out.write_text(client.deployment.model_dump_json(indent=2) + "\n")
    typer.echo(f"registry       {client.deployment.registry}")
    typer.echo(f"authorizations {client.deployment.authorizations}")
    typer.echo(f"receipts       {client.deployment.receipts}")
    typer.echo(f"wrote {out}")


@chain.command("members")
def members(
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    registry: str = typer.Option(..., help="Registry address"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """List the Registry's members."""
    from contracts.client import ChainClient
    from contracts.errors import ChainError

    try:
        client = ChainClient.connect(_web3(rpc), registry)
        ms = client.members()
    except ChainError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([json.loads(m.model_dump_json()) for m in ms], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"members of {client.deployment.registry}")
    for col in ("account", "role", "name", "active", "BLS key", "enode"):
        table.add_column(col)
    for m in ms:
        table.add_row(m.account, m.role.name, m.name, "yes" if m.active else "no",
                      "yes" if m.bls_public_key else "-", m.enode[:40] or "-")
    Console().print(table)


@chain.command("besu-permissions")
def besu_permissions_cmd(
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    registry: str = typer.Option(..., help="Registry address"),
    out: Path = typer.Option(..., help="Directory to write permissions_config.toml into"),
    enodes: Path = typer.Option(None, help='JSON {"0xmember": "enode://…"} for members without an enode on chain'),
) -> None:
    """Export active members as Besu accounts/nodes allowlists (local permissioning)."""
    from contracts.besu import besu_permissions, load_enode_file, write_besu_permissions
    from contracts.client import ChainClient
    from contracts.errors import ChainError

    try:
        client = ChainClient.connect(_web3(rpc), registry)
        perms = besu_permissions(client, load_enode_file(enodes) if enodes else None)
    except ChainError as exc:
        _fail(exc)
    path = write_besu_permissions(perms, out)
    typer.echo(f"wrote {path}: {len(perms.accounts)} accounts, {len(perms.nodes)} nodes")
    for account in perms.members_without_enode:
        typer.echo(f"warning: member {account} has no enode URL (not in nodes-allowlist)", err=True)
    typer.echo("start besu with --permissions-accounts-config-file-enabled --permissions-nodes-config-file-enabled "
               f"--permissions-accounts-config-file={path} --permissions-nodes-config-file={path}")


def register(app: typer.Typer) -> None:
    """Attach ``dcp chain``."""
    app.add_typer(chain, name="chain")
