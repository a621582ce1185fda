"""A node's gateway settings: routes come from its own peer table and the key directory, nothing else."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocols.gateway import GatewaySettings, UnknownPeer
from protocols.identity import KeyDirectory, KnownMember


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


def test_a_node_opens_an_engine_job_from_its_settings_and_the_directory(people, registry, engines):
    from common.net import free_port
    from protocols.gateway import open_engine_job, start_gateway
    from tests.gateway.conftest import Engine, roundtrip

    keys = directory(people, ["alice", "bob", "carol"])
    settings = {m: GatewaySettings(listen_port=free_port()) for m in ("alice", "bob")}
    settings["alice"].peers["bob"] = f"127.0.0.1:{settings['bob'].listen_port}"
    settings["bob"].peers["alice"] = f"127.0.0.1:{settings['alice'].listen_port}"
    gws = {m: start_gateway(settings[m], people[m].creds, keys.is_known, m) for m in settings}
    try:
        bob_spu = Engine()
        engines.append(bob_spu)
        at_bob = open_engine_job(gws["bob"], settings["bob"], keys.key_of, "j", ["alice", "bob"],
                                 {"spu": bob_spu.port})
        at_alice = open_engine_job(gws["alice"], settings["alice"], keys.key_of, "j", ["alice", "bob"],
                                   {"spu": free_port()})
        assert at_bob["bob"] == {"spu": f"127.0.0.1:{bob_spu.port}"} and set(at_bob) == {"alice", "bob"}
        port = int(at_alice["bob"]["spu"].rsplit(":", 1)[1])
        assert roundtrip(port, b"via the node's settings") == b"via the node's settings"
        with pytest.raises(UnknownPeer, match="carol \\(no gateway configured\\)"):
            open_engine_job(gws["alice"], settings["alice"], keys.key_of, "k", ["alice", "carol"], {"spu": 1})
        with pytest.raises(UnknownPeer, match="alice is not a party of job k"):
            open_engine_job(gws["alice"], settings["alice"], keys.key_of, "k", ["bob", "carol"], {"spu": 1})
        assert gws["alice"].jobs() == ["j"]  # the refused jobs left nothing open
    finally:
        for g in gws.values():
            g.stop()
