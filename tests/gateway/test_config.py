"""A node's gateway settings: routes come from its own peer table and the key directory, nothing else."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocols.gateway import GatewaySettings, UnknownPeer
from protocols.gmtls.identity import KeyDirectory, KnownMember


def directory(people, names):
    return KeyDirectory(lambda: [KnownMember(n, people[n].public_key) for n in names])


def test_routes_take_the_address_from_the_settings_and_the_key_from_the_directory(people):
    settings = GatewaySettings(listen_host="10.0.0.2", listen_port=7443,
                               peers={"alice": "10.0.0.1:7443", "carol": "[fd00::3]:7444"})
    keys = directory(people, ["alice", "bob", "carol"])
    routes = settings.peer_routes("bob", ["alice", "bob", "carol", "alice"], keys.key_of)
    assert set(routes) == {"alice", "carol"}
    assert (routes["alice"].host, routes["alice"].port, routes["alice"].key) == ("10.0.0.1", 7443,
                                                                                 people["alice"].public_key)
    assert (routes["carol"].host, routes["carol"].port) == ("fd00::3", 7444)


def test_a_party_without_a_configured_gateway_or_a_registered_key_has_no_route(people):
    settings = GatewaySettings(peers={"alice": "10.0.0.1:7443", "mallory": "10.6.6.6:7443"})
    keys = directory(people, ["alice", "bob"])
    with pytest.raises(UnknownPeer) as err:
        settings.peer_routes("bob", ["alice", "bob", "carol", "mallory"], keys.key_of)
    assert str(err.value) == "no route to carol (no gateway configured), mallory (no registered key)"


@pytest.mark.parametrize("bad", ["10.0.0.1", "10.0.0.1:0", ":7443", "10.0.0.1:http", "10.0.0.1:70000"])
def test_a_peer_address_must_be_host_and_port(bad):
    with pytest.raises(ValidationError):
        GatewaySettings(peers={"alice": bad})
