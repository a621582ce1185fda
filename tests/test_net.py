"""Port allocation: distinct, bindable, outside the kernel's ephemeral range (where an outgoing
connection could take a port between its allocation and the engine binding it), and never handed out
twice on one host while its lease lasts (five nodes allocate for the same job at the same moment)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from common import net


@pytest.fixture()
def leases(tmp_path, monkeypatch):
    path = tmp_path / "leases.json"
    monkeypatch.setenv("DCP_PORT_LEASES", str(path))
    return path


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range(leases):
    low = net._ephemeral_low()
    ports = net.free_ports(20)
    assert len(set(ports)) == 20
    if low - 1 - net._LOWEST >= 1000:
        assert all(net._LOWEST <= p < low for p in ports), (low, ports)
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", p))
        s.close()
    assert set(map(int, json.loads(leases.read_text()))) == set(ports)


def test_a_machine_without_room_below_the_range_gets_kernel_ports(leases, monkeypatch):
    monkeypatch.setattr(net, "_ephemeral_low", lambda: net._LOWEST + 10)
    ports = net.free_ports(3)
    assert len(set(ports)) == 3 and all(p > 0 for p in ports)


def scripted_picks(monkeypatch, picks: list[int], then: int) -> None:
    """Make free_ports' random choice offer ``picks`` in order, then ``then`` for ever (a range up to
    65,000, so that ports the kernel handed out are in it)."""
    it = iter(picks)

    class Fixed:
        def randint(self, a: int, b: int) -> int:
            return next(it, then)

    monkeypatch.setattr(net.random, "SystemRandom", Fixed)
    monkeypatch.setattr(net, "_ephemeral_low", lambda: 65000)


def test_a_port_in_use_is_never_handed_out(leases, monkeypatch):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))  # not through free_ports: no lease, only the bind check can refuse it
    busy.listen()
    taken = busy.getsockname()[1]
    scripted_picks(monkeypatch, [taken, taken, taken + 1], then=taken + 3)
    try:
        assert taken not in net.free_ports(2)
    finally:
        busy.close()


def test_a_port_a_closed_connection_holds_in_time_wait_is_never_handed_out(leases, monkeypatch):
    # a server ran on the port and closed its side of a connection first: the port stays in TIME_WAIT
    # for a minute, and a plain bind (no SO_REUSEADDR) fails on it with "Address already in use"
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held = srv.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", held))
    conn, _ = srv.accept()
    conn.close()
    time.sleep(0.05)
    client.close()
    srv.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", held))
    scripted_picks(monkeypatch, [held, held], then=held + 1)
    ports = net.free_ports(1)
    assert held not in ports
    if ports == [held + 1]:  # the pick after the refused ones, unless another process holds it
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
            plain.bind(("127.0.0.1", held + 1))


def test_a_leased_port_is_not_handed_out_again_until_the_lease_ends(leases, monkeypatch):
    # a range of 1,001 ports: 900 allocations in a row, none twice, although each was closed at once
    monkeypatch.setattr(net, "_ephemeral_low", lambda: net._LOWEST + 1001)
    got = [p for _ in range(100) for p in net.free_ports(9)]
    assert len(got) == len(set(got)) == 900
    # once the leases have ended (LEASE_S later), the same ports may come back
    real = net.time.time
    monkeypatch.setattr(net.time, "time", lambda: real() + net.LEASE_S + 1)
    again = [p for _ in range(60) for p in net.free_ports(9)]
    assert set(again) & set(got)
    assert set(map(int, json.loads(leases.read_text()))) == set(again)  # the ended leases were dropped


def test_a_damaged_lease_file_is_started_again(leases):
    leases.write_text("{not json")
    ports = net.free_ports(4)
    assert len(set(ports)) == 4 and set(map(int, json.loads(leases.read_text()))) == set(ports)


def test_processes_allocating_at_the_same_moment_never_share_a_port(leases):
    # four processes, 150 ports each, from a range of 1,001: without the host-wide leases the
    # birthday bound makes a shared port near certain
    code = (
        "import sys; from common import net\n"
        "net._ephemeral_low = lambda: net._LOWEST + 1001\n"
        "print(' '.join(str(p) for _ in range(50) for p in net.free_ports(3)))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ports = [int(x) for out in outs for x in out]
    assert len(ports) == 600 and len(set(ports)) == 600
