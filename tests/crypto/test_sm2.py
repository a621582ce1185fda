"""SM2 (GB/T 32918) signatures with user IDs, encryption, envelopes; interop with the openssl CLI."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from protocols.crypto import envelope, sm2
from protocols.crypto.errors import (
    AuthenticationFailed,
    BadSignatureLength,
    CiphertextTruncated,
    CryptoError,
    DecryptionFailed,
    InvalidSignature,
    MalformedCiphertext,
    MalformedKey,
)

# GM/T 0003.5-2012 / GB/T 32918.5-2017 Appendix A, recommended curve, message "message digest".
KAT_D = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
KAT_PUB = bytes.fromhex(
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
KAT_ZA = "b2e14c5c79c6df5b85f4fe7ed8db7a262b9da7e07ccb0ea9f4747b8ccda8a4f3"
KAT_E = "f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640"
KAT_K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
KAT_SIG = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)
# The same appendix, encryption (04 || C1 || C3 || C2) of "encryption standard" to KAT_PUB with nonce
# KAT_K; C1 = (x1, y1), whose x1 happens to start with 04 too.
KAT_C1 = bytes.fromhex(
    "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
    "E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"
)
KAT_C3 = bytes.fromhex("59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766")
KAT_C2 = bytes.fromhex("21886CA989CA9C7D58087307CA93092D651EFA")
BACKENDS = ("native", "gmssl")


@pytest.fixture(scope="module")
def kp() -> sm2.Sm2KeyPair:
    return sm2.generate_keypair()


def test_known_answer_gbt32918() -> None:
    assert sm2.public_key_from_private(KAT_D) == KAT_PUB
    assert sm2.compute_za(KAT_PUB).hex() == KAT_ZA
    assert sm2.message_digest(KAT_PUB, b"message digest").hex() == KAT_E
    assert sm2.sign(KAT_D, b"message digest", _k=KAT_K) == KAT_SIG
    assert sm2.verify(KAT_PUB, b"message digest", KAT_SIG)
    assert not sm2.verify(KAT_PUB, b"message digesT", KAT_SIG)


def test_sign_then_verify_with_user_id(kp: sm2.Sm2KeyPair) -> None:
    sig = sm2.sign(kp.private_key, b"manifest", b"tax-bureau@dcp")
    assert len(sig) == 64
    assert sm2.verify(kp.public_key, b"manifest", sig, b"tax-bureau@dcp")
    # the user ID is part of what is signed
    assert not sm2.verify(kp.public_key, b"manifest", sig)
    assert not sm2.verify(kp.public_key, b"manifest", sig, b"court@dcp")
    assert not sm2.verify(sm2.generate_keypair().public_key, b"manifest", sig, b"tax-bureau@dcp")
    # signatures are randomized
    assert sm2.sign(kp.private_key, b"manifest") != sm2.sign(kp.private_key, b"manifest")
    sm2.require_valid(kp.public_key, b"m", sm2.sign(kp.private_key, b"m"))
    with pytest.raises(InvalidSignature):
        sm2.require_valid(kp.public_key, b"m2", sm2.sign(kp.private_key, b"m"))


def test_bad_signatures_and_keys_raise_named_errors(kp: sm2.Sm2KeyPair) -> None:
    sig = sm2.sign(kp.private_key, b"m")
    with pytest.raises(BadSignatureLength):
        sm2.verify(kp.public_key, b"m", sig[:63])
    with pytest.raises(BadSignatureLength):
        sm2.verify(kp.public_key, b"m", sig + b"\x00")
    assert not sm2.verify(kp.public_key, b"m", bytes(64))  # r = s = 0
    assert not sm2.verify(kp.public_key, b"m", b"\xff" * 64)  # r, s >= n
    off_curve = kp.public_key[:63] + bytes([kp.public_key[63] ^ 1])
    with pytest.raises(MalformedKey):
        sm2.verify(off_curve, b"m", sig)
    with pytest.raises(MalformedKey):
        sm2.verify(kp.public_key[:40], b"m", sig)
    with pytest.raises(MalformedKey):
        sm2.sign(bytes(32), b"m")
    with pytest.raises(MalformedKey):
        sm2.sign(b"\x01" * 31, b"m")
    assert sm2.validate_public_key(b"\x04" + kp.public_key) == kp.public_key


@pytest.mark.parametrize(("d", "prefix"), [(11, "04"), (327, "00")])
def test_public_keys_starting_with_zero_or_four_survive(d: int, prefix: str) -> None:
    """gmssl's constructor strips leading '0'/'4' hex digits; our wrapper must not. The private keys
    are the smallest whose public x starts with 04 / 00 (a random key does only once in 256)."""
    priv = d.to_bytes(32, "big")
    pub = sm2.public_key_from_private(priv)
    assert pub.hex().startswith(prefix) and len(pub) == 64
    sig = sm2.sign(priv, b"m")
    assert sm2.verify(pub, b"m", sig)
    assert sm2.decrypt(priv, sm2.encrypt(pub, b"m")) == b"m"


def test_der_roundtrip(kp: sm2.Sm2KeyPair) -> None:
    sig = sm2.sign(kp.private_key, b"m")
    assert sm2.signature_from_der(sm2.signature_to_der(sig)) == sig
    with pytest.raises(BadSignatureLength):
        sm2.signature_from_der(b"\x30\x02\x01")


def test_encrypt_decrypt(kp: sm2.Sm2KeyPair) -> None:
    ct = sm2.encrypt(kp.public_key, b"sm4 key 16 bytes")
    assert len(ct) == 97 + 16
    assert sm2.decrypt(kp.private_key, ct) == b"sm4 key 16 bytes"
    with pytest.raises(DecryptionFailed):
        sm2.decrypt(sm2.generate_keypair().private_key, ct)
    bad = bytearray(ct)
    bad[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        sm2.decrypt(kp.private_key, bytes(bad))
    bad = bytearray(ct)
    bad[5] ^= 1  # C1 off the curve
    with pytest.raises(MalformedCiphertext):
        sm2.decrypt(kp.private_key, bytes(bad))
    with pytest.raises(MalformedCiphertext):
        sm2.decrypt(kp.private_key, ct[:97])
    assert sm2.ciphertext_from_der(sm2.ciphertext_to_der(ct)) == ct


@pytest.mark.parametrize("size", [1, 200, 256, 257, 100_000])
def test_envelope_roundtrip(kp: sm2.Sm2KeyPair, size: int) -> None:
    payload = os.urandom(size)
    env = envelope.seal(kp.public_key, payload, b"job-9")
    assert env[5] == (envelope.MODE_DIRECT if size <= envelope.DIRECT_MAX else envelope.MODE_WRAPPED)
    assert envelope.open_(kp.private_key, env, b"job-9") == payload
    with pytest.raises((AuthenticationFailed, DecryptionFailed)):
        envelope.open_(kp.private_key, env, b"job-10")
    with pytest.raises(DecryptionFailed):
        envelope.open_(sm2.generate_keypair().private_key, env, b"job-9")


def test_envelope_bad_input(kp: sm2.Sm2KeyPair) -> None:
    env = envelope.seal(kp.public_key, os.urandom(1000))
    with pytest.raises(CiphertextTruncated):
        envelope.open_(kp.private_key, env[:-40])
    with pytest.raises(CiphertextTruncated):
        envelope.open_(kp.private_key, env[:3])
    with pytest.raises(CiphertextTruncated):
        envelope.open_(kp.private_key, env[:50])
    with pytest.raises(MalformedCiphertext):
        envelope.open_(kp.private_key, b"NOPE" + env[4:])
    bad = bytearray(env)
    bad[-1] ^= 1
    with pytest.raises(AuthenticationFailed):
        envelope.open_(kp.private_key, bytes(bad))
    small = envelope.seal(kp.public_key, b"tiny")
    with pytest.raises(CiphertextTruncated):
        envelope.open_(kp.private_key, small[:60])


def test_envelope_files(kp: sm2.Sm2KeyPair, tmp_path: Path) -> None:
    src = tmp_path / "result.parquet"
    src.write_bytes(os.urandom(700_000))
    enc = tmp_path / "result.env"
    envelope.seal_file(kp.public_key, src, enc, b"receiver=bank-1")
    out = tmp_path / "decrypted"
    assert envelope.open_file(kp.private_key, enc, out, b"receiver=bank-1") == 700_000
    assert out.read_bytes() == src.read_bytes()
    enc.write_bytes(enc.read_bytes()[:-100])
    gone = tmp_path / "never"
    with pytest.raises(CiphertextTruncated):
        envelope.open_file(kp.private_key, enc, gone, b"receiver=bank-1")
    assert not gone.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decrypted", "result.env", "result.parquet"]


# --------------------------------------------------------------------------- OpenSSL CLI interop


def _openssl_sm2() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("no openssl CLI")
    out = subprocess.run([exe, "list", "-public-key-algorithms"], capture_output=True, text=True).stdout
    if "SM2" not in out:
        pytest.skip("this openssl CLI has no SM2")
    return exe


def _openssl_key(exe: str, d: Path) -> tuple[Path, bytes, bytes]:
    key = d / "k.pem"
    subprocess.run([exe, "genpkey", "-algorithm", "SM2", "-out", str(key)], check=True, capture_output=True)
    der = subprocess.run(
        [exe, "pkey", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    text = subprocess.run(
        [exe, "pkey", "-in", str(key), "-text", "-noout"], check=True, capture_output=True, text=True
    ).stdout
    priv_hex = re.search(r"priv:\s*((?:[0-9a-f]{2}:?\s*)+)pub:", text).group(1)
    priv = bytes.fromhex(re.sub(r"[^0-9a-f]", "", priv_hex)).rjust(32, b"\x00")[-32:]
    return key, der[-64:], priv


def test_our_signature_verifies_with_openssl(kp: sm2.Sm2KeyPair, tmp_path: Path) -> None:
    exe = _openssl_sm2()
    (tmp_path / "pub.pem").write_text(sm2.public_key_to_pem(kp.public_key))
    (tmp_path / "msg").write_bytes(b"approve manifest 42")
    (tmp_path / "sig").write_bytes(
        sm2.signature_to_der(sm2.sign(kp.private_key, b"approve manifest 42", b"dept-7"))
    )
    base = [
        exe,
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(tmp_path / "pub.pem"),
        "-rawin",
        "-digest",
        "sm3",
        "-in",
        str(tmp_path / "msg"),
        "-sigfile",
        str(tmp_path / "sig"),
    ]
    ok = subprocess.run([*base, "-pkeyopt", "distid:dept-7"], capture_output=True, text=True)
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
    wrong_id = subprocess.run([*base, "-pkeyopt", "distid:dept-8"], capture_output=True, text=True)
    assert wrong_id.returncode != 0


def test_openssl_signature_verifies_with_us(tmp_path: Path) -> None:
    exe = _openssl_sm2()
    key, pub, _ = _openssl_key(exe, tmp_path)
    (tmp_path / "msg").write_bytes(b"receipt 99")
    subprocess.run(
        [
            exe,
            "pkeyutl",
            "-sign",
            "-inkey",
            str(key),
            "-rawin",
            "-digest",
            "sm3",
            "-in",
            str(tmp_path / "msg"),
            "-pkeyopt",
            "distid:node-3",
            "-out",
            str(tmp_path / "sig"),
        ],
        check=True,
        capture_output=True,
    )
    sig = sm2.signature_from_der((tmp_path / "sig").read_bytes())
    assert sm2.verify(pub, b"receipt 99", sig, b"node-3")
    assert not sm2.verify(pub, b"receipt 99", sig, b"node-4")


def test_sm2_encryption_interoperates_with_openssl(tmp_path: Path) -> None:
    exe = _openssl_sm2()
    key, pub, priv = _openssl_key(exe, tmp_path)
    assert sm2.public_key_from_private(priv) == pub
    # ours → openssl
    (tmp_path / "c1").write_bytes(sm2.ciphertext_to_der(sm2.encrypt(pub, b"wrapped sm4 key!")))
    out = subprocess.run(
        [exe, "pkeyutl", "-decrypt", "-inkey", str(key), "-in", str(tmp_path / "c1")],
        check=True,
        capture_output=True,
    ).stdout
    assert out == b"wrapped sm4 key!"
    # openssl → ours
    (tmp_path / "pub.pem").write_text(sm2.public_key_to_pem(pub))
    (tmp_path / "m").write_bytes(b"from openssl")
    subprocess.run(
        [
            exe,
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            str(tmp_path / "pub.pem"),
            "-in",
            str(tmp_path / "m"),
            "-out",
            str(tmp_path / "c2"),
        ],
        check=True,
        capture_output=True,
    )
    assert sm2.decrypt(priv, sm2.ciphertext_from_der((tmp_path / "c2").read_bytes())) == b"from openssl"


# --------------------------------------------------------------------------- native (Tongsuo) vs gmssl


def test_native_backend_is_the_default() -> None:
    """tongsuopy is locked: a broken install must fail here, not silently fall back to gmssl."""
    assert sm2.native_available()
    assert sm2._native("auto") is sm2._native("native") is not None
    assert sm2._native("gmssl") is None
    with pytest.raises(CryptoError):
        sm2.sign(KAT_D, b"m", backend="openssl")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_answer_gbt32918_each_backend(backend: sm2.Backend) -> None:
    assert sm2.public_key_from_private(KAT_D, backend=backend) == KAT_PUB
    assert sm2.verify(KAT_PUB, b"message digest", KAT_SIG, backend=backend)
    assert not sm2.verify(KAT_PUB, b"message digesT", KAT_SIG, backend=backend)
    assert not sm2.verify(KAT_PUB, b"message digest", KAT_SIG, b"other-id", backend=backend)
    # a fresh signature of the KAT message (random nonce) verifies on the other backend
    other = "gmssl" if backend == "native" else "native"
    sig = sm2.sign(KAT_D, b"message digest", backend=backend)
    assert sig != KAT_SIG
    assert sm2.verify(KAT_PUB, b"message digest", sig, backend=other)


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_answer_encryption_gbt32918(backend: sm2.Backend) -> None:
    """C1 = k·G of the appendix, and its ciphertext decrypts (C3 checked) to the appendix's message."""
    x1, y1 = sm2._scalar_mult(KAT_K, sm2.G_HEX, sm2._native(backend))
    assert x1.to_bytes(32, "big") + y1.to_bytes(32, "big") == KAT_C1
    assert sm2.decrypt(KAT_D, b"\x04" + KAT_C1 + KAT_C3 + KAT_C2, backend=backend) == b"encryption standard"
    with pytest.raises(DecryptionFailed):
        sm2.decrypt(KAT_D, b"\x04" + KAT_C1 + KAT_C3 + KAT_C2[:-1] + b"\x00", backend=backend)


def test_native_and_gmssl_cross_verify_random_keys_ids_messages() -> None:
    for i in range(6):
        kp = sm2.generate_keypair(backend="native" if i % 2 else "gmssl")
        assert sm2.public_key_from_private(kp.private_key, backend="gmssl") == kp.public_key
        assert sm2.public_key_from_private(kp.private_key, backend="native") == kp.public_key
        uid = secrets.token_bytes(1 + i * 7)
        msg = secrets.token_bytes(i * 71)
        native_sig = sm2.sign(kp.private_key, msg, uid, public_key=kp.public_key, backend="native")
        gmssl_sig = sm2.sign(kp.private_key, msg, uid, public_key=kp.public_key, backend="gmssl")
        for sig in (native_sig, gmssl_sig):
            for backend in BACKENDS:
                assert sm2.verify(kp.public_key, msg, sig, uid, backend=backend)
                assert not sm2.verify(kp.public_key, msg + b"x", sig, uid, backend=backend)
                assert not sm2.verify(kp.public_key, msg, sig, uid + b"x", backend=backend)
        # r||s with s flipped: both refuse
        bad = native_sig[:32] + ((int.from_bytes(native_sig[32:], "big") + 1) % sm2.N).to_bytes(32, "big")
        assert not sm2.verify(kp.public_key, msg, bad, uid, backend="native")
        assert not sm2.verify(kp.public_key, msg, bad, uid, backend="gmssl")


def test_native_and_gmssl_encryption_interoperate(kp: sm2.Sm2KeyPair) -> None:
    for enc, dec in (("native", "gmssl"), ("gmssl", "native")):
        ct = sm2.encrypt(kp.public_key, b"wrapped sm4 key!", backend=enc)
        assert sm2.decrypt(kp.private_key, ct, backend=dec) == b"wrapped sm4 key!"
        with pytest.raises(DecryptionFailed):
            sm2.decrypt(sm2.generate_keypair().private_key, ct, backend=dec)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_signatures_refused_and_error_queue_left_empty(
    kp: sm2.Sm2KeyPair, backend: sm2.Backend
) -> None:
    sig = sm2.sign(kp.private_key, b"m", backend=backend)
    r = int.from_bytes(sig[:32], "big")
    n_minus_r = (sm2.N - r).to_bytes(32, "big")
    for bad in (bytes(64), b"\xff" * 64, sig[:32] + n_minus_r, sig[:32] + bytes(31) + b"\x01"):
        assert not sm2.verify(kp.public_key, b"m", bad, backend=backend)
    assert not sm2.verify(sm2.generate_keypair().public_key, b"m", sig, backend=backend)
    assert sm2._tongsuo().lib.ERR_peek_error() == 0


@pytest.mark.parametrize(("d", "prefix"), [(11, "04"), (327, "00")])
def test_native_keys_starting_with_zero_or_four(d: int, prefix: str) -> None:
    priv = d.to_bytes(32, "big")
    pub = sm2.public_key_from_private(priv, backend="native")
    assert pub.hex().startswith(prefix) and pub == sm2.public_key_from_private(priv, backend="gmssl")
    assert sm2.verify(pub, b"m", sm2.sign(priv, b"m", backend="native"), backend="gmssl")
    assert sm2.decrypt(priv, sm2.encrypt(pub, b"m", backend="gmssl"), backend="native") == b"m"


def test_native_signing_from_threads(kp: sm2.Sm2KeyPair) -> None:
    """cffi drops the GIL inside Tongsuo: concurrent signers share the group and nothing else."""
    msgs = [f"receipt {i}".encode() for i in range(64)]
    with ThreadPoolExecutor(4) as pool:
        sigs = list(
            pool.map(lambda m: sm2.sign(kp.private_key, m, b"node-1", public_key=kp.public_key), msgs)
        )
        oks = list(
            pool.map(
                lambda ms: sm2.verify(kp.public_key, ms[0], ms[1], b"node-1"), zip(msgs, sigs, strict=True)
            )
        )
    assert oks == [True] * 64
    assert len(set(sigs)) == 64
    assert all(
        sm2.verify(kp.public_key, m, s, b"node-1", backend="gmssl")
        for m, s in zip(msgs[:4], sigs[:4], strict=True)
    )


def _sign_in_child(args: tuple[bytes, bytes, bytes]) -> bytes:
    private_key, public_key, message = args
    return sm2.sign(private_key, message, public_key=public_key)


def test_native_nonces_differ_across_fork(kp: sm2.Sm2KeyPair) -> None:
    """A forked worker must not replay the parent's DRBG: the same k on two signatures leaks the key.

    Same message in parent and child, so equal nonces would show as equal r."""
    import multiprocessing

    sm2.sign(kp.private_key, b"warm the DRBG", public_key=kp.public_key)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map(_sign_in_child, [(kp.private_key, kp.public_key, b"same message")] * 2)
    parent = sm2.sign(kp.private_key, b"same message", public_key=kp.public_key)
    rs = {sig[:32] for sig in [*children, parent]}
    assert len(rs) == 3
    assert all(sm2.verify(kp.public_key, b"same message", sig) for sig in [*children, parent])
