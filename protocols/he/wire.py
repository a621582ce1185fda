"""The byte format every HE step exchanges: a small, self-describing ciphertext envelope.

    MAGIC (6 bytes "DCPHE1") | header length (u32, big endian) | header (JSON) |
    for each ciphertext: length (u64, big endian) | TenSEAL CKKSVector bytes

The header names the kind of payload, the SM3 fingerprint of the public context it was
made under, the number of slots in use in every ciphertext, and (for statistics) the hash
of the query. Nothing in it is secret: row counts and the names of the contributing parties
are known to every participant of the job anyway.

:func:`unpack` checks the framing exactly (no trailing bytes, no truncation, lengths
bounded), then :func:`load_vectors` deserializes every ciphertext under the given context
and checks its slot count against the header. Any failure is :class:`MalformedCiphertext`,
:class:`CiphertextSizeMismatch`, :class:`ContextMismatch` or :class:`WrongEnvelopeKind`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Literal

import tenseal as ts
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.he.errors import (
    CiphertextSizeMismatch,
    ContextMismatch,
    MalformedCiphertext,
    WrongEnvelopeKind,
)

MAGIC = b"DCPHE1"
MAX_HEADER = 1 << 20
MAX_CIPHERTEXT = 64 << 20  # one CKKS ciphertext at N=32768 with a full chain is ~14 MB
EnvelopeKind = Literal["weights", "partial_scores", "stats"]


class EnvelopeHeader(BaseModel):
    """Public metadata of one envelope."""

    model_config = ConfigDict(extra="forbid")

    kind: EnvelopeKind
    context: str = Field(pattern=r"^[0-9a-f]{64}$", description="SM3 of the public context")
    sizes: list[int] = Field(min_length=1, description="slots in use in each ciphertext")
    n_values: int = Field(
        ge=1, description="meaningful values: rows (scores), features (weights), stats length"
    )
    query: str | None = Field(default=None, description="SM3 of the statistics query (stats only)")
    contributors: list[str] = Field(default_factory=list, description="parties whose data is summed in")
    mask_group: list[str] = Field(
        default_factory=list, description="members of the zero-sum mask group (empty: unmasked)"
    )


@dataclass
class Envelope:
    """A parsed envelope: header plus still-serialized ciphertexts."""

    header: EnvelopeHeader
    ciphertexts: list[bytes]


def pack(header: EnvelopeHeader, ciphertexts: list[bytes]) -> bytes:
    """Serialize ``header`` and ``ciphertexts`` into envelope bytes."""
    if len(ciphertexts) != len(header.sizes):
        raise CiphertextSizeMismatch(
            f"{len(ciphertexts)} ciphertexts but {len(header.sizes)} sizes in the header"
        )
    head = header.model_dump_json().encode()
    parts = [MAGIC, struct.pack(">I", len(head)), head]
    for ct in ciphertexts:
        parts.append(struct.pack(">Q", len(ct)))
        parts.append(ct)
    return b"".join(parts)


def unpack(data: bytes, kind: EnvelopeKind | None = None, context: str | None = None) -> Envelope:
    """Parse envelope bytes; optionally require its ``kind`` and ``context`` fingerprint."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedCiphertext(f"expected bytes, got {type(data).__name__}")
    buf = memoryview(bytes(data))
    if len(buf) < len(MAGIC) + 4 or bytes(buf[: len(MAGIC)]) != MAGIC:
        raise MalformedCiphertext("not a dcp HE envelope (bad magic or too short)")
    pos = len(MAGIC)
    (hlen,) = struct.unpack(">I", buf[pos : pos + 4])
    pos += 4
    if hlen > MAX_HEADER or pos + hlen > len(buf):
        raise MalformedCiphertext(f"envelope header length {hlen} is out of bounds")
    try:
        header = EnvelopeHeader.model_validate(json.loads(bytes(buf[pos : pos + hlen])))
    except (ValueError, ValidationError) as exc:
        raise MalformedCiphertext(f"envelope header is invalid: {exc}") from exc
    pos += hlen
    cts: list[bytes] = []
    for i in range(len(header.sizes)):
        if pos + 8 > len(buf):
            raise MalformedCiphertext(f"envelope truncated before ciphertext {i}")
        (clen,) = struct.unpack(">Q", buf[pos : pos + 8])
        pos += 8
        if clen == 0 or clen > MAX_CIPHERTEXT or pos + clen > len(buf):
            raise MalformedCiphertext(f"ciphertext {i} length {clen} is out of bounds (envelope truncated?)")
        cts.append(bytes(buf[pos : pos + clen]))
        pos += clen
    if pos != len(buf):
        raise MalformedCiphertext(f"{len(buf) - pos} trailing bytes after the last ciphertext")
    if kind is not None and header.kind != kind:
        raise WrongEnvelopeKind(f"expected a {kind!r} envelope, got {header.kind!r}")
    if context is not None and header.context != context:
        raise ContextMismatch(
            f"envelope was made under context {header.context[:16]}…, this job uses {context[:16]}…"
        )
    return Envelope(header=header, ciphertexts=cts)


def load_vectors(ctx: ts.Context, env: Envelope) -> list[ts.CKKSVector]:
    """Deserialize every ciphertext under ``ctx`` and check its slot count against the header."""
    out: list[ts.CKKSVector] = []
    for i, (raw, size) in enumerate(zip(env.ciphertexts, env.header.sizes, strict=True)):
        try:
            vec = ts.ckks_vector_from(ctx, raw)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise MalformedCiphertext(
                f"ciphertext {i} is not a CKKS vector under this context: {exc}"
            ) from exc
        if vec.size() != size:
            raise CiphertextSizeMismatch(f"ciphertext {i} holds {vec.size()} slots, the header says {size}")
        out.append(vec)
    return out


def batch_sizes(n_values: int, slots: int) -> list[int]:
    """Split ``n_values`` into ciphertext-sized batches: ``[slots, slots, …, remainder]``."""
    full, rest = divmod(n_values, slots)
    return [slots] * full + ([rest] if rest else [])
