"""``dcp node``: run a department node and talk to a running one."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _serve_gmtls(fastapi_app: object, settings: object) -> None:
    """Serve the node over 国密 mutual TLS only; its calls to the coordinator pin the coordinator's key."""
    from protocols.gmtls.config import http_client
    from protocols.gmtls.context import server_context
    from protocols.gmtls.server import serve

    tls = settings.tls  # NodeSettings
    ctx_ = fastapi_app.state.ctx
    directory = ctx_.members  # the node's one directory of the members' keys (nodes.context.node_directory)
    try:
        ctx = server_context(tls.credentials(), directory.is_known)
        recorder = getattr(ctx_.approvals, "recorder", None)
        if recorder is not None and getattr(recorder, "coordinator_url", None):
            recorder.http = http_client(tls, directory, {"coordinator": recorder.coordinator_url})
    except (OSError, ValueError) as exc:  # CertificateError is a ValueError
        typer.echo(f"tls: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    directory.keep_fresh()
    _start_gateway(ctx_, settings, directory)
    typer.echo(f"国密 TLS only on https://{settings.host}:{settings.port}: TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3, "
               "client certificate required")
    serve(fastapi_app, settings.host, settings.port, ctx, log_level="warning")


def _start_gateway(ctx: object, settings: object, directory: object) -> None:
    """Start the node's 国密 gateway for engine links (settings ``gateway``); its refusals and what each job's
    links carried (bytes, the gateway's CPU seconds) go to the audit log."""
    from nodes.errors import NodeError
    from nodes.services.gateway import start_node_gateway

    def refused(r: object) -> None:  # protocols.gateway.Refusal
        with ctx.audit.transaction() as session:  # NodeContext
            ctx.audit.append(session, actor="gateway", action="gateway.refuse", target=r.job or "-",
                             detail={"side": r.side, "peer": r.peer, "link": r.link, "reason": r.reason})

    def closed(r: object) -> None:  # protocols.gateway.JobReport: what the job's links cost the gateway
        with ctx.audit.transaction() as session:
            ctx.audit.append(session, actor="gateway", action="gateway.close", target=r.job, detail=r.as_dict())

    try:
        ctx.gateway = start_node_gateway(settings, directory, on_refusal=refused, on_close=closed)
    except (NodeError, OSError, ValueError) as exc:
        typer.echo(f"gateway: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    if ctx.gateway is not None:
        for engine in ctx.steps.local.values():  # SecretFlow's parties link through it (nodes/secretflow/)
            if hasattr(engine, "gateway"):
                engine.gateway = ctx.gateway
        host, port = ctx.gateway.gateway.address
        typer.echo(f"国密 gateway for engine links on {host}:{port} (peers: {', '.join(settings.gateway.peers) or 'none'})")


def _http(member: str | None):  # noqa: ANN202 - httpx or an httpx.Client
    """How the CLI reaches a node: plain ``httpx``, or — when the federation in ``$DCP_FEDERATION_DIR``
    (default ``<work_dir>/federation``) runs 国密 TLS — a client acting as ``member`` (``--member``/``$DCP_MEMBER``)."""
    import os

    import httpx

    from common.settings import DcpSettings
    from coordinator.errors import FederationError
    from federation.launcher import client_for, read_state

    try:
        state = read_state(os.environ.get("DCP_FEDERATION_DIR") or DcpSettings().work_dir / "federation")
    except FederationError:
        return httpx
    if not state.gmtls:
        return httpx
    if not member:
        typer.echo("the federation speaks 国密 TLS only: say which member you act as (--member or $DCP_MEMBER)",
                   err=True)
        raise typer.Exit(2)
    return client_for(state, member)


def register(app: typer.Typer) -> None:
    """Add the ``node`` command group to the CLI."""
    node = typer.Typer(help="A department node: datasets, catalog, policy, approvals, audit log, tasks.", no_args_is_help=True)
    app.add_typer(node, name="node")
    member_opt = typer.Option(None, "--member", "-m", envvar="DCP_MEMBER", help="the member you act as over 国密 TLS")
    register_users(node)
    register_researchers(node, member_opt)

    @node.command("start")
    def start(
        config: Path = typer.Option(None, "--config", "-c", help="node config (.yaml/.toml)"),
        port: int = typer.Option(None, help="override the configured port"),
        host: str = typer.Option(None, help="override the configured address (never 0.0.0.0)"),
        rpc: str = typer.Option(None, "--rpc", help="chain JSON-RPC URL (chain_rpc_url)"),
        registry: str = typer.Option(None, "--registry", help="Registry contract address (chain_registry)"),
        deployment: Path = typer.Option(
            None, "--deployment", help="deployment JSON with registry (and rpc_url), e.g. federation.state.json"
        ),
        coordinator: str = typer.Option(None, "--coordinator", help="coordinator base URL (coordinator_url)"),
    ) -> None:
        """Run the node's HTTP service (uvicorn) until interrupted.

        With a chain (``--rpc`` and ``--registry``, or ``--deployment``, or the config) the node approves
        on chain, anchors its audit head there and executes tasks; the keystore passphrase comes from
        ``keystore_passphrase_file`` (a 0600 file; never the environment)."""
        import uvicorn

        from nodes.app import create_app
        from nodes.errors import NodeError
        from nodes.settings import load_node_settings

        given = {"port": port, "host": host, "chain_rpc_url": rpc, "chain_registry": registry,
                 "chain_deployment_file": deployment, "coordinator_url": coordinator}
        overrides = {k: v for k, v in given.items() if v is not None}
        try:
            settings = load_node_settings(config, **overrides)
            fastapi_app = create_app(settings)
        except NodeError as exc:
            typer.echo(f"{exc.name}: {exc.detail}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"node {settings.name} on {'https' if settings.tls is not None else 'http'}://{settings.host}:{settings.port}"
            f"{' (国密 TLS)' if settings.tls is not None else ''} (db {settings.resolved_database_url()})"
        )
        chain = fastapi_app.state.ctx.chain
        if chain is not None:
            typer.echo(f"chain-wired as {chain.account}; audit anchors every {settings.anchor_interval_s:g}s")
        listener = None
        if settings.console_port:  # the officers' console: its own HTTPS listener (console.node.listener)
            from console.node.listener import ConsoleListener

            listener = ConsoleListener(fastapi_app.state.ctx, settings.console_host, settings.console_port,
                                       settings.console_page_size).start()
            typer.echo(f"officers' console on {listener.url}/ (TLS certificate SPKI sha256 {listener.spki}; "
                       "password + one-time code)")
        try:
            if settings.tls is None:
                uvicorn.run(fastapi_app, host=settings.host, port=settings.port, log_level="warning")
                return
            _serve_gmtls(fastapi_app, settings)
        finally:
            if listener is not None:
                listener.stop()

    @node.command("ingest")
    def ingest(
        file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or Parquet file"),
        name: str = typer.Option(..., help="dataset name"),
        url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
        key_column: str = typer.Option(None, help="key column (e.g. the USCC)"),
        encoding: str = typer.Option("utf-8"),
        token: str = typer.Option(None, envvar="DCP_NODE_TOKEN", help="a data steward's session token (dcp node login)"),
        member: str = member_opt,
        register_: bool = typer.Option(False, "--register", help="then register it on chain (dcp node register)"),
    ) -> None:
        """Upload a file to a running node and print its quality summary (a data steward's session)."""

        data = {"name": name, "encoding": encoding}
        if key_column:
            data["key_column"] = key_column
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with file.open("rb") as fh:
            r = _http(member).post(
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
        if register_:
            _register(url, name, headers, member)

    @node.command("register")
    def register_cmd(
        name: str = typer.Argument(..., help="the dataset, as ingested"),
        url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
        token: str = typer.Option(None, envvar="DCP_NODE_TOKEN", help="a data steward's session token (dcp node login)"),
        member: str = member_opt,
    ) -> None:
        """Register an ingested dataset on chain from the node's own account (its id, schema SM3 and highest
        grade): no job can be authorized on a dataset the Registry does not hold. Idempotent."""
        _register(url, name, {"Authorization": f"Bearer {token}"} if token else {}, member)

    def _register(url: str, name: str, headers: dict[str, str], member: str | None) -> None:
        r = _http(member).post(f"{url}/datasets/{name}/register", headers=headers, timeout=180)
        body = r.json()
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{name}: {body['status']} on chain as {body['dataset_id']} (grade {body['grade']}"
                   + (f", tx {body['tx']})" if body.get("tx") else ")"))

    @node.command("catalog")
    def catalog(url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
                member: str = member_opt) -> None:
        """Print a running node's catalog (metadata only)."""
        from rich.console import Console
        from rich.table import Table

        r = _http(member).get(f"{url}/catalog", timeout=30)
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

    @node.command("anchor")
    def anchor(url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
               token: str = typer.Option(None, envvar="DCP_NODE_TOKEN",
                                         help="an admin officer's session token (dcp node login)"),
               member: str = member_opt) -> None:
        """Anchor the node's audit head now (on chain when the node is chain-wired)."""

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = _http(member).post(f"{url}/audit/anchor", headers=headers, timeout=120)
        body = r.json()
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        typer.echo(f"anchored entry {body['seq']} ({body['hash'][:16]}…) in {body['ref']}")

    @node.command("task")
    def task(job_id: str = typer.Argument(..., help="the job"),
             url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
             member: str = member_opt) -> None:
        """Show this node's task of a job: status, stage, rows, outputs, receipt."""

        r = _http(member).get(f"{url}/tasks/{job_id}", timeout=30)
        body = r.json()
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        typer.echo(json.dumps(body, ensure_ascii=False, indent=2))


def register_researchers(node: typer.Typer, member_opt: typer.models.OptionInfo) -> None:
    """``dcp node engines`` and ``dcp node researchers add/list``: the engines' services a node runs
    (its ``engines`` settings) and the researchers' accounts on its low side, over the node's officer routes."""
    researchers = typer.Typer(help="Researchers' accounts on the node's low side (an admin officer creates them).",
                              no_args_is_help=True)
    node.add_typer(researchers, name="researchers")
    url_opt = typer.Option("http://127.0.0.1:8700", help="the node's base URL")
    token_opt = typer.Option(None, envvar="DCP_NODE_TOKEN", help="an officer's session token (dcp node login)")

    def call(method: str, url: str, token: str | None, member: str | None, **kw: object) -> object:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = _http(member).request(method, url, headers=headers, timeout=120, **kw)
        try:
            body = r.json()
        except ValueError:
            body = {"error": f"HTTP {r.status_code}", "detail": r.text[:200]}
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        return body

    @node.command("engines")
    def engines(url: str = url_opt, token: str = token_opt, member: str = member_opt) -> None:
        """The engines' services this node runs (e.g. the sandbox's low side) and their state."""
        typer.echo(json.dumps(call("GET", f"{url}/engines", token, member), ensure_ascii=False, indent=2))

    @researchers.command("add")
    def add(email: str = typer.Argument(..., help="the researcher's e-mail (their login)"),
            name: str = typer.Option(..., help="the researcher's name"),
            institution: str = typer.Option("", help="their institution"),
            password_file: Path = typer.Option(None, help="a 0600 file with the initial password (else the node "
                                               "draws one and prints it once)"),
            url: str = url_opt, token: str = token_opt, member: str = member_opt) -> None:
        """Create a researcher's account on the node's low side (an admin officer's token)."""
        body: dict[str, str] = {"email": email, "name": name, "institution": institution}
        if password_file is not None:
            body["password"] = _password(password_file)
        got = call("POST", f"{url}/engines/sandbox/researchers", token, member, json=body)
        typer.echo(f"researcher {got['email']} on the low side {got['url']}:{got['port']}")
        if "password" in got:
            typer.echo(f"initial password (shown once): {got['password']}")

    @researchers.command("list")
    def list_(url: str = url_opt, token: str = token_opt, member: str = member_opt) -> None:
        """The researchers' accounts on the node's low side."""
        for r in call("GET", f"{url}/engines/sandbox/researchers", token, member):
            typer.echo(f"{r['email']}\t{r['name']}\t{r['institution']}")


def _officers(config: Path):  # noqa: ANN202
    """The OfficerService of the node configured in ``config`` (its own database, on this host)."""
    from nodes.db import init_db, make_engine
    from nodes.errors import NodeError
    from nodes.services.officers import OfficerService, private_file_secret
    from nodes.settings import load_node_settings

    try:
        s = load_node_settings(config)
        s.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = make_engine(s.resolved_database_url())
        init_db(engine)
        return OfficerService(s.name, engine, private_file_secret(s.work_dir / "session.key"),
                              session_ttl_s=s.session_ttl_s, scrypt_n=s.officer_scrypt_n)
    except NodeError as exc:
        typer.echo(f"{exc.name}: {exc.detail}", err=True)
        raise typer.Exit(2) from None


def _password(password_file: Path | None) -> str:
    """From a 0600 file (scripts), else asked twice on the terminal; never from the command line."""
    if password_file is not None:
        from nodes.errors import NodeError
        from nodes.settings import read_secret_file

        try:
            return read_secret_file(password_file, "password file")
        except NodeError as exc:
            typer.echo(f"{exc.name}: {exc.detail}", err=True)
            raise typer.Exit(2) from None
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


def register_users(node: typer.Typer) -> None:
    """``dcp node user add/list/disable/passwd`` (on the node's host, against its database) and
    ``dcp node login`` (over the network, for a session token)."""
    user = typer.Typer(help="The node's officers: approvers, data stewards, auditors, admins.", no_args_is_help=True)
    node.add_typer(user, name="user")
    cfg_opt = typer.Option(..., "--config", "-c", help="the node's config (.yaml/.toml)")
    pw_opt = typer.Option(None, "--password-file", help="a 0600 file holding the password (else asked)")

    def fail(exc: Exception) -> None:
        typer.echo(f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(1) from None

    @user.command("add")
    def add(name: str = typer.Argument(..., help="officer name, e.g. director_li"),
            role: list[str] = typer.Option(..., "--role", "-r", help="approver | steward | auditor | admin | analyst (repeat)"),
            config: Path = cfg_opt, password_file: Path = pw_opt) -> None:
        """Create an officer account with one or more roles."""
        from nodes.errors import NodeError

        svc = _officers(config)
        try:
            out = svc.add(name, role, _password(password_file))
        except NodeError as exc:
            fail(exc)
        typer.echo(f"officer {out.name} added ({', '.join(out.roles)})")

    @user.command("list")
    def list_(config: Path = cfg_opt) -> None:
        """The node's officers, their roles and whether they are active."""
        for o in _officers(config).list():
            typer.echo(f"{o.name}\t{','.join(o.roles)}\t{'active' if o.active else 'disabled'}\t{o.created_at:%Y-%m-%d}")

    @user.command("disable")
    def disable(name: str = typer.Argument(...), config: Path = cfg_opt) -> None:
        """Disable an officer; its sessions end at once."""
        from nodes.errors import NodeError

        try:
            _officers(config).disable(name)
        except NodeError as exc:
            fail(exc)
        typer.echo(f"officer {name} disabled; its sessions are ended")

    @user.command("passwd")
    def passwd(name: str = typer.Argument(...), config: Path = cfg_opt, password_file: Path = pw_opt) -> None:
        """Set a new password; the officer's sessions end."""
        from nodes.errors import NodeError

        try:
            _officers(config).set_password(name, _password(password_file))
        except NodeError as exc:
            fail(exc)
        typer.echo(f"password of {name} changed; its sessions are ended")

    @user.command("totp")
    def totp(name: str = typer.Argument(...), config: Path = cfg_opt) -> None:
        """Enrol (or replace) the officer's one-time-code secret for the web console; prints it once."""
        from console.node.totp import SecondFactor
        from nodes.db import make_engine
        from nodes.settings import load_node_settings

        svc = _officers(config)
        if name not in {o.name for o in svc.list()}:
            typer.echo(f"no officer {name!r} on this node", err=True)
            raise typer.Exit(1)
        settings = load_node_settings(config)
        factor = SecondFactor(make_engine(settings.resolved_database_url()), f"dcp {settings.name}")
        secret = factor.enroll(name)
        typer.echo(f"secret (base32): {secret}\n{factor.uri(name, secret)}")

    @node.command("login")
    def login(name: str = typer.Argument(..., help="officer name"),
              url: str = typer.Option("http://127.0.0.1:8700", help="the node's base URL"),
              password_file: Path = pw_opt,
              member: str = typer.Option(None, "--member", "-m", envvar="DCP_MEMBER",
                                         help="the member you act as over 国密 TLS")) -> None:
        """Log in as an officer; prints the session token (use it as DCP_NODE_TOKEN)."""
        password = _password(password_file) if password_file else typer.prompt("password", hide_input=True)
        r = _http(member).post(f"{url}/officers/login", json={"name": name, "password": password}, timeout=30)
        body = r.json()
        if r.status_code >= 400:
            typer.echo(f"{body.get('error')}: {body.get('detail')}", err=True)
            raise typer.Exit(1)
        typer.echo(body["token"])
