"""A local federation from one config file: anvil, the contracts, the coordinator and every node,
each in its own process with its own database and keys.

``dcp up --config federation.yaml`` calls :func:`up`, which writes a state file (pids, URLs,
addresses) that ``dcp down`` (:func:`down`) uses to stop everything. With ``chain.rpc_url`` set and
real host names the same file describes a federation across machines (each machine starts the
members whose ``host`` it owns; see ``coordinator/examples/federation.yaml``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.net import free_port
from common.procs import kill_group
from common.settings import project_root
from common.yamlfile import load_yaml_model
from coordinator.errors import FederationError, InvalidFederationConfig

STATE_FILE = "federation.state.json"
ROLES = {"department": 1, "bank": 2, "regulator": 3, "coordinator": 4, "researcher": 5}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Model):
    name: str
    file: Path
    key_column: str | None = None
    description: str = ""
    columns: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Column hints: dtype, grade (1-4), category, description."""


class MemberConfig(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    role: Literal["department", "bank", "regulator", "researcher"]
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, lt=65536)
    """0 = a free port."""
    console_port: int = Field(default=0, ge=0, lt=65536)
    """The node's officers' console (HTTPS; console.node.listener); 0 = a free port."""
    node: dict[str, Any] = Field(default_factory=dict)
    """More of the node's settings (``nodes.settings.NodeSettings``, e.g. ``regulator_console_url``,
    ``console_page_size``), written into its ``node.yaml`` over the launcher's own."""
    policy: dict[str, Any] = Field(default_factory=dict)
    datasets: list[DatasetConfig] = Field(default_factory=list)


class ChainConfig(_Model):
    rpc_url: str | None = None
    """None: start a local anvil."""
    registry: str | None = None
    """With rpc_url: an existing deployment; None deploys the contracts."""
    governors: int = Field(default=3, ge=1)
    threshold: int = Field(default=2, ge=1)


class CoordinatorConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, lt=65536)
    node_timeout_s: float = 15.0
    poll_interval_s: float = 0.5
    authorization_mode: Literal["auto", "per_owner", "bls_aggregate"] = "auto"
    """See ``CoordinatorSettings.authorization_mode``: auto = one aggregated BLS authorization when every
    owner has a BLS key (members admitted by ``dcp up`` all have one), else per-owner approvals on chain."""


class FederationConfig(_Model):
    name: str = "local"
    work_dir: Path = Path("var/federation")
    chain: ChainConfig = Field(default_factory=ChainConfig)
    coordinator: CoordinatorConfig = Field(default_factory=CoordinatorConfig)
    members: list[MemberConfig] = Field(min_length=2)
    scrypt_n: int = 2**14
    start_timeout_s: float = Field(60.0, gt=0)
    """How long each node and the coordinator may take to answer its first health check."""
    gmtls: Literal[True] = True
    """Every service serves only 国密 mutual TLS (TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3) with a certificate
    carrying its member's SM2 identity key; peers are accepted by their key in the Registry. Always on:
    every member-facing route takes its caller from the key proved in the handshake (plain HTTP has none)."""

    @model_validator(mode="after")
    def _check(self) -> FederationConfig:
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique: {names}")
        if self.chain.threshold > self.chain.governors:
            raise ValueError("chain.threshold cannot exceed chain.governors")
        for h in [self.coordinator.host, *(m.host for m in self.members)]:
            if h in ("0.0.0.0", "::", "[::]"):
                raise ValueError("never bind all interfaces; name the address")
        return self


def load_federation_config(path: str | Path) -> FederationConfig:
    """Load and validate a federation file; relative paths are relative to it."""
    path = Path(path)
    cfg = load_yaml_model(path, FederationConfig, InvalidFederationConfig)
    base = path.parent.resolve()
    if not cfg.work_dir.is_absolute():
        cfg.work_dir = (base / cfg.work_dir).resolve()
    for m in cfg.members:
        for d in m.datasets:
            if not d.file.is_absolute():
                d.file = (base / d.file).resolve()
            if not d.file.is_file():
                raise InvalidFederationConfig(f"{path}: dataset file of {m.name}/{d.name} not found: {d.file}")
    return cfg


class FederationState(BaseModel):
    """What ``dcp down`` needs, and what clients need to find the federation."""

    name: str
    work_dir: Path
    rpc_url: str
    registry: str
    coordinator_url: str
    coordinator_member: str = "coordinator"
    """The coordinator's member name in the Registry (its TLS key is pinned by it)."""
    nodes: dict[str, str]
    pids: dict[str, int]
    keys_dir: Path
    passphrase_files: dict[str, Path] = {}
    """One 0600 passphrase file per keystore (members, the coordinator and the governors)."""
    officer_password_files: dict[str, dict[str, Path]] = {}
    """Member -> officer name -> 0600 file with the password of the officers ``dcp up`` created."""
    consoles: dict[str, str] = {}
    """Member -> the URL of its node's officers' console (HTTPS; password + one-time code)."""
    accounts: dict[str, str]
    commands: dict[str, list[str]] = {}
    """How each service process was started (``respawn`` restarts one the same way)."""
    gmtls: bool = True
    """The services speak only 国密 mutual TLS; clients use :func:`client_for`."""

    def passphrase_of(self, name: str) -> str:
        """The keystore passphrase of member (or governor) ``name``."""
        path = self.passphrase_files.get(name)
        if path is None:
            raise FederationError(f"no passphrase file for {name!r} in this federation")
        return path.read_text(encoding="utf-8").strip()


def transport_for(state: FederationState, member: str) -> httpx.BaseTransport | None:
    """A 国密 TLS transport acting as ``member`` (its certificate beside its keystore) that reaches every
    service of the federation, pinning each one's SM2 key: from its certificate when this host holds it
    (``dcp up`` writes them all), else the key the chain's Registry holds for it (a member's own host,
    set up by :func:`connect`); None (plain HTTP) without ``gmtls``."""
    if not state.gmtls:
        return None
    from protocols.gmtls.certs import certificate_public_key, credential_paths, load_credentials
    from protocols.gmtls.client import GmTlsTransport, pins
    from protocols.gmtls.config import member_pins

    services = {state.coordinator_member: state.coordinator_url, **state.nodes}
    local = {url: certificate_public_key(cert.read_bytes()) for name, url in services.items()
             if (cert := credential_paths(state.keys_dir, name)[0]).is_file()}
    remote = {name: url for name, url in services.items() if url not in local}
    by_cert = pins(local)
    by_chain = None
    if remote:
        directory = registry_directory(state.rpc_url, state.registry)
        try:  # read the Registry now, not inside the first handshake (a server gives a handshake 10 s)
            directory.refresh()
        except Exception:  # noqa: BLE001 — the pins read it again on use and refuse while it cannot be read
            pass
        by_chain = member_pins(directory, remote)

    def server_key(host: str, port: int) -> bytes | None:
        key = by_cert(host, port)
        return key if key is not None or by_chain is None else by_chain(host, port)

    return GmTlsTransport(load_credentials(*credential_paths(state.keys_dir, member)), server_key)


def registry_directory(rpc_url: str, registry: str) -> Any:
    """A ``KeyDirectory`` of the members' SM2 keys read from the Registry at ``registry`` (lazily)."""
    from protocols.identity import member_directory

    def read() -> list[Any]:
        from web3 import HTTPProvider, Web3

        from contracts.client import ChainClient

        return ChainClient.connect(Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 30})), registry).members()

    return member_directory(read, ttl_s=60.0)


def connect(directory: Path, *, member: str, keys_dir: Path, rpc_url: str, registry: str, coordinator_url: str,
            nodes: Mapping[str, str], passphrase_file: Path | None = None,
            officers: Mapping[str, Path] | None = None, coordinator_member: str = "coordinator") -> FederationState:
    """Write one host's view of a federation it did not start (``dcp connect``): the chain, the
    coordinator's and the nodes' URLs, this member's keys and (optionally) its keystore passphrase file
    and officers' password files, so that ``dcp job``/``dcp node`` commands run with
    ``DCP_FEDERATION_DIR=<directory>`` reach every service over 国密 TLS as ``member``, pinning each
    server's key from the Registry. Nothing is started and no pid is kept (``dcp down`` refuses it)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = FederationState(
        name=f"{member}@{registry}", work_dir=directory.resolve(), rpc_url=rpc_url, registry=registry,
        coordinator_url=coordinator_url, coordinator_member=coordinator_member, nodes=dict(nodes), pids={},
        keys_dir=keys_dir.resolve(), accounts={},
        passphrase_files={member: passphrase_file.resolve()} if passphrase_file else {},
        officer_password_files={member: {k: v.resolve() for k, v in (officers or {}).items()}},
    )
    path = directory / STATE_FILE
    path.write_text(state.model_dump_json(indent=2))
    path.chmod(0o600)
    return state


def client_for(state: FederationState, member: str, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` over :func:`transport_for` (a plain one without ``gmtls``)."""
    return httpx.Client(transport=transport_for(state, member), **kwargs)


def secret_file(path: Path, make: Any = lambda: secrets.token_urlsafe(24)) -> Path:
    """``path`` holding a fresh random secret (created 0600 if missing); returned as is otherwise."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    path.chmod(0o600)
    return path


def node_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a node starts with: ``environ``, the project on the path, and the warm engine
    on (``DCP_NODE_WARM_ENGINE=1``) unless ``environ`` says otherwise (``DCP_NODE_WARM_ENGINE=0``)."""
    return {"DCP_NODE_WARM_ENGINE": "1", **environ, "PYTHONPATH": str(project_root())}


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    fh = log.open("ab")
    return subprocess.Popen(
        args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        cwd=project_root(), start_new_session=True,
    )


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None, what: str, log: Path, timeout: float = 60.0,
               http: Any = httpx) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise FederationError(f"{what} exited with {proc.returncode}:\n{tail}")
        try:
            # 5 s an attempt: a 国密 TLS handshake with a node still importing on a loaded machine (load ≈ 20
            # on 2 cores) took over 1 s, and every attempt of a minute timed out
            if http.get(url, timeout=min(5.0, max(1.0, deadline - time.monotonic()))).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise FederationError(f"{what} did not answer on {url} within {timeout:.0f}s")


def up(cfg: FederationConfig, on_step: Any = None) -> FederationState:
    """Bring the federation up; on any failure everything started so far is stopped again."""
    say = on_step or (lambda msg: None)
    work = cfg.work_dir
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    work.chmod(0o700)
    if (work / STATE_FILE).exists():
        raise FederationError(f"a federation is already up in {work} (run dcp down first)")
    pids: dict[str, int] = {}
    try:
        return _up(cfg, work, pids, say)
    except BaseException:
        for pid in reversed(list(pids.values())):
            kill_group(pid, 5.0, reap=True)
        raise


def governed_deployment(w3: Any, governor_keys: list[Any], threshold: int, fund: Any,
                        registry: str | None = None, governors: list[str] | None = None) -> tuple[Any, list[str]]:
    """The contracts governed by ``governor_keys`` (keystore ``MemberKeys``): deployed by the first
    governor (or attached at ``registry``), every governance transaction signed locally with the
    governor's own key and sent raw. ``fund(address)`` gives each governor gas (a dev chain's funder).
    ``governors``: across hosts, every governor's address (the keys here sign only for their own).
    Returns the ChainClient (signing as any governor here) and the governors' addresses."""
    from eth_account import Account

    from contracts.client import ChainClient

    signers = {}
    for k in governor_keys:
        acct = Account.from_key(k.chain_private_key)
        signers[acct.address] = acct
        fund(acct.address)
    deployer = next(iter(signers))
    governors = list(governors) if governors else list(signers)
    if registry:
        return ChainClient.connect(w3, registry, signers=signers), governors
    return ChainClient.deploy(w3, deployer, governors, threshold, signers=signers), governors


def _up(cfg: FederationConfig, work: Path, pids: dict[str, int], say: Any) -> FederationState:
    from web3 import HTTPProvider, Web3

    from contracts.models import MemberAdmission, Role
    from coordinator.chain import connect
    from protocols.crypto.keystore import create_keystore, load_keystore
    from protocols.gmtls.certs import write_credentials
    from protocols.manifest import dataset_chain_id

    logs = work / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    keys_dir = work / "keys"
    keys_dir.mkdir(exist_ok=True, mode=0o700)
    env = {**os.environ, "PYTHONPATH": str(project_root())}
    pass_files: dict[str, Path] = {}

    def keystore(name: str) -> Any:
        """``name``'s keystore, created on first use with a passphrase of its own (0600 file)."""
        pass_files[name] = secret_file(keys_dir / f"{name}.passphrase")
        passphrase = pass_files[name].read_text().strip()
        path = keys_dir / f"{name}.keystore.json"
        if path.exists():
            return load_keystore(path, passphrase)
        return create_keystore(keys_dir, name, passphrase, scrypt_n=cfg.scrypt_n)[1]

    # chain
    if cfg.chain.rpc_url is None:
        from contracts.anvil import AnvilNode

        anvil = AnvilNode(accounts=max(10, cfg.chain.governors + 1))
        anvil.start()
        assert anvil.pid is not None
        pids["anvil"] = anvil.pid
        rpc_url = anvil.url
        say(f"anvil on {rpc_url}")
    else:
        rpc_url = cfg.chain.rpc_url
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
    # the governors are keystore accounts of their own; the chain's development accounts only fund
    funder = w3.eth.accounts[0] if cfg.chain.rpc_url is None else None

    def fund(addr: str) -> None:
        if funder is not None and w3.eth.get_balance(addr) == 0:
            w3.eth.send_transaction({"from": funder, "to": addr, "value": w3.to_wei(100, "ether")})

    gov_keys = [keystore(f"governor-{i + 1}") for i in range(cfg.chain.governors)]
    admin, governors = governed_deployment(w3, gov_keys, cfg.chain.threshold, fund, cfg.chain.registry)
    if not cfg.chain.registry:
        say(f"contracts deployed: Registry {admin.deployment.registry}")
    registry = admin.deployment.registry

    # keys, funding, admission (proposed and approved by the governors' own signed transactions)
    keys = {}
    addresses: dict[str, str] = {}
    members = [("coordinator", "coordinator")] + [(m.name, m.role) for m in cfg.members]
    for name, role in members:
        k = keystore(name)
        keys[name] = k
        if cfg.gmtls:  # the member's TLS certificate carries its SM2 identity key (the Registry's)
            write_credentials(keys_dir, name, k.sm2.private_key)
        addr = k.public.chain_address
        addresses[name] = addr
        if admin.member(addr) is None:
            fund(addr)
            admin.admit(governors, MemberAdmission(
                account=addr, role=Role(ROLES[role]), name=name,
                sm2_public_key=bytes.fromhex(k.public.sm2_public_key),
                bls_public_key=bytes.fromhex(k.public.bls_public_key), bls_pop=bytes.fromhex(k.public.bls_pop),
            ))
    say(f"{len(members)} members admitted by governance ({cfg.chain.threshold} of {cfg.chain.governors})")

    # ports and URLs
    coord_port = cfg.coordinator.port or free_port(cfg.coordinator.host)
    scheme = "https" if cfg.gmtls else "http"  # every service speaks 国密 TLS when the federation does
    coord_url = f"{scheme}://{cfg.coordinator.host}:{coord_port}"
    node_urls: dict[str, str] = {}
    node_cfgs: dict[str, Path] = {}
    officers: dict[str, dict[str, Path]] = {}
    consoles: dict[str, str] = {}
    for m in cfg.members:
        port = m.port or free_port(m.host)
        node_urls[m.name] = f"{scheme}://{m.host}:{port}"
        d = work / "nodes" / m.name
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        d.chmod(0o700)
        policy_file = d / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(m.policy))
        node_cfgs[m.name] = d / "node.yaml"
        console_port = m.console_port or free_port(m.host)
        consoles[m.name] = f"https://{m.host}:{console_port}"
        node_cfgs[m.name].write_text(yaml.safe_dump({  # the passphrase comes from the member's 0600 file
            "name": m.name, "host": m.host, "port": port, "work_dir": str(d),
            "console_host": m.host, "console_port": console_port,
            "policy_file": str(policy_file), "keystore_path": str(keys_dir / f"{m.name}.keystore.json"),
            "keystore_passphrase_file": str(pass_files[m.name]),
            "chain_rpc_url": rpc_url, "chain_registry": registry, "coordinator_url": coord_url,
            **_tls_section(cfg, keys_dir, m.name), **m.node,
        }))
        officers[m.name] = _bootstrap_officers(node_cfgs[m.name], d / "officers",
                                               REQUESTER_OFFICERS if m.role == "bank" else None)
    state = FederationState(
        name=cfg.name, work_dir=work, rpc_url=rpc_url, registry=registry, coordinator_url=coord_url,
        nodes=node_urls, pids=pids, keys_dir=keys_dir, passphrase_files=pass_files,
        officer_password_files=officers, accounts=addresses, gmtls=cfg.gmtls, consoles=consoles,
    )
    http = {name: client_for(state, name) for name, _ in members}  # each acts as its own member

    # nodes
    procs = {}
    commands: dict[str, list[str]] = {}
    for m in cfg.members:
        log = logs / f"{m.name}.log"
        commands[m.name] = [sys.executable, "-m", "dcp", "node", "start", "--config", str(node_cfgs[m.name])]
        procs[m.name] = _spawn(commands[m.name], log, node_env(os.environ))
        pids[m.name] = procs[m.name].pid
    for m in cfg.members:
        _wait_http(f"{node_urls[m.name]}/health", procs[m.name], f"node {m.name}", logs / f"{m.name}.log",
                   cfg.start_timeout_s, http=http[m.name])
    say(f"{len(cfg.members)} nodes up")

    # datasets: ingest on the node, register on chain from the owner's own account
    for m in cfg.members:
        owner = connect(rpc_url, registry, keys[m.name].chain_private_key)
        steward = (_login(node_urls[m.name], "steward", officers[m.name]["steward"], http[m.name])
                   if m.datasets else "")
        for ds in m.datasets:
            with ds.file.open("rb") as fh:
                fields = {"name": ds.name, "description": ds.description, "columns": json.dumps(ds.columns)}
                if ds.key_column:
                    fields["key_column"] = ds.key_column
                r = http[m.name].post(f"{node_urls[m.name]}/datasets/upload", data=fields,
                                      files={"file": (ds.file.name, fh)},
                                      headers={"Authorization": f"Bearer {steward}"}, timeout=300)
            if r.status_code >= 400:
                raise FederationError(f"ingesting {m.name}/{ds.name} failed: {r.text[:300]}")
            entry = http[m.name].get(f"{node_urls[m.name]}/catalog/{ds.name}", timeout=30).json()
            did = dataset_chain_id(m.name, ds.name)
            if admin.dataset(did) is None:
                owner.register_dataset(addresses[m.name], did, bytes.fromhex(entry["schema_hash"]), entry["max_grade"])
    say("datasets ingested and registered on chain")

    # coordinator
    cdir = work / "coordinator"
    cdir.mkdir(exist_ok=True, mode=0o700)
    ccfg = cdir / "coordinator.yaml"
    ccfg.write_text(yaml.safe_dump({
        "host": cfg.coordinator.host, "port": coord_port, "work_dir": str(cdir), "rpc_url": rpc_url,
        "registry_address": registry, "keystore_path": str(keys_dir / "coordinator.keystore.json"),
        "keystore_passphrase_file": str(pass_files["coordinator"]),
        "nodes": node_urls, "node_timeout_s": cfg.coordinator.node_timeout_s,
        "poll_interval_s": cfg.coordinator.poll_interval_s, "authorization_mode": cfg.coordinator.authorization_mode,
        **_tls_section(cfg, keys_dir, "coordinator"),
    }))
    clog = logs / "coordinator.log"
    commands["coordinator"] = [sys.executable, "-m", "coordinator", "--config", str(ccfg)]
    cproc = _spawn(commands["coordinator"], clog, env)
    pids["coordinator"] = cproc.pid
    _wait_http(f"{coord_url}/health", cproc, "coordinator", clog, cfg.start_timeout_s, http=http["coordinator"])
    http["coordinator"].post(f"{coord_url}/members/sync", timeout=60).raise_for_status()
    status = http["coordinator"].post(f"{coord_url}/catalog/refresh", timeout=60).json()
    for client in http.values():
        client.close()
    bad = {k: v for k, v in status.items() if v != "ok"}
    if bad:
        raise FederationError(f"catalog pull failed: {bad}")
    say(f"coordinator on {coord_url}")

    state.commands, state.pids = commands, dict(pids)
    (work / STATE_FILE).write_text(state.model_dump_json(indent=2))
    return state


def _tls_section(cfg: FederationConfig, keys_dir: Path, member: str) -> dict[str, Any]:
    """The ``tls`` settings of ``member``'s service (known keys from the Registry), or nothing."""
    if not cfg.gmtls:
        return {}
    from protocols.gmtls.certs import credential_paths

    cert, key = credential_paths(keys_dir, member)
    return {"tls": {"cert": str(cert), "key": str(key)}}


OFFICERS = {"steward": ["steward"], "steward2": ["steward"], "approver": ["approver"], "auditor": ["auditor"],
            "admin": ["admin"]}
"""The officers ``dcp up`` creates on every node (two stewards: policy and grade changes take two)."""
REQUESTER_OFFICERS = {"analyst": ["analyst"]}
"""And on a bank's node: the analyst who submits jobs and reads their reports (the requester's console)."""


def _bootstrap_officers(node_cfg: Path, directory: Path, extra: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Create the node's officers (before it starts) with random passwords in 0600 files."""
    from console.node.totp import SecondFactor
    from nodes.db import init_db, make_engine
    from nodes.services.officers import OfficerService, private_file_secret
    from nodes.settings import load_node_settings

    directory.mkdir(exist_ok=True, mode=0o700)
    s = load_node_settings(node_cfg)
    s.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(s.resolved_database_url())
    try:
        init_db(engine)
        svc = OfficerService(s.name, engine, private_file_secret(s.work_dir / "session.key"),
                             scrypt_n=s.officer_scrypt_n)
        have = {o.name for o in svc.list()}
        out = {}
        factor = SecondFactor(engine, f"dcp {s.name}")
        for name, roles in {**OFFICERS, **(extra or {})}.items():
            out[name] = secret_file(directory / f"{name}.password")
            if name not in have:
                svc.add(name, roles, out[name].read_text().strip())
            # the console's second factor: the TOTP secret an officer's authenticator app would hold
            secret_file(directory / f"{name}.totp", lambda officer=name: factor.enroll(officer))
        return out
    finally:
        engine.dispose()


def _login(node_url: str, officer: str, password_file: Path, http: Any = httpx) -> str:
    """A session token of ``officer`` at ``node_url`` (``http``: the 国密 TLS client of a federation that speaks it)."""
    r = http.post(f"{node_url}/officers/login", timeout=60,
                   json={"name": officer, "password": password_file.read_text().strip()})
    if r.status_code >= 400:
        raise FederationError(f"officer {officer} could not log in at {node_url}: {r.text[:200]}")
    return r.json()["token"]


def officer_token(state: FederationState, member: str, officer: str = "steward") -> str:
    """A session token of an officer ``dcp up`` created on ``member``'s node (for scripts and demos)."""
    files = state.officer_password_files.get(member, {})
    if officer not in files:
        raise FederationError(f"dcp up made no officer {officer!r} on {member}'s node")
    return _login(state.nodes[member], officer, files[officer], client_for(state, member))


def read_state(work_dir: str | Path) -> FederationState:
    """The state file of the federation in ``work_dir``."""
    path = Path(work_dir) / STATE_FILE
    if not path.is_file():
        raise FederationError(f"no federation is up in {work_dir} (no {STATE_FILE})")
    return FederationState.model_validate_json(path.read_text())


def respawn(work_dir: str | Path, name: str, timeout: float = 60.0) -> int:
    """Start service ``name`` (the coordinator or a node) again as ``dcp up`` did; its new pid."""
    state = read_state(work_dir)
    if name not in state.commands:
        raise FederationError(f"{name!r} is not a service of this federation ({', '.join(state.commands)})")
    # each service reads its keystore passphrase from its own 0600 file (named in its config)
    env = {**os.environ, "PYTHONPATH": str(project_root())} if name == "coordinator" else node_env(os.environ)
    log = state.work_dir / "logs" / f"{name}.log"
    proc = _spawn(state.commands[name], log, env)
    url = state.coordinator_url if name == "coordinator" else state.nodes[name]
    with client_for(state, name) as http:
        _wait_http(f"{url}/health", proc, name, log, timeout, http=http)
    state.pids[name] = proc.pid
    (Path(work_dir) / STATE_FILE).write_text(state.model_dump_json(indent=2))
    return proc.pid


def down(work_dir: str | Path) -> list[str]:
    """Stop every process of the federation in ``work_dir`` (coordinator first, anvil last)."""
    state = read_state(work_dir)
    if not state.pids:  # a `dcp connect` view: keep it, it is this host's only record of the federation
        raise FederationError(f"{work_dir} is a view written by `dcp connect` ({state.name}): it started nothing "
                              "and there is nothing to stop from it; stop this host's node where it runs")
    order = ["coordinator", *[n for n in state.pids if n not in ("coordinator", "anvil")], "anvil"]
    stopped = []
    for name in order:
        pid = state.pids.get(name)
        if pid is not None:
            kill_group(pid, 5.0, reap=True)
            stopped.append(name)
    (Path(work_dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped


def requester_client(state: FederationState, member: str, **kwargs: Any) -> Any:
    """A ``coordinator.sdk.DcpClient`` acting as ``member`` over 国密 TLS that signs its job requests with
    the member's keystore (for scripts, benches and demos of a federation ``dcp up`` started)."""
    from coordinator.sdk import DcpClient
    from protocols.crypto.keystore import load_keystore

    keys = load_keystore(state.keys_dir / f"{member}.keystore.json", state.passphrase_of(member))
    return DcpClient(state.coordinator_url, signer=keys, transport=transport_for(state, member), **kwargs)


def approver_node(state: FederationState, member: str, timeout: float = 60.0) -> Any:
    """A ``coordinator.nodeclient.NodeClient`` of ``member``'s node carrying its approver's session."""
    from coordinator.nodeclient import NodeClient

    return NodeClient(member, state.nodes[member], timeout=timeout, http=client_for(state, member),
                      token=officer_token(state, member, "approver"))


def approve_as(state: FederationState, job_id: str, member: str, wait_s: float = 60.0) -> dict:
    """Approve ``job_id`` in ``member``'s inbox as its approver (waiting for the request to arrive); a request
    the node already approved (its own member's, ``auto_approve_own_requests``) is returned as it stands."""
    node = approver_node(state, member)
    deadline = time.monotonic() + wait_s
    while (req := node.find_approval(job_id)) is None:
        if time.monotonic() > deadline:
            raise FederationError(f"no approval request for {job_id} reached {member}'s inbox within {wait_s:.0f} s")
        time.sleep(0.2)
    return node.decide(int(req["id"]), True) if req["status"] == "pending" else req
