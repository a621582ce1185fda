"""``dcp chain``: deploy the contracts, list members, export Besu permissioning allowlists."""

from __future__ import annotations

import json
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


def _governor_keys(keystores: list[Path], passphrase_files: list[Path]) -> list:
    """The governors' keystores opened, each with its own passphrase file (given in the same order, or
    ``<member>.passphrase`` beside the keystore, as ``dcp up`` lays them out)."""
    from protocols.crypto.errors import CryptoError
    from protocols.crypto.keystore import load_keystore, read_public

    if passphrase_files and len(passphrase_files) != len(keystores):
        typer.echo("error: give one --passphrase-file per --governor-keystore (or none)", err=True)
        raise typer.Exit(2)
    keys = []
    for i, path in enumerate(keystores):
        try:
            pfile = passphrase_files[i] if passphrase_files else path.parent / f"{read_public(path).member}.passphrase"
            keys.append(load_keystore(path, pfile.read_text(encoding="utf-8").rstrip("\r\n")))
        except (OSError, CryptoError) as exc:
            typer.echo(f"error: governor keystore {path}: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(2) from None
    return keys


@chain.command("deploy")
def deploy(
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    governor_keystore: list[Path] = typer.Option(
        None, help="A governor's keystore (repeat); governors sign every governance transaction with it. "
                   "The first one deploys the contracts."),
    passphrase_file: list[Path] = typer.Option(
        None, help="The passphrase file of each --governor-keystore, in the same order "
                   "(default: <member>.passphrase beside the keystore)"),
    threshold: int = typer.Option(2, help="Governor approvals a proposal needs"),
    fund: bool = typer.Option(
        True, help="On a development chain (one with unlocked accounts, e.g. anvil), give governors without "
                   "a balance gas from its first account. Those accounts only ever fund; they are never governors."),
    out: Path = typer.Option(Path("deployment.json"), help="Where to write the deployment addresses"),
) -> None:
    """Deploy Registry, Authorizations and Receipts governed by the named keystores, bind them, and write
    their addresses. The chain's unlocked development accounts are never governors (issue 13): anyone who
    can reach the node could sign with them."""
    from contracts.errors import ChainError
    from federation.launcher import governed_deployment

    if not governor_keystore:
        typer.echo("error: name the governors: --governor-keystore PATH (repeat; make them with dcp keys new). "
                   "The chain's unlocked development accounts are never governors.", err=True)
        raise typer.Exit(2)
    if not 1 <= threshold <= len(governor_keystore):
        typer.echo(f"error: --threshold must be between 1 and the {len(governor_keystore)} governors", err=True)
        raise typer.Exit(2)
    keys = _governor_keys(list(governor_keystore), list(passphrase_file or []))
    w3 = _web3(rpc)
    funder = None
    if fund:
        try:
            dev = list(w3.eth.accounts)
        except Exception:  # noqa: BLE001 - a production node may refuse eth_accounts
            dev = []
        funder = dev[0] if dev else None

    def give_gas(addr: str) -> None:
        if funder is not None and w3.eth.get_balance(addr) == 0:
            w3.eth.wait_for_transaction_receipt(
                w3.eth.send_transaction({"from": funder, "to": addr, "value": w3.to_wei(100, "ether")}))

    try:
        client, governors = governed_deployment(w3, keys, threshold, give_gas)
    except ChainError as exc:
        _fail(exc)
    out.write_text(client.deployment.model_dump_json(indent=2) + "\n")
    typer.echo(f"registry       {client.deployment.registry}")
    typer.echo(f"authorizations {client.deployment.authorizations}")
    typer.echo(f"receipts       {client.deployment.receipts}")
    typer.echo(f"governors      {', '.join(governors)} ({threshold} of {len(governors)})")
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
