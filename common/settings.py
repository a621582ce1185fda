"""Platform-wide settings (one pydantic-settings model; services define their own the same way).

Values come, in order of precedence, from explicit arguments, environment variables
prefixed ``DCP_``, and a TOML/YAML file named by ``DCP_CONFIG``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)


def project_root() -> Path:
    """The checkout this package runs from (holds contracts/, scenarios/ …)."""
    return Path(__file__).resolve().parent.parent


def file_settings_sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Explicit arguments, then environment variables, then the YAML or TOML file the model config names.

    Services call this from ``settings_customise_sources`` so that all of them read files alike.
    """
    sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
    if settings_cls.model_config.get("yaml_file"):
        sources.append(YamlConfigSettingsSource(settings_cls))
    if settings_cls.model_config.get("toml_file"):
        sources.append(TomlConfigSettingsSource(settings_cls))
    return tuple(sources)


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
