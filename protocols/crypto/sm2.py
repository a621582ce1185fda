"""SM2 (GB/T 32918) on the recommended curve sm2p256v1: keys, signatures with SM3 and user IDs, encryption.

Two implementations of the curve arithmetic, one protocol layer (ours):

* ``native`` (the default): Tongsuo (BabaSSL 8.3, the 国密 OpenSSL fork) through ``tongsuopy``'s
  cffi binding — ``EVP_PKEY_sign`` / ``EVP_PKEY_verify`` on an SM2 key over the digest ``e``
  we compute, and ``EC_POINT_mul`` for keys and encryption; 12–28x faster than gmssl and
  73–96 % of the ``openssl`` CLI (``bench/bench_crypto.py``).
* ``gmssl``: :class:`gmssl.sm2.CryptSM2` (pure Python), kept as the independent cross-check of
  the tests and for known-answer signatures with a fixed nonce.

The protocol layer is ours because gmssl (3.2.2) hard-codes the default user ID in
``sign_with_sm3``, draws its nonces from :mod:`random` (not a CSPRNG), strips leading ``0``/``4``
characters off public keys and never checks the C3 hash on decryption.  Here:

* signature: ``e = SM3(Z_A || M)``, ``Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA)``
  with the signer's own user ID (default ``"1234567812345678"``); the nonce ``k`` comes from
  Tongsuo's DRBG (native) or :mod:`secrets` (gmssl path); signatures are raw 64 bytes
  ``r || s`` (DER helpers for interop with OpenSSL);
* public keys are 64 bytes ``x || y`` (a 65-byte ``04 || x || y`` is accepted), checked on the curve;
* encryption: ``04 || C1 || C3 || C2`` (GB/T 32918.4, new C1C3C2 order), KDF with SM3, C3 checked;
  the nonce from :mod:`secrets`, only the scalar multiplications are native.

Every public function takes ``backend="auto"`` (native when ``tongsuopy`` loads, else gmssl),
``"native"`` or ``"gmssl"``; the tests sign with one and verify with the other.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from gmssl.sm2 import CryptSM2

from protocols.crypto.errors import (
    BadSignatureLength,
    CryptoError,
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

Backend = Literal["auto", "native", "gmssl"]
#: Room for a DER ``SEQUENCE { r, s }`` of two 256-bit integers (72 bytes at most).
_DER_SIGNATURE_MAX = 80


class _Tongsuo:
    """The SM2 primitives of Tongsuo's libcrypto, through tongsuopy's cffi binding.

    Every call builds its own ``EC_KEY`` / ``EVP_PKEY`` / ``EVP_PKEY_CTX`` (about 30 µs; no key
    cache, so private keys live no longer than the call) and leaves OpenSSL's error queue empty.
    cffi releases the GIL during each call, so threads sign in parallel.
    """

    def __init__(self) -> None:
        from tongsuopy.backends.tongsuo.binding import Binding

        binding = Binding()
        self.lib: Any = binding.lib
        self.ffi: Any = binding.ffi
        self.nid: int = self.lib.OBJ_sn2nid(b"SM2")
        if self.nid == self.lib.NID_undef:
            raise CryptoError("this Tongsuo build has no SM2 curve")
        group = self.lib.EC_GROUP_new_by_curve_name(self.nid)
        if group == self.ffi.NULL:
            raise CryptoError("Tongsuo cannot make the SM2 group")
        #: read-only after creation, shared by every call
        self.group = self.ffi.gc(group, self.lib.EC_GROUP_free)

    def _fail(self, what: str) -> CryptoError:
        self.lib.ERR_clear_error()
        return CryptoError(f"Tongsuo SM2: {what} failed")

    def _bn(self, data: bytes, secret: bool = False) -> Any:
        bn = self.lib.BN_bin2bn(data, len(data), self.ffi.NULL)
        if bn == self.ffi.NULL:
            raise self._fail("BN_bin2bn")
        return self.ffi.gc(bn, self.lib.BN_clear_free if secret else self.lib.BN_free)

    def _point(self, xy: bytes) -> Any:
        point = self.ffi.gc(self.lib.EC_POINT_new(self.group), self.lib.EC_POINT_free)
        ok = self.lib.EC_POINT_set_affine_coordinates_GFp(
            self.group, point, self._bn(xy[:32]), self._bn(xy[32:]), self.ffi.NULL
        )
        if ok != 1:
            self.lib.ERR_clear_error()
            raise MalformedKey("SM2 point is not on sm2p256v1")
        return point

    def _xy(self, point: Any) -> bytes:
        lib, ffi = self.lib, self.ffi
        if lib.EC_POINT_is_at_infinity(self.group, point):
            raise MalformedKey("scalar multiplication reached the point at infinity")
        x = ffi.gc(lib.BN_new(), lib.BN_free)
        y = ffi.gc(lib.BN_new(), lib.BN_free)
        if lib.EC_POINT_get_affine_coordinates_GFp(self.group, point, x, y, ffi.NULL) != 1:
            raise self._fail("EC_POINT_get_affine_coordinates")
        out = b""
        for bn in (x, y):
            buf = ffi.new("unsigned char[]", 32)
            n = lib.BN_bn2bin(bn, buf)
            out += ffi.buffer(buf)[:n].rjust(32, b"\x00")
        return out

    def scalar_mult(self, k: bytes, point: bytes | None = None) -> bytes:
        """``k·P`` (``k·G`` when ``point`` is None) as 64 bytes ``x || y``."""
        lib, ffi = self.lib, self.ffi
        out = ffi.gc(lib.EC_POINT_new(self.group), lib.EC_POINT_free)
        scalar = self._bn(k, secret=True)
        if point is None:
            ok = lib.EC_POINT_mul(self.group, out, scalar, ffi.NULL, ffi.NULL, ffi.NULL)
        else:
            ok = lib.EC_POINT_mul(self.group, out, ffi.NULL, self._point(point), scalar, ffi.NULL)
        if ok != 1:
            raise self._fail("EC_POINT_mul")
        return self._xy(out)

    def _pkey(self, private_key: bytes | None, public_key: bytes | None) -> Any:
        lib, ffi = self.lib, self.ffi
        ec = ffi.gc(lib.EC_KEY_new_by_curve_name(self.nid), lib.EC_KEY_free)
        if ec == ffi.NULL:
            raise self._fail("EC_KEY_new")
        if private_key is not None and lib.EC_KEY_set_private_key(ec, self._bn(private_key, True)) != 1:
            raise self._fail("EC_KEY_set_private_key")
        # EC_KEY_set_public_key, not ..._affine_coordinates: the latter runs EC_KEY_check_key
        # (two scalar multiplications); the point is checked on the curve by _point, and the
        # cofactor of sm2p256v1 is 1, so every curve point is in the group.
        if public_key is not None and lib.EC_KEY_set_public_key(ec, self._point(public_key)) != 1:
            raise self._fail("EC_KEY_set_public_key")
        pkey = ffi.gc(lib.EVP_PKEY_new(), lib.EVP_PKEY_free)
        if (
            lib.EVP_PKEY_set1_EC_KEY(pkey, ec) != 1
            or lib.EVP_PKEY_set_alias_type(pkey, lib.EVP_PKEY_SM2) != 1
        ):
            raise self._fail("EVP_PKEY_set_alias_type(SM2)")
        return pkey

    def _ctx(self, pkey: Any) -> Any:
        ctx = self.lib.EVP_PKEY_CTX_new(pkey, self.ffi.NULL)
        if ctx == self.ffi.NULL:
            raise self._fail("EVP_PKEY_CTX_new")
        return self.ffi.gc(ctx, self.lib.EVP_PKEY_CTX_free)

    def sign_digest(self, private_key: bytes, public_key: bytes, e: bytes) -> bytes:
        """The SM2 signature (DER) of the 32-byte digest ``e``; the nonce comes from Tongsuo's DRBG."""
        lib, ffi = self.lib, self.ffi
        ctx = self._ctx(self._pkey(private_key, public_key))
        buf = ffi.new("unsigned char[]", _DER_SIGNATURE_MAX)
        size = ffi.new("size_t *", _DER_SIGNATURE_MAX)
        if lib.EVP_PKEY_sign_init(ctx) != 1 or lib.EVP_PKEY_sign(ctx, buf, size, e, len(e)) != 1:
            raise self._fail("EVP_PKEY_sign")
        return ffi.buffer(buf)[: size[0]]

    def verify_digest(self, public_key: bytes, e: bytes, der: bytes) -> bool:
        """True iff ``der`` is an SM2 signature of the digest ``e`` by ``public_key``."""
        ctx = self._ctx(self._pkey(None, public_key))
        if self.lib.EVP_PKEY_verify_init(ctx) != 1:
            raise self._fail("EVP_PKEY_verify_init")
        ok = self.lib.EVP_PKEY_verify(ctx, der, len(der), e, len(e))
        if ok != 1:
            self.lib.ERR_clear_error()
        return ok == 1


@lru_cache(maxsize=1)
def _tongsuo() -> _Tongsuo | None:
    try:
        return _Tongsuo()
    except (ImportError, OSError, CryptoError):
        return None


def native_available() -> bool:
    """True if Tongsuo's native SM2 (``tongsuopy``) is usable in this environment."""
    return _tongsuo() is not None


def _native(backend: Backend) -> _Tongsuo | None:
    """The native engine for ``backend``, or None for the gmssl path."""
    if backend == "gmssl":
        return None
    if backend not in ("auto", "native"):
        raise CryptoError(f"unknown SM2 backend {backend!r}")
    engine = _tongsuo()
    if engine is None and backend == "native":
        raise CryptoError("native SM2 needs tongsuopy (Tongsuo); use backend='gmssl'")
    return engine


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


def _scalar_mult(k: int, point_hex: str, engine: _Tongsuo | None = None) -> tuple[int, int]:
    if engine is not None:
        point = None if point_hex == G_HEX else bytes.fromhex(point_hex)
        xy = engine.scalar_mult(k.to_bytes(32, "big"), point)
        return int.from_bytes(xy[:32], "big"), int.from_bytes(xy[32:], "big")
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


def public_key_from_private(private_key: bytes, *, backend: Backend = "auto") -> bytes:
    """The 64-byte public key ``d·G``."""
    d = _check_private(private_key)
    x, y = _scalar_mult(d, G_HEX, _native(backend))
    return x.to_bytes(32, "big") + y.to_bytes(32, "big")


def generate_keypair(*, backend: Backend = "auto") -> Sm2KeyPair:
    """A fresh key pair (private scalar uniform in [1, n-2] from :mod:`secrets`)."""
    d = secrets.randbelow(N - 2) + 1
    priv = d.to_bytes(32, "big")
    return Sm2KeyPair(private_key=priv, public_key=public_key_from_private(priv, backend=backend))


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
    backend: Backend = "auto",
    _k: int | None = None,
) -> bytes:
    """Sign ``message`` as the user ``user_id``: 64 bytes ``r || s``.

    ``public_key`` saves recomputing ``d·G``; ``_k`` fixes the nonce and exists for
    known-answer tests only — never pass it in production (it always takes the gmssl path:
    Tongsuo draws its own nonce).
    """
    _check_private(private_key)
    native = _native(backend) if _k is None else None
    pub = (
        validate_public_key(public_key)
        if public_key is not None
        else public_key_from_private(private_key, backend=backend)
    )
    e = message_digest(pub, message, user_id)
    if native is not None:
        return signature_from_der(native.sign_digest(bytes(private_key), pub, e))
    engine = _engine(private_key, pub)
    while True:
        k = _k if _k is not None else secrets.randbelow(N - 1) + 1
        sig_hex = engine.sign(e, f"{k:064x}")
        if sig_hex is not None:
            return bytes.fromhex(sig_hex)
        if _k is not None:
            raise ValueError("the fixed test nonce gives a degenerate signature")


def verify(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    user_id: bytes = DEFAULT_USER_ID,
    *,
    backend: Backend = "auto",
) -> bool:
    """True iff ``signature`` (64 bytes ``r || s``) is valid for ``message`` by ``user_id``'s key."""
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_LENGTH:
        raise BadSignatureLength(f"SM2 signature must be {SIGNATURE_LENGTH} bytes r||s, got {len(signature)}")
    pk = validate_public_key(public_key)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (1 <= r < N and 1 <= s < N) or (r + s) % N == 0:
        return False
    e = message_digest(pk, message, user_id)
    native = _native(backend)
    if native is not None:
        return native.verify_digest(pk, e, signature_to_der(bytes(signature)))
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


def encrypt(public_key: bytes, plaintext: bytes, *, backend: Backend = "auto") -> bytes:
    """SM2 public-key encryption, ``04 || x1 || y1 || C3 || C2`` (for small payloads, e.g. keys)."""
    pk = validate_public_key(public_key)
    if not plaintext:
        raise ValueError("SM2 cannot encrypt an empty message")
    native = _native(backend)
    while True:
        k = secrets.randbelow(N - 1) + 1
        x1, y1 = _scalar_mult(k, G_HEX, native)
        x2, y2 = _scalar_mult(k, pk.hex(), native)
        xy = x2.to_bytes(32, "big") + y2.to_bytes(32, "big")
        t = sm3_kdf(xy, len(plaintext))
        if any(t):
            break
    c2 = bytes(a ^ b for a, b in zip(plaintext, t, strict=True))
    c3 = sm3_digest(xy[:32] + bytes(plaintext) + xy[32:])
    return b"\x04" + x1.to_bytes(32, "big") + y1.to_bytes(32, "big") + c3 + c2


def decrypt(private_key: bytes, ciphertext: bytes, *, backend: Backend = "auto") -> bytes:
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
    x2, y2 = _scalar_mult(d, ciphertext[1:65].hex(), _native(backend))
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
