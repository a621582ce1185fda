"""Node settings: one pydantic-settings model, from a YAML/TOML file and ``DCP_NODE_`` env vars.

Precedence (highest first): explicit arguments, environment variables, the config file, defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from common.settings import file_settings_sources, project_root
from nodes.errors import ConfigError
from protocols.gateway.config import GatewaySettings
from protocols.gmtls.config import GmTlsSettings
from protocols.identity import PeerEntry

GIB = 1024**3


class SqlSource(BaseModel):
    """A data source the node's admin named in the settings (never a URL from a request)."""

    model_config = ConfigDict(extra="forbid")

    url: SecretStr
    """SQLAlchemy URL; opened read-only (SQLite: ``mode=ro``; other databases: a read-only transaction)."""
    description: str = ""


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a secret file, refused when the group or others may read or write it."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise ConfigError(f"{what} {path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}") from None


class NodeSettings(BaseSettings):
    """Everything one node process needs to know about itself."""

    model_config = SettingsConfigDict(env_prefix="DCP_NODE_", extra="forbid", env_nested_delimiter="__")

    name: str = "node"
    """Member name of this node (e.g. ``tax``); used in audit entries and anchors."""
    host: str = "127.0.0.1"
    port: int = 8700
    database_url: str = ""
    """SQLAlchemy URL of the node's own database; default: a SQLite file under ``work_dir``."""
    work_dir: Path = Field(default_factory=lambda: project_root() / "var" / "node")
    max_upload_bytes: int = 2 * GIB
    """Uploads larger than this are refused while streaming (413)."""
    upload_chunk_bytes: int = 1024 * 1024
    policy_file: Path | None = None
    """YAML/TOML/JSON policy loaded at start when the database holds none yet."""
    audit_retention_days: int = 180
    """Days the audit log keeps before pruning what is anchored; at least 180 (shorter is refused)."""
    receipt_retry_s: float = 2.0
    """How often a usage receipt the chain could not take is sent again (it waits durably meanwhile)."""
    anchor_file: Path | None = None
    """Audit-head anchors go to this append-only file when no chain anchor is configured."""
    mock_max_rows: int = 1000
    keystore_path: Path | None = None
    """The node's member keystore (protocols.crypto.keystore); approvals are signed with it."""
    keystore_passphrase_file: Path | None = None
    """A file holding the keystore passphrase (first line); it must be 0600 (not readable by group or
    others). The passphrase is never taken from the environment or the command line."""

    # ---------------------------------------------------------------- chain and coordinator
    chain_rpc_url: str | None = None
    """JSON-RPC URL of the permissioned chain; with a registry address the node is chain-wired."""
    chain_registry: str | None = None
    """Address of the Registry contract (Authorizations and Receipts are found from it)."""
    chain_deployment_file: Path | None = None
    """A JSON file with ``registry`` (or ``registry_address``) and optionally ``rpc_url`` — a
    contracts Deployment or the federation state written by ``dcp up``; explicit fields win."""
    coordinator_url: str | None = None
    """Where the coordinator serves job manifests and terms (checked before approving on chain)."""
    coordinator_timeout_s: float = 10.0
    tls: GmTlsSettings | None = None
    gateway: GatewaySettings | None = None
    """The node's 国密 gateway for engine links (``listen_host``/``listen_port`` the other members'
    gateways reach, ``peers``: member -> ``host:port`` of its gateway); it needs ``tls``. Peers' keys come
    from the Registry (see ``nodes/services/gateway.py``)."""
    """国密 mutual TLS (protocols.gmtls): with it the node serves only TLS_SM4_GCM_SM3 and pins the coordinator's key."""
    anchor_interval_s: float = 300.0
    """Anchor the audit head on chain this often (seconds) while the service runs; 0 disables."""
    task_kill_grace_s: float = 5.0
    """How long a stopped party gets between SIGTERM and SIGKILL."""
    warm_engine: bool = False
    """Keep one pre-started SecretFlow party process (engine imported, ~400 MB) that the next task
    takes, so that a job does not wait for the engine's start-up; off by default (tests start many
    nodes). ``dcp up`` turns it on for the nodes it starts."""
    warm_engine_on_demand: bool = False
    """With ``warm_engine``: no warm party at idle. One is started when this node reserves a job's
    ports (it approved a SecretFlow job naming it; the import overlaps the other approvals and the
    authorization), none after a task, and one no job took ends after ``warm_engine_idle_s``."""
    warm_engine_idle_s: float = Field(default=900.0, gt=0)
    """How long an on-demand warm party waits for its job before it ends."""

    # ---------------------------------------------------------------- who may call (see nodes.api.deps)
    peers: list[PeerEntry] = Field(default_factory=list)
    """Members known without a chain (name, role, SM2 key); a chain-wired node asks the Registry instead."""
    identity_cache_s: float = 15.0
    """How long a Registry answer about a peer's key is reused: a member removed or rotated on chain
    is refused at most this many seconds later."""
    session_ttl_s: float = 900.0
    """Lifetime of an officer's session token (``POST /officers/login``)."""
    proposal_ttl_s: float = 86400.0
    """How long a four-eyes proposal (policy, grades) waits for a second officer."""
    require_signed_requests: bool = True
    """File an approval request only with the requester's valid SM2-signed job request."""
    request_max_age_s: float = 900.0
    auto_approve_own_requests: bool = False
    """True: a job this node's own member requested, with a valid SM2 signature over a spec that names
    this node's datasets and columns, is approved at once for those inputs (the requester's signature
    is its consent); the policy and the chain terms are checked as for any approval. False (the
    default, and what ``dcp up`` writes): the node's approver decides, as for any other request."""
    """A signed job request older than this is refused (replays are refused by nonce regardless)."""
    officer_scrypt_n: int = 2**15
    """scrypt cost N for officer passwords (r = 8, p = 1: 32 MiB per guess at the default)."""

    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Companion services of engines, started when the node serves and stopped with it: engine name ->
    that engine's settings (``engines.base.NodeEngine.service``; e.g. the researchers' low side)."""

    # ---------------------------------------------------------------- inputs
    max_body_bytes: int = 1024 * 1024
    """Any request body other than an upload larger than this is refused (413) before it is parsed."""
    max_step_body_bytes: int = 512 * 1024 * 1024
    """The cap of an engine step's body (``/tasks/…``: routes only the coordinator may call,
    behind the 国密 TLS handshake): ciphertexts the coordinator relays grow with the rows."""
    sql_sources: dict[str, SqlSource] = Field(default_factory=dict)
    """Named SQL data sources the admin configured; ``POST /datasets/sql`` reads only from these."""
    docs_enabled: bool = False
    """Serve ``/docs`` and ``/openapi.json`` (off unless enabled)."""

    # ---------------------------------------------------------------- the officers' console (console.node)
    console_port: int | None = None
    """Serve the officers' web console on this port (HTTPS, password + TOTP; console.node.listener); off when unset."""
    console_host: str = "127.0.0.1"
    """Address of the console listener (never all interfaces)."""
    console_page_size: int = Field(default=20, ge=1, le=500)
    """Rows per page of the console's lists."""
    requester_console: bool | None = None
    """Serve the requester's console (a bank analyst's jobs and reports) at ``/requester`` on the console
    listener. None: when this node's member is a ``bank`` in its member directory (the chain's Registry,
    or ``peers``)."""
    regulator_console_url: str | None = None
    """Where the regulator's console is (the requester console links each job to its receipts there)."""

    @field_validator("host", "console_host")
    @classmethod
    def _loopback_or_named(cls, v: str) -> str:
        if v in ("0.0.0.0", "::", "[::]"):
            raise ValueError("a node never binds all interfaces; name the address to listen on")
        return v

    @field_validator("audit_retention_days", "max_upload_bytes", "upload_chunk_bytes", "mock_max_rows",
                     "max_body_bytes", "max_step_body_bytes", "officer_scrypt_n")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be positive")
        return v

    @field_validator("audit_retention_days")
    @classmethod
    def _retention_floor(cls, v: int) -> int:
        if v < 180:
            raise ValueError("the audit log keeps at least 180 days")
        return v

    @field_validator("anchor_interval_s", "task_kill_grace_s", "identity_cache_s", "receipt_retry_s")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must not be negative")
        return v

    @field_validator("coordinator_timeout_s", "session_ttl_s", "proposal_ttl_s")
    @classmethod
    def _positive_float(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be positive")
        return v

    def passphrase(self) -> str | None:
        """The keystore passphrase: the first line of ``keystore_passphrase_file`` (which must be 0600)."""
        if self.keystore_passphrase_file is None:
            return None
        return read_secret_file(self.keystore_passphrase_file, "keystore_passphrase_file")

    def chain_target(self) -> tuple[str, str] | None:
        """``(rpc_url, registry)`` when the node is chain-wired, else None (ConfigError if half-set)."""
        rpc, registry = self.chain_rpc_url, self.chain_registry
        if self.chain_deployment_file is not None:
            import json

            try:
                doc = json.loads(self.chain_deployment_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read chain_deployment_file {self.chain_deployment_file}: {exc}") from None
            if not isinstance(doc, dict):
                raise ConfigError(f"chain_deployment_file {self.chain_deployment_file} is not a JSON object")
            registry = registry or doc.get("registry") or doc.get("registry_address")
            rpc = rpc or doc.get("rpc_url")
        if rpc is None and registry is None:
            return None
        if not rpc or not registry:
            raise ConfigError("a chain-wired node needs both chain_rpc_url and chain_registry (or a deployment file)")
        return str(rpc), str(registry)

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``<work_dir>/<name>.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.work_dir / (self.name + '.db')}"

    def tmp_dir(self) -> Path:
        """Private scratch directory for uploads and extracts."""
        return self.work_dir / "tmp"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return file_settings_sources(settings_cls, init_settings, env_settings)


def load_node_settings(config: Path | None = None, **overrides: Any) -> NodeSettings:
    """Settings from ``config`` (``.yaml``/``.yml``/``.toml``), env vars and ``overrides``.

    Raises ConfigError when the file is missing or of an unknown kind.
    """
    if config is None:
        return NodeSettings(**overrides)
    config = Path(config)
    if not config.is_file():
        raise ConfigError(f"config file not found: {config}")
    suffix = config.suffix.lower()
    if suffix in (".yaml", ".yml"):
        key = "yaml_file"
    elif suffix == ".toml":
        key = "toml_file"
    else:
        raise ConfigError(f"config file must be .yaml, .yml or .toml, not {suffix or 'no suffix'}")
    file_cls = type(
        "NodeSettingsFromFile",
        (NodeSettings,),
        {"model_config": SettingsConfigDict(**{**NodeSettings.model_config, key: config})},
    )
    try:
        loaded = file_cls(**overrides)
    except Exception as exc:  # pydantic ValidationError, YAML/TOML syntax errors
        raise ConfigError(f"invalid node config {config}: {exc}") from exc
    settings = NodeSettings.model_validate(loaded.model_dump())
    # relative paths in a config file are relative to the file
    base = config.parent
    for field in (
        "work_dir", "policy_file", "anchor_file", "keystore_path", "keystore_passphrase_file", "chain_deployment_file"
    ):
        value = getattr(settings, field)
        if value is not None and not value.is_absolute() and field not in overrides:
            setattr(settings, field, (base / value).resolve())
    return settings
