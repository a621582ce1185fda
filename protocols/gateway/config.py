"""The ``gateway`` section of a node's settings, and the peer routes a node builds from it for a job.

    gateway:
      listen_host: 10.0.0.2        # this node's address that the other members' gateways reach
      listen_port: 7443
      peers:                       # the other members' gateways (the node's own configuration)
        bank_a: 10.0.0.1:7443
        tax: 10.0.0.3:7443

A job's route to a peer is that peer's gateway **from this file** and its SM2 key **from the key
directory** (the chain Registry, :class:`protocols.identity.KeyDirectory`): a job spec or a
``/tasks`` request body names only the parties, never where they are or which key they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocols.gateway.gateway import Gateway, addresses
from protocols.gateway.models import PeerRoute
from protocols.gmtls.certs import Credentials


class UnknownPeer(Exception):
    """A party of the job has no configured gateway or no registered, active key: no route to it."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as ``(host, port)``; ValueError if it is not one."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


class GatewaySettings(BaseModel):
    """Where this node's gateway listens and where the other members' gateways are."""

    model_config = ConfigDict(extra="forbid")

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=0, ge=0, lt=65536)
    peers: dict[str, str] = Field(default_factory=dict)
    """member -> ``host:port`` of its gateway."""

    @field_validator("peers")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        for address in value.values():
            split_address(address)
        return value

    def peer_routes(self, me: str, parties: Iterable[str], key_of: Callable[[str], bytes | None]) -> dict[str, PeerRoute]:
        """Routes to every party of a job except ``me``: address from :attr:`peers`, key from ``key_of``
        (e.g. ``KeyDirectory.key_of``).  UnknownPeer names every party that has no route."""
        routes: dict[str, PeerRoute] = {}
        missing: list[str] = []
        for party in dict.fromkeys(parties):
            if party == me:
                continue
            address, key = self.peers.get(party), key_of(party)
            if address is None or key is None:
                missing.append(f"{party} ({'no gateway configured' if address is None else 'no registered key'})")
                continue
            host, port = split_address(address)
            routes[party] = PeerRoute(host=host, port=port, key=key)
        if missing:
            raise UnknownPeer("no route to " + ", ".join(missing))
        return routes


def start_gateway(settings: GatewaySettings, credentials: Credentials, is_member_key: Callable[[bytes], bool],
                  member: str, **options: object) -> Gateway:
    """The node's gateway, started: listening where ``settings`` say (``options``: :class:`Gateway`'s)."""
    return Gateway(settings.listen_host, settings.listen_port, credentials, is_member_key, member=member,
                   **options).start()  # type: ignore[arg-type]


def open_engine_job(gateway: Gateway, settings: GatewaySettings, key_of: Callable[[str], bytes | None],
                    job_key: str, parties: Iterable[str], local_ports: dict[str, int]) -> dict[str, dict[str, str]]:
    """Open an authorized job's links at this node's gateway and return what its engine must be told:
    ``{party: {link: "127.0.0.1:port"}}`` (:func:`protocols.gateway.addresses`).

    ``parties``: the job's parties (from the authorization, this member among them); ``local_ports``:
    the links this node's engine listens on.  Peers' addresses and keys come from ``settings`` and
    ``key_of`` only (UnknownPeer if a party has no route).
    """
    parties = list(parties)
    if gateway.member not in parties:
        raise UnknownPeer(f"{gateway.member} is not a party of job {job_key}")
    routes = gateway.open_job(job_key, local_ports, settings.peer_routes(gateway.member, parties, key_of))
    return addresses(gateway.member, local_ports, routes)
