"""Platform-wide settings (one pydantic-settings model; services define their own the same way).

Values come, in order of precedence, from explicit arguments, environment variables
prefixed ``DCP_``, and a TOML/YAML file named by ``DCP_CONFIG``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_root() -> Path:
    """The checkout this package runs from (holds contracts/, scenarios/ …)."""
    return Path(__file__).resolve().parent.parent


class DcpSettings(BaseSettings):
    """Settings shared by the CLI and the runners."""

    model_config = SettingsConfigDict(env_prefix="DCP_", extra="ignore")

    log_level: str = "INFO"
    work_dir: Path = Field(default_factory=lambda: project_root() / "var")
    host: str = "127.0.0.1"
    anvil_bin: Path = Field(default_factory=lambda: project_root() / "contracts/node_modules/.bin/anvil")
    cast_bin: Path = Field(default_factory=lambda: project_root() / "contracts/node_modules/.bin/cast")
    solcjs_bin: Path = Field(default_factory=lambda: project_root() / "contracts/node_modules/.bin/solcjs")
    party_timeout_s: float = 600.0
