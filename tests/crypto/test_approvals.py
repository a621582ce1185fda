"""Signed approvals over the chain's approval digest of a job's terms: sign, verify, refuse replays
(other job, other manifest, other terms, other chain or deployment), wrong signers, bad lengths, and
BLS aggregation of several members' approvals."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.client import approval_digest
from contracts.models import Terms
from protocols.crypto import approvals, bls, keystore
from protocols.crypto.errors import (
    BadSignatureLength,
    CryptoError,
    InvalidSignature,
    ManifestMismatch,
    ReplayedApproval,
    WrongSigner,
)

N = 2**10
MANIFEST = {"job_kind": "vertical_train", "purpose": "SME credit", "columns": {"tax": ["vat_paid"]}}
CHAIN_ID = 31337
AUTHS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
REQUESTER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> keystore.MemberKeys:
    d: Path = tmp_path_factory.mktemp("ks")
    return keystore.create_keystore(d, "tax-bureau", "correct horse", scrypt_n=N)[1]


@pytest.fixture(scope="module")
def other_keys() -> keystore.MemberKeys:
    return keystore.generate_member_keys("court")


def terms(job_id: str = "job-1", manifest: dict | None = None, **over) -> Terms:
    base = dict(
        job_id=approvals.job_key(job_id),
        manifest_hash=approvals.manifest_hash(manifest or MANIFEST),
        dataset_ids=(b"\x11" * 32, b"\x22" * 32),
        requester=REQUESTER,
        expiry=2_000_000_000,
        max_runs=1,
    )
    base.update(over)
    return Terms(**base)


def digest_of(t: Terms, chain_id: int = CHAIN_ID, auths: str = AUTHS) -> bytes:
    return approval_digest(t, chain_id, auths)


def test_manifest_hash_is_sm3_of_canonical_json() -> None:
    h = approvals.manifest_hash(MANIFEST)
    reordered = dict(reversed(list(MANIFEST.items())))
    assert approvals.manifest_hash(reordered) == h
    from protocols.crypto.sm3 import sm3_digest

    assert h == sm3_digest(approvals.canonical_json(MANIFEST))


def test_the_message_is_the_chain_digest_of_the_terms() -> None:
    t = terms()
    d = digest_of(t)
    assert approvals.approval_message(d) == d and len(d) == 32
    assert approvals.approval_message(d.hex()) == d
    # every term is bound: change any one and the digest changes
    variants = [
        terms("job-2"), terms(manifest={**MANIFEST, "purpose": "marketing"}),
        terms(dataset_ids=(b"\x11" * 32,)), terms(dataset_ids=(b"\x22" * 32, b"\x11" * 32)),
        terms(requester=AUTHS), terms(expiry=2_000_000_001), terms(max_runs=2),
    ]
    digests = {d, *(digest_of(v) for v in variants), digest_of(t, chain_id=1), digest_of(t, auths=REQUESTER)}
    assert len(digests) == len(variants) + 3
    with pytest.raises(approvals.TermsMismatch):
        approvals.approval_message(d[:31])
    with pytest.raises(approvals.TermsMismatch):
        approvals.approval_message("zz" * 32)


def test_approval_sign_and_verify(keys) -> None:
    t = terms()
    d = digest_of(t)
    h = approvals.manifest_hash(MANIFEST)
    a = approvals.sign_approval(keys, "job-1", h, d)
    assert a.digest == d.hex() and a.message() == d
    approvals.verify_approval(a, job_id="job-1", manifest_hash=h, digest=d, signer=keys.public)
    # both signatures are over exactly the digest the contract recomputes
    assert bls.verify(bytes.fromhex(keys.public.bls_public_key), d, bytes.fromhex(a.bls_sig))
    # survives JSON transport
    again = approvals.Approval.model_validate_json(a.model_dump_json())
    approvals.verify_approval(again, job_id="job-1", manifest_hash=h.hex(), digest=d.hex(), signer=keys.public)


def test_approval_rejections(keys, other_keys) -> None:
    h = approvals.manifest_hash(MANIFEST)
    t = terms()
    d = digest_of(t)
    a = approvals.sign_approval(keys, "job-1", h, d)
    tampered_manifest = approvals.manifest_hash({**MANIFEST, "purpose": "marketing"})
    tampered_digest = digest_of(terms(manifest={**MANIFEST, "purpose": "marketing"}))
    with pytest.raises(ManifestMismatch):
        approvals.verify_approval(a, job_id="job-1", manifest_hash=tampered_manifest, digest=tampered_digest,
                                  signer=keys.public)
    # replay for another job, as is and with the job id rewritten
    d2 = digest_of(terms("job-2"))
    with pytest.raises(ReplayedApproval):
        approvals.verify_approval(a, job_id="job-2", manifest_hash=h, digest=d2, signer=keys.public)
    with pytest.raises(InvalidSignature):
        approvals.verify_approval(a.model_copy(update={"job_id": "job-2", "digest": d2.hex()}), job_id="job-2",
                                  manifest_hash=h, digest=d2, signer=keys.public)
    # manifest hash and digest rewritten in the approval to match a tampered manifest
    forged = a.model_copy(update={"manifest_hash": tampered_manifest.hex(), "digest": tampered_digest.hex()})
    with pytest.raises(InvalidSignature):
        approvals.verify_approval(forged, job_id="job-1", manifest_hash=tampered_manifest, digest=tampered_digest,
                                  signer=keys.public)
    # same job and manifest, other terms: more runs, a dataset dropped, another chain or deployment
    for other in (digest_of(terms(max_runs=5)), digest_of(terms(dataset_ids=(b"\x11" * 32,))),
                  digest_of(t, chain_id=1), digest_of(t, auths=REQUESTER)):
        with pytest.raises(approvals.TermsMismatch):
            approvals.verify_approval(a, job_id="job-1", manifest_hash=h, digest=other, signer=keys.public)
        with pytest.raises(InvalidSignature):  # and a claim rewritten to those terms does not verify
            approvals.verify_approval(a.model_copy(update={"digest": other.hex()}), job_id="job-1",
                                      manifest_hash=h, digest=other, signer=keys.public)
    # wrong signer: court's approval presented as tax-bureau's, and tax-bureau's checked against court
    court = approvals.sign_approval(other_keys, "job-1", h, d)
    with pytest.raises(WrongSigner):
        approvals.verify_approval(court, job_id="job-1", manifest_hash=h, digest=d, signer=keys.public)
    impostor = court.model_copy(update={
        "member": "tax-bureau", "sm2_public_key": keys.public.sm2_public_key,
        "bls_public_key": keys.public.bls_public_key, "sm2_user_id": "tax-bureau",
    })
    with pytest.raises(InvalidSignature):
        approvals.verify_approval(impostor, job_id="job-1", manifest_hash=h, digest=d, signer=keys.public)
    with pytest.raises(WrongSigner):
        approvals.verify_approval(a, job_id="job-1", manifest_hash=h, digest=d, signer=other_keys.public)
    # a valid SM2 signature with a BLS signature of other terms is still refused
    mixed = a.model_copy(update={"bls_sig": approvals.sign_approval(keys, "job-1", h, d2).bls_sig})
    with pytest.raises(InvalidSignature, match="BLS"):
        approvals.verify_approval(mixed, job_id="job-1", manifest_hash=h, digest=d, signer=keys.public)
    # wrong signature lengths
    with pytest.raises(BadSignatureLength):
        approvals.verify_approval(a.model_copy(update={"sm2_sig": a.sm2_sig[:-2]}), job_id="job-1",
                                  manifest_hash=h, digest=d, signer=keys.public)
    with pytest.raises(BadSignatureLength):
        approvals.verify_approval(a.model_copy(update={"bls_sig": a.bls_sig + "00"}), job_id="job-1",
                                  manifest_hash=h, digest=d, signer=keys.public)


def test_aggregate_approvals(keys, other_keys) -> None:
    h = approvals.manifest_hash(MANIFEST)
    d = digest_of(terms("job-3"))
    a1 = approvals.sign_approval(keys, "job-3", h, d)
    a2 = approvals.sign_approval(other_keys, "job-3", h, d)
    signers = {"tax-bureau": keys.public, "court": other_keys.public}
    agg = approvals.aggregate_approvals([a1, a2], job_id="job-3", manifest_hash=h, digest=d, signers=signers)
    assert agg.members == ["tax-bureau", "court"] and agg.digest == d.hex()
    assert approvals.verify_aggregate(agg, job_id="job-3", digest=d)
    # what the contract checks: one pairing against the sum of the registered keys
    agg_pk = bls.aggregate_pubkeys([bytes.fromhex(k) for k in agg.bls_public_keys])
    assert bls.verify(agg_pk, d, bytes.fromhex(agg.bls_signature))
    missing = agg.model_copy(update={"bls_public_keys": agg.bls_public_keys[:1]})
    assert not approvals.verify_aggregate(missing, job_id="job-3", digest=d)
    one = approvals.aggregate_approvals([a1], job_id="job-3", manifest_hash=h, digest=d, signers=signers)
    assert not approvals.verify_aggregate(one.model_copy(update={"bls_public_keys": agg.bls_public_keys}),
                                          job_id="job-3", digest=d)  # a signature missing for a listed key
    with pytest.raises(approvals.TermsMismatch):
        approvals.verify_aggregate(agg, job_id="job-3", digest=digest_of(terms("job-3", max_runs=9)))
    with pytest.raises(ReplayedApproval):
        approvals.verify_aggregate(agg, job_id="job-4", digest=d)
    with pytest.raises(WrongSigner):
        approvals.aggregate_approvals([a1, a1], job_id="job-3", manifest_hash=h, digest=d, signers=signers)
    with pytest.raises(WrongSigner):
        approvals.aggregate_approvals([a1, a2], job_id="job-3", manifest_hash=h, digest=d,
                                      signers={"tax-bureau": keys.public})
    with pytest.raises(CryptoError):
        approvals.aggregate_approvals([], job_id="job-3", manifest_hash=h, digest=d, signers=signers)
