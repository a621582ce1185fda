"""SM3 (GB/T 32905) and SM4-GCM (GB/T 32907) through OpenSSL, cross-checked with gmssl."""

from __future__ import annotations

import io
import os
import random
import struct

import pytest
from gmssl import sm4 as gm_sm4

from protocols.crypto import sm3, sm4
from protocols.crypto.errors import (
    AuthenticationFailed,
    CiphertextTruncated,
    MalformedCiphertext,
    MalformedKey,
    TagMismatch,
)

ABC = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
ABCD16 = "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_CT = bytes.fromhex("681edf34d206965e86b3e94f536e4246")


@pytest.mark.parametrize("backend", ["openssl", "gmssl"])
def test_sm3_gbt32905_vectors(backend: str) -> None:
    assert sm3.sm3_hex(b"abc", backend) == ABC
    assert sm3.sm3_hex(b"abcd" * 16, backend) == ABCD16


def test_openssl_provides_sm3() -> None:
    assert sm3.openssl_has_sm3()
    assert sm3.Sm3Hasher().backend == "openssl"


def test_sm3_openssl_and_gmssl_agree_on_random_inputs() -> None:
    rng = random.Random(32905)
    for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 4097]:
        data = rng.randbytes(n)
        assert sm3.sm3_digest(data, "openssl") == sm3.sm3_digest(data, "gmssl"), n


@pytest.mark.parametrize("backend", ["openssl", "gmssl"])
def test_sm3_incremental_equals_one_shot(backend: str) -> None:
    data = os.urandom(3000)
    h = sm3.Sm3Hasher(backend=backend)
    for i in range(0, len(data), 333):
        h.update(data[i : i + 333])
    snapshot = h.copy()
    assert h.digest() == sm3.sm3_digest(data)
    h.update(b"more")
    assert snapshot.digest() == sm3.sm3_digest(data)
    assert h.hexdigest() == sm3.sm3_hex(data + b"more")


def test_sm3_file_streams(tmp_path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert sm3.sm3_file(f, chunk_size=65536) == sm3.sm3_hex(data)
    assert sm3.sm3_file(f) == sm3.sm3_hex(data, "openssl")


def test_sm3_kdf_prefix_property() -> None:
    z = b"shared secret"
    assert sm3.sm3_kdf(z, 100)[:40] == sm3.sm3_kdf(z, 40)
    assert sm3.sm3_kdf(z, 32) == sm3.sm3_digest(z + b"\x00\x00\x00\x01")


def test_sm4_gbt32907_vector_openssl_and_gmssl() -> None:
    assert sm4.ecb_encrypt_block(SM4_KEY, SM4_KEY) == SM4_CT
    g = gm_sm4.CryptSM4(padding_mode=gm_sm4.ZERO)
    g.set_key(SM4_KEY, gm_sm4.SM4_ENCRYPT)
    assert g.crypt_ecb(SM4_KEY)[:16] == SM4_CT


def test_sm4_gbt32907_million_iterations() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.SM4(SM4_KEY), modes.ECB()).encryptor()
    block = SM4_KEY
    for _ in range(1_000_000):
        block = enc.update(block)
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"


def test_sm4_openssl_and_gmssl_agree_on_random_blocks() -> None:
    rng = random.Random(32907)
    for _ in range(20):
        key, block = rng.randbytes(16), rng.randbytes(16)
        g = gm_sm4.CryptSM4(padding_mode=gm_sm4.ZERO)
        g.set_key(key, gm_sm4.SM4_ENCRYPT)
        assert sm4.ecb_encrypt_block(key, block) == g.crypt_ecb(block)[:16]


def test_gcm_seal_open_and_tag_flip() -> None:
    key, nonce = sm4.new_key(), os.urandom(12)
    sealed = sm4.gcm_seal(key, nonce, b"payload", b"ad")
    assert sm4.gcm_open(key, nonce, sealed, b"ad") == b"payload"
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(TagMismatch):
        sm4.gcm_open(key, nonce, flipped, b"ad")
    with pytest.raises(AuthenticationFailed):
        sm4.gcm_open(key, nonce, sealed, b"other ad")


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 1000])
def test_container_roundtrip_at_chunk_boundaries(size: int) -> None:
    key = sm4.new_key()
    data = os.urandom(size)
    ct = sm4.encrypt(key, data, b"job-7", chunk_size=100)
    n_chunks = max(1, -(-size // 100))  # a full last chunk is the final one: no empty tail
    assert len(ct) == sm4.HEADER_SIZE + size + (5 + sm4.TAG_SIZE) * n_chunks
    assert sm4.decrypt(key, ct, b"job-7") == data


def test_container_nonce_prefix_is_fresh() -> None:
    key = sm4.new_key()
    assert sm4.encrypt(key, b"same") != sm4.encrypt(key, b"same")


def _chunks(ct: bytes, chunk: int) -> tuple[bytes, list[bytes]]:
    body = ct[sm4.HEADER_SIZE :]
    size = 5 + chunk + sm4.TAG_SIZE
    return ct[: sm4.HEADER_SIZE], [body[i : i + size] for i in range(0, len(body), size)]


def test_container_detects_truncation_reordering_and_tampering() -> None:
    key = sm4.new_key()
    data = os.urandom(450)
    ct = sm4.encrypt(key, data, b"ad", chunk_size=100)
    header, chunks = _chunks(ct, 100)
    assert len(chunks) == 5
    # whole trailing chunks dropped → truncation
    with pytest.raises(CiphertextTruncated):
        sm4.decrypt(key, header + b"".join(chunks[:3]), b"ad")
    # cut inside a chunk
    with pytest.raises(CiphertextTruncated):
        sm4.decrypt(key, ct[:-5], b"ad")
    with pytest.raises(CiphertextTruncated):
        sm4.decrypt(key, header + chunks[0] + chunks[1][:3], b"ad")  # cut inside a chunk header
    # duplicated chunk, extra bytes after the end
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt(key, header + chunks[0] + chunks[0] + b"".join(chunks[2:]), b"ad")
    with pytest.raises(MalformedCiphertext):
        sm4.decrypt(key, ct + b"\x00", b"ad")
    # a middle chunk relabelled as final (drops the tail) fails authentication
    relabelled = bytearray(chunks[1])
    relabelled[0] = 1
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt(key, header + chunks[0] + bytes(relabelled), b"ad")
    with pytest.raises(CiphertextTruncated):
        sm4.decrypt(key, header, b"ad")
    with pytest.raises(CiphertextTruncated):
        sm4.decrypt(key, ct[:10], b"ad")
    # reorder / drop a middle chunk
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt(key, header + chunks[1] + chunks[0] + b"".join(chunks[2:]), b"ad")
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt(key, header + chunks[0] + b"".join(chunks[2:]), b"ad")
    # flipped bit in ciphertext, in a tag, in the header, wrong associated data, wrong key
    for pos in (
        sm4.HEADER_SIZE + 3,
        sm4.HEADER_SIZE + 10,
        sm4.HEADER_SIZE + 5 + 100 + sm4.TAG_SIZE - 1,
        len(ct) - 1,
        5,
        12,
    ):
        bad = bytearray(ct)
        bad[pos] ^= 0x01
        with pytest.raises((AuthenticationFailed, MalformedCiphertext)):
            sm4.decrypt(key, bytes(bad), b"ad")
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt(key, ct, b"other")
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt(sm4.new_key(), ct, b"ad")


def test_container_rejects_malformed_headers_and_keys() -> None:
    key = sm4.new_key()
    ct = sm4.encrypt(key, b"x" * 10)
    with pytest.raises(MalformedCiphertext):
        sm4.decrypt(key, b"XXXX" + ct[4:])
    with pytest.raises(MalformedCiphertext):
        sm4.decrypt(key, ct[:4] + b"\x02" + ct[5:])
    with pytest.raises(MalformedCiphertext):
        sm4.decrypt(key, ct[:6] + struct.pack(">I", 0) + ct[10:])
    with pytest.raises(MalformedKey):
        sm4.encrypt(b"short", b"x")
    with pytest.raises(MalformedKey):
        sm4.decrypt(b"k" * 32, ct)


def test_stream_decrypt_writes_nothing_on_failure() -> None:
    key = sm4.new_key()
    data = os.urandom(5000)
    ct = sm4.encrypt(key, data, chunk_size=512)
    out = io.BytesIO()
    with pytest.raises(CiphertextTruncated):
        sm4.decrypt_stream(key, io.BytesIO(ct[: sm4.HEADER_SIZE + 3 * (5 + 512 + 16)]), out)
    assert out.getvalue() == b""
    bad = bytearray(ct)
    bad[-1] ^= 0x80
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt_stream(key, io.BytesIO(bytes(bad)), out)
    assert out.getvalue() == b""
    assert sm4.decrypt_stream(key, io.BytesIO(ct), out) == len(data)
    assert out.getvalue() == data


def test_file_roundtrip_and_no_partial_file(tmp_path) -> None:
    key = sm4.new_key()
    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(300_000))
    enc = tmp_path / "plain.bin.sm4"
    assert sm4.encrypt_file(key, src, enc, b"ds-1", chunk_size=65536) == 300_000
    out = tmp_path / "out" / "plain.bin"
    assert sm4.decrypt_file(key, enc, out, b"ds-1") == 300_000
    assert out.read_bytes() == src.read_bytes()
    # tamper with the last chunk: the destination must not appear, no temp files left
    bad = bytearray(enc.read_bytes())
    bad[-20] ^= 0x04
    enc.write_bytes(bytes(bad))
    target = tmp_path / "out2" / "plain.bin"
    with pytest.raises(AuthenticationFailed):
        sm4.decrypt_file(key, enc, target, b"ds-1")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
