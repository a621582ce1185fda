"""The per-node 国密 gateway: every byte between members' engines crosses it, over mutual 国密 TLS 1.3.

SecretFlow's cross-silo gRPC and the SPU/PSI brpc links cannot speak 国密 themselves, so every
engine process listens on 127.0.0.1 only and the gateways carry its links (Kuscia's per-domain
gateway, with TLS_SM4_GCM_SM3 / curveSM2 / sm2sig_sm3 from :mod:`protocols.gmtls.context`):

* **outbound** — for each job the node opens a *route table*: for every peer and every link of that
  peer, a 127.0.0.1 port its own engine dials.  A connection there makes the gateway dial the peer's
  gateway (address and SM2 key from the node's configuration / the Registry — never from a request),
  pin the peer's key in the handshake, and send one :class:`LinkRequest` ``{job, from, to, link}``.
  Only after the peer answers "admitted" are the engine's bytes forwarded; a refusal closes the
  engine's connection at once, so the engine retries (brpc, gRPC both do).
* **inbound** — the listener on the node's public address.  The handshake admits only registered
  member keys (``is_member_key``); then the request is admitted only if its job is open here, the
  proven key is the registered key of one of that job's parties and the one it names as ``from``,
  it is addressed to this member, and the link is one of the job's local engine links.  The gateway
  then connects to that link's 127.0.0.1 port — if the local party is not listening yet it answers
  "refused" and closes at once (brpc would hang on a connection nobody serves).  Every refusal is
  logged and kept in :attr:`Gateway.refusals`.

One asyncio loop in one thread runs the whole gateway (OpenSSL connections are never shared between
threads); :meth:`Gateway.open_job` / :meth:`Gateway.close_job` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from OpenSSL import SSL

from common.net import free_ports
from protocols.gateway.models import (
    MAX_FRAME,
    LinkAnswer,
    LinkRequest,
    PeerRoute,
    Refusal,
    decode,
    encode_frame,
    frame_length,
)
from protocols.gateway.relay import relay
from protocols.gateway.tls import TlsClosed, TlsStream
from protocols.gmtls.certs import Credentials
from protocols.gmtls.context import (
    client_connection,
    client_context,
    expect_key,
    peer_public_key,
    refusal,
    server_connection,
    server_context,
)

log = logging.getLogger("dcp.gateway")

#: Refusals kept in memory (the log has them all).
MAX_REFUSALS = 1000


class GatewayError(Exception):
    """A job cannot be opened as asked (unknown peer link, port taken, gateway not running)."""


@dataclass
class Traffic:
    """Bytes one job's links carried through this gateway (plaintext, both directions)."""

    sent: int = 0  # from the local engine to peers
    received: int = 0  # from peers to the local engine
    connections: int = 0  # admitted so far
    active: int = 0  # open now (engine connections being set up or forwarded), in a snapshot


@dataclass(frozen=True)
class JobReport:
    """What a job's links cost this gateway, from :meth:`Gateway.open_job` to :meth:`Gateway.close_job`:
    plaintext bytes each way, connections admitted, and the CPU time (user + system) of the gateway's loop
    thread — the whole gateway: TLS handshakes, SM4-GCM, forwarding — over that span (while several jobs
    are open at once, each job's span counts all of them)."""

    job: str
    sent: int  # from the local engine to peers
    received: int  # from peers to the local engine
    connections: int
    cpu_s: float  # the gateway thread's user + system CPU seconds while the job was open
    open_s: float  # wall seconds the job was open
    opened_at: float  # time.time() at open / close
    closed_at: float

    def as_dict(self) -> dict[str, object]:
        return {"sent": self.sent, "received": self.received, "connections": self.connections,
                "cpu_s": round(self.cpu_s, 4), "open_s": round(self.open_s, 4),
                "opened_at": self.opened_at, "closed_at": self.closed_at}


@dataclass
class _Job:
    key: str
    local_ports: dict[str, int]
    peers: dict[str, PeerRoute]
    dial_ports: dict[str, dict[str, int]]
    servers: list[asyncio.base_events.Server] = field(default_factory=list)
    tasks: set[asyncio.Task] = field(default_factory=set)
    traffic: Traffic = field(default_factory=Traffic)
    opened_at: float = 0.0  # time.time(), time.monotonic() and the loop thread's CPU time at open
    opened_mono: float = 0.0
    cpu_at_open: float = 0.0


class Gateway:
    """One node's gateway: a 国密 TLS listener on ``listen_host:listen_port`` and per-job local routes.

    ``credentials``: the member's certificate and key (its registered SM2 identity key);
    ``is_member_key(key)``: is this 64-byte key a registered, active member's (the handshake check —
    it runs on the gateway's loop, so it should answer from memory, e.g. a cached Registry view);
    ``member``: the name peers address this gateway's member by (``to`` of a link request);
    ``on_refusal``: called (on the gateway's loop) with every refusal, e.g. to append it to the node's
    audit log; ``on_close``: called (in :meth:`close_job`'s thread) with each closed job's
    :class:`JobReport` (bytes carried, the gateway's CPU time); ``handshake_timeout`` bounds the
    handshake and the link request, ``connect_timeout`` the connection to a peer's gateway or to the
    local engine.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        credentials: Credentials,
        is_member_key: Callable[[bytes], bool],
        *,
        member: str,
        connect_timeout: float = 5.0,
        handshake_timeout: float = 10.0,
        on_refusal: Callable[[Refusal], None] | None = None,
        on_close: Callable[[JobReport], None] | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.member = member
        self.public_key = credentials.public_key
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self._server_ctx = server_context(credentials, is_member_key)
        self._client_ctx = client_context(credentials)
        self._jobs: dict[str, _Job] = {}
        self._refusals: list[Refusal] = []
        self._on_refusal = on_refusal
        self._on_close = on_close
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._inbound: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> Gateway:
        """Start the loop thread and bind the listener (returns once it accepts connections)."""
        if self._thread is not None:
            return self
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._inbound_connection, self.listen_host, self.listen_port,
                                         reuse_address=True)
                )
            except BaseException as exc:  # noqa: BLE001 — handed to the starting thread
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"gateway-{self.member}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise GatewayError(f"cannot listen on {self.listen_host}:{self.listen_port}: {failure[0]}")
        sock = self._server.sockets[0]  # type: ignore[union-attr]
        self.listen_port = sock.getsockname()[1]
        log.info("gateway of %s listening on %s:%d", self.member, self.listen_host, self.listen_port)
        return self

    def stop(self) -> None:
        """Close every job, every connection and the listener; join the loop thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        for job in list(self._jobs.values()):
            await self._close(job)
        self._jobs.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.sleep(0)  # connections accepted just now start their tasks
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def _call(self, coro: object) -> object:
        if self._loop is None:
            raise GatewayError("the gateway is not running (call start())")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ jobs

    @property
    def address(self) -> tuple[str, int]:
        """Where peers' gateways reach this one."""
        return self.listen_host, self.listen_port

    def open_job(
        self,
        job_key: str,
        local_ports: dict[str, int],
        peers: dict[str, PeerRoute],
        *,
        dial_ports: dict[str, dict[str, int]] | None = None,
    ) -> dict[str, dict[str, int]]:
        """Register a job's route table; returns ``{peer: {link: port}}``, the 127.0.0.1 ports the local
        engine dials to reach each peer's link.

        ``local_ports``: this member's engine links (``link -> 127.0.0.1 port`` its engine listens on),
        the only ports inbound connections of this job may reach.  A link named ``kind:member`` is
        *pairwise* (e.g. SecretFlow's two-party PSI link ``psi:bob`` at alice): only that member may
        reach it.  ``peers``: every other party's gateway and registered key; which of a peer's links
        this engine dials is ``PeerRoute.links``, by default :func:`peer_links` (the same shared link
        names; ``psi:<this member>`` for a local ``psi:<peer>``).  ``dial_ports``: fixed local ports
        instead of fresh ones (e.g. from a config).  Opening a job that is open replaces its routes.
        """
        if self.member in peers:
            raise GatewayError(f"{self.member} is this gateway's own member, not a peer")
        routes: dict[str, dict[str, int]] = {}
        wanted = [(m, link) for m, r in peers.items() for link in (r.links or peer_links(self.member, m, local_ports))]
        fresh = iter(free_ports(len(wanted)))
        for member, link in wanted:
            port = (dial_ports or {}).get(member, {}).get(link) or next(fresh)
            routes.setdefault(member, {})[link] = port
        job = _Job(job_key, dict(local_ports), dict(peers), routes)
        self._call(self._open(job))
        log.info("job %s open at %s: engine links %s, routes %s", job_key, self.member, local_ports, routes)
        return {m: dict(links) for m, links in routes.items()}

    def close_job(self, job_key: str) -> bool:
        """Forget a job: its local routes stop listening, its connections are cut, nothing is admitted
        for it any more; its :class:`JobReport` is logged and handed to ``on_close``.  False if it was
        not open."""
        report = self._call(self._close_key(job_key))
        if report is None:
            return False
        assert isinstance(report, JobReport)
        log.info("job %s closed at %s: %d bytes sent, %d received, %d connections, %.3f s gateway CPU in %.1f s",
                 job_key, self.member, report.sent, report.received, report.connections, report.cpu_s,
                 report.open_s)
        if self._on_close is not None:
            try:
                self._on_close(report)
            except Exception:  # noqa: BLE001 — a failing observer must not keep the job open
                log.exception("on_close failed")
        return True

    def jobs(self) -> list[str]:
        """Keys of the open jobs."""
        return list(self._jobs)

    def traffic(self, job_key: str) -> Traffic:
        """Bytes the job's links have carried so far."""
        job = self._jobs.get(job_key)
        if job is None:
            raise GatewayError(f"job {job_key} is not open")
        return Traffic(job.traffic.sent, job.traffic.received, job.traffic.connections, len(job.tasks))

    @property
    def refusals(self) -> list[Refusal]:
        """The refused connections, oldest first (a copy)."""
        with self._lock:
            return list(self._refusals)

    async def _open(self, job: _Job) -> None:
        job.opened_at, job.opened_mono, job.cpu_at_open = time.time(), time.monotonic(), time.thread_time()
        old = self._jobs.pop(job.key, None)
        if old is not None:
            await self._close(old)
        try:
            for member, links in job.dial_ports.items():
                for link, port in links.items():
                    handler = self._outbound_handler(job, member, link)
                    job.servers.append(await asyncio.start_server(handler, "127.0.0.1", port))
        except OSError as exc:
            await self._close(job)
            raise GatewayError(f"job {job.key}: cannot listen on a local route port: {exc}") from None
        self._jobs[job.key] = job

    async def _close_key(self, job_key: str) -> JobReport | None:
        job = self._jobs.pop(job_key, None)
        if job is None:
            return None
        await self._close(job)
        t = job.traffic  # time.thread_time(): this is the loop thread, which runs the whole gateway
        return JobReport(job=job.key, sent=t.sent, received=t.received, connections=t.connections,
                         cpu_s=time.thread_time() - job.cpu_at_open, open_s=time.monotonic() - job.opened_mono,
                         opened_at=job.opened_at, closed_at=time.time())

    async def _close(self, job: _Job) -> None:
        for server in job.servers:
            server.close()
        for task in list(job.tasks):
            task.cancel()
        await asyncio.gather(*job.tasks, return_exceptions=True)
        for server in job.servers:
            await server.wait_closed()

    def _refuse(self, refusal_: Refusal) -> None:
        log.warning("gateway %s refused %s connection from %s (job %r, link %r, key %s): %s",
                    self.member, refusal_.side, refusal_.peer, refusal_.job, refusal_.link,
                    refusal_.member_key[:16] or "-", refusal_.reason)
        with self._lock:
            self._refusals.append(refusal_)
            del self._refusals[:-MAX_REFUSALS]
        if self._on_refusal is not None:
            try:
                self._on_refusal(refusal_)
            except Exception:  # noqa: BLE001 — a failing observer must not keep the refusal from happening
                log.exception("on_refusal failed")

    # ------------------------------------------------------------------ inbound

    async def _inbound_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        peer = _peername(writer)
        tls = TlsStream(server_connection(self._server_ctx), reader, writer)
        key = b""
        request: LinkRequest | None = None
        job: _Job | None = None
        try:
            try:
                await asyncio.wait_for(tls.handshake(), self.handshake_timeout)
                key = peer_public_key(tls.conn)
                head = await asyncio.wait_for(tls.recv_exactly(4), self.handshake_timeout)
                body = await asyncio.wait_for(tls.recv_exactly(frame_length(head)), self.handshake_timeout)
                request = decode(LinkRequest, body)
            except (SSL.Error, TlsClosed, ValueError, asyncio.TimeoutError, OSError) as exc:
                reason = refusal(tls.conn) or f"{type(exc).__name__}: {exc}"
                self._refuse(Refusal(side="inbound", peer=peer, member_key=key.hex(), reason=reason))
                return
            assert request is not None
            job, why = self._admit(request, key)
            if job is None:
                self._refuse(Refusal(side="inbound", peer=peer, member_key=key.hex(), job=request.job,
                                     link=request.link, reason=why))
                await self._answer(tls, LinkAnswer(ok=False, reason=why))
                return
            job.tasks.add(task)
            port = job.local_ports[request.link]
            try:
                local_reader, local_writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                why = f"local party not listening on link {request.link!r} ({type(exc).__name__})"
                self._refuse(Refusal(side="inbound", peer=peer, member_key=key.hex(), job=request.job,
                                     link=request.link, reason=why))
                await self._answer(tls, LinkAnswer(ok=False, reason=why))
                return
            try:
                await tls.send(encode_frame(LinkAnswer(ok=True)))
                job.traffic.connections += 1
                log.info("gateway %s admitted %s (%s) to job %s link %s", self.member, request.sender, peer,
                         request.job, request.link)
                await _forward(tls, local_reader, local_writer, job.traffic)
            finally:
                local_writer.close()
        except asyncio.CancelledError:
            pass
        finally:
            self._inbound.discard(task)
            if job is not None:
                job.tasks.discard(task)
            writer.close()

    def _admit(self, request: LinkRequest, key: bytes) -> tuple[_Job | None, str]:
        """The admission rule; (job, "") if the request may reach the job's link, else (None, why)."""
        job = self._jobs.get(request.job)
        if job is None:
            return None, f"no job {request.job!r} is open at {self.member}"
        if request.target != self.member:
            return None, f"addressed to {request.target!r}, this gateway serves {self.member!r}"
        party = next((m for m, r in job.peers.items() if r.key == key), None)
        if party is None:
            return None, f"the proven key is not a party of job {request.job!r}"
        if party != request.sender:
            return None, f"claims to be {request.sender!r} but proved the key of {party!r}"
        if request.link not in job.local_ports:
            return None, f"link {request.link!r} is not one of job {request.job!r}'s links"
        pair = pairwise_peer(request.link)
        if pair is not None and pair != request.sender:
            return None, f"link {request.link!r} is {pair!r}'s pairwise link, not {request.sender!r}'s"
        return job, ""

    @staticmethod
    async def _answer(tls: TlsStream, answer: LinkAnswer) -> None:
        with contextlib.suppress(OSError, SSL.Error, TlsClosed):
            await tls.send(encode_frame(answer))
            await tls.close_notify()

    # ------------------------------------------------------------------ outbound

    def _outbound_handler(self, job: _Job, member: str, link: str) -> Callable:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            job.tasks.add(task)
            try:
                await self._outbound(job, member, link, reader, writer)
            except asyncio.CancelledError:
                pass
            finally:
                job.tasks.discard(task)
                writer.close()

        return handle

    async def _outbound(self, job: _Job, member: str, link: str, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        route = job.peers[member]
        where = f"{route.host}:{route.port}"

        def refused(reason: str) -> None:
            self._refuse(Refusal(side="outbound", peer=where, member_key=route.key.hex(), job=job.key,
                                 link=link, reason=reason))

        try:
            peer_reader, peer_writer = await asyncio.wait_for(
                asyncio.open_connection(route.host, route.port), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            refused(f"cannot reach {member}'s gateway: {type(exc).__name__}: {exc}")
            return
        _nodelay(peer_writer)
        tls = TlsStream(client_connection(self._client_ctx, expect_key(route.key)), peer_reader, peer_writer)
        try:
            try:
                await asyncio.wait_for(tls.handshake(), self.handshake_timeout)
                peer_public_key(tls.conn)
                request = LinkRequest(job=job.key, sender=self.member, target=member, link=link)
                await tls.send(encode_frame(request))
                head = await asyncio.wait_for(tls.recv_exactly(4), self.handshake_timeout)
                answer = decode(LinkAnswer, await asyncio.wait_for(
                    tls.recv_exactly(frame_length(head)), self.handshake_timeout))
            except (SSL.Error, TlsClosed, ValueError, asyncio.TimeoutError, OSError) as exc:
                refused(refusal(tls.conn) or f"{type(exc).__name__}: {exc}")
                return
            if not answer.ok:
                refused(f"{member}'s gateway refused: {answer.reason}")
                return
            job.traffic.connections += 1
            await _forward(tls, reader, writer, job.traffic)
        finally:
            peer_writer.close()


def pairwise_peer(link: str) -> str | None:
    """The member a pairwise link ``kind:member`` is reserved for (None for a shared link)."""
    kind, sep, member = link.partition(":")
    return member if sep and kind and member else None


def peer_links(me: str, peer: str, local_ports: dict[str, int]) -> tuple[str, ...]:
    """The links of ``peer`` that ``me``'s engine dials, mirrored from ``me``'s own: every shared link,
    and ``kind:me`` for each local pairwise link ``kind:peer`` (pairwise links with others are skipped)."""
    out = []
    for link in local_ports:
        pair = pairwise_peer(link)
        if pair is None:
            out.append(link)
        elif pair == peer:
            out.append(f"{link.partition(':')[0]}:{me}")
    return tuple(out)


def addresses(me: str, local_ports: dict[str, int], routes: dict[str, dict[str, int]]) -> dict[str, dict[str, str]]:
    """The whole cluster as ``me``'s engine must be told it: ``{party: {link: "127.0.0.1:port"}}`` —
    its own links where it listens, every peer's links at the gateway's route ports.  (A peer's real
    address is never given to the engine: it only ever dials 127.0.0.1.)"""
    view = {me: {link: f"127.0.0.1:{port}" for link, port in local_ports.items()}}
    for peer, links in routes.items():
        view[peer] = {link: f"127.0.0.1:{port}" for link, port in links.items()}
    return view


async def _forward(tls: TlsStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   traffic: Traffic) -> None:
    _nodelay(writer)

    def sent(n: int) -> None:
        traffic.sent += n

    def received(n: int) -> None:
        traffic.received += n

    await relay(tls, reader, writer, sent, received)


def _peername(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    return f"{name[0]}:{name[1]}" if name else "?"


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


__all__ = ["Gateway", "GatewayError", "JobReport", "MAX_FRAME", "PeerRoute", "Refusal", "Traffic", "addresses", "pairwise_peer",
           "peer_links"]
