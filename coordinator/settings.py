"""Coordinator settings: one pydantic-settings model, from a YAML file and ``DCP_COORD_`` env vars.

Precedence (highest first): explicit arguments, environment variables, the config file, defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from common.settings import file_settings_sources, project_root
from coordinator.errors import FederationError
from protocols.gmtls.config import GmTlsSettings
from protocols.identity import PeerEntry


class CoordinatorSettings(BaseSettings):
    """Everything the coordinator process needs."""

    model_config = SettingsConfigDict(env_prefix="DCP_COORD_", extra="forbid", env_nested_delimiter="__")

    name: str = "coordinator"
    host: str = "127.0.0.1"
    port: int = 8600
    public_url: str | None = None
    """How nodes reach this coordinator (default http://host:port)."""
    database_url: str = ""
    work_dir: Path = Field(default_factory=lambda: project_root() / "var" / "coordinator")
    rpc_url: str | None = None
    """JSON-RPC of the chain; without it the coordinator cannot authorize jobs."""
    registry_address: str | None = None
    keystore_path: Path | None = None
    """The coordinator's member keystore (its chain account writes authorizations)."""
    keystore_passphrase_file: Path | None = None
    """A 0600 file holding the keystore passphrase (never the environment)."""
    peers: list[PeerEntry] = Field(default_factory=list)
    """Members known without a chain (name, role, SM2 key); with a chain the Registry is asked instead."""
    identity_cache_s: float = Field(default=15.0, ge=0)
    """How long a Registry answer about a caller's key is reused (a removed member is refused at most
    this much later)."""
    require_signed_requests: bool = True
    """Accept a job only with its requester's SM2-signed request (``protocols.signed_request``)."""
    request_max_age_s: float = Field(default=900.0, gt=0)
    docs_enabled: bool = False
    """Serve ``/docs`` and ``/openapi.json`` (off unless enabled)."""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    """A request body larger than this is refused (413) before it is parsed."""
    nodes: dict[str, str] = Field(default_factory=dict)
    """Member name -> node base URL."""
    poll_interval_s: float = Field(default=0.5, gt=0)
    node_timeout_s: float = Field(default=15.0, gt=0)
    """A node that does not answer for this long during a run fails the job."""
    straggler_timeout_s: float = Field(default=120.0, gt=0)
    """A party still running this long after another party of the same job ended its task is stuck
    (the parties of one job end together: a party that outlives its peers waits on a party that has
    left): the job fails, naming it, and its task is stopped."""
    http_timeout_s: float = Field(default=10.0, gt=0)
    tls: GmTlsSettings | None = None
    """国密 mutual TLS (protocols.gmtls): with it the coordinator serves only TLS_SM4_GCM_SM3 and pins each node's key."""
    worker: bool = True
    """Run the background scheduler (off in unit tests that drive it by hand)."""
    authorization_mode: Literal["auto", "per_owner", "bls_aggregate"] = "auto"
    """How the dataset owners' approvals become the authorization on chain (fixed per job at submission):
    ``per_owner`` — each owner's node approves the terms on chain from its own account, then the
    coordinator calls ``authorize``; ``bls_aggregate`` — the owners' nodes only sign, the coordinator
    aggregates their BLS signatures over the approval digest and submits one ``authorizeWithBls``
    (verified on chain with EIP-2537); ``auto`` — ``bls_aggregate`` when every owner of the job's
    datasets has a BLS key in the Registry, else ``per_owner``."""

    @field_validator("host")
    @classmethod
    def _no_wildcard(cls, v: str) -> str:
        if v in ("0.0.0.0", "::", "[::]"):
            raise ValueError("the coordinator never binds all interfaces; name the address to listen on")
        return v

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``<work_dir>/coordinator.db``."""
        return self.database_url or f"sqlite:///{self.work_dir / 'coordinator.db'}"

    def passphrase(self) -> str | None:
        """The keystore passphrase from ``keystore_passphrase_file`` (which must be 0600)."""
        if self.keystore_passphrase_file is None:
            return None
        mode = self.keystore_passphrase_file.stat().st_mode
        if mode & 0o077:
            raise FederationError(f"{self.keystore_passphrase_file} is readable by others; chmod 600 it")
        return self.keystore_passphrase_file.read_text(encoding="utf-8").strip()

    def url(self) -> str:
        """This coordinator's base URL as nodes see it."""
        return self.public_url or f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}"

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


def load_coordinator_settings(config: Path | None = None, **overrides: Any) -> CoordinatorSettings:
    """Settings from a YAML ``config``, env vars and ``overrides`` (FederationError if unusable)."""
    if config is None:
        return CoordinatorSettings(**overrides)
    config = Path(config)
    if not config.is_file():
        raise FederationError(f"coordinator config not found: {config}")
    file_cls = type(
        "CoordinatorSettingsFromFile",
        (CoordinatorSettings,),
        {"model_config": SettingsConfigDict(**{**CoordinatorSettings.model_config, "yaml_file": config})},
    )
    try:
        loaded = file_cls(**overrides)
    except Exception as exc:  # ValidationError, YAML syntax
        raise FederationError(f"invalid coordinator config {config}: {exc}") from exc
    settings = CoordinatorSettings.model_validate(loaded.model_dump())
    for field in ("work_dir", "keystore_path", "keystore_passphrase_file"):
        value = getattr(settings, field)
        if value is not None and not value.is_absolute() and field not in overrides:
            setattr(settings, field, (config.parent / value).resolve())
    return settings
