"""Port allocation: distinct, bindable, and outside the kernel's ephemeral range (where an outgoing
connection could take a port between its allocation and the engine binding it)."""

from __future__ import annotations

import socket

from dcp import net


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low = net._ephemeral_low()
    ports = net.free_ports(20)
    assert len(set(ports)) == 20
    if low - 1 - net._LOWEST >= 1000:
        assert all(net._LOWEST <= p < low for p in ports), (low, ports)
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", p))
        s.close()


def test_a_machine_without_room_below_the_range_gets_kernel_ports(monkeypatch):
    monkeypatch.setattr(net, "_ephemeral_low", lambda: net._LOWEST + 10)
    ports = net.free_ports(3)
    assert len(set(ports)) == 3 and all(p > 0 for p in ports)


def test_a_port_in_use_is_never_handed_out(monkeypatch):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", net.free_port()))
    busy.listen()
    taken = busy.getsockname()[1]
    picks = iter([taken, taken, taken + 1 if taken + 1 != taken else taken + 2])

    class Fixed:
        def randint(self, a: int, b: int) -> int:
            return next(picks, taken + 3)

    monkeypatch.setattr(net.random, "SystemRandom", Fixed)
    monkeypatch.setattr(net, "_ephemeral_low", lambda: 65000)
    try:
        assert taken not in net.free_ports(2)
    finally:
        busy.close()
