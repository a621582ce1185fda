"""SM2 (GB/T 32918) on the recommended curve sm2p256v1: keys, signatures with SM3 and user IDs, encryption.

The elliptic-curve arithmetic is gmssl's :class:`gmssl.sm2.CryptSM2`; the protocol layer is ours
because gmssl (3.2.2) hard-codes the default user ID in ``sign_with_sm3``, draws its nonces
from :mod:`random` (not a CSPRNG), strips leading ``0``/``4`` characters off public keys and
never checks the C3 hash on decryption.  Here:

* signature: ``e = SM3(Z_A || M)``, ``Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA)``
  with the signer's own user ID (default ``"1234567812345678"``), nonce ``k`` from :mod:`secrets`;
  signatures are raw 64 bytes ``r || s`` (DER helpers for interop with OpenSSL);
* public keys are 64 bytes ``x || y`` (a 65-byte ``04 || x || y`` is accepted), checked on the curve;
* encryption: ``04 || C1 || C3 || C2`` (GB/T 32918.4, new C1C3C2 order), KDF with SM3, C3 checked.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass

from gmssl.sm2 import CryptSM2

from protocols.crypto.errors import (
    BadSignatureLength,
    DecryptionFailed,
    InvalidSignature,
    MalformedCiphertext,
    MalformedKey,
)
from protocols.crypto.sm3 import Sm3Hasher, sm3_digest, sm3_kdf

P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0
G_HEX = f"{GX:064x}{GY:064x}"

DEFAULT_USER_ID = b"1234567812345678"
PRIVATE_KEY_LENGTH = 32
PUBLIC_KEY_LENGTH = 64
SIGNATURE_LENGTH = 64
#: ``04 || x1 || y1`` + 32-byte C3.
CIPHERTEXT_OVERHEAD = 1 + 64 + 32
#: OID of the SM2 curve (for SubjectPublicKeyInfo / OpenSSL interop).
SM2_CURVE_OID = "1.2.156.10197.1.301"


@dataclass(frozen=True)
class Sm2KeyPair:
    """An SM2 key pair: 32-byte private scalar and 64-byte public point ``x || y``."""

    private_key: bytes
    public_key: bytes


def _engine(private_key: bytes | None = None, public_key: bytes | None = None) -> CryptSM2:
    c = CryptSM2(private_key=private_key.hex() if private_key else "", public_key="", mode=1)
    # set directly: the constructor's lstrip("04") corrupts keys whose hex starts with 0/4
    c.public_key = public_key.hex() if public_key else ""
    return c


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _scalar_mult(k: int, point_hex: str) -> tuple[int, int]:
    out = _engine()._kg(k, point_hex)
    if out is None:
        raise MalformedKey("scalar multiplication reached the point at infinity")
    return int(out[:64], 16), int(out[64:], 16)


def _check_private(private_key: bytes) -> int:
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != PRIVATE_KEY_LENGTH:
        raise MalformedKey(f"SM2 private key must be {PRIVATE_KEY_LENGTH} bytes")
    d = int.from_bytes(private_key, "big")
    if not 1 <= d <= N - 2:
        raise MalformedKey("SM2 private key out of range [1, n-2]")
    return d


def validate_public_key(public_key: bytes) -> bytes:
    """Return the 64-byte ``x || y`` form of a public key; :class:`MalformedKey` if not a curve point."""
    if not isinstance(public_key, bytes | bytearray):
        raise MalformedKey("SM2 public key must be bytes")
    pk = bytes(public_key)
    if len(pk) == PUBLIC_KEY_LENGTH + 1 and pk[0] == 0x04:
        pk = pk[1:]
    if len(pk) != PUBLIC_KEY_LENGTH:
        raise MalformedKey(f"SM2 public key must be 64 bytes x||y (or 65 with 04), got {len(public_key)}")
    x, y = int.from_bytes(pk[:32], "big"), int.from_bytes(pk[32:], "big")
    if not _on_curve(x, y):
        raise MalformedKey("SM2 public key is not a point on sm2p256v1")
    return pk


def public_key_from_private(private_key: bytes) -> bytes:
    """The 64-byte public key ``d·G``."""
    d = _check_private(private_key)
    x, y = _scalar_mult(d, G_HEX)
    return x.to_bytes(32, "big") + y.to_bytes(32, "big")


def generate_keypair() -> Sm2KeyPair:
    """A fresh key pair (private scalar uniform in [1, n-2] from :mod:`secrets`)."""
    d = secrets.randbelow(N - 2) + 1
    priv = d.to_bytes(32, "big")
    return Sm2KeyPair(private_key=priv, public_key=public_key_from_private(priv))


def compute_za(public_key: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA) (GB/T 32918.2 §5.5)."""
    pk = validate_public_key(public_key)
    entl = len(user_id) * 8
    if entl >= 1 << 16:
        raise MalformedKey("SM2 user ID longer than 8191 bytes")
    h = Sm3Hasher()
    h.update(entl.to_bytes(2, "big") + bytes(user_id))
    h.update(A.to_bytes(32, "big") + B.to_bytes(32, "big") + GX.to_bytes(32, "big") + GY.to_bytes(32, "big"))
    h.update(pk)
    return h.digest()


def message_digest(public_key: bytes, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """e = SM3(Z_A || M), the value SM2 actually signs."""
    return sm3_digest(compute_za(public_key, user_id) + bytes(message))


def sign(
    private_key: bytes,
    message: bytes,
    user_id: bytes = DEFAULT_USER_ID,
    *,
    public_key: bytes | None = None,
    _k: int | None = None,
) -> bytes:
    """Sign ``message`` as the user ``user_id``: 64 bytes ``r || s``.

    ``public_key`` saves recomputing ``d·G``; ``_k`` fixes the nonce and exists for
    known-answer tests only — never pass it in production.
    """
    _check_private(private_key)
    pub = public_key if public_key is not None else public_key_from_private(private_key)
    e = message_digest(pub, message, user_id)
    engine = _engine(private_key, pub)
    while True:
        k = _k if _k is not None else secrets.randbelow(N - 1) + 1
        sig_hex = engine.sign(e, f"{k:064x}")
        if sig_hex is not None:
            return bytes.fromhex(sig_hex)
        if _k is not None:
            raise ValueError("the fixed test nonce gives a degenerate signature")


def verify(public_key: bytes, message: bytes, signature: bytes, user_id: bytes = DEFAULT_USER_ID) -> bool:
    """True iff ``signature`` (64 bytes ``r || s``) is valid for ``message`` by ``user_id``'s key."""
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_LENGTH:
        raise BadSignatureLength(f"SM2 signature must be {SIGNATURE_LENGTH} bytes r||s, got {len(signature)}")
    pk = validate_public_key(public_key)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (1 <= r < N and 1 <= s < N) or (r + s) % N == 0:
        return False
    e = message_digest(pk, message, user_id)
    try:
        return bool(_engine(None, pk).verify(bytes(signature).hex(), e))
    except (TypeError, ValueError):  # the sum point was at infinity
        return False


def require_valid(
    public_key: bytes, message: bytes, signature: bytes, user_id: bytes = DEFAULT_USER_ID
) -> None:
    """Like :func:`verify` but raise :class:`InvalidSignature` when it does not verify."""
    if not verify(public_key, message, signature, user_id):
        raise InvalidSignature("SM2 signature does not verify")


# --------------------------------------------------------------------------- DER / PEM interop


def signature_to_der(signature: bytes) -> bytes:
    """``r || s`` → DER ``SEQUENCE { INTEGER r, INTEGER s }`` (OpenSSL's format)."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if len(signature) != SIGNATURE_LENGTH:
        raise BadSignatureLength(f"SM2 signature must be {SIGNATURE_LENGTH} bytes, got {len(signature)}")
    return encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))


def signature_from_der(der: bytes) -> bytes:
    """DER ``SEQUENCE { r, s }`` → 64-byte ``r || s``."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    try:
        r, s = decode_dss_signature(der)
    except ValueError as exc:
        raise BadSignatureLength(f"not a DER SM2 signature: {exc}") from exc
    if not (0 < r < 1 << 256 and 0 < s < 1 << 256):
        raise BadSignatureLength("DER signature integers out of range")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_key_to_pem(public_key: bytes) -> str:
    """SubjectPublicKeyInfo PEM (id-ecPublicKey, curve SM2) that ``openssl`` reads as an SM2 key."""
    from Cryptodome.Util.asn1 import DerBitString, DerObjectId, DerSequence

    pk = validate_public_key(public_key)
    spki = DerSequence(
        [
            DerSequence(
                [DerObjectId("1.2.840.10045.2.1").encode(), DerObjectId(SM2_CURVE_OID).encode()]
            ).encode(),
            DerBitString(b"\x04" + pk).encode(),
        ]
    ).encode()
    body = base64.encodebytes(spki).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


# --------------------------------------------------------------------------- encryption


def encrypt(public_key: bytes, plaintext: bytes) -> bytes:
    """SM2 public-key encryption, ``04 || x1 || y1 || C3 || C2`` (for small payloads, e.g. keys)."""
    pk = validate_public_key(public_key)
    if not plaintext:
        raise ValueError("SM2 cannot encrypt an empty message")
    while True:
        k = secrets.randbelow(N - 1) + 1
        x1, y1 = _scalar_mult(k, G_HEX)
        x2, y2 = _scalar_mult(k, pk.hex())
        xy = x2.to_bytes(32, "big") + y2.to_bytes(32, "big")
        t = sm3_kdf(xy, len(plaintext))
        if any(t):
            break
    c2 = bytes(a ^ b for a, b in zip(plaintext, t, strict=True))
    c3 = sm3_digest(xy[:32] + bytes(plaintext) + xy[32:])
    return b"\x04" + x1.to_bytes(32, "big") + y1.to_bytes(32, "big") + c3 + c2


def decrypt(private_key: bytes, ciphertext: bytes) -> bytes:
    """Inverse of :func:`encrypt`; :class:`DecryptionFailed` unless C3 matches (wrong key or tampering)."""
    d = _check_private(private_key)
    if len(ciphertext) <= CIPHERTEXT_OVERHEAD:
        raise MalformedCiphertext(f"SM2 ciphertext must be longer than {CIPHERTEXT_OVERHEAD} bytes")
    if ciphertext[0] != 0x04:
        raise MalformedCiphertext("SM2 ciphertext C1 must be an uncompressed point (04)")
    x1, y1 = int.from_bytes(ciphertext[1:33], "big"), int.from_bytes(ciphertext[33:65], "big")
    if not _on_curve(x1, y1):
        raise MalformedCiphertext("SM2 ciphertext C1 is not on the curve")
    c3, c2 = ciphertext[65:97], ciphertext[97:]
    x2, y2 = _scalar_mult(d, ciphertext[1:65].hex())
    xy = x2.to_bytes(32, "big") + y2.to_bytes(32, "big")
    t = sm3_kdf(xy, len(c2))
    if not any(t):
        raise DecryptionFailed("SM2 KDF produced all zeros")
    m = bytes(a ^ b for a, b in zip(c2, t, strict=True))
    if not hmac.compare_digest(sm3_digest(xy[:32] + m + xy[32:]), c3):
        raise DecryptionFailed("SM2 decryption failed: C3 mismatch (wrong key or tampered ciphertext)")
    return m


def ciphertext_to_der(ciphertext: bytes) -> bytes:
    """Raw C1C3C2 → the ASN.1 form OpenSSL uses: SEQUENCE { x INTEGER, y INTEGER, C3 OCTET STRING, C2 OCTET STRING }."""
    from Cryptodome.Util.asn1 import DerOctetString, DerSequence

    if len(ciphertext) <= CIPHERTEXT_OVERHEAD or ciphertext[0] != 0x04:
        raise MalformedCiphertext("not a raw SM2 C1C3C2 ciphertext")
    return DerSequence(
        [
            int.from_bytes(ciphertext[1:33], "big"),
            int.from_bytes(ciphertext[33:65], "big"),
            DerOctetString(ciphertext[65:97]),
            DerOctetString(ciphertext[97:]),
        ]
    ).encode()


def ciphertext_from_der(der: bytes) -> bytes:
    """OpenSSL's ASN.1 SM2 ciphertext → raw ``04 || C1 || C3 || C2``."""
    from Cryptodome.Util.asn1 import DerOctetString, DerSequence

    try:
        seq = DerSequence().decode(der)
        x, y = int(seq[0]), int(seq[1])
        c3 = DerOctetString().decode(seq[2]).payload
        c2 = DerOctetString().decode(seq[3]).payload
    except (ValueError, IndexError, TypeError) as exc:
        raise MalformedCiphertext(f"not an ASN.1 SM2 ciphertext: {exc}") from exc
    if len(c3) != 32 or not c2 or not (0 <= x < P and 0 <= y < P):
        raise MalformedCiphertext("ASN.1 SM2 ciphertext has wrong field sizes")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big") + c3 + c2
