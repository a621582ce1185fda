"""he_score end to end: accuracy against a fitted logistic model, masks, and every named refusal."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tenseal as ts
from sklearn.linear_model import LogisticRegression

from protocols.he import score
from protocols.he.context import load_public_context, load_secret_context
from protocols.he.errors import (
    CiphertextSizeMismatch,
    ContextMismatch,
    DuplicateContribution,
    InvalidInput,
    MalformedCiphertext,
    MaskError,
    SecretKeyPresent,
    WrongEnvelopeKind,
)
from protocols.he.masks import MaskGroup, mask_keypair
from protocols.he.wire import MAGIC, EnvelopeHeader, load_vectors, pack, unpack

N_ROWS = 9_000  # three ciphertext batches at 4096 slots, the last one partly filled
SPLIT = {"bank": 3, "tax": 4, "power": 3}


@pytest.fixture(scope="module")
def credit():
    """A fitted credit model on standardized features with realistic tails, split by party."""
    rng = np.random.default_rng(2024)
    f = sum(SPLIT.values())
    x = rng.standard_normal((N_ROWS, f))
    x[:, 1] = rng.lognormal(0, 1, N_ROWS)  # skewed, like VAT paid
    x[:, 5] = rng.poisson(0.3, N_ROWS)  # counts, like court cases
    x = (x - x.mean(0)) / x.std(0)  # each party z-scores its own columns
    true_w = rng.normal(0, 1.2, f)
    y = (rng.random(N_ROWS) < 1 / (1 + np.exp(-(x @ true_w - 1.5)))).astype(int)
    model = LogisticRegression(C=10.0, max_iter=500).fit(x, y)
    blocks, weights, start = {}, {}, 0
    for party, k in SPLIT.items():
        blocks[party] = x[:, start : start + k]
        weights[party] = model.coef_[0, start : start + k]
        start += k
    return {"x": x, "model": model, "blocks": blocks, "weights": weights, "b": float(model.intercept_[0])}


def _run(pair, credit, masks=None):
    parts = []
    for dep in ("tax", "power"):
        enc_w = score.encrypt_weights(pair.public, credit["weights"][dep])
        m = (masks["group"], masks[dep]) if masks else None
        parts.append(score.partial_scores(pair.public, enc_w, credit["blocks"][dep], dep, mask=m))
    own = credit["blocks"]["bank"] @ credit["weights"]["bank"] + credit["b"]
    parts.append(score.own_partial(pair.public, own, "bank"))
    total = score.sum_partials(pair.public, parts)
    return parts, total


def test_scores_match_plaintext_logits(pair, credit):
    _, total = _run(pair, credit)
    got = score.decrypt_scores(pair.secret, total, N_ROWS, context=pair.fingerprint)
    expected = credit["model"].decision_function(credit["x"])
    assert got.shape == (N_ROWS,)
    assert np.abs(expected).max() > 3  # realistic logits, not all near zero
    err = np.abs(got - expected).max()
    assert err <= 1e-3, err
    assert err <= 1e-4  # measured ~2e-6; the bound with two orders of margin
    env = unpack(total)
    assert env.header.contributors == ["bank", "power", "tax"]
    assert len(env.ciphertexts) == 3


def test_masked_scores_match_and_hide_each_department(pair, credit):
    keys = {d: mask_keypair() for d in ("tax", "power")}
    group = MaskGroup(job_id="job-1", members={d: k[1].hex() for d, k in keys.items()})
    masks = {"group": group, **{d: k[0] for d, k in keys.items()}}
    parts, total = _run(pair, credit, masks)
    got = score.decrypt_scores(pair.secret, total, N_ROWS, context=pair.fingerprint)
    assert np.abs(got - credit["model"].decision_function(credit["x"])).max() <= 1e-3
    # even the key holder, given one department's partial, sees only masked values
    sec = load_secret_context(pair.secret)
    tax_alone = np.concatenate([np.asarray(v.decrypt()) for v in load_vectors(sec, unpack(parts[0]))])[
        :N_ROWS
    ]
    tax_true = credit["blocks"]["tax"] @ credit["weights"]["tax"]
    assert np.abs(tax_alone - tax_true).min() > 1.0
    assert np.median(np.abs(tax_alone)) > 1e6
    # a group member missing: the masks would not cancel, so nothing is summed
    with pytest.raises(MaskError, match="did not contribute"):
        score.sum_partials(pair.public, [parts[0], parts[2]])


def test_mask_with_a_key_that_is_not_yours(pair, credit):
    keys = {d: mask_keypair() for d in ("tax", "power")}
    group = MaskGroup(job_id="job-2", members={d: k[1].hex() for d, k in keys.items()})
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["tax"])
    with pytest.raises(MaskError, match="does not match"):
        score.partial_scores(
            pair.public, enc_w, credit["blocks"]["tax"], "tax", mask=(group, keys["power"][0])
        )
    with pytest.raises(MaskError, match="not a member"):
        score.partial_scores(
            pair.public, enc_w, credit["blocks"]["tax"], "court", mask=(group, keys["tax"][0])
        )


def test_department_cannot_read_the_weights(pair, credit):
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["tax"])
    pub = load_public_context(pair.public)
    for vec in load_vectors(pub, unpack(enc_w, kind="weights")):
        with pytest.raises(ValueError, match="secret_key"):
            vec.decrypt()
    # and a department refuses a context that would let it (requester leaked its secret)
    with pytest.raises(SecretKeyPresent):
        score.partial_scores(pair.secret, enc_w, credit["blocks"]["tax"], "tax")


def test_wrong_number_of_weights(pair, credit):
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["tax"])  # 4 weights
    with pytest.raises(CiphertextSizeMismatch, match="4 encrypted weights for 3"):
        score.partial_scores(pair.public, enc_w, credit["blocks"]["power"], "power")


def test_weight_ciphertext_not_full_width(pair, credit):
    pub = load_public_context(pair.public)
    short = [ts.ckks_vector(pub, [0.5] * 100).serialize() for _ in range(3)]
    env = pack(EnvelopeHeader(kind="weights", context=pair.fingerprint, sizes=[100] * 3, n_values=3), short)
    with pytest.raises(CiphertextSizeMismatch, match="fill all 4096"):
        score.partial_scores(pair.public, env, credit["blocks"]["power"], "power")


def test_header_lies_about_slot_count(pair, credit):
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["power"])
    env = unpack(enc_w)
    lying = pack(env.header.model_copy(update={"sizes": [4096, 4096, 100]}), env.ciphertexts)
    pub = load_public_context(pair.public)
    with pytest.raises(CiphertextSizeMismatch, match="holds 4096 slots, the header says 100"):
        load_vectors(pub, unpack(lying))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b"XXXXXX" + b[6:],  # bad magic
        lambda b: b[:6] + struct.pack(">I", 1 << 30) + b[10:],  # absurd header length
        lambda b: b[:6] + struct.pack(">I", 5) + b"{bad}" + b[10:],  # header not JSON
        lambda b: b"",
    ],
)
def test_malformed_envelopes(pair, credit, damage):
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["power"])
    with pytest.raises(MalformedCiphertext):
        score.partial_scores(pair.public, damage(enc_w), credit["blocks"]["power"], "power")


def test_garbage_ciphertext_inside_a_valid_envelope(pair, credit):
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["power"])
    env = unpack(enc_w)
    rng = np.random.default_rng(1)
    junk = [rng.bytes(len(c)) for c in env.ciphertexts]
    with pytest.raises(MalformedCiphertext, match="ciphertext 0"):
        score.partial_scores(pair.public, pack(env.header, junk), credit["blocks"]["power"], "power")


def test_ciphertext_from_other_parameters(pair, credit):
    ctx16 = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=16384, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx16.global_scale = 2**40
    alien = [ts.ckks_vector(ctx16, [0.1] * 4096).serialize() for _ in range(3)]
    env = pack(EnvelopeHeader(kind="weights", context=pair.fingerprint, sizes=[4096] * 3, n_values=3), alien)
    with pytest.raises(MalformedCiphertext):
        score.partial_scores(pair.public, env, credit["blocks"]["power"], "power")


def test_context_mismatch(pair, other_pair, credit):
    enc_w = score.encrypt_weights(other_pair.public, credit["weights"]["power"])
    with pytest.raises(ContextMismatch):
        score.partial_scores(pair.public, enc_w, credit["blocks"]["power"], "power")
    p_other = score.own_partial(other_pair.public, np.zeros(10), "bank")
    p_mine = score.own_partial(pair.public, np.zeros(10), "tax")
    with pytest.raises(ContextMismatch):
        score.sum_partials(pair.public, [p_mine, p_other])


def test_wrong_kind(pair, credit):
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["power"])
    with pytest.raises(WrongEnvelopeKind):
        score.sum_partials(pair.public, [enc_w])
    p = score.own_partial(pair.public, np.zeros(10), "bank")
    with pytest.raises(WrongEnvelopeKind):
        score.partial_scores(pair.public, p, credit["blocks"]["power"], "power")


def test_partials_of_different_row_counts(pair):
    a = score.own_partial(pair.public, np.ones(5000), "bank")
    b = score.own_partial(pair.public, np.ones(4999), "tax")
    with pytest.raises(CiphertextSizeMismatch, match="4999"):
        score.sum_partials(pair.public, [a, b])


def test_duplicate_contribution(pair):
    a = score.own_partial(pair.public, np.ones(10), "tax")
    with pytest.raises(DuplicateContribution, match="tax"):
        score.sum_partials(pair.public, [a, a])


def test_decrypt_expects_the_row_count(pair):
    total = score.sum_partials(pair.public, [score.own_partial(pair.public, np.arange(10.0), "bank")])
    assert np.allclose(score.decrypt_scores(pair.secret, total, 10), np.arange(10.0), atol=1e-5)
    with pytest.raises(CiphertextSizeMismatch, match="expected 11"):
        score.decrypt_scores(pair.secret, total, 11)


@pytest.mark.parametrize(
    "bad",
    [np.array([[1.0, np.nan, 2.0]]), np.zeros((0, 3)), np.array([["a", "b", "c"]]), np.full((2, 3), np.inf)],
)
def test_bad_features(pair, credit, bad):
    enc_w = score.encrypt_weights(pair.public, credit["weights"]["power"])
    with pytest.raises(InvalidInput):
        score.partial_scores(pair.public, enc_w, bad, "power")


def test_magic_is_versioned():
    assert MAGIC == b"DCPHE1"
