"""BLS12-381 (IETF POP ciphersuite) wrappers, rogue-key defence and EIP-2537 encodings."""

from __future__ import annotations

import json
import secrets
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
    CryptoError,
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


# --------------------------------------------------------------------------- native (blspy over blst) vs py_ecc


def _non_subgroup_g1_point() -> tuple:
    """A point of E(Fp) outside the r-order subgroup: r·R for the first curve point R with r·R ≠ O."""
    from py_ecc.optimized_bls12_381 import FQ, b, curve_order, field_modulus, is_inf, multiply

    x = 1
    while True:
        rhs = FQ(x) ** 3 + b
        y = rhs ** ((field_modulus + 1) // 4)
        if y * y == rhs:
            torsion = multiply((FQ(x), y, FQ(1)), curve_order)
            if not is_inf(torsion):
                return torsion
        x += 1


def _non_subgroup_g2_point() -> tuple:
    from py_ecc.bls.point_compression import modular_squareroot_in_FQ2
    from py_ecc.optimized_bls12_381 import FQ2, b2, curve_order, is_inf, multiply

    xi = 1
    while True:
        x = FQ2([xi, 1])
        y = modular_squareroot_in_FQ2(x**3 + b2)
        if y is not None:
            torsion = multiply((x, y, FQ2.one()), curve_order)
            if not is_inf(torsion):
                return torsion
        xi += 1


def test_native_backend_is_the_default() -> None:
    """blspy is locked: a broken install must fail here, not fall back to py_ecc."""
    assert bls.native_available()
    assert bls._native("auto") and bls._native("native") and not bls._native("py_ecc")
    with pytest.raises(CryptoError):
        bls.sign(1, MSG, backend="blst")  # type: ignore[arg-type]


def test_native_reproduces_the_committed_vectors() -> None:
    """The shared vectors (checked by anvil's EIP-2537 precompiles) byte for byte, natively."""
    v = json.loads(default_path().read_text())
    hx = lambda s: bytes.fromhex(s[2:])  # noqa: E731
    message = hx(v["approval"]["message"])
    pks, sigs = [], []
    for m in v["members"]:
        sk = bls.sk_from_bytes(hx(m["sk"]))
        pk, sig = hx(m["pubkey"]), hx(m["signature"])
        assert bls.sk_to_pk(sk, backend="native") == pk
        assert bls.sign(sk, message, backend="native") == sig
        assert bls.verify(pk, message, sig, backend="native")
        assert not bls.verify(pk, message + b"\x00", sig, backend="native")
        pks.append(pk)
        sigs.append(sig)
    assert bls.aggregate(sigs, backend="native") == hx(v["aggregate"]["signature"])
    assert bls.aggregate_pubkeys(pks, backend="native") == hx(v["aggregate"]["pubkey"])
    agg = hx(v["aggregate"]["signature"])
    assert bls.fast_aggregate_verify(pks, message, agg, backend="native")
    assert not bls.fast_aggregate_verify(pks[:-1], message, agg, backend="native")
    assert not bls.fast_aggregate_verify(pks, message[:-1] + b"\x00", agg, backend="native")


def test_native_and_py_ecc_agree_on_random_keys() -> None:
    sks = [bls.keygen() for _ in range(3)]
    msg = secrets.token_bytes(45)
    pks = [bls.sk_to_pk(k, backend="native") for k in sks]
    assert pks == [bls.sk_to_pk(k, backend="py_ecc") for k in sks]
    sig = bls.sign(sks[0], msg, backend="native")
    assert sig == bls.sign(sks[0], msg, backend="py_ecc")  # deterministic signatures
    assert bls.verify(pks[0], msg, sig, backend="py_ecc")
    sigs = [sig] + [bls.sign(k, msg, backend="native") for k in sks[1:]]
    agg = bls.aggregate(sigs, backend="native")
    assert agg == bls.aggregate(sigs, backend="py_ecc")
    assert bls.aggregate_pubkeys(pks, backend="native") == bls.aggregate_pubkeys(pks, backend="py_ecc")
    for backend in ("native", "py_ecc"):
        assert bls.fast_aggregate_verify(pks, msg, agg, backend=backend)
        assert bls.fast_aggregate_verify(pks, msg, agg, keys_registered=True, backend=backend)
        assert not bls.fast_aggregate_verify(pks[1:], msg, agg, backend=backend)
        assert not bls.verify(pks[1], msg, sig, backend=backend)


def _malformed_pubkeys() -> dict[str, bytes]:
    from py_ecc.bls.point_compression import compress_G1

    p = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
    return {
        "no compression flag": b"\x00" * 48,
        "x >= p": (p | (0x80 << 376)).to_bytes(48, "big"),
        "identity": b"\xc0" + bytes(47),
        "identity with sign bit": b"\xe0" + bytes(47),
        "identity flag, nonzero x": b"\xc0" + bytes(46) + b"\x01",
        "x not on the curve": ((0x80 << 376) | 4).to_bytes(48, "big"),  # x^3 + 4 = 68 is no square mod p
        "outside the subgroup": compress_G1(_non_subgroup_g1_point()).to_bytes(48, "big"),
    }


@pytest.mark.parametrize("case", list(_malformed_pubkeys()))
def test_native_refuses_every_key_py_ecc_refuses(keys: list[int], case: str) -> None:
    """KeyValidate parity: blspy never takes as a key one py_ecc's KeyValidate refuses."""

    bad = _malformed_pubkeys()[case]
    sig = bls.sign(keys[0], MSG)
    good = bls.sk_to_pk(keys[0])
    for backend in ("native", "py_ecc"):
        with pytest.raises(MalformedKey):
            bls.validate_pubkey(bad, backend=backend)
        with pytest.raises(MalformedKey):
            bls.verify(bad, MSG, sig, backend=backend)
        with pytest.raises(MalformedKey):
            bls.aggregate_pubkeys([good, bad], backend=backend)
        with pytest.raises(MalformedKey):
            bls.fast_aggregate_verify([good, bad], MSG, sig, backend=backend)
    # py_ecc's registered-keys path trusts registration (it sums, then validates only the sum);
    # the native one still checks every key
    with pytest.raises(MalformedKey):
        bls.fast_aggregate_verify([good, bad], MSG, sig, keys_registered=True)
    assert not _blspy_takes_as_key(bad)


def _blspy_takes_as_key(pk: bytes) -> bool:
    """blspy's own verdict, without this module's wrapper: parsed, and not the identity."""
    import blspy

    try:
        return blspy.G1Element.from_bytes(pk) != blspy.G1Element()
    except (ValueError, RuntimeError):
        return False


def test_keys_whose_torsion_cancels_in_the_sum_are_refused(keys: list[int]) -> None:
    """Two off-subgroup keys a·G + T and b·G − T sum to a valid key: only a per-key check stops them."""
    from py_ecc.bls.point_compression import compress_G1
    from py_ecc.optimized_bls12_381 import G1, multiply

    torsion = _non_subgroup_g1_point()
    a, b_ = keys[0], keys[1]
    k1 = compress_G1(add(multiply(G1, a), torsion)).to_bytes(48, "big")
    k2 = compress_G1(add(multiply(G1, b_), neg(torsion))).to_bytes(48, "big")
    agg = bls.aggregate([bls.sign(a, MSG), bls.sign(b_, MSG)])
    for backend in ("native", "py_ecc"):
        with pytest.raises(MalformedKey):
            bls.fast_aggregate_verify([k1, k2], MSG, agg, backend=backend)
    with pytest.raises(MalformedKey):  # natively even the registered-keys path checks every key
        bls.fast_aggregate_verify([k1, k2], MSG, agg, keys_registered=True)
    assert not _blspy_takes_as_key(k1) and not _blspy_takes_as_key(k2)


def test_signature_outside_the_subgroup_never_verifies(keys: list[int]) -> None:
    from py_ecc.bls.point_compression import compress_G2

    pk, sig = bls.sk_to_pk(keys[0]), bls.sign(keys[0], MSG)
    z1, z2 = compress_G2(add(signature_to_G2(sig), _non_subgroup_g2_point()))
    bad = z1.to_bytes(48, "big") + z2.to_bytes(48, "big")
    for backend in ("native", "py_ecc"):
        assert not bls.verify(pk, MSG, bad, backend=backend)
        assert not bls.fast_aggregate_verify([pk], MSG, bad, backend=backend)
    assert bls.verify(pk, MSG, sig)


def test_native_aggregate_verify_of_18_approvals() -> None:
    """The audit's case: 18 departments approve one message; one aggregate verifies natively."""
    sks = [bls.keygen(bytes([i + 1]) * 32) for i in range(18)]
    pks = [bls.sk_to_pk(k) for k in sks]
    agg = bls.aggregate([bls.sign(k, MSG) for k in sks])
    assert bls.fast_aggregate_verify(pks, MSG, agg)
    for _ in range(2):  # the second call takes the cached sum of the 18 registered keys
        assert bls.fast_aggregate_verify(pks, MSG, agg, keys_registered=True)
        assert not bls.fast_aggregate_verify(pks, MSG + b"x", agg, keys_registered=True)
        assert not bls.fast_aggregate_verify(pks, MSG, bls.sign(sks[0], MSG), keys_registered=True)
    assert not bls.fast_aggregate_verify(pks[:17], MSG, agg)
    assert not bls.fast_aggregate_verify(pks[:17] + [bls.sk_to_pk(bls.keygen())], MSG, agg)
    assert bls.verify(bls.aggregate_pubkeys(pks), MSG, agg, backend="py_ecc")


def test_native_proofs_of_possession_match_py_ecc(keys: list[int]) -> None:
    """The PoPs (POP_DST) are native too now: the same bytes as py_ecc, and each side checks the other's."""
    for sk in keys[:2]:
        pk = bls.sk_to_pk(sk)
        proof = bls.pop_prove(sk, backend="native")
        assert proof == bls.pop_prove(sk, backend="py_ecc")
        assert bls.pop_verify(pk, proof, backend="native") and bls.pop_verify(pk, proof, backend="py_ecc")
        # a signature under the signing DST is no proof of possession, on either side
        not_a_pop = bls.sign(sk, pk)
        assert not bls.pop_verify(pk, not_a_pop, backend="native")
        assert not bls.pop_verify(pk, not_a_pop, backend="py_ecc")
    other = bls.sk_to_pk(keys[2])
    assert not bls.pop_verify(other, bls.pop_prove(keys[0]), backend="native")
