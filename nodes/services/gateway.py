"""The node's 国密 gateway (:mod:`protocols.gateway`) and how a SecretFlow task's links go through it.

A node with a ``gateway`` section in its settings runs one gateway for its member: its listener on
``gateway.listen_host:listen_port`` (the address the other members' gateways reach), TLS 1.3
``TLS_SM4_GCM_SM3`` / ``curveSM2`` with the member's certificate, admitting only keys the node's
Registry view holds. At a SecretFlow task's start the node calls :meth:`NodeGateway.open_task`:

* the job's **parties** are those of the approved manifest (never the request's list);
* each peer's **address** is its gateway in the node's own settings (``gateway.peers``) and its **key**
  the one the Registry holds (``key_of``): a request body may name the parties' endpoints, but one that
  puts a peer anywhere else than where the node's configuration says is refused
  (:class:`PeerAddressRefused`) before anything is opened;
* the party's own links (``sf``, ``spu``, ``psi:<peer>``) are the 127.0.0.1 ports the node allocated;
* what comes back is the :class:`~protocols.secretflow.spec.ClusterSpec` the party process is given:
  every party at 127.0.0.1 — its own links where it listens, each peer's links at the gateway's route
  ports. The engine never learns, and never dials, a peer's real address.

:meth:`NodeGateway.close_task` forgets the job when the task ends; refusals go to ``on_refusal`` and
each closed job's :class:`~protocols.gateway.JobReport` (bytes each way, the gateway's CPU seconds) to
``on_close`` (both: the node's audit log, ``gateway.refuse`` / ``gateway.close``). The call site in
the task path is one line each at start and end (see ``TaskService.start``), pending the SecretFlow node side's move onto the generic step route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from nodes.errors import NodeError
from protocols.gateway import Gateway, GatewayError, JobReport, Refusal
from protocols.gateway.config import (
    GatewaySettings,
    UnknownPeer,
    open_engine_job,
    split_address,
    start_gateway,
)
from protocols.gmtls.certs import Credentials

log = logging.getLogger(__name__)


class PeerAddressRefused(NodeError):
    """A task names a peer at an address the node's configuration and the Registry do not give, a party
    the approved job does not have, or a party with no route (no configured gateway, no registered key)."""

    status_code = 403


def endpoint_links(endpoint: Any) -> dict[str, int]:
    """A party's engine links as the gateway names them: ``sf``, ``spu`` and ``psi:<peer>`` per PSI pair
    (``endpoint``: a :class:`~protocols.secretflow.spec.PartyEndpoint`)."""
    return {"sf": endpoint.sf_port, "spu": endpoint.spu_port,
            **{f"psi:{peer}": port for peer, port in endpoint.psi_ports.items()}}


class NodeGateway:
    """This node's running gateway, the settings its routes come from and the Registry's keys."""

    def __init__(self, settings: GatewaySettings, credentials: Credentials, member: str,
                 is_member_key: Callable[[bytes], bool], key_of: Callable[[str], bytes | None],
                 on_refusal: Callable[[Refusal], None] | None = None,
                 on_close: Callable[[JobReport], None] | None = None) -> None:
        self.settings = settings
        self.member = member
        self.key_of = key_of
        self.gateway: Gateway = start_gateway(settings, credentials, is_member_key, member, on_refusal=on_refusal,
                                              on_close=on_close)

    def stop(self) -> None:
        self.gateway.stop()

    def check_cluster(self, cluster: Any, parties: Iterable[str]) -> None:
        """Refuse a request's cluster that names other parties than the approved job's, or puts a peer at
        another host than its gateway in this node's settings (a cluster with no host of its own for a
        peer, or 127.0.0.1, names no address and passes: the node decides where peers are)."""
        want = sorted(set(parties))
        if sorted(cluster.names) != want:
            raise PeerAddressRefused(f"the task's parties {sorted(cluster.names)} are not the job's {want}")
        for p in cluster.parties:
            if p.name == self.member:
                continue
            told = p.host or cluster.host
            configured = self.settings.peers.get(p.name)
            if configured is None:
                raise PeerAddressRefused(f"{p.name} has no gateway in this node's configuration")
            if told not in ("127.0.0.1", split_address(configured)[0]):
                raise PeerAddressRefused(f"the task puts {p.name} at {told}; this node reaches it only through "
                                         f"its gateway at {configured} with its Registry key")

    def open_task(self, job_key: str, parties: Iterable[str], cluster: Any) -> Any:
        """Open the job's routes for this node's party and return the ClusterSpec that party must be
        given (see the module docstring). ``parties``: the approved manifest's; ``cluster``: the request's
        ClusterSpec, whose entry for this member is the ports the node allocated."""
        parties = list(dict.fromkeys(parties))
        self.check_cluster(cluster, parties)
        mine = cluster.endpoint(self.member)
        try:
            view = open_engine_job(self.gateway, self.settings, self.key_of, job_key, parties, endpoint_links(mine))
        except (UnknownPeer, GatewayError) as exc:
            raise PeerAddressRefused(str(exc)) from None
        return local_cluster(cluster, self.member, view)

    def close_task(self, job_key: str) -> None:
        if not self.gateway.close_job(job_key):
            log.debug("job %s was not open at %s's gateway", job_key, self.member)


def local_cluster(cluster: Any, me: str, view: dict[str, dict[str, str]]) -> Any:
    """``cluster`` as ``me``'s engine must see it through the gateway: every party at 127.0.0.1, its own
    endpoint unchanged, each peer's ``sf``/``spu`` and its PSI link with ``me`` at the route ports of
    ``view`` (:func:`protocols.gateway.addresses`).

    A peer's PSI links with *other* members (the label holder pairs with every department) stay named,
    because every party's program declares every pair's PSI device, but ``me``'s engine never dials
    them (only the pair's two members run that PSI), and the gateway has no route for them: they are
    given the peer's route for its link with ``me`` (else its ``sf`` route), so even a stray dial could
    only reach that peer's links that ``me`` may use."""
    from protocols.secretflow.spec import PartyEndpoint

    def port(party: str, link: str) -> int:
        return int(view[party][link].rsplit(":", 1)[1])

    parties = []
    for p in cluster.parties:
        if p.name == me:
            parties.append(p.model_copy(update={"host": "127.0.0.1"}))
            continue
        mine = port(p.name, f"psi:{me}") if f"psi:{me}" in view[p.name] else None
        psi = {other: port(p.name, "sf") for other in p.psi_ports if other != me}
        if mine is not None:
            psi[me] = mine
            psi = {other: mine for other in psi}
        parties.append(PartyEndpoint(name=p.name, host="127.0.0.1", sf_port=port(p.name, "sf"),
                                     spu_port=port(p.name, "spu"), psi_ports=psi))
    return cluster.model_copy(update={"host": "127.0.0.1", "parties": parties})


def start_node_gateway(settings: Any, directory: Any, on_refusal: Callable[[Refusal], None] | None = None,
                       on_close: Callable[[JobReport], None] | None = None) -> NodeGateway | None:
    """The node's gateway when its settings have a ``gateway`` section (and 国密 ``tls`` credentials),
    else None. ``directory``: the node's Registry view (``is_known``, ``key_of``: a KeyDirectory)."""
    if getattr(settings, "gateway", None) is None:
        return None
    if settings.tls is None:
        raise PeerAddressRefused("a gateway needs the node's 国密 TLS credentials (the tls section)")
    return NodeGateway(settings.gateway, settings.tls.credentials(), settings.name, directory.is_known,
                       directory.key_of, on_refusal, on_close)
