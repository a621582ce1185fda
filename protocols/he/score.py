"""``he_score`` — model-protected scoring of a logistic model split across parties.

The bank's model is ``logit(row) = b + Σ_p x_p(row) · w_p`` where party ``p`` holds the
features ``x_p`` of every row (rows aligned by PSI beforehand) and the bank holds every
weight. The steps, each a pure function over bytes that runs in its owner's process:

1. bank (requester)  :func:`protocols.he.context.make_context` → public bytes out, secret kept.
2. bank              :func:`encrypt_weights` (per department: the weights of *its* features),
                     each weight replicated across all slots of its own ciphertext.
3. department        :func:`partial_scores`: for each batch of ``slots`` rows,
                     ``Σ_j Enc(w_j) ⊙ x_j`` — plaintext-by-ciphertext products, one rescale,
                     no rotations, so no Galois keys are needed. Optional pairwise masks.
4. bank              :func:`own_partial`: its own ``b + x_bank · w_bank``, encrypted.
5. aggregator        :func:`sum_partials` adds all partials slot-wise.
6. bank              :func:`decrypt_scores` decrypts the total only.

See ``protocols/he/README.md`` for what each party can and cannot learn.
"""

from __future__ import annotations

import math

import numpy as np
import tenseal as ts

from protocols.he.aggregate import check_complete, sum_envelopes
from protocols.he.context import context_fingerprint, load_public_context, load_secret_context
from protocols.he.errors import CiphertextSizeMismatch, InvalidInput, MaskError
from protocols.he.masks import MaskGroup, mask_vectors
from protocols.he.wire import EnvelopeHeader, batch_sizes, load_vectors, pack, unpack


def as_matrix(values: object, name: str = "features") -> np.ndarray:
    """``values`` as a finite float64 matrix (rows × columns); :class:`InvalidInput` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} are not numeric: {exc}") from exc
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput(f"{name} must be a non-empty rows × columns matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InvalidInput(f"{name} contain {bad} NaN/inf values; impute or drop them before scoring")
    return arr


def as_vector(values: object, name: str) -> np.ndarray:
    """``values`` as a finite, non-empty float64 vector; :class:`InvalidInput` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} are not numeric: {exc}") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInput(f"{name} must be a non-empty vector, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} contain NaN/inf")
    return arr


def encrypt_weights(public_context: bytes, weights: object) -> bytes:
    """Bank: encrypt one weight per feature, each replicated over every slot of its own ciphertext."""
    w = as_vector(weights, "weights")
    ctx = load_public_context(public_context)
    slots = _slots(ctx)
    cts = [ts.ckks_vector(ctx, np.full(slots, wj)).serialize() for wj in w]
    header = EnvelopeHeader(
        kind="weights", context=context_fingerprint(public_context), sizes=[slots] * len(w), n_values=len(w)
    )
    return pack(header, cts)


def _slots(ctx: ts.Context) -> int:
    return ctx.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2


def _headroom_bits(ctx: ts.Context, rescales: int) -> float:
    """log2 of the largest value a ciphertext can hold after ``rescales`` rescales."""
    data = ctx.seal_context().data.first_context_data()
    for _ in range(rescales):
        nxt = data.next_context_data()
        if nxt is None:
            break
        data = nxt
    return data.total_coeff_modulus_bit_count() - math.log2(ctx.global_scale) - 1


def _mask(
    ctx: ts.Context, mask: tuple[MaskGroup, bytes] | None, party: str, sizes: list[int], rescales: int
) -> tuple[list[np.ndarray] | None, list[str]]:
    if mask is None:
        return None, []
    group, private = mask
    need = group.mask_bits + len(group.members).bit_length() + 8
    room = _headroom_bits(ctx, rescales)
    if need > room:
        raise MaskError(
            f"masks of 2^{group.mask_bits} need ~{need} bits of headroom; these parameters leave {room:.0f}. "
            "Use a larger first prime / more levels, or smaller mask_bits"
        )
    return mask_vectors(group, party, private, sizes), group.names


def partial_scores(
    public_context: bytes,
    enc_weights: bytes,
    features: object,
    party: str,
    mask: tuple[MaskGroup, bytes] | None = None,
) -> bytes:
    """Department: encrypted ``x · w`` for every row, ``slots`` rows per ciphertext.

    ``features`` is the department's rows × features matrix in the order the weights were
    encrypted (the manifest fixes it). ``mask`` = (group, own X25519 private key) adds this
    party's zero-sum mask. Raises :class:`CiphertextSizeMismatch` when the number of weights
    does not match the number of features, or a weight ciphertext is not full-width.
    """
    x = as_matrix(features)
    ctx = load_public_context(public_context)
    fp = context_fingerprint(public_context)
    env = unpack(enc_weights, kind="weights", context=fp)
    slots = _slots(ctx)
    if env.header.n_values != x.shape[1] or len(env.ciphertexts) != x.shape[1]:
        raise CiphertextSizeMismatch(
            f"{len(env.ciphertexts)} encrypted weights for {x.shape[1]} feature columns"
        )
    if any(s != slots for s in env.header.sizes):
        raise CiphertextSizeMismatch(f"every weight ciphertext must fill all {slots} slots")
    weights = load_vectors(ctx, env)
    n = x.shape[0]
    sizes = [slots] * len(batch_sizes(n, slots))
    masks, group = _mask(ctx, mask, party, sizes, rescales=1)
    out: list[bytes] = []
    for b in range(len(sizes)):
        block = np.zeros((slots, x.shape[1]))
        rows = x[b * slots : (b + 1) * slots]
        block[: rows.shape[0]] = rows
        acc: ts.CKKSVector | None = None
        for j, wj in enumerate(weights):
            term = wj * block[:, j]
            acc = term if acc is None else acc + term
        assert acc is not None
        if masks is not None:
            acc = acc + masks[b]
        out.append(acc.serialize())
    header = EnvelopeHeader(
        kind="partial_scores", context=fp, sizes=sizes, n_values=n, contributors=[party], mask_group=group
    )
    return pack(header, out)


def own_partial(
    public_context: bytes,
    scores: object,
    party: str,
    mask: tuple[MaskGroup, bytes] | None = None,
) -> bytes:
    """Requester: its own plaintext partial (intercept included) as an encrypted partial-score envelope."""
    s = as_vector(scores, "scores")
    ctx = load_public_context(public_context)
    slots = _slots(ctx)
    sizes = [slots] * len(batch_sizes(len(s), slots))
    masks, group = _mask(ctx, mask, party, sizes, rescales=0)
    out = []
    for b in range(len(sizes)):
        chunk = np.zeros(slots)
        part = s[b * slots : (b + 1) * slots]
        chunk[: part.size] = part
        if masks is not None:
            chunk = chunk + masks[b]
        out.append(ts.ckks_vector(ctx, chunk).serialize())
    header = EnvelopeHeader(
        kind="partial_scores",
        context=context_fingerprint(public_context),
        sizes=sizes,
        n_values=len(s),
        contributors=[party],
        mask_group=group,
    )
    return pack(header, out)


def sum_partials(public_context: bytes, partials: list[bytes]) -> bytes:
    """Aggregator: add every party's partial-score envelope under encryption."""
    return sum_envelopes(public_context, partials, "partial_scores")


def decrypt_scores(
    secret_context: bytes, total: bytes, n_rows: int, context: str | None = None
) -> np.ndarray:
    """Requester: decrypt the summed scores (``n_rows`` logits).

    ``context`` (the fingerprint of the job's public context) binds the total to this job.
    """
    ctx = load_secret_context(secret_context)
    env = unpack(total, kind="partial_scores", context=context)
    if env.header.n_values != n_rows:
        raise CiphertextSizeMismatch(f"the total holds {env.header.n_values} rows, expected {n_rows}")
    slots = _slots(ctx)
    if env.header.sizes != [slots] * len(batch_sizes(n_rows, slots)):
        raise CiphertextSizeMismatch(f"the total's batches {env.header.sizes} do not fit {n_rows} rows")
    check_complete(env.header)
    vecs = load_vectors(ctx, env)
    return np.concatenate([np.asarray(v.decrypt()) for v in vecs])[:n_rows]


def plaintext_logits(blocks: list[np.ndarray], weights: list[np.ndarray], intercept: float) -> np.ndarray:
    """The reference: ``intercept + Σ_p X_p w_p`` in the clear (tests and benchmarks)."""
    return intercept + sum(np.asarray(x) @ np.asarray(w) for x, w in zip(blocks, weights, strict=True))
