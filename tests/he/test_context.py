"""CKKS context management: security table, precision, key separation, malformed contexts."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from protocols.he.context import (
    MAX_COEFF_BITS,
    CkksParams,
    check_security,
    context_info,
    load_public_context,
    load_secret_context,
    make_context,
    params_for_precision,
)
from protocols.he.errors import (
    InvalidParameters,
    MalformedContext,
    ParametersBelowSecurity,
    SecretKeyMissing,
    SecretKeyPresent,
)


def test_public_context_cannot_decrypt(pair):
    pub = load_public_context(pair.public)
    assert pub.is_public() and not pub.has_secret_key()
    secret_bytes_absent = load_secret_context(pair.secret)
    assert secret_bytes_absent.has_secret_key()
    vec = ts.ckks_vector(pub, [1.5, -2.0, 3.25])  # anyone can encrypt …
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()  # … nobody but the requester can decrypt
    again = ts.ckks_vector_from(load_secret_context(pair.secret), vec.serialize())
    assert np.allclose(again.decrypt(), [1.5, -2.0, 3.25], atol=1e-5)


def test_secret_key_is_not_in_the_public_bytes(pair):
    sk = load_secret_context(pair.secret).secret_key()
    # the secret context serialized with its key is not the public one, and the public one has no key
    assert pair.public != pair.secret
    with pytest.raises(SecretKeyPresent):
        load_public_context(pair.secret)
    with pytest.raises(SecretKeyMissing):
        load_secret_context(pair.public)
    assert sk is not None


def test_default_params_and_info(pair):
    info = context_info(load_public_context(pair.public))
    assert info.poly_modulus_degree == 8192 and info.slots == 4096
    assert info.total_bits <= MAX_COEFF_BITS[128][8192]
    assert round(info.scale_bits) == 40
    assert not info.has_galois_keys and not info.has_relin_keys  # he_score needs neither: small context


@pytest.mark.parametrize(
    ("degree", "sizes"),
    [(4096, (60, 40, 40, 60)), (8192, (60, 60, 60, 60)), (2048, (30, 25, 30))],
)
def test_parameters_below_security(degree, sizes):
    with pytest.raises(ParametersBelowSecurity, match="below 128-bit security"):
        CkksParams(poly_modulus_degree=degree, coeff_mod_bit_sizes=sizes, scale_bits=sizes[1])


def test_security_table_levels():
    check_security(8192, 218, 128)
    with pytest.raises(ParametersBelowSecurity):
        check_security(8192, 219, 128)
    with pytest.raises(ParametersBelowSecurity):
        check_security(8192, 200, 192)
    with pytest.raises(ParametersBelowSecurity, match="not one the HE standard covers"):
        check_security(12288, 100, 128)


def test_received_context_is_rechecked_at_a_higher_level(pair):
    load_public_context(pair.public, level=128)
    with pytest.raises(ParametersBelowSecurity):
        load_public_context(pair.public, level=192)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coeff_mod_bit_sizes": (60, 60)}, "at least 3 primes"),
        ({"coeff_mod_bit_sizes": (60, 35, 60)}, "must equal the scale"),
        ({"coeff_mod_bit_sizes": (40, 40, 60), "scale_bits": 40}, "must exceed the scale"),
        ({"coeff_mod_bit_sizes": (60, 40, 50)}, "special"),
        ({"coeff_mod_bit_sizes": (60, 40, 61)}, "outside"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(InvalidParameters, match=match):
        CkksParams(**kwargs)


def test_precision_unattainable():
    with pytest.raises(InvalidParameters, match="first prime"):
        params_for_precision(max_abs_error=1e-6, max_abs_value=2.0**12)
    with pytest.raises(InvalidParameters):
        params_for_precision(max_abs_error=2.0)


@pytest.mark.parametrize(("err", "vmax"), [(1e-3, 2.0**8), (1e-5, 2.0**6), (1e-7, 2.0**2)])
def test_params_for_precision_meet_the_stated_error(err, vmax):
    p = params_for_precision(max_abs_error=err, max_abs_value=vmax)
    assert p.precision(vmax) <= err
    assert p.max_abs_value >= vmax
    c = make_context(p)
    pub, sec = load_public_context(c.public), load_secret_context(c.secret)
    rng = np.random.default_rng(7)
    n, f = p.slots, 20
    x = np.clip(rng.standard_normal((n, f)) * 3, -vmax, vmax)
    w = rng.normal(0, 1, f)
    w *= min(1.0, 0.9 * vmax / np.abs(x @ w).max())  # every score within the stated bound
    acc = None
    for j in range(f):
        term = ts.ckks_vector(pub, np.full(n, w[j])) * x[:, j]
        acc = term if acc is None else acc + term
    got = np.asarray(ts.ckks_vector_from(sec, acc.serialize()).decrypt())
    assert np.abs(got - x @ w).max() <= err
    # large values within the stated bound still decrypt within the error
    big = ts.ckks_vector(pub, np.full(8, vmax * 0.9)) * np.ones(8)
    assert np.abs(np.asarray(ts.ckks_vector_from(sec, big.serialize()).decrypt()) - vmax * 0.9).max() <= err


@pytest.mark.parametrize("junk", [b"", b"junk", b"\x00" * 1000])
def test_malformed_context(junk):
    with pytest.raises(MalformedContext):
        load_public_context(junk)


def test_bfv_context_is_not_ckks():
    bfv = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=4096, plain_modulus=1032193)
    with pytest.raises(MalformedContext, match="not CKKS"):
        load_public_context(bfv.serialize(save_secret_key=False))


def test_galois_and_relin_keys_on_request():
    c = make_context(CkksParams(galois_keys=True, relin_keys=True))
    pub = load_public_context(c.public)
    info = context_info(pub)
    assert info.has_galois_keys and info.has_relin_keys
    v = ts.ckks_vector(pub, [1.0, 2.0, 3.0])
    total = (v * v).sum()  # needs relinearization and rotations
    assert (
        abs(ts.ckks_vector_from(load_secret_context(c.secret), total.serialize()).decrypt()[0] - 14.0) < 1e-3
    )
