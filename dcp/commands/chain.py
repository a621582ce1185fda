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


def _keystore_account(keystore: Path, passphrase_file: Path | None):  # noqa: ANN202 - eth_account LocalAccount
    """The chain account of a keystore (a governor's), opened with its passphrase file (else asked)."""
    from eth_account import Account

    from dcp.commands.keys import _passphrase
    from protocols.crypto.errors import CryptoError
    from protocols.crypto.keystore import load_keystore

    try:
        return Account.from_key(load_keystore(keystore, _passphrase(passphrase_file)).chain_private_key)
    except CryptoError as exc:
        _fail(exc)


def _address(value: str) -> str:
    """An address given as such, or as a `dcp keys export-public` JSON file (its ``chain_address``)."""
    return json.loads(Path(value).read_text(encoding="utf-8"))["chain_address"] if value.endswith(".json") else value


keystore_opt = typer.Option(None, "--keystore", help="the signer's keystore (a governor's: dcp keys new)")
pass_opt = typer.Option(None, "--passphrase-file", help="its passphrase file (else $DCP_KEYSTORE_PASSPHRASE, else asked)")


@chain.command("deploy")
def deploy(
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    governor_keystore: list[Path] = typer.Option(
        None, help="A governor's keystore (repeat) when every governor's keystore is on this host; governors "
                   "sign every governance transaction with it. The first one deploys the contracts."),
    passphrase_file: list[Path] = typer.Option(
        None, help="The passphrase file of each --governor-keystore (or of --keystore), in the same order "
                   "(default: <member>.passphrase beside the keystore)"),
    keystore: Path = typer.Option(
        None, "--keystore", help="Across hosts: the deploying governor's own keystore (it signs locally); "
                                 "name every governor, this one included, with --governor"),
    governor: list[str] = typer.Option(
        None, help="Across hosts: a governor's address or `dcp keys export-public` JSON (repeat)"),
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

    if keystore is not None:  # across hosts: one governor deploys, the others are named by address
        if governor_keystore or not governor:
            typer.echo("error: with --keystore name every governor with --governor (and no --governor-keystore)",
                       err=True)
            raise typer.Exit(2)
        governor_keystore = [keystore]
    elif not governor_keystore:
        typer.echo("error: name the governors: --governor-keystore PATH (repeat; make them with dcp keys new), "
                   "or --keystore and --governor across hosts. "
                   "The chain's unlocked development accounts are never governors.", err=True)
        raise typer.Exit(2)
    named = [_address(g) for g in governor] if keystore is not None else None
    count = len(named) if named is not None else len(governor_keystore)
    if not 1 <= threshold <= count:
        typer.echo(f"error: --threshold must be between 1 and the {count} governors", err=True)
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
        client, governors = governed_deployment(w3, keys, threshold, give_gas, governors=named)
    except ChainError as exc:
        _fail(exc)
    out.write_text(client.deployment.model_dump_json(indent=2) + "\n")
    typer.echo(f"registry       {client.deployment.registry}")
    typer.echo(f"authorizations {client.deployment.authorizations}")
    typer.echo(f"receipts       {client.deployment.receipts}")
    typer.echo(f"governors      {', '.join(governors)} ({threshold} of {len(governors)})")
    typer.echo(f"wrote {out}")


@chain.command("fund")
def fund(
    rpc: str = typer.Option(..., help="JSON-RPC URL of a development chain (anvil)"),
    account: list[str] = typer.Argument(..., help="address, or a `dcp keys export-public` JSON file"),
    ether: int = typer.Option(100, help="how much each gets"),
) -> None:
    """Development chains only: send gas money from the chain's first unlocked account (on a consortium
    chain, accounts are funded at genesis or by its operator)."""
    w3 = _web3(rpc)
    if not w3.eth.accounts:
        typer.echo("error: the chain has no unlocked account to fund from", err=True)
        raise typer.Exit(2)
    for a in account:
        addr = _address(a)
        w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(
            {"from": w3.eth.accounts[0], "to": w3.to_checksum_address(addr), "value": w3.to_wei(ether, "ether")}))
        typer.echo(f"{addr}: {w3.from_wei(w3.eth.get_balance(addr), 'ether')} ether")


def _governor(rpc: str, registry: str, keystore: Path | None, passphrase_file: Path | None):  # noqa: ANN202
    from contracts.client import ChainClient
    from contracts.errors import ChainError

    if keystore is None:
        typer.echo("error: a governor signs: --keystore (and --passphrase-file)", err=True)
        raise typer.Exit(2)
    acct = _keystore_account(keystore, passphrase_file)
    try:
        return ChainClient.connect(_web3(rpc), registry, signers={acct.address: acct}), acct.address
    except ChainError as exc:
        _fail(exc)


def _outcome(what: str, o) -> str:  # noqa: ANN001 - ProposalOutcome
    return f"proposal {o.proposal_id} ({what}): {'executed' if o.executed else 'pending'} after {o.approvals} approval(s)"


@chain.command("admit")
def admit(
    member: list[str] = typer.Option(..., "--member", help="ROLE=FILE: a role (department, bank, regulator, "
                                     "coordinator, researcher) and the member's `dcp keys export-public` JSON; repeat"),
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    registry: str = typer.Option(..., help="Registry address"),
    keystore: Path = keystore_opt, passphrase_file: Path = pass_opt,
) -> None:
    """A governor proposes admitting members (proof of possession checked); each proposal counts its
    approval. Other governors approve with `dcp chain approve` until the threshold is met."""
    from contracts.errors import ChainError
    from contracts.models import MemberAdmission, Role
    from protocols.crypto.keystore import PublicIdentity

    client, gov = _governor(rpc, registry, keystore, passphrase_file)
    for item in member:
        role, _, file = item.partition("=")
        try:
            pub = PublicIdentity.model_validate_json(Path(file).read_text(encoding="utf-8"))
            admission = MemberAdmission(
                account=pub.chain_address, role=Role[role.upper()], name=pub.member,
                sm2_public_key=bytes.fromhex(pub.sm2_public_key), bls_public_key=bytes.fromhex(pub.bls_public_key),
                bls_pop=bytes.fromhex(pub.bls_pop))
            typer.echo(_outcome(f"admit {pub.member} as {role}", client.propose_add_member(gov, admission)))
        except (KeyError, OSError, ValueError, ChainError) as exc:
            _fail(exc)


@chain.command("approve")
def approve(
    proposal: list[int] = typer.Argument(None, help="proposal id(s)"),
    pending: bool = typer.Option(False, "--pending", help="every proposal not executed yet (review them first: "
                                 "`dcp chain proposals`)"),
    rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
    registry: str = typer.Option(..., help="Registry address"),
    keystore: Path = keystore_opt, passphrase_file: Path = pass_opt,
) -> None:
    """A governor approves governance proposals; each executes once the threshold is met."""
    from contracts.errors import ChainError

    client, gov = _governor(rpc, registry, keystore, passphrase_file)
    if pending:
        proposal = [p["id"] for p in _proposals(client) if not p["executed"]]
    for pid in proposal or []:
        try:
            typer.echo(_outcome("approve", client.approve_proposal(gov, pid)))
        except ChainError as exc:
            _fail(exc)


def _proposals(client) -> list[dict]:  # noqa: ANN001 - ChainClient
    reg = client.registry.functions
    out = []
    for i in range(reg.proposalCount().call()):
        kind, proposer, executed, payload = reg.proposal(i).call()
        out.append({"id": i, "kind": int(kind), "proposer": proposer, "executed": bool(executed),
                    "approvals": int(reg.approvalCount(i).call())})
    return out


@chain.command("proposals")
def proposals(rpc: str = typer.Option(..., help="JSON-RPC URL of the chain"),
              registry: str = typer.Option(..., help="Registry address")) -> None:
    """The Registry's governance proposals: id, kind, proposer, approvals, executed (JSON lines)."""
    from contracts.client import ChainClient

    for p in _proposals(ChainClient.connect(_web3(rpc), registry)):
        typer.echo(json.dumps(p))


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
