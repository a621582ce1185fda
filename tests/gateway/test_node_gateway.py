"""A node's gateway for a SecretFlow task (``nodes.services.gateway``): the parties come from the approved
job, each peer's address from the node's settings and its key from the Registry; the party's cluster is
rewritten to 127.0.0.1 routes. A request that puts a peer elsewhere is refused before anything opens;
an outsider or a non-party reaching the job's engine link is refused at the gateway."""

from __future__ import annotations

import time

import pytest

from common.net import free_port, free_ports
from nodes.services.gateway import NodeGateway, PeerAddressRefused
from protocols.gateway import GatewaySettings
from protocols.identity import KeyDirectory, KnownMember
from protocols.secretflow.spec import ClusterSpec
from tests.gateway.conftest import Engine, ask, roundtrip

JOB = "0xjob"


def wait_for(predicate, timeout: float = 10.0):  # noqa: ANN001, ANN201
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if got := predicate():
            return got
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture()
def nodes(people):
    """alice's and bob's node gateways (settings: each other's gateway; keys: alice, bob, carol registered)."""
    keys = KeyDirectory(lambda: [KnownMember(n, people[n].public_key) for n in ("alice", "bob", "carol")])
    settings = {m: GatewaySettings(listen_port=free_port()) for m in ("alice", "bob")}
    settings["alice"].peers["bob"] = f"127.0.0.1:{settings['bob'].listen_port}"
    settings["bob"].peers["alice"] = f"127.0.0.1:{settings['alice'].listen_port}"
    refused: dict[str, list] = {"alice": [], "bob": []}
    gws = {m: NodeGateway(settings[m], people[m].creds, m, keys.is_known, keys.key_of, refused[m].append)
           for m in settings}
    yield gws, refused
    for g in gws.values():
        g.stop()


def cluster(ports: dict[str, list[int]], hosts: dict[str, str] | None = None) -> ClusterSpec:
    """A two-party cluster as the coordinator would send it (each party's allocated sf, spu, psi ports)."""
    parties = []
    for name, (sf, spu, psi) in ports.items():
        peer = next(p for p in ports if p != name)
        parties.append({"name": name, "host": (hosts or {}).get(name), "sf_port": sf, "spu_port": spu,
                        "psi_ports": {peer: psi}})
    return ClusterSpec.model_validate({"parties": parties})


def test_a_task_gets_127_0_0_1_routes_to_its_peer_and_the_link_carries_bytes(nodes, engines):
    gws, _ = nodes
    ports = {"alice": free_ports(3), "bob": free_ports(3)}
    bob_spu = Engine(ports["bob"][1])
    engines.append(bob_spu)
    seen = {m: gws[m].open_task(JOB, ["alice", "bob"], cluster(ports)) for m in ("alice", "bob")}
    at_alice = seen["alice"]
    assert at_alice.host == "127.0.0.1" and {p.host for p in at_alice.parties} == {"127.0.0.1"}
    assert at_alice.endpoint("alice").sf_port == ports["alice"][0]  # its own links where it listens
    to_bob = at_alice.endpoint("bob")
    assert to_bob.spu_port not in ports["bob"] and list(to_bob.psi_ports) == ["alice"]
    assert roundtrip(to_bob.spu_port, b"spu bytes") == b"spu bytes"
    assert bob_spu.received == b"spu bytes" and gws["bob"].gateway.traffic(JOB).connections == 1
    for g in gws.values():
        g.close_task(JOB)
    assert gws["alice"].gateway.jobs() == [] and gws["bob"].gateway.jobs() == []


@pytest.mark.parametrize("hosts, parties, why", [
    ({"bob": "10.9.9.9"}, ["alice", "bob"], "puts bob at 10.9.9.9"),        # a peer address from the request body
    ({}, ["alice", "bob", "carol"], "are not the job's"),                    # a party the approved job does not have
    ({}, ["alice", "dave"], "are not the job's"),
])
def test_a_party_told_a_peer_address_the_node_does_not_give_is_refused(nodes, hosts, parties, why):
    gws, refused = nodes
    ports = {"alice": free_ports(3), "bob": free_ports(3)}
    with pytest.raises(PeerAddressRefused, match=why):
        gws["alice"].open_task(JOB, parties, cluster(ports, hosts))
    assert gws["alice"].gateway.jobs() == []  # nothing opened, no route port listening


def test_a_peer_without_a_registered_key_gets_no_route(people):
    keys = KeyDirectory(lambda: [KnownMember("alice", people["alice"].public_key)])  # bob not in the Registry
    settings = GatewaySettings(listen_port=free_port(), peers={"bob": f"127.0.0.1:{free_port()}"})
    node = NodeGateway(settings, people["alice"].creds, "alice", keys.is_known, keys.key_of)
    try:
        with pytest.raises(PeerAddressRefused, match="no registered key"):
            node.open_task(JOB, ["alice", "bob"], cluster({"alice": free_ports(3), "bob": free_ports(3)}))
        assert node.gateway.jobs() == []
    finally:
        node.stop()


def test_an_outsider_joining_a_jobs_engine_link_is_refused_at_the_gateway(nodes, people, engines):
    gws, refused = nodes
    ports = {"alice": free_ports(3), "bob": free_ports(3)}
    bob_sf = Engine(ports["bob"][0])
    engines.append(bob_sf)
    gws["bob"].open_task(JOB, ["alice", "bob"], cluster(ports))
    bob = gws["bob"].gateway
    # carol: a registered member, not a party (as herself, then claiming to be alice)
    for sender in ("carol", "alice"):
        got = ask(people["carol"], bob, people["bob"], {"job": JOB, "from": sender, "to": "bob", "link": "sf"})
        assert got.answer is not None and not got.answer.ok and "not a party" in got.answer.reason
    # mallory: not in the Registry at all — the handshake itself fails
    got = ask(people["mallory"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "bob", "link": "sf"})
    assert got.answer is None and got.error
    # alice (a party) asking for her PSI link at bob is fine; asking for one reserved to someone else is not
    got = ask(people["alice"], bob, people["bob"], {"job": JOB, "from": "alice", "to": "bob", "link": "psi:carol"})
    assert got.answer is not None and not got.answer.ok
    assert bob_sf.accepted == 0 and bob.traffic(JOB).connections == 0  # the engine saw nothing
    assert len(wait_for(lambda: refused["bob"] if len(refused["bob"]) >= 4 else None)) >= 4  # each one recorded


def test_a_cluster_across_hosts_puts_each_peer_at_its_node_and_the_gateway_takes_only_that(people):
    """The coordinator's cluster names each party at its own node's host (``cluster_of``); a node with a
    gateway accepts a peer there (its configured gateway's host) and gives its party 127.0.0.1 routes."""
    import json
    from types import SimpleNamespace

    from engines.secretflow.coordinator import cluster_of

    keys = KeyDirectory(lambda: [KnownMember(n, people[n].public_key) for n in ("alice", "bob")])
    settings = GatewaySettings(listen_port=free_port(), peers={"bob": f"127.0.0.2:{free_port()}"})
    node = NodeGateway(settings, people["alice"].creds, "alice", keys.is_known, keys.key_of)
    ports = {"alice": free_ports(3), "bob": free_ports(3)}
    eps = {m: {"name": m, "sf_port": sf, "spu_port": spu, "psi_ports": {next(p for p in ports if p != m): psi}}
           for m, (sf, spu, psi) in ports.items()}
    tasks = [SimpleNamespace(endpoint_json=json.dumps({"host": h, "endpoint": eps[m]}))
             for m, h in (("alice", "127.0.0.1"), ("bob", "127.0.0.2"))]
    try:
        across = ClusterSpec.model_validate(cluster_of(tasks))
        assert across.endpoint("alice").host is None and across.host_of("bob") == "127.0.0.2"
        seen = node.open_task(JOB, ["alice", "bob"], across)
        assert {p.host for p in seen.parties} == {"127.0.0.1"} and seen.endpoint("bob").sf_port != ports["bob"][0]
        node.close_task(JOB)
        elsewhere = json.loads(tasks[1].endpoint_json) | {"host": "127.0.0.3"}
        tasks[1] = SimpleNamespace(endpoint_json=json.dumps(elsewhere))
        with pytest.raises(PeerAddressRefused, match="puts bob at 127.0.0.3"):
            node.open_task(JOB, ["alice", "bob"], ClusterSpec.model_validate(cluster_of(tasks)))
        assert node.gateway.jobs() == []
    finally:
        node.stop()


def test_a_department_of_a_three_party_job_gets_a_party_config_that_validates(people):
    """The label holder (alice) runs a PSI with each department; a department (bob) must still be able to
    name alice's PSI link with carol (every party declares every pair), though the gateway routes only
    bob's own links: the cluster bob's party gets validates as a PartyConfig, alice's link with bob is
    the gateway's route and nothing points outside 127.0.0.1."""
    from protocols.secretflow.spec import PartyConfig, PartySpec

    keys = KeyDirectory(lambda: [KnownMember(n, people[n].public_key) for n in ("alice", "bob", "carol")])
    settings = GatewaySettings(listen_port=free_port(),
                               peers={"alice": f"127.0.0.1:{free_port()}", "carol": f"127.0.0.1:{free_port()}"})
    node = NodeGateway(settings, people["bob"].creds, "bob", keys.is_known, keys.key_of)
    ports = {m: free_ports(4) for m in ("alice", "bob", "carol")}
    spec = ClusterSpec.model_validate({"parties": [
        {"name": "alice", "sf_port": ports["alice"][0], "spu_port": ports["alice"][1],
         "psi_ports": {"bob": ports["alice"][2], "carol": ports["alice"][3]}},
        *({"name": m, "sf_port": ports[m][0], "spu_port": ports[m][1], "psi_ports": {"alice": ports[m][2]}}
          for m in ("bob", "carol"))]})
    try:
        seen = node.open_task(JOB, ["alice", "bob", "carol"], spec)
        routes = node.gateway._jobs[JOB].dial_ports["alice"]  # noqa: SLF001 — the 127.0.0.1 ports bob's engine dials
        alice = seen.endpoint("alice")
        assert alice.psi_ports["bob"] == routes["psi:bob"] and set(alice.psi_ports) == {"bob", "carol"}
        assert seen.endpoint("bob").psi_ports == {"alice": ports["bob"][2]}  # bob's own link, unchanged
        cfg = PartyConfig(job_id="j", cluster=seen, me=PartySpec(name="bob", input_csv="in.csv", output_dir="out"),
                          join_key="uscc", label_party="alice", label_column="y")
        assert {cfg.cluster.host_of(p) for p in cfg.cluster.names} == {"127.0.0.1"}
        every_port = {pt for p in seen.parties if p.name != "bob"
                      for pt in (p.sf_port, p.spu_port, *p.psi_ports.values())}
        assert every_port <= {pt for links in node.gateway._jobs[JOB].dial_ports.values()  # noqa: SLF001
                              for pt in links.values()}
    finally:
        node.stop()
