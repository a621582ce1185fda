"""The ``tls`` section of a node's or the coordinator's settings, and what a service builds from it.

    tls:
      cert: /…/keys/tax.tls.crt          # the member's certificate (its SM2 identity key)
      key: /…/keys/tax.tls.key           # PKCS#8 PEM, 0600
      known_keys: null                   # a YAML/JSON file {member: sm2 hex}, for a service without a chain
      registry_ttl_s: 10                 # a removed/rotated member is refused within this (+ one chain read)

Without a ``tls`` section a service serves plain HTTP as before (off by default until every client of
the federation speaks 国密 TLS).  With it, the service serves **only** 国密 TLS and its HTTP clients
pin each peer's registered key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from protocols.gmtls.certs import Credentials, load_credentials
from protocols.identity import KeyDirectory


class GmTlsSettings(BaseModel):
    """Where a service's 国密 TLS credentials are and how it learns the members' keys."""

    model_config = ConfigDict(extra="forbid")

    cert: Path
    key: Path
    known_keys: Path | None = None
    """A file of known member keys (``{name: hex}``) for a service without a chain and without ``peers``;
    a chain-wired service knows its members from the Registry (``protocols.identity.member_directory``:
    the service's one directory, shared by its TLS layer, its clients and its routes)."""
    registry_ttl_s: float = Field(default=10.0, gt=0, le=3600)

    def credentials(self) -> Credentials:
        """The certificate and key (CertificateError if they do not match or are not SM2)."""
        return load_credentials(self.cert, self.key)


def member_pins(directory: KeyDirectory, urls: Mapping[str, str]) -> Callable[[str, int], bytes | None]:
    """A client's ``server_key(host, port)``: the registered key of the member whose URL is ``host:port``.

    ``urls`` maps member name → base URL (e.g. the coordinator's ``nodes`` plus ``coordinator``);
    an address not in it, or a member without an active key, gets None (the client refuses)."""
    def address(url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

    def server_key(host: str, port: int) -> bytes | None:
        for name, url in list(urls.items()):
            if address(url) == (host, port):
                return directory.key_of(name)
        return None

    return server_key


def http_client(settings: GmTlsSettings, directory: KeyDirectory, urls: Mapping[str, str], **kwargs: Any) -> Any:
    """An ``httpx.Client`` over 国密 TLS with this service's credentials, pinning the members at ``urls``."""
    import httpx

    from protocols.gmtls.client import GmTlsTransport

    return httpx.Client(transport=GmTlsTransport(settings.credentials(), member_pins(directory, urls)), **kwargs)
