"""A three-party SecretFlow-shaped job: shared links (sf, spu) and pairwise PSI links (psi:<peer>), the
route tables each gateway derives, the addresses each engine is told, and the pairwise rule."""

from __future__ import annotations

from protocols.gateway import addresses, pairwise_peer, peer_links
from tests.gateway.conftest import Engine, ask, roundtrip, route

JOB = "job-sf-3"
LINKS = {"alice": ("sf", "spu", "psi:bob", "psi:carol"), "bob": ("sf", "spu", "psi:alice"),
         "carol": ("sf", "spu", "psi:alice")}


def test_pairwise_links_mirror_between_peers():
    assert pairwise_peer("psi:bob") == "bob" and pairwise_peer("spu") is None and pairwise_peer(":x") is None
    alice = dict.fromkeys(LINKS["alice"], 1)
    assert peer_links("alice", "bob", alice) == ("sf", "spu", "psi:alice")
    assert peer_links("bob", "carol", dict.fromkeys(LINKS["bob"], 1)) == ("sf", "spu")


def test_a_three_party_job_routes_every_link_and_keeps_pairwise_links_pairwise(gateways, people, engines):
    engine = {m: {link: Engine() for link in links} for m, links in LINKS.items()}
    engines += [e for links in engine.values() for e in links.values()]
    routes, local = {}, {}
    for m in LINKS:
        local[m] = {link: e.port for link, e in engine[m].items()}
        peers = {p: route(gateways[p], people[p]) for p in LINKS if p != m}
        routes[m] = gateways[m].open_job(JOB, local[m], peers)
    assert {p: set(r) for p, r in routes["alice"].items()} == {"bob": {"sf", "spu", "psi:alice"},
                                                               "carol": {"sf", "spu", "psi:alice"}}
    assert {p: set(r) for p, r in routes["bob"].items()} == {"alice": {"sf", "spu", "psi:bob"},
                                                             "carol": {"sf", "spu"}}
    view = addresses("alice", local["alice"], routes["alice"])
    assert view["alice"]["psi:bob"] == f"127.0.0.1:{engine['alice']['psi:bob'].port}"
    assert view["bob"]["psi:alice"] == f"127.0.0.1:{routes['alice']['bob']['psi:alice']}"
    assert all(a.startswith("127.0.0.1:") for links in view.values() for a in links.values())

    for m, peers in routes.items():  # every engine reaches every link it was routed to
        for peer, links in peers.items():
            for link, port in links.items():
                msg = f"{m}->{peer}/{link}".encode()
                assert roundtrip(port, msg) == msg
                assert bytes(engine[peer][link].received).endswith(msg)
    assert engine["bob"]["psi:alice"].accepted == 1

    # carol is a party, but bob's psi:alice link is alice's alone
    got = ask(people["carol"], gateways["bob"], people["bob"],
              {"job": JOB, "from": "carol", "to": "bob", "link": "psi:alice"})
    assert got.answer is not None and not got.answer.ok
    assert got.answer.reason == "link 'psi:alice' is 'alice''s pairwise link, not 'carol''s"
    assert engine["bob"]["psi:alice"].accepted == 1
    assert gateways["bob"].refusals[-1].member_key == people["carol"].public_key.hex()
