"""The per-node 国密 gateway that carries engine links between members (see :mod:`protocols.gateway.gateway`)."""

from protocols.gateway.config import GatewaySettings, UnknownPeer, open_engine_job, start_gateway
from protocols.gateway.gateway import (
    Gateway,
    GatewayError,
    JobReport,
    Traffic,
    addresses,
    pairwise_peer,
    peer_links,
)
from protocols.gateway.models import LinkAnswer, LinkRequest, PeerRoute, Refusal

__all__ = [
    "Gateway", "GatewayError", "JobReport", "LinkAnswer", "LinkRequest", "PeerRoute", "Refusal", "Traffic",
    "addresses", "pairwise_peer", "peer_links", "GatewaySettings", "UnknownPeer",
    "open_engine_job", "start_gateway",
]
