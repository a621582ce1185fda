"""BLS12-381 signatures (IETF ciphersuite with proof of possession) and EIP-2537 encodings.

The ciphersuite is ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`` (Ethereum's, the one the
contracts verify with EIP-2537): public keys are 48-byte compressed G1 points, signatures
96-byte compressed G2 points.  Two implementations:

* ``native`` (the default): ``blspy`` (Chia Network's bls-signatures, C++ over supranational's
  blst) through its ``PopSchemeMPL`` — exactly this ciphersuite, both DSTs: public keys, sign,
  verify, aggregate, FastAggregateVerify, and proofs of possession — ~100x faster than py_ecc.
  It replaces ``milagro-bls-binding``, which declares itself deprecated and unmaintained;
* ``py_ecc``: :class:`py_ecc.bls.G2ProofOfPossession` (pure Python), the reference the tests
  cross-check against (and the standard vectors in ``bls_vectors``).

Key derivation (``KeyGen``, HKDF only) and the EIP-2537 encodings stay on py_ecc.

Every sign/verify function takes ``backend="auto"`` (native when blspy loads), ``"native"``
or ``"py_ecc"``.  blspy validates every point it parses (on the curve, in the subgroup); the
identity is refused here as a public key (IETF KeyValidate), so a malformed key raises
:class:`MalformedKey` on both backends, and a signature that is no valid G2 point verifies False.
Approvers all sign the *same* message, so an authorization on chain carries one
aggregate signature that verifies against the sum of the approvers' public keys
(``FastAggregateVerify``).  That is only safe if every registered key came with a
valid proof of possession — :func:`register_key` refuses a key without one (rogue-key
defence); the Registry contract must do the same check at registration.

EIP-2537 (Prague) precompiles take *uncompressed* points with every base-field element
padded to 64 bytes (16 zero bytes + 48-byte big-endian value):

* G1 point: ``x || y``  (128 bytes); the point at infinity is 128 zero bytes.
* G2 point: ``x.c0 || x.c1 || y.c0 || y.c1``  (256 bytes), where an Fp2 element is
  ``c0 + c1·u``; the point at infinity is 256 zero bytes.

On chain a signature over ``message`` by public key ``pk`` verifies iff
``BLS12_PAIRING_CHECK( (pk, H(message)), (-G1, sig) ) == 1`` where
``H(message) = MAP_FP2_TO_G2(u0) + MAP_FP2_TO_G2(u1)`` and ``(u0, u1)`` is
``hash_to_field`` of the message under :data:`SIGN_DST` (expand_message_xmd with
SHA-256, 256 bytes, four 64-byte chunks each reduced mod p).  The helpers below
produce each of those byte strings so a contract test can check every step.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

from eth_utils import ValidationError
from py_ecc.bls import G2ProofOfPossession as _Pop
from py_ecc.bls.g2_primitives import pubkey_to_G1, signature_to_G2
from py_ecc.bls.hash_to_curve import hash_to_field_FQ2, hash_to_G2
from py_ecc.optimized_bls12_381 import G1, curve_order, is_inf, neg, normalize

from protocols.crypto.errors import (
    BadSignatureLength,
    CryptoError,
    InvalidProofOfPossession,
    InvalidSignature,
    MalformedKey,
)

PUBKEY_LENGTH = 48
SIGNATURE_LENGTH = 96
SECRET_KEY_LENGTH = 32
EIP2537_FP_LENGTH = 64
EIP2537_G1_LENGTH = 128
EIP2537_G2_LENGTH = 256

#: Domain separation tag of signatures (the IETF POP ciphersuite).
SIGN_DST: bytes = _Pop.DST
#: Domain separation tag of proofs of possession.
POP_DST: bytes = _Pop.POP_TAG

#: EIP-2537 precompile addresses (Prague).
PRECOMPILE_G1ADD = 0x0B
PRECOMPILE_G1MSM = 0x0C
PRECOMPILE_G2ADD = 0x0D
PRECOMPILE_G2MSM = 0x0E
PRECOMPILE_PAIRING_CHECK = 0x0F
PRECOMPILE_MAP_FP_TO_G1 = 0x10
PRECOMPILE_MAP_FP2_TO_G2 = 0x11

Backend = Literal["auto", "native", "py_ecc"]

try:
    from blspy import G1Element as _G1
    from blspy import G2Element as _G2
    from blspy import PopSchemeMPL as _Native
    from blspy import PrivateKey as _Sk
except ImportError:  # pragma: no cover - blspy is locked
    _Native = None

_NATIVE_ERRORS = (ValueError, RuntimeError)


def native_available() -> bool:
    """True if the native implementation (``blspy``) is importable."""
    return _Native is not None


def _native(backend: Backend) -> bool:
    if backend == "py_ecc":
        return False
    if backend not in ("auto", "native"):
        raise CryptoError(f"unknown BLS backend {backend!r}")
    if _Native is None and backend == "native":
        raise CryptoError("native BLS needs blspy; use backend='py_ecc'")
    return _Native is not None


def _native_sk(sk: int) -> _Sk:
    return _Sk.from_bytes(sk.to_bytes(SECRET_KEY_LENGTH, "big"))


def _native_pk(pk: bytes) -> _G1:
    """A validated public key (KeyValidate): a G1 subgroup point that is not the identity."""
    _check_pubkey_length(pk)
    try:
        point = _G1.from_bytes(bytes(pk))
    except _NATIVE_ERRORS as exc:
        raise MalformedKey(f"BLS public key is not a valid G1 subgroup point: {exc}") from exc
    if point == _G1():
        raise MalformedKey("BLS public key is the point at infinity")
    return point


def _native_sig(sig: bytes) -> _G2 | None:
    """A signature as a validated G2 subgroup point, or None if it is not one."""
    try:
        return _G2.from_bytes(bytes(sig))
    except _NATIVE_ERRORS:
        return None


# --------------------------------------------------------------------------- keys


def keygen(ikm: bytes | None = None, key_info: bytes = b"") -> int:
    """Derive a secret key from ≥32 bytes of input keying material (random if ``ikm`` is None)."""
    if ikm is None:
        ikm = secrets.token_bytes(32)
    if len(ikm) < 32:
        raise MalformedKey(f"BLS KeyGen needs at least 32 bytes of IKM, got {len(ikm)}")
    return _Pop.KeyGen(ikm, key_info)


def _check_sk(sk: int) -> None:
    if not isinstance(sk, int) or not 0 < sk < curve_order:
        raise MalformedKey("BLS secret key must be an integer in [1, r)")


def sk_to_bytes(sk: int) -> bytes:
    """Serialize a secret key as 32 big-endian bytes."""
    _check_sk(sk)
    return sk.to_bytes(SECRET_KEY_LENGTH, "big")


def sk_from_bytes(data: bytes) -> int:
    """Parse a 32-byte big-endian secret key; :class:`MalformedKey` if out of range."""
    if len(data) != SECRET_KEY_LENGTH:
        raise MalformedKey(f"BLS secret key must be {SECRET_KEY_LENGTH} bytes, got {len(data)}")
    sk = int.from_bytes(data, "big")
    _check_sk(sk)
    return sk


def sk_to_pk(sk: int, *, backend: Backend = "auto") -> bytes:
    """The 48-byte compressed G1 public key of ``sk``."""
    _check_sk(sk)
    if _native(backend):
        return bytes(_Native.sk_to_g1(_native_sk(sk)))
    return bytes(_Pop.SkToPk(sk))


def _check_pubkey_length(pk: bytes) -> None:
    if not isinstance(pk, bytes | bytearray) or len(pk) != PUBKEY_LENGTH:
        raise MalformedKey(f"BLS public key must be {PUBKEY_LENGTH} bytes, got {len(pk)}")


def _check_pubkey(pk: bytes, backend: Backend = "auto") -> None:
    """IETF KeyValidate: a compressed G1 point, in the prime-order subgroup, not the identity."""
    _check_pubkey_length(pk)
    if _native(backend):
        _native_pk(pk)
        return
    if not _Pop.KeyValidate(bytes(pk)):
        raise MalformedKey("BLS public key is not a valid G1 subgroup point (or is infinity)")


def _check_sig_len(sig: bytes) -> None:
    if not isinstance(sig, bytes | bytearray) or len(sig) != SIGNATURE_LENGTH:
        raise BadSignatureLength(f"BLS signature must be {SIGNATURE_LENGTH} bytes, got {len(sig)}")


def validate_pubkey(pk: bytes, *, backend: Backend = "auto") -> bytes:
    """Return ``pk`` if it is a valid, non-identity G1 subgroup point, else :class:`MalformedKey`."""
    _check_pubkey(pk, backend)
    return bytes(pk)


# --------------------------------------------------------------------------- sign / verify


def sign(sk: int, message: bytes, *, backend: Backend = "auto") -> bytes:
    """Sign ``message``: a 96-byte compressed G2 signature (deterministic: same key, same bytes)."""
    _check_sk(sk)
    if _native(backend):
        return bytes(_Native.sign(_native_sk(sk), bytes(message)))
    return bytes(_Pop.Sign(sk, bytes(message)))


def verify(pk: bytes, message: bytes, sig: bytes, *, backend: Backend = "auto") -> bool:
    """True iff ``sig`` is ``pk``'s signature on ``message``.

    Raises :class:`BadSignatureLength` / :class:`MalformedKey` for malformed input;
    a well-formed but wrong signature returns False.
    """
    _check_sig_len(sig)
    if _native(backend):
        point, signature = _native_pk(pk), _native_sig(sig)
        return signature is not None and bool(_Native.verify(point, bytes(message), signature))
    _check_pubkey(pk, backend)
    return bool(_Pop.Verify(bytes(pk), bytes(message), bytes(sig)))


def require_valid(pk: bytes, message: bytes, sig: bytes) -> None:
    """Like :func:`verify` but raise :class:`InvalidSignature` instead of returning False."""
    if not verify(pk, message, sig):
        raise InvalidSignature("BLS signature does not verify")


def aggregate(signatures: Sequence[bytes], *, backend: Backend = "auto") -> bytes:
    """Aggregate signatures (on the same or different messages) into one 96-byte signature.

    py_ecc's ``Aggregate`` decompresses the inputs (on the curve) without a subgroup check, which
    verification makes on the aggregate; blspy checks each input's subgroup as it parses it.
    """
    if not signatures:
        raise CryptoError("nothing to aggregate")
    for s in signatures:
        _check_sig_len(s)
    try:
        if _native(backend):
            points = [_native_sig(s) for s in signatures]
            if any(p is None for p in points):
                raise ValueError("a signature is not a G2 subgroup point")
            return bytes(_Native.aggregate(points))
        return bytes(_Pop.Aggregate([bytes(s) for s in signatures]))
    except (ValidationError, ValueError, AssertionError) as exc:
        raise InvalidSignature(f"not a valid G2 signature point: {exc}") from exc


def aggregate_pubkeys(pubkeys: Sequence[bytes], *, backend: Backend = "auto") -> bytes:
    """The compressed sum of the public keys (what FastAggregateVerify checks against)."""
    if not pubkeys:
        raise CryptoError("no public keys to aggregate")
    if _native(backend):
        return bytes(_sum_points([_native_pk(pk) for pk in pubkeys]))
    for pk in pubkeys:
        _check_pubkey(pk, backend)
    return bytes(_Pop._AggregatePKs([bytes(pk) for pk in pubkeys]))


def _sum_points(points: Sequence[_G1]) -> _G1:
    total = points[0]
    for p in points[1:]:
        total = total + p
    return total


@lru_cache(maxsize=4096)
def _aggregate_registered(pubkeys: tuple[bytes, ...]) -> _G1:
    """The validated sum of a set of registered keys, cached: an audit meets the same
    approver sets again and again (public data only; a refused set raises and is not cached)."""
    return _sum_points([_native_pk(pk) for pk in pubkeys])


def fast_aggregate_verify(
    pubkeys: Sequence[bytes],
    message: bytes,
    sig: bytes,
    *,
    keys_registered: bool = False,
    backend: Backend = "auto",
) -> bool:
    """True iff ``sig`` aggregates signatures of every key in ``pubkeys`` on the same ``message``.

    Only sound for keys registered through :func:`register_key` (proof of possession checked).
    On py_ecc, ``keys_registered=True`` skips the per-key subgroup checks (done at registration)
    and validates only the aggregate key — about 18x cheaper for 18 approvers in pure Python.
    Natively every key is checked either way (a fraction of a millisecond each), and with
    ``keys_registered=True`` the validated sum of each key set is cached, so verifying another
    authorization by the same approvers costs one pairing check.
    """
    _check_sig_len(sig)
    if not pubkeys:
        raise CryptoError("no public keys")
    if _native(backend):
        signature = _native_sig(sig)
        if keys_registered:
            agg = _aggregate_registered(tuple(bytes(pk) for pk in pubkeys))  # a malformed key raises
            return signature is not None and bool(_Native.verify(agg, bytes(message), signature))
        points = [_native_pk(pk) for pk in pubkeys]
        return signature is not None and bool(_Native.fast_aggregate_verify(points, bytes(message), signature))
    if not keys_registered:
        for pk in pubkeys:
            _check_pubkey(pk, backend)
        return bool(_Pop.FastAggregateVerify([bytes(pk) for pk in pubkeys], bytes(message), bytes(sig)))
    for pk in pubkeys:
        if not isinstance(pk, bytes | bytearray) or len(pk) != PUBKEY_LENGTH:
            raise MalformedKey(f"BLS public key must be {PUBKEY_LENGTH} bytes, got {len(pk)}")
    try:
        agg = bytes(_Pop._AggregatePKs([bytes(pk) for pk in pubkeys]))
    except (ValidationError, ValueError, AssertionError) as exc:
        raise MalformedKey(f"not a compressed G1 point: {exc}") from exc
    return verify(agg, message, sig, backend=backend)


# --------------------------------------------------------------------------- proof of possession


def pop_prove(sk: int, *, backend: Backend = "auto") -> bytes:
    """A proof that the holder of ``sk`` knows it (a signature on the public key under :data:`POP_DST`)."""
    _check_sk(sk)
    if _native(backend):
        return bytes(_Native.pop_prove(_native_sk(sk)))
    return bytes(_Pop.PopProve(sk))


def pop_verify(pk: bytes, proof: bytes, *, backend: Backend = "auto") -> bool:
    """True iff ``proof`` is a valid proof of possession for ``pk``."""
    _check_sig_len(proof)
    if _native(backend):
        point, signature = _native_pk(pk), _native_sig(proof)
        return signature is not None and bool(_Native.pop_verify(point, signature))
    _check_pubkey(pk)
    return bool(_Pop.PopVerify(bytes(pk), bytes(proof)))


def register_key(pk: bytes, proof: bytes) -> bytes:
    """Accept a BLS public key for registration only with a valid proof of possession.

    Raises :class:`InvalidProofOfPossession` (alias ``RogueKey``) otherwise.
    """
    if not pop_verify(pk, proof):
        raise InvalidProofOfPossession("BLS public key has no valid proof of possession; refusing it")
    return bytes(pk)


# --------------------------------------------------------------------------- EIP-2537 encodings


def _fp(value: int) -> bytes:
    return int(value).to_bytes(EIP2537_FP_LENGTH, "big")


def _g1_point_to_eip2537(point: tuple) -> bytes:
    if is_inf(point):
        return bytes(EIP2537_G1_LENGTH)
    x, y = normalize(point)
    return _fp(x.n) + _fp(y.n)


def _g2_point_to_eip2537(point: tuple) -> bytes:
    if is_inf(point):
        return bytes(EIP2537_G2_LENGTH)
    x, y = normalize(point)
    x_c0, x_c1 = x.coeffs
    y_c0, y_c1 = y.coeffs
    return _fp(x_c0) + _fp(x_c1) + _fp(y_c0) + _fp(y_c1)


def to_eip2537_g1(pubkey48: bytes) -> bytes:
    """Decompress a 48-byte G1 public key to its 128-byte EIP-2537 encoding ``x || y``."""
    if len(pubkey48) != PUBKEY_LENGTH:
        raise MalformedKey(f"G1 point must be {PUBKEY_LENGTH} bytes compressed, got {len(pubkey48)}")
    try:
        point = pubkey_to_G1(bytes(pubkey48))
    except (ValidationError, ValueError, AssertionError) as exc:
        raise MalformedKey(f"not a compressed G1 point: {exc}") from exc
    return _g1_point_to_eip2537(point)


def to_eip2537_g2(sig96: bytes) -> bytes:
    """Decompress a 96-byte G2 signature to its 256-byte EIP-2537 encoding ``x.c0||x.c1||y.c0||y.c1``."""
    _check_sig_len(sig96)
    try:
        point = signature_to_G2(bytes(sig96))
    except (ValidationError, ValueError, AssertionError) as exc:
        raise InvalidSignature(f"not a compressed G2 point: {exc}") from exc
    return _g2_point_to_eip2537(point)


def neg_g1_generator_eip2537() -> bytes:
    """``-G1`` (the negated generator) in EIP-2537 encoding, the constant of the pairing check."""
    return _g1_point_to_eip2537(neg(G1))


def hash_to_field_eip2537(message: bytes, dst: bytes = SIGN_DST) -> tuple[bytes, bytes]:
    """``(u0, u1)``: the two Fp2 elements of hash_to_field, each 128 bytes, inputs to MAP_FP2_TO_G2."""
    u0, u1 = hash_to_field_FQ2(bytes(message), 2, dst, hashlib.sha256)
    return tuple(_fp(u.coeffs[0]) + _fp(u.coeffs[1]) for u in (u0, u1))  # type: ignore[return-value]


def message_point_eip2537(message: bytes, dst: bytes = SIGN_DST) -> bytes:
    """``H(message)`` on G2 (hash_to_curve, SSWU RO) in EIP-2537 encoding (256 bytes)."""
    return _g2_point_to_eip2537(hash_to_G2(bytes(message), dst, hashlib.sha256))


def pairing_check_input(pk: bytes, message: bytes, sig: bytes) -> bytes:
    """Input to ``BLS12_PAIRING_CHECK`` that returns 1 iff ``sig`` is ``pk``'s signature on ``message``.

    ``(pk, H(message)) || (-G1, sig)``: 2 × (128 + 256) = 768 bytes.
    """
    return (
        to_eip2537_g1(pk) + message_point_eip2537(message) + neg_g1_generator_eip2537() + to_eip2537_g2(sig)
    )
