"""The coordinator verifies the approvals of a job together (coordinator.authorization.verify_approvals):
same verdict as checking each on its own (check_approval), over a real anvil Registry (the node tests'
chain kit), for good approvals and for every way one can be bad — and a bad BLS signature hidden
among good ones is still named. Both ways the BLS signatures are checked: natively one by one (blspy,
the default) and, without blspy, in one pure-Python random-weight batch."""

from __future__ import annotations

import pytest
from conftest import TAX_FEATURES, vertical_spec

from coordinator.authorization import check_approval, verify_approvals
from protocols.crypto import bls
from protocols.crypto.approvals import sign_approval

pytestmark = pytest.mark.slow


def _signed(chain, member: str, job: str, terms, digest: bytes | None = None, job_id: str | None = None):
    keys = chain.members[member][1]
    return sign_approval(keys, job_id or job, bytes(terms.manifest_hash), digest or chain.admin.approval_digest(terms))


def test_batch_verdicts_equal_single_verdicts(chain, monkeypatch):
    for m in ("social", "power", "court"):
        chain.member(m)
    for backend in ("native", "py_ecc"):
        with monkeypatch.context() as patch:
            if backend == "py_ecc":
                patch.setattr(bls, "native_available", lambda: False)
            _verdicts(chain, f"job-batch-{backend}", backend)


def _verdicts(chain, job: str, backend: str) -> None:
    _, terms = chain.publish(vertical_spec(TAX_FEATURES[:2]), job)
    digest = chain.admin.approval_digest(terms)
    good = {m: _signed(chain, m, job, terms).model_dump_json() for m in ("bank", "tax", "social", "power")}
    cache: dict = {}
    assert verify_approvals(chain.admin, good, job_id=job, terms=terms, key_cache=cache) == dict.fromkeys(good)
    assert len(cache) == (4 if backend == "py_ecc" else 0)  # the batch validates each registered key once
    assert verify_approvals(chain.admin, good, job_id=job, terms=terms, key_cache=cache) == dict.fromkeys(good)

    court = _signed(chain, "court", job, terms)
    tax_keys = chain.members["tax"][1]
    forged_bls = court.model_copy(update={"bls_sig": bls.sign(tax_keys.bls_secret_key, digest).hex()})
    forged_sm2 = court.model_copy(update={"sm2_sig": _signed(chain, "tax", job, terms).sm2_sig})
    other_terms = _signed(chain, "court", job, terms, digest=bytes(32))
    replay = _signed(chain, "court", job, terms, job_id="job-other")
    cases = {
        "forged BLS": forged_bls.model_dump_json(),
        "forged SM2": forged_sm2.model_dump_json(),
        "other terms": other_terms.model_dump_json(),
        "replay": replay.model_dump_json(),
        "someone else's": good["tax"],
        "unreadable": "{not json",
        "missing": None,
    }
    for what, text in cases.items():
        batch = verify_approvals(chain.admin, {**good, "court": text}, job_id=job, terms=terms, key_cache=cache)
        single = check_approval(chain.admin, "court", text, job_id=job, terms=terms)
        assert single is not None, what
        assert batch == {**dict.fromkeys(good), "court": single}, what
    # a forged BLS signature is named whichever member carries it
    bad_tax = _signed(chain, "tax", job, terms).model_copy(
        update={"bls_sig": bls.sign(chain.members["bank"][1].bls_secret_key, digest).hex()})
    got = verify_approvals(chain.admin, {**good, "tax": bad_tax.model_dump_json()}, job_id=job, terms=terms)
    assert [m for m, p in got.items() if p] == ["tax"] and "BLS signature of 'tax'" in got["tax"]
