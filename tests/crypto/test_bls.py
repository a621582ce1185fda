"""BLS12-381 (IETF POP ciphersuite) wrappers, rogue-key defence and EIP-2537 encodings."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1, signature_to_G2
from py_ecc.optimized_bls12_381 import add, neg, normalize

from common.net import free_port
from protocols.crypto import bls
from protocols.crypto.approvals import approval_message
from protocols.crypto.bls_vectors import build_vectors, default_path
from protocols.crypto.errors import (
    BadSignatureLength,
    InvalidProofOfPossession,
    MalformedKey,
    RogueKey,
)

ROOT = Path(__file__).resolve().parents[2]
MSG = approval_message(bytes(range(32)))


@pytest.fixture(scope="module")
def keys() -> list[int]:
    return [bls.keygen(bytes([0x40 + i]) * 32) for i in range(3)]


def test_keygen_is_deterministic_from_ikm_and_random_without() -> None:
    assert bls.keygen(b"\x07" * 32) == bls.keygen(b"\x07" * 32)
    assert bls.keygen() != bls.keygen()
    with pytest.raises(MalformedKey):
        bls.keygen(b"short")


def test_sign_verify_roundtrip_and_rejections(keys: list[int]) -> None:
    pk = bls.sk_to_pk(keys[0])
    sig = bls.sign(keys[0], MSG)
    assert len(pk) == 48 and len(sig) == 96
    assert bls.verify(pk, MSG, sig)
    assert not bls.verify(pk, MSG + b"x", sig)
    assert not bls.verify(bls.sk_to_pk(keys[1]), MSG, sig)


def test_secret_key_serialization(keys: list[int]) -> None:
    assert bls.sk_from_bytes(bls.sk_to_bytes(keys[0])) == keys[0]
    with pytest.raises(MalformedKey):
        bls.sk_from_bytes(bytes(32))  # zero is not a key
    with pytest.raises(MalformedKey):
        bls.sk_from_bytes(b"\xff" * 32)  # >= r
    with pytest.raises(MalformedKey):
        bls.sk_from_bytes(b"\x01" * 31)


def test_aggregate_and_fast_aggregate_verify(keys: list[int]) -> None:
    pks = [bls.sk_to_pk(k) for k in keys]
    agg = bls.aggregate([bls.sign(k, MSG) for k in keys])
    assert bls.fast_aggregate_verify(pks, MSG, agg)
    assert not bls.fast_aggregate_verify(pks[:2], MSG, agg)  # a signer missing
    assert not bls.fast_aggregate_verify(pks, MSG[:-1] + b"\x01", agg)
    # aggregate public key is the G1 sum
    assert bls.verify(bls.aggregate_pubkeys(pks), MSG, agg)
    # the registered-keys fast path gives the same answers
    assert bls.fast_aggregate_verify(pks, MSG, agg, keys_registered=True)
    assert not bls.fast_aggregate_verify(pks[:2], MSG, agg, keys_registered=True)
    with pytest.raises(MalformedKey):
        bls.fast_aggregate_verify([pks[0][:47]], MSG, agg, keys_registered=True)


def test_proof_of_possession_registration(keys: list[int]) -> None:
    pk0, pk1 = bls.sk_to_pk(keys[0]), bls.sk_to_pk(keys[1])
    pop0 = bls.pop_prove(keys[0])
    assert bls.register_key(pk0, pop0) == pk0
    with pytest.raises(InvalidProofOfPossession):
        bls.register_key(pk1, pop0)  # someone else's proof
    # a plain signature on the key is not a proof (different DST)
    with pytest.raises(InvalidProofOfPossession):
        bls.register_key(pk0, bls.sign(keys[0], pk0))


def test_rogue_key_attack_is_stopped_at_registration(keys: list[int]) -> None:
    victim_pk = bls.sk_to_pk(keys[0])
    attacker_sk = keys[2]
    attacker_pk_point = pubkey_to_G1(bls.sk_to_pk(attacker_sk))
    rogue_pk = bytes(G1_to_pubkey(add(attacker_pk_point, neg(pubkey_to_G1(victim_pk)))))
    forged = bls.sign(attacker_sk, MSG)
    # Without PoP checks the attacker alone produces a "joint" approval by victim + rogue:
    assert bls.fast_aggregate_verify([victim_pk, rogue_pk], MSG, forged)
    # ... which is why registration demands a proof of possession the attacker cannot make.
    with pytest.raises(RogueKey):
        bls.register_key(rogue_pk, bls.pop_prove(attacker_sk))


def test_malformed_inputs_raise_named_errors(keys: list[int]) -> None:
    pk = bls.sk_to_pk(keys[0])
    sig = bls.sign(keys[0], MSG)
    with pytest.raises(BadSignatureLength):
        bls.verify(pk, MSG, sig[:-1])
    with pytest.raises(BadSignatureLength):
        bls.aggregate([sig, sig + b"\x00"])
    with pytest.raises(MalformedKey):
        bls.verify(pk[:47], MSG, sig)
    with pytest.raises(MalformedKey):
        bls.verify(b"\x00" * 48, MSG, sig)  # no compression flag
    with pytest.raises(MalformedKey):
        bls.sign(0, MSG)
    with pytest.raises(MalformedKey):
        bls.to_eip2537_g1(b"\x80" + b"\xff" * 47)  # x >= p


def test_eip2537_g1_encoding_matches_py_ecc_coordinates(keys: list[int]) -> None:
    for k in keys:
        pk = bls.sk_to_pk(k)
        enc = bls.to_eip2537_g1(pk)
        x, y = normalize(pubkey_to_G1(pk))
        assert len(enc) == 128
        assert enc[:16] == bytes(16) and enc[64:80] == bytes(16)
        assert enc[16:64] == x.n.to_bytes(48, "big")
        assert enc[80:128] == y.n.to_bytes(48, "big")
        # the x coordinate is the compressed key without its flag bits
        assert (int.from_bytes(pk, "big") & ((1 << 381) - 1)) == x.n


def test_eip2537_g2_encoding_is_c0_first(keys: list[int]) -> None:
    sig = bls.sign(keys[1], MSG)
    enc = bls.to_eip2537_g2(sig)
    x, y = normalize(signature_to_G2(sig))
    parts = [enc[i : i + 64] for i in range(0, 256, 64)]
    assert all(p[:16] == bytes(16) for p in parts)
    values = [int.from_bytes(p, "big") for p in parts]
    assert values == [x.coeffs[0], x.coeffs[1], y.coeffs[0], y.coeffs[1]]
    # compressed signature: first 48 bytes carry x.c1 (imaginary part), last 48 x.c0
    assert int.from_bytes(sig[48:], "big") == x.coeffs[0]
    assert int.from_bytes(sig[:48], "big") & ((1 << 381) - 1) == x.coeffs[1]


def test_infinity_encodings() -> None:
    inf_g1 = b"\xc0" + bytes(47)
    assert bls.to_eip2537_g1(inf_g1) == bytes(128)
    with pytest.raises(MalformedKey):
        bls.validate_pubkey(inf_g1)


def test_committed_vectors_have_not_drifted() -> None:
    committed = json.loads(default_path().read_text())
    assert committed == build_vectors()
    members = committed["members"]
    assert len(members) == 5
    for m in members:
        pk = bytes.fromhex(m["pubkey"][2:])
        assert bls.sk_to_pk(bls.sk_from_bytes(bytes.fromhex(m["sk"][2:]))) == pk
        assert bls.pop_verify(pk, bytes.fromhex(m["pop"][2:]))


def _rpc(url: str, method: str, params: list) -> dict:
    return httpx.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30
    ).json()


def _precompile(url: str, address: int, data: bytes) -> bytes:
    reply = _rpc(
        url, "eth_call", [{"to": "0x" + format(address, "040x"), "data": "0x" + data.hex()}, "latest"]
    )
    assert "result" in reply, reply
    return bytes.fromhex(reply["result"][2:])


@pytest.mark.slow
def test_vectors_verify_through_anvil_eip2537_precompiles(no_leaked_processes: None) -> None:
    """The shared vectors, checked by a real anvil's EIP-2537 precompiles (Prague)."""
    anvil = ROOT / "contracts" / "node_modules" / ".bin" / "anvil"
    if not anvil.exists():
        pytest.skip("anvil not installed (run scripts/bootstrap.sh)")
    v = json.loads(default_path().read_text())
    hx = lambda s: bytes.fromhex(s[2:])  # noqa: E731
    port = free_port()
    proc = subprocess.Popen(
        [str(anvil), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _rpc(url, "eth_chainId", [])
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        one, zero = (1).to_bytes(32, "big"), bytes(32)
        assert (
            _precompile(url, bls.PRECOMPILE_PAIRING_CHECK, hx(v["aggregate"]["pairing_check_input"])) == one
        )
        assert (
            _precompile(url, bls.PRECOMPILE_PAIRING_CHECK, hx(v["pop_member0"]["pairing_check_input"])) == one
        )
        neg_ = v["negative"]
        assert (
            _precompile(url, bls.PRECOMPILE_PAIRING_CHECK, hx(neg_["pairing_check_input_tampered"])) == zero
        )
        assert (
            _precompile(url, bls.PRECOMPILE_PAIRING_CHECK, hx(neg_["pairing_check_input_missing_signer"]))
            == zero
        )
        # hash-to-curve as a contract would do it: MAP_FP2_TO_G2(u0) + MAP_FP2_TO_G2(u1)
        a = v["approval"]
        q0 = _precompile(url, bls.PRECOMPILE_MAP_FP2_TO_G2, hx(a["hash_to_field_u0_eip2537"]))
        q1 = _precompile(url, bls.PRECOMPILE_MAP_FP2_TO_G2, hx(a["hash_to_field_u1_eip2537"]))
        assert _precompile(url, bls.PRECOMPILE_G2ADD, q0 + q1) == hx(a["message_point_eip2537"])
        # the aggregate public key as a contract would sum registered keys with G1ADD
        acc = hx(v["members"][0]["pubkey_eip2537"])
        for m in v["members"][1:]:
            acc = _precompile(url, bls.PRECOMPILE_G1ADD, acc + hx(m["pubkey_eip2537"]))
        assert acc == hx(v["aggregate"]["pubkey_eip2537"])
        # and signatures with G2ADD
        acc2 = hx(v["members"][0]["signature_eip2537"])
        for m in v["members"][1:]:
            acc2 = _precompile(url, bls.PRECOMPILE_G2ADD, acc2 + hx(m["signature_eip2537"]))
        assert acc2 == hx(v["aggregate"]["signature_eip2537"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
