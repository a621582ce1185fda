"""The aggregator's step, shared by ``he_score`` and ``secure_stats``: add envelopes slot-wise.

The aggregator (the coordinator, or any party that is not the decryptor) holds only the
public context: it can add ciphertexts, never read them. It checks that every envelope is
of the expected kind, made under this job's context, shaped alike (same batches, same
rows, same query), that no party is counted twice, and — when the contributions carry
pairwise masks — that every member of the mask group is present, since a missing member
would leave masks in the total. Any failure is a named error and nothing is returned.
"""

from __future__ import annotations

import tenseal as ts

from protocols.he.context import context_fingerprint, load_public_context
from protocols.he.errors import (
    CiphertextSizeMismatch,
    DuplicateContribution,
    InvalidInput,
    MaskError,
    QueryMismatch,
)
from protocols.he.wire import EnvelopeHeader, EnvelopeKind, load_vectors, pack, unpack


def sum_envelopes(public_context: bytes, envelopes: list[bytes], kind: EnvelopeKind) -> bytes:
    """Add ``envelopes`` (all of ``kind``) under encryption; return one envelope of the total."""
    if not envelopes:
        raise InvalidInput("nothing to sum: no contributions")
    ctx = load_public_context(public_context)
    fp = context_fingerprint(public_context)
    parsed = [unpack(e, kind=kind, context=fp) for e in envelopes]
    first = parsed[0].header
    contributors: list[str] = []
    for i, env in enumerate(parsed):
        h = env.header
        if h.sizes != first.sizes or h.n_values != first.n_values:
            raise CiphertextSizeMismatch(
                f"contribution {i} ({', '.join(h.contributors) or '?'}) has {h.n_values} values in "
                f"{len(h.sizes)} ciphertexts; contribution 0 has {first.n_values} in {len(first.sizes)}"
            )
        if h.query != first.query:
            raise QueryMismatch(f"contribution {i} answers a different query than contribution 0")
        for c in h.contributors:
            if c in contributors:
                raise DuplicateContribution(f"{c!r} contributes twice to the sum")
            contributors.append(c)
    groups = {tuple(env.header.mask_group) for env in parsed if env.header.mask_group}
    if len(groups) > 1:
        raise MaskError(f"contributions use different mask groups: {sorted(groups)}")
    mask_group = list(groups.pop()) if groups else []
    if mask_group:
        masked = {c for env in parsed if env.header.mask_group for c in env.header.contributors}
        missing = sorted(set(mask_group) - masked)
        if missing:
            raise MaskError(f"mask group members {missing} did not contribute; their masks would not cancel")
        extra = sorted(masked - set(mask_group))
        if extra:
            raise MaskError(f"{extra} sent masked contributions but are not in the mask group")
    total: list[ts.CKKSVector] | None = None
    for env in parsed:
        vecs = load_vectors(ctx, env)
        if total is None:
            total = vecs
        else:
            for b, v in enumerate(vecs):
                total[b] += v
    assert total is not None
    header = EnvelopeHeader(
        kind=kind,
        context=fp,
        sizes=first.sizes,
        n_values=first.n_values,
        query=first.query,
        contributors=sorted(contributors),
        mask_group=mask_group,
    )
    return pack(header, [v.serialize() for v in total])


def check_complete(header: EnvelopeHeader) -> None:
    """Decryptor-side check that every mask in a total has been cancelled."""
    missing = sorted(set(header.mask_group) - set(header.contributors))
    if missing:
        raise MaskError(f"the total lacks mask group members {missing}; decrypting it would give noise")
