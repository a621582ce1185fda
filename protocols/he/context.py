"""CKKS context management: parameters for a stated precision, security checks, key separation.

The requester (the party that will decrypt) calls :func:`make_context` and gets two byte
strings: the *public* context (encryption key, and relinearization / Galois keys when the
protocol needs them) that it sends to everyone, and the *secret* context that never leaves
its node. Every other party loads the public bytes with :func:`load_public_context`, which
refuses a context that carries a secret key and re-checks the security level itself — a
requester that picked weak parameters would otherwise expose the departments' ciphertexts
to whoever relays them.

Security is checked against the HomomorphicEncryption.org standard (Albrecht et al., 2018,
table for uniform ternary secrets, classical attacks): the maximum total bit count of the
coefficient modulus for each ring degree and level. SEAL applies the same table; we check it
ourselves so that a bad choice fails with :class:`ParametersBelowSecurity`, not with a
generic ``ValueError`` deep inside SEAL.

Precision: after one fresh encryption, one plaintext multiplication, one rescale and a
few dozen additions, the absolute error of a CKKS result measured at ring degree 8192 stays
below ``2^-(scale_bits - NOISE_MARGIN_BITS) · max(1, V)`` where ``V`` bounds the magnitude
of every value involved (ciphertext, plaintext and result): part of the error is absolute
(encryption noise, rescale rounding), part is relative to the values multiplied.
:func:`params_for_precision` picks ``scale_bits`` with that margin and the first prime so
that values up to ``V`` fit; ``tests/he/test_context.py`` measures the error of the chosen
parameters against the stated bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import tenseal as ts
from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.crypto.sm3 import sm3_hex
from protocols.he.errors import (
    InvalidParameters,
    MalformedContext,
    ParametersBelowSecurity,
    SecretKeyMissing,
    SecretKeyPresent,
)

SecurityLevel = Literal[128, 192, 256]

# HE standard, ternary secret, classical: max log2(q) (all primes, special prime included) per degree.
MAX_COEFF_BITS: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
DEGREES = (1024, 2048, 4096, 8192, 16384, 32768)
MAX_PRIME_BITS = 60  # SEAL's limit per RNS prime
NOISE_MARGIN_BITS = 24  # measured CKKS noise after encrypt · plain-mult · rescale · additions (module doc)


class CkksParams(BaseModel):
    """CKKS encryption parameters and which evaluation keys the public context carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poly_modulus_degree: int = Field(default=8192, description="ring degree N; N/2 slots per ciphertext")
    coeff_mod_bit_sizes: tuple[int, ...] = Field(
        default=(60, 40, 40, 60),
        description="RNS prime sizes: first (integer headroom), one per rescale level, special prime last",
    )
    scale_bits: int = Field(default=40, ge=20, le=60, description="global scale 2^scale_bits")
    security_level: SecurityLevel = 128
    relin_keys: bool = Field(default=False, description="ship relinearization keys (ciphertext products)")
    galois_keys: bool = Field(default=False, description="ship Galois keys (slot rotations and sums)")

    @model_validator(mode="after")
    def _check(self) -> CkksParams:
        check_parameters(self)
        return self

    @property
    def slots(self) -> int:
        """Values packed in one ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Rescales (plaintext or ciphertext multiplications in sequence) the modulus chain allows."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def total_bits(self) -> int:
        """Total bit count of the coefficient modulus (what the security table bounds)."""
        return sum(self.coeff_mod_bit_sizes)

    def precision(self, max_abs_value: float = 1.0) -> float:
        """The absolute error these parameters stay under for values up to ``max_abs_value`` (depth 1)."""
        return 2.0 ** -(self.scale_bits - NOISE_MARGIN_BITS) * max(1.0, max_abs_value)

    @property
    def max_abs_value(self) -> float:
        """Largest magnitude a decrypted value may have at the last level (first prime's headroom)."""
        return 2.0 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 1)


def check_security(poly_modulus_degree: int, total_bits: int, level: SecurityLevel = 128) -> None:
    """Raise :class:`ParametersBelowSecurity` unless ``total_bits`` is within the HE standard's bound."""
    table = MAX_COEFF_BITS[level]
    if poly_modulus_degree not in table:
        raise ParametersBelowSecurity(
            f"ring degree {poly_modulus_degree} is not one the HE standard covers ({', '.join(map(str, DEGREES))})"
        )
    limit = table[poly_modulus_degree]
    if total_bits > limit:
        raise ParametersBelowSecurity(
            f"coefficient modulus of {total_bits} bits at ring degree {poly_modulus_degree} is below "
            f"{level}-bit security (the HE standard allows at most {limit} bits); use a larger degree "
            "or fewer/smaller primes"
        )


def check_parameters(p: CkksParams) -> None:
    """Security first (:class:`ParametersBelowSecurity`), then consistency (:class:`InvalidParameters`)."""
    check_security(p.poly_modulus_degree, p.total_bits, p.security_level)
    sizes = p.coeff_mod_bit_sizes
    if len(sizes) < 3:
        raise InvalidParameters(
            "need at least 3 primes (first, one rescale level, special) for one plaintext multiplication"
        )
    min_bits = int(math.log2(2 * p.poly_modulus_degree)) + 1
    for b in sizes:
        if not min_bits <= b <= MAX_PRIME_BITS:
            raise InvalidParameters(f"prime size {b} bits outside [{min_bits}, {MAX_PRIME_BITS}]")
    middle = sizes[1:-1]
    if any(b != p.scale_bits for b in middle):
        raise InvalidParameters(
            f"the rescale primes {list(middle)} must equal the scale ({p.scale_bits} bits) so scales stay stable"
        )
    if sizes[0] <= p.scale_bits:
        raise InvalidParameters(
            f"the first prime ({sizes[0]} bits) must exceed the scale ({p.scale_bits} bits)"
        )
    if sizes[-1] < max(sizes[:-1]):
        raise InvalidParameters("the special (last) prime must be at least as large as every other prime")
    if p.scale_bits - NOISE_MARGIN_BITS < 1:
        raise InvalidParameters(f"scale 2^{p.scale_bits} leaves no precision above the noise")


def params_for_precision(
    max_abs_error: float = 1e-5,
    max_abs_value: float = 2.0**16,
    depth: int = 1,
    security_level: SecurityLevel = 128,
    min_degree: int = 8192,
    relin_keys: bool = False,
    galois_keys: bool = False,
) -> CkksParams:
    """The smallest secure CKKS parameters whose results stay within ``max_abs_error``.

    ``max_abs_value`` bounds every value (ciphertext, plaintext, result); ``depth`` is the
    number of multiplications in sequence. Raises :class:`InvalidParameters` when no prime
    layout of at most 60 bits per prime can deliver both, and :class:`ParametersBelowSecurity`
    when no ring degree up to 32768 is secure for the resulting modulus.
    """
    if not 0 < max_abs_error < 1:
        raise InvalidParameters(f"max_abs_error must be in (0, 1), got {max_abs_error}")
    if max_abs_value <= 0 or depth < 1:
        raise InvalidParameters("max_abs_value must be positive and depth at least 1")
    frac_bits = math.ceil(-math.log2(max_abs_error))
    value_bits = max(0, math.ceil(math.log2(max_abs_value)))
    scale_bits = frac_bits + NOISE_MARGIN_BITS + value_bits
    int_bits = value_bits + 2
    first = scale_bits + int_bits
    if scale_bits > MAX_PRIME_BITS or first > MAX_PRIME_BITS:
        raise InvalidParameters(
            f"error {max_abs_error:g} on values up to {max_abs_value:g} needs a {first}-bit first prime; "
            f"SEAL allows {MAX_PRIME_BITS}. Relax the precision or bound the values tighter"
        )
    sizes = (first, *([scale_bits] * depth), first)
    total = sum(sizes)
    for degree in DEGREES:
        if degree < min_degree:
            continue
        if total <= MAX_COEFF_BITS[security_level][degree]:
            return CkksParams(
                poly_modulus_degree=degree,
                coeff_mod_bit_sizes=sizes,
                scale_bits=scale_bits,
                security_level=security_level,
                relin_keys=relin_keys,
                galois_keys=galois_keys,
            )
    raise ParametersBelowSecurity(
        f"a {total}-bit modulus (depth {depth}) is not {security_level}-bit secure at any ring degree"
    )


@dataclass(frozen=True)
class ContextPair:
    """What :func:`make_context` returns: bytes to share, bytes to keep."""

    public: bytes  # send to every party: encrypts, evaluates; cannot decrypt
    secret: bytes  # stays on the requester's node (store it encrypted at rest)
    params: CkksParams

    @property
    def fingerprint(self) -> str:
        """SM3 of the public context: names the key every envelope of this job is bound to."""
        return context_fingerprint(self.public)


def context_fingerprint(public_context: bytes) -> str:
    """SM3 (hex) of serialized public context bytes."""
    return sm3_hex(public_context)


def make_context(params: CkksParams | None = None) -> ContextPair:
    """Generate a fresh CKKS key set for ``params`` (requester side)."""
    p = params or CkksParams()
    check_parameters(p)  # a model_construct()ed CkksParams skips the validator; check anyway
    try:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=p.poly_modulus_degree,
            coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
        )
    except ValueError as exc:  # SEAL's own check (e.g. a prime it cannot find)
        raise InvalidParameters(f"SEAL rejected the parameters: {exc}") from exc
    ctx.global_scale = 2.0**p.scale_bits
    if p.galois_keys:
        ctx.generate_galois_keys()
    public = ctx.serialize(
        save_public_key=True,
        save_secret_key=False,
        save_galois_keys=p.galois_keys,
        save_relin_keys=p.relin_keys,
    )
    secret = ctx.serialize(
        save_public_key=True,
        save_secret_key=True,
        save_galois_keys=False,  # the secret key can regenerate them; keep the stored secret small
        save_relin_keys=False,
    )
    return ContextPair(public=public, secret=secret, params=p)


@dataclass(frozen=True)
class ContextInfo:
    """What can be read back from a loaded context."""

    poly_modulus_degree: int
    total_bits: int
    scale_bits: float
    has_secret_key: bool
    has_relin_keys: bool
    has_galois_keys: bool

    @property
    def slots(self) -> int:
        """Values packed in one ciphertext."""
        return self.poly_modulus_degree // 2


def _load(data: bytes) -> ts.Context:
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise MalformedContext("context bytes are empty or not bytes")
    try:
        ctx = ts.context_from(bytes(data))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise MalformedContext(f"not a serialized TenSEAL context: {exc}") from exc
    try:
        parms = ctx.seal_context().data.key_context_data().parms()
        scheme = parms.scheme()
    except (ValueError, RuntimeError, TypeError, AttributeError) as exc:
        raise MalformedContext(f"context has no usable encryption parameters: {exc}") from exc
    if scheme != ts.SCHEME_TYPE.CKKS.value:
        raise MalformedContext(f"context uses scheme {scheme}, not CKKS")
    return ctx


def context_info(ctx: ts.Context, level: SecurityLevel = 128) -> ContextInfo:
    """Read degree, modulus size and keys back from ``ctx`` and re-check its security."""
    data = ctx.seal_context().data.key_context_data()
    degree = data.parms().poly_modulus_degree()
    total = data.total_coeff_modulus_bit_count()
    # the product of the primes may have one bit fewer than the sum of their sizes: compare with slack
    check_security(degree, total, level)
    return ContextInfo(
        poly_modulus_degree=degree,
        total_bits=total,
        scale_bits=math.log2(ctx.global_scale) if ctx.global_scale > 0 else 0.0,
        has_secret_key=ctx.has_secret_key(),
        has_relin_keys=ctx.has_relin_keys(),
        has_galois_keys=ctx.has_galois_keys(),
    )


def load_public_context(data: bytes, level: SecurityLevel = 128) -> ts.Context:
    """Load a context that must *not* hold the secret key (department / aggregator side).

    Raises :class:`MalformedContext`, :class:`SecretKeyPresent` or :class:`ParametersBelowSecurity`.
    """
    ctx = _load(data)
    if ctx.has_secret_key():
        raise SecretKeyPresent(
            "the context carries a secret key; only the requester may hold it — refusing to use it"
        )
    if not ctx.has_public_key():
        raise MalformedContext("the public context has no public (encryption) key")
    info = context_info(ctx, level)
    if info.scale_bits <= NOISE_MARGIN_BITS:
        raise InvalidParameters(f"global scale 2^{info.scale_bits:.0f} leaves no precision above the noise")
    return ctx


def load_secret_context(data: bytes, level: SecurityLevel = 128) -> ts.Context:
    """Load the requester's own context (with the secret key). Raises :class:`SecretKeyMissing` otherwise."""
    ctx = _load(data)
    if not ctx.has_secret_key():
        raise SecretKeyMissing("this context has no secret key: only the requester's own context can decrypt")
    context_info(ctx, level)
    return ctx
