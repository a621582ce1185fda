"""The key directory: TTL-bounded staleness, rotation, fail closed, file-backed lists."""

from __future__ import annotations

import pytest

from protocols.crypto import sm2
from protocols.identity import KeyDirectory, KnownMember, file_members


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def keys() -> list[bytes]:
    return [sm2.generate_keypair().public_key for _ in range(3)]


def test_removed_member_is_refused_after_the_ttl_and_not_before(keys):
    registry = [KnownMember("tax", keys[0]), KnownMember("bank", keys[1])]
    clock, fetches = Clock(), []

    def fetch() -> list[KnownMember]:
        fetches.append(clock.t)
        return list(registry)

    d = KeyDirectory(fetch, ttl_s=10, miss_interval_s=1, clock=clock)
    assert d.is_known(keys[0]) and d.key_of("bank") == keys[1]
    registry[0] = KnownMember("tax", keys[0], active=False)  # removed on chain
    clock.t = 9.9
    assert d.is_known(keys[0])  # within the stated bound the cached answer stands
    clock.t = 10.0
    assert not d.is_known(keys[0]) and d.key_of("tax") is None
    assert d.is_known(keys[1])
    assert fetches == [0.0, 10.0]


def test_rotated_key_replaces_the_old_one(keys):
    registry = [KnownMember("tax", keys[0])]
    clock = Clock()
    d = KeyDirectory(lambda: list(registry), ttl_s=10, clock=clock)
    assert d.is_known(keys[0])
    registry[:] = [KnownMember("tax", keys[2])]
    clock.t = 0.5
    assert d.is_known(keys[0])  # still cached
    assert not d.is_known(keys[2])  # a miss within miss_interval_s (1 s) of the last read: no new read
    clock.t = 1.5
    assert d.is_known(keys[2])  # a miss refetches early: the new key is accepted at once…
    assert not d.is_known(keys[0])  # …and the old one is gone with that refetch
    assert d.key_of("tax") == keys[2]


def test_unknown_keys_cannot_force_a_chain_read_per_handshake(keys):
    clock, fetches = Clock(), []
    d = KeyDirectory(lambda: fetches.append(1) or [KnownMember("tax", keys[0])], ttl_s=10, miss_interval_s=1,
                     clock=clock)
    for i in range(50):
        clock.t = i * 0.01
        assert not d.is_known(keys[1])
    assert len(fetches) == 1


def test_a_failing_registry_fails_closed_once_the_snapshot_is_stale(keys):
    clock, up = Clock(), [True]

    def fetch() -> list[KnownMember]:
        if not up[0]:
            raise ConnectionError("chain down")
        return [KnownMember("tax", keys[0])]

    d = KeyDirectory(fetch, ttl_s=10, clock=clock)
    assert d.is_known(keys[0])
    up[0] = False
    clock.t = 5
    assert d.is_known(keys[0])
    clock.t = 10
    assert not d.is_known(keys[0]) and d.key_of("tax") is None
    up[0] = True
    clock.t = 11
    assert d.is_known(keys[0])


def test_file_members_reads_a_mapping_or_a_list(tmp_path, keys):
    f = tmp_path / "known.yaml"
    f.write_text(f"tax: {keys[0].hex()}\nbank: 0x{keys[1].hex()}\n")
    d = KeyDirectory(file_members(f))
    assert d.key_of("tax") == keys[0] and d.is_known(keys[1]) and not d.is_known(keys[2])
    g = tmp_path / "known.json"
    g.write_text(f'[{{"name": "tax", "sm2_public_key": "{keys[0].hex()}", "active": false}}]')
    assert not KeyDirectory(file_members(g)).is_known(keys[0])
    g.write_text('[{"name": "tax", "sm2_public_key": "abcd"}]')
    with pytest.raises(ValueError):
        file_members(g)()


def test_keep_fresh_refreshes_in_the_background(keys):
    import time

    fetches: list[float] = []
    d = KeyDirectory(lambda: fetches.append(time.monotonic()) or [KnownMember("tax", keys[0])], ttl_s=10)
    assert d.is_known(keys[0]) and len(fetches) == 1
    stop = d.keep_fresh(0.05)
    try:
        time.sleep(0.4)
        assert len(fetches) >= 4  # the thread read the registry; no lookup did
    finally:
        stop.set()
    n = len(fetches)
    time.sleep(0.2)
    assert len(fetches) <= n + 1  # stopped


def test_one_directory_answers_the_tls_layer_the_pins_and_the_routes(keys):
    """``lookup`` (the routes) reads the same cache as ``is_known`` (TLS) and ``key_of`` (pins): a removed
    member is found inactive (refused by name), a stranger is None, a chain that cannot be read past the
    bound raises (the route answers "chain unavailable") while TLS fails closed."""
    from types import SimpleNamespace

    from protocols.identity import ROLE_NAMES, from_registry, member_directory

    clock, fetches, up = Clock(), [], [True]
    registry = [SimpleNamespace(name="tax", sm2_public_key=keys[0], role=ROLE_NAMES.index("department"), active=True),
                SimpleNamespace(name="bank", sm2_public_key=keys[1], role=ROLE_NAMES.index("bank"), active=True)]

    def read() -> list:
        if not up[0]:
            raise ConnectionError("chain down")
        fetches.append(clock.t)
        return list(registry)

    d = KeyDirectory(from_registry(read), ttl_s=10, clock=clock)
    bank = d.lookup(b"\x04" + keys[1])  # a 65-byte key with its 04 prefix names the same member
    assert (bank.name, bank.role, bank.active) == ("bank", "bank", True) and d.is_known(keys[1])
    assert d.key_of("tax") == keys[0] and d.lookup(keys[2]) is None
    registry[0] = SimpleNamespace(**{**vars(registry[0]), "active": False})  # removed on chain
    clock.t = 10
    tax = d.lookup(keys[0])
    assert tax is not None and tax.name == "tax" and not tax.active and not d.is_known(keys[0])
    assert fetches == [0.0, 10.0]  # one cache: the three questions shared two reads
    up[0], clock.t = False, 20
    with pytest.raises(ConnectionError):
        d.lookup(keys[1])
    assert not d.is_known(keys[1]) and d.key_of("bank") is None
    # without a chain: the settings' peers, else the known-keys file, else nobody
    assert member_directory().lookup(keys[0]) is None


def test_a_known_keys_file_member_without_a_role_is_a_department(tmp_path, keys):
    from protocols.identity import member_directory

    f = tmp_path / "known.yaml"
    f.write_text(f"tax: {keys[0].hex()}\n")
    caller = member_directory(known_keys=f).lookup(keys[0])
    assert (caller.name, caller.role, caller.active) == ("tax", "department", True)
