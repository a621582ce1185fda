"""``dcp job``: submit, follow, decide on and fetch the results of jobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

COORD_ENV = "DCP_COORDINATOR_URL"
FED_DIR_ENV = "DCP_FEDERATION_DIR"
MEMBER_ENV = "DCP_MEMBER"


def _state(fed_dir: Path | None):  # noqa: ANN202 - FederationState, imported lazily
    from common.settings import DcpSettings
    from federation.launcher import read_state

    return read_state(fed_dir or Path(os.environ.get(FED_DIR_ENV) or DcpSettings().work_dir / "federation"))


def _url(url: str | None, fed_dir: Path | None) -> str:
    if url:
        return url
    if os.environ.get(COORD_ENV):
        return os.environ[COORD_ENV]
    return _state(fed_dir).coordinator_url


def _node_url(member: str, node: str | None, fed_dir: Path | None) -> str:
    if node:
        return node
    nodes = _state(fed_dir).nodes
    if member not in nodes:
        typer.echo(f"UnknownMember: {member!r} is not in the federation (members: {', '.join(nodes)})", err=True)
        raise typer.Exit(2)
    return nodes[member]


def _client(url: str | None, fed_dir: Path | None, member: str | None = None):  # noqa: ANN202 - DcpClient
    """A DcpClient of the coordinator; over 国密 mutual TLS as ``member`` when the federation runs it."""
    from coordinator.sdk import DcpClient

    member = member or os.environ.get(MEMBER_ENV)
    try:
        state = _state(fed_dir)
    except Exception:  # noqa: BLE001 — no federation state: an explicit URL, plain HTTP
        state = None
    if state is None or not state.gmtls:
        return DcpClient(_url(url, fed_dir))
    if not member:
        typer.echo(f"the federation speaks 国密 TLS only: say which member you act as (--member or ${MEMBER_ENV})",
                   err=True)
        raise typer.Exit(2)
    from federation.launcher import transport_for

    return DcpClient(_url(url, fed_dir), transport=transport_for(state, member))


def _signer(member: str, keystore: Path | None, passphrase_file: Path | None, fed_dir: Path | None):  # noqa: ANN202
    """The requester's MemberKeys that sign its job request: ``--keystore``/``--passphrase-file``, else
    the federation state's keystore and 0600 passphrase file of ``member``."""
    from protocols.crypto.keystore import load_keystore

    if keystore is not None:
        from dcp.commands.keys import _passphrase

        return load_keystore(keystore, _passphrase(passphrase_file))
    st = _state(fed_dir)
    return load_keystore(st.keys_dir / f"{member}.keystore.json", st.passphrase_of(member))


def _officer_token(member: str, token: str | None, officer: str, fed_dir: Path | None) -> str | None:
    """``token``, else a session of the officer ``dcp up`` made on ``member``'s node."""
    if token:
        return token
    from federation.launcher import officer_token

    return officer_token(_state(fed_dir), member, officer)


def _fail(exc: Exception) -> None:
    from coordinator.errors import CoordinatorError

    if isinstance(exc, CoordinatorError):
        # a RemoteError carries the coordinator's error name and detail apart: each printed once
        name, detail = getattr(exc, "error", exc.name), getattr(exc, "remote_detail", exc.detail)
        typer.echo(f"{name}: {detail}", err=True)
        raise typer.Exit(1) from None
    raise exc


def register(app: typer.Typer) -> None:
    """Add the ``job`` command group."""
    job = typer.Typer(help="Jobs: submit, list, status, approve/reject (as a department), result.",
                      no_args_is_help=True)
    app.add_typer(job, name="job")
    url_opt = typer.Option(None, "--coordinator", help=f"coordinator URL (or ${COORD_ENV}, or the federation state)")
    fed_opt = typer.Option(None, "--federation-dir", help=f"where `dcp up` or `dcp connect` wrote the federation's "
                           f"state (default ${FED_DIR_ENV}, else <project>/var/federation)")
    member_opt = typer.Option(None, "--member", "-m", help=f"the member you act as over 国密 TLS (or ${MEMBER_ENV})")

    def _watch(client, job_id: str, timeout: float) -> object:  # noqa: ANN001
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table

        def table(st) -> Table:  # noqa: ANN001
            t = Table(title=f"{st.job_id} — {st.state.value}" + (f" ({st.reason})" if st.reason else ""))
            t.add_column("member")
            t.add_column("approval")
            t.add_column("task")
            t.add_column("stage")
            for m in sorted(set(st.approvals) | set(st.tasks)):
                task = st.tasks.get(m, {})
                t.add_row(m, st.approvals.get(m, "-"), task.get("status", "-"), task.get("stage") or "")
            return t

        with Live(console=Console(stderr=True), refresh_per_second=4) as live:
            return client.wait(job_id, timeout=timeout, on_update=lambda st: live.update(table(st)))

    @job.command("submit")
    def submit(
        spec: Path = typer.Argument(..., exists=True, dir_okay=False, help="job spec (.yaml/.json)"),
        wait: bool = typer.Option(False, "--wait", help="follow the job with a live display until it ends"),
        timeout: float = typer.Option(900.0, help="seconds to wait with --wait"),
        url: str = url_opt, fed_dir: Path = fed_opt, member: str = member_opt,
        keystore: Path = typer.Option(None, help="the requester's keystore (default: from the federation state)"),
        passphrase_file: Path = typer.Option(None, help="its passphrase file (0600)"),
    ) -> None:
        """Submit a job spec, signed with the requester's SM2 key; prints the job id."""
        from coordinator.errors import CoordinatorError
        from coordinator.spec import load_spec

        try:
            loaded = load_spec(spec)
            client = _client(url, fed_dir, member or loaded.requester)
            job_id = client.submit(loaded, signer=_signer(loaded.requester, keystore, passphrase_file, fed_dir))
            typer.echo(job_id)
            if wait:
                st = _watch(client, job_id, timeout)
                if st.state.value != "SUCCEEDED":
                    typer.echo(f"{st.state.value}: {st.reason}", err=True)
                    raise typer.Exit(1)
        except CoordinatorError as exc:
            _fail(exc)

    @job.command("list")
    def list_(state: str = typer.Option(None), requester: str = typer.Option(None),
              url: str = url_opt, fed_dir: Path = fed_opt, member: str = member_opt) -> None:
        """Jobs as a table."""
        from rich.console import Console
        from rich.table import Table

        from coordinator.errors import CoordinatorError

        try:
            jobs = _client(url, fed_dir, member).list(state, requester)
        except CoordinatorError as exc:
            _fail(exc)
        # job ids are never cut (they are copied into the next command); the other columns give way
        t = Table()
        t.add_column("job", no_wrap=True, min_width=max((len(j.job_id) for j in jobs), default=3))
        for name in ("kind", "requester", "state", "stage", "updated"):
            t.add_column(name, overflow="fold")
        for j in jobs:
            t.add_row(j.job_id, j.kind, j.requester, j.state.value, j.stage or "", j.updated_at.isoformat(timespec="seconds"))
        Console().print(t)

    @job.command("status")
    def status(job_id: str, watch: bool = typer.Option(False, "--watch", help="live display until it ends"),
               url: str = url_opt, fed_dir: Path = fed_opt, member: str = member_opt) -> None:
        """A job's state, approvals, tasks and transition log (JSON)."""
        from coordinator.errors import CoordinatorError

        try:
            client = _client(url, fed_dir, member)
            st = _watch(client, job_id, 3600) if watch else client.status(job_id)
        except CoordinatorError as exc:
            _fail(exc)
        typer.echo(st.model_dump_json(indent=2))

    @job.command("approve")
    def approve(job_id: str, member: str = typer.Option(..., "--as", help="the department deciding"),
                node: str = typer.Option(None, help="its node URL (default: from the federation state)"),
                token: str = typer.Option(None, envvar="DCP_NODE_TOKEN", help="an approver's session (dcp node login)"),
                fed_dir: Path = fed_opt) -> None:
        """Approve a job as a department's approver, through its node (signed with the node's keys, on chain)."""
        from coordinator.errors import CoordinatorError

        try:
            token = _officer_token(member, token, "approver", fed_dir)
            out = _client("http://unused", fed_dir, member).approve(job_id, member, _node_url(member, node, fed_dir),
                                                                    token=token)
        except CoordinatorError as exc:
            _fail(exc)
        ref = out.get("chain_ref")
        # bls_aggregate: the node signs, the coordinator writes one aggregated authorization on chain
        how = f"chain tx {ref}" if ref else "signed (aggregated by the coordinator)"
        typer.echo(f"{member} approved {job_id} ({how})")

    @job.command("reject")
    def reject(job_id: str, member: str = typer.Option(..., "--as"), reason: str = typer.Option(...),
               node: str = typer.Option(None), token: str = typer.Option(None, envvar="DCP_NODE_TOKEN"),
               fed_dir: Path = fed_opt) -> None:
        """Reject a job as a department's approver, with a reason."""
        from coordinator.errors import CoordinatorError

        try:
            token = _officer_token(member, token, "approver", fed_dir)
            _client("http://unused", fed_dir, member).reject(job_id, member, _node_url(member, node, fed_dir), reason,
                                                             token=token)
        except CoordinatorError as exc:
            _fail(exc)
        typer.echo(f"{member} rejected {job_id}: {reason}")

    @job.command("revoke")
    def revoke(job_id: str, by: str = typer.Option(..., help="the requester"), reason: str = typer.Option(None),
               url: str = url_opt, fed_dir: Path = fed_opt,
               keystore: Path = typer.Option(None, help="the requester's keystore (default: from the federation state)"),
               passphrase_file: Path = typer.Option(None, help="its passphrase file (0600)")) -> None:
        """Withdraw a job (the requester only, signed with its SM2 key); running tasks are stopped."""
        from coordinator.errors import CoordinatorError

        try:
            signer = _signer(by, keystore, passphrase_file, fed_dir)
            st = _client(url, fed_dir, by).revoke(job_id, by, reason, signer=signer)
        except CoordinatorError as exc:
            _fail(exc)
        typer.echo(f"{job_id}: {st.state.value}")

    @job.command("result")
    def result(
        job_id: str, name: str = typer.Argument("metrics", help="output name (metrics, predictions)"),
        keystore: Path = typer.Option(None, exists=True, help="the requester's keystore (default: the federation "
                                      "state's keystore of --member)"),
        passphrase_file: Path = typer.Option(None, help="its passphrase file (0600); else the federation state's "
                                             "file of --member, else $DCP_KEYSTORE_PASSPHRASE, else a prompt"),
        out: Path = typer.Option(None, help="write here instead of stdout"),
        url: str = url_opt, fed_dir: Path = fed_opt, member: str = member_opt,
    ) -> None:
        """Fetch an output and decrypt it with the requester's SM2 key.

        The keystore's passphrase comes from --passphrase-file; else, with no --keystore, from the
        passphrase file the federation state names for --member (`dcp up`, `dcp connect
        --passphrase-file`); else from $DCP_KEYSTORE_PASSPHRASE; else it is asked for."""
        from coordinator.errors import CoordinatorError
        from dcp.commands.keys import _passphrase

        member = member or os.environ.get(MEMBER_ENV)
        try:
            if keystore is None:
                if not member:
                    typer.echo("name the requester: --member (with a federation state) or --keystore", err=True)
                    raise typer.Exit(2)
                st = _state(fed_dir)
                keystore = st.keys_dir / f"{member}.keystore.json"
                passphrase = _passphrase(passphrase_file) if passphrase_file else st.passphrase_of(member)
            else:
                passphrase = _passphrase(passphrase_file)
            data = _client(url, fed_dir, member).result(job_id, name, keystore, passphrase)
        except CoordinatorError as exc:
            _fail(exc)
        if out:
            out.write_bytes(data)
            typer.echo(f"{name}: {len(data)} bytes -> {out}")
        else:
            try:
                typer.echo(json.dumps(json.loads(data), indent=2, ensure_ascii=False))
            except ValueError:
                typer.echo(data.decode(errors="replace"))
