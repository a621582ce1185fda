"""Member keystores (SM4-GCM under scrypt, atomic writes, rotation); signed approvals are in test_approvals.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from protocols.crypto import bls, keystore, sm2
from protocols.crypto.errors import (
    AuthenticationFailed,
    InvalidMemberName,
    KeystoreExists,
    MalformedKeystore,
    WrongPassphrase,
)

N = 2**10  # cheap scrypt for tests; the default is 2**15
MANIFEST = {"job_kind": "vertical_train", "purpose": "SME credit", "columns": {"tax": ["vat_paid"]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keystore.MemberKeys]:
    d = tmp_path_factory.mktemp("ks")
    return keystore.create_keystore(d, "tax-bureau", "correct horse", scrypt_n=N)


@pytest.fixture(scope="module")
def other_keys() -> keystore.MemberKeys:
    return keystore.generate_member_keys("court")


def test_create_and_load_roundtrip(store) -> None:
    path, keys = store
    assert path.name == "tax-bureau.keystore.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = keystore.load_keystore(path, "correct horse")
    assert loaded.public == keys.public
    assert loaded.sm2 == keys.sm2
    assert loaded.chain_private_key == keys.chain_private_key
    assert loaded.bls_secret_key == keys.bls_secret_key
    # keys actually work
    assert sm2.verify(
        keys.sm2.public_key, b"x", sm2.sign(loaded.sm2.private_key, b"x", loaded.sm2_user_id), b"tax-bureau"
    )
    assert bls.verify(loaded.bls_public_key, b"x", bls.sign(loaded.bls_secret_key, b"x"))
    from eth_account import Account

    assert Account.from_key(loaded.chain_private_key).address == keys.public.chain_address
    # secrets never appear in clear in the file, nor in repr
    text = path.read_text()
    for secret in (
        keys.sm2.private_key.hex(),
        keys.chain_private_key.hex(),
        bls.sk_to_bytes(keys.bls_secret_key).hex(),
    ):
        assert secret not in text
        assert secret not in repr(loaded)


def test_public_part_readable_without_passphrase(store) -> None:
    path, keys = store
    assert keystore.read_public(path) == keys.public
    exported = keystore.export_public(path)
    assert exported.bls_pop == keys.public.bls_pop
    assert bls.pop_verify(bytes.fromhex(exported.bls_public_key), bytes.fromhex(exported.bls_pop))
    assert len(bytes.fromhex(exported.sm2_public_key)) == 64


def test_wrong_passphrase_and_tampering(store, tmp_path: Path) -> None:
    path, _ = store
    with pytest.raises(WrongPassphrase):
        keystore.load_keystore(path, "wrong horse")
    doc = json.loads(path.read_text())
    # swap the public BLS key for someone else's: the ciphertext is bound to the public part
    doc["public"]["chain_address"] = "0x" + "11" * 20
    bad = tmp_path / "swapped.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(AuthenticationFailed):
        keystore.load_keystore(bad, "correct horse")
    # flipped bit in the ciphertext tag
    doc = json.loads(path.read_text())
    ct = bytearray.fromhex(doc["ciphertext"])
    ct[-1] ^= 1
    doc["ciphertext"] = ct.hex()
    bad.write_text(json.dumps(doc))
    with pytest.raises(AuthenticationFailed):
        keystore.load_keystore(bad, "correct horse")
    # truncated ciphertext
    doc["ciphertext"] = doc["ciphertext"][:-40]
    bad.write_text(json.dumps(doc))
    with pytest.raises(MalformedKeystore):
        keystore.load_keystore(bad, "correct horse")
    # not a keystore at all / missing / absurd kdf
    bad.write_text("{not json")
    with pytest.raises(MalformedKeystore):
        keystore.load_keystore(bad, "correct horse")
    with pytest.raises(MalformedKeystore):
        keystore.load_keystore(tmp_path / "absent.json", "x")
    doc = json.loads(path.read_text())
    for kdf in ({"n": 3}, {"n": 2**20, "r": 16}, {"salt": "00"}):
        doc = json.loads(path.read_text())
        doc["kdf"].update(kdf)
        bad.write_text(json.dumps(doc))
        with pytest.raises(MalformedKeystore):
            keystore.load_keystore(bad, "correct horse")


def test_no_overwrite_and_bad_names(store, tmp_path: Path) -> None:
    path, _ = store
    with pytest.raises(KeystoreExists):
        keystore.create_keystore(path.parent, "tax-bureau", "pw", scrypt_n=N)
    for name in ("", "../etc", "a b", "x" * 65, "-lead"):
        with pytest.raises(InvalidMemberName):
            keystore.create_keystore(tmp_path, name, "pw", scrypt_n=N)
    with pytest.raises(WrongPassphrase):
        keystore.create_keystore(tmp_path, "ok", "", scrypt_n=N)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_keystore_intact(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bank-1.keystore.json"
    keys = keystore.generate_member_keys("bank-1")
    keystore.save_keystore(keys, path, "pw", scrypt_n=N)
    before = path.read_bytes()

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        keystore.save_keystore(
            keystore.generate_member_keys("bank-1"), path, "pw", overwrite=True, scrypt_n=N
        )
    with pytest.raises(OSError, match="disk full"):
        keystore.save_keystore(keys, tmp_path / "new.keystore.json", "pw", scrypt_n=N)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bank-1.keystore.json"
    ]  # no temp files, no half file
    assert keystore.load_keystore(path, "pw").public == keys.public


def test_rotate_archives_and_replaces(tmp_path: Path) -> None:
    path, old = keystore.create_keystore(tmp_path, "power-grid", "pw1", scrypt_n=N)
    with pytest.raises(WrongPassphrase):
        keystore.rotate_keystore(path, "nope")
    new, archive = keystore.rotate_keystore(path, "pw1", new_passphrase="pw2")
    assert new.member == "power-grid" and new.public.key_version == 2
    assert new.public.sm2_public_key != old.public.sm2_public_key
    assert new.public.bls_public_key != old.public.bls_public_key
    assert new.public.chain_address != old.public.chain_address
    assert keystore.load_keystore(path, "pw2").public == new.public
    with pytest.raises(WrongPassphrase):
        keystore.load_keystore(path, "pw1")
    assert archive.parent == tmp_path / "archive"
    assert keystore.load_keystore(archive, "pw1").public == old.public
