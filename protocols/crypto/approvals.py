"""Signed approvals of a job's authorization terms (SM2 + BLS).

The approval message (one message, shared with the chain)
=========================================================

Every approver of a job signs the same 32 bytes: the **approval digest** of the job's chain terms,
exactly what ``Authorizations.approvalDigest(terms)`` computes on chain and what
``authorizeWithBls`` verifies the aggregate BLS signature over::

    approval_message(digest) = digest            # 32 bytes

    digest = keccak256(abi.encode(
        keccak256("dcp.Authorization.v1"),       # domain tag / version (APPROVAL_TYPEHASH)
        chainid,                                 # uint256: the chain
        authorizations,                          # address: the Authorizations contract
        terms.jobId,                             # bytes32: job_key(job_id) = sha256(utf8(job_id))
        terms.manifestHash,                      # bytes32: SM3 of the canonical JSON of the job manifest
        keccak256(abi.encodePacked(terms.datasetIds)),   # every dataset id, in order
        terms.requester,                         # address
        terms.expiry,                            # uint64, unix seconds
        terms.maxRuns))                          # uint32

``contracts.client.approval_digest(terms, chain_id, authorizations)`` (or
``ChainClient.approval_digest(terms)``) computes it off chain.  This module does not import the
contracts package: callers pass the 32-byte digest in, together with the job id and manifest hash it
was derived from (kept in the approval so a refusal can say *what* differs).

The approval is signed twice: with SM2 (identity, GB/T 32918, SM3 inside, the member's own user ID
in Z_A) and with BLS12-381 under the IETF POP ciphersuite (DST
``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``, see :mod:`protocols.crypto.bls`), so the
coordinator can aggregate the departments' BLS signatures into one that the contract verifies with
the EIP-2537 precompiles against the sum of the owners' registered keys.  Because the digest binds
the chain, the contract, the job, the whole manifest, the datasets, the requester, the expiry and the
run limit, an approval is useless for any other job, manifest, chain, deployment or terms.

Verification (:func:`verify_approval`) checks, in order: the job (:class:`ReplayedApproval`), the
manifest (:class:`ManifestMismatch`), the rest of the terms (:class:`TermsMismatch`, a replay of an
approval made for other terms), the signer against the expected registered identity
(:class:`WrongSigner`), signature lengths (:class:`BadSignatureLength`) and both signatures over the
expected digest (:class:`InvalidSignature`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from protocols.crypto import bls, sm2
from protocols.crypto.errors import (
    BadSignatureLength,
    CryptoError,
    InvalidSignature,
    ManifestMismatch,
    ReplayedApproval,
    WrongSigner,
)
from protocols.crypto.keystore import MemberKeys, PublicIdentity
from protocols.crypto.sm3 import sm3_digest

#: The text whose keccak256 is the domain tag (``APPROVAL_TYPEHASH``) inside every approval digest.
APPROVAL_TYPEHASH_TEXT = "dcp.Authorization.v1"
MANIFEST_HASH_LENGTH = 32
DIGEST_LENGTH = 32


class TermsMismatch(ReplayedApproval):
    """The approval was signed over other terms than these (another chain, contract, dataset list,
    requester, expiry or run limit) although it names the same job and manifest: a replay."""


def job_key(job_id: str) -> bytes:
    """The 32-byte on-chain key of a job: ``sha256(utf8(job_id))``."""
    return hashlib.sha256(job_id.encode("utf-8")).digest()


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces, UTF-8) — what a manifest hash is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_hash(manifest: bytes | Mapping[str, Any]) -> bytes:
    """SM3 of the manifest: of the bytes as given, or of :func:`canonical_json` of a mapping."""
    data = bytes(manifest) if isinstance(manifest, bytes | bytearray) else canonical_json(dict(manifest))
    return sm3_digest(data)


def _bytes32(value: bytes | str, what: str, error: type[CryptoError]) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value.removeprefix("0x"))
        except ValueError as exc:
            raise error(f"{what} is not hex: {exc}") from exc
    if len(value) != 32:
        raise error(f"{what} must be 32 bytes, got {len(value)}")
    return bytes(value)


def _hash_bytes(h: bytes | str) -> bytes:
    return _bytes32(h, "manifest hash", ManifestMismatch)


def _digest_bytes(d: bytes | str) -> bytes:
    return _bytes32(d, "approval digest", TermsMismatch)


def approval_message(digest: bytes | str) -> bytes:
    """The message every approver signs: the 32-byte approval digest of the job's terms (see the
    module docstring); raises :class:`TermsMismatch` for anything that is not 32 bytes."""
    return _digest_bytes(digest)


class Approval(BaseModel):
    """One member's signed approval of one job's terms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    manifest_hash: str  # SM3 of the whole job manifest (Terms.manifest_hash), 64 hex chars
    digest: str  # the approval digest of the terms (the signed message), 64 hex chars
    member: str
    sm2_user_id: str
    chain_address: str
    sm2_public_key: str
    bls_public_key: str
    key_version: int
    sm2_sig: str  # 128 hex chars r||s
    bls_sig: str  # 192 hex chars
    signed_at: datetime

    @field_validator("manifest_hash", "digest", "sm2_sig", "bls_sig", "sm2_public_key", "bls_public_key")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.lower().removeprefix("0x")
        bytes.fromhex(v)  # ValueError → pydantic ValidationError
        return v

    def message(self) -> bytes:
        """The signed message."""
        return approval_message(self.digest)


def sign_approval(
    keys: MemberKeys,
    job_id: str,
    manifest_hash: bytes | str,
    digest: bytes | str,
    *,
    now: datetime | None = None,
) -> Approval:
    """Approve the terms whose approval digest is ``digest`` (job ``job_id``, job manifest
    ``manifest_hash``) with the member's SM2 and BLS keys."""
    msg = approval_message(digest)
    pub = keys.public
    return Approval(
        job_id=job_id,
        manifest_hash=_hash_bytes(manifest_hash).hex(),
        digest=msg.hex(),
        member=pub.member,
        sm2_user_id=pub.sm2_user_id,
        chain_address=pub.chain_address,
        sm2_public_key=pub.sm2_public_key,
        bls_public_key=pub.bls_public_key,
        key_version=pub.key_version,
        sm2_sig=sm2.sign(keys.sm2.private_key, msg, keys.sm2_user_id, public_key=keys.sm2.public_key).hex(),
        bls_sig=bls.sign(keys.bls_secret_key, msg).hex(),
        signed_at=now or datetime.now(timezone.utc).replace(microsecond=0),
    )


def verify_approval(
    approval: Approval,
    *,
    job_id: str,
    manifest_hash: bytes | str,
    digest: bytes | str,
    signer: PublicIdentity,
) -> None:
    """Accept ``approval`` only for this job, this manifest, these terms (``digest``) and this
    registered signer; raise the named error otherwise (see the module docstring)."""
    if approval.job_id != job_id:
        raise ReplayedApproval(f"approval was made for job {approval.job_id!r}, not {job_id!r}")
    if approval.manifest_hash != _hash_bytes(manifest_hash).hex():
        raise ManifestMismatch("approval is for a different manifest (manifest changed after approval?)")
    expected = approval_message(digest)
    if approval.digest != expected.hex():
        raise TermsMismatch(
            f"approval of job {job_id!r} was signed over other terms (chain, contract, datasets, requester, "
            "expiry or runs differ)"
        )
    if (
        approval.member != signer.member
        or approval.sm2_public_key != signer.sm2_public_key
        or approval.bls_public_key != signer.bls_public_key
        or approval.sm2_user_id != signer.sm2_user_id
    ):
        raise WrongSigner(
            f"approval claims {approval.member!r} but is not signed with {signer.member!r}'s registered keys"
        )
    sm2_sig, bls_sig = bytes.fromhex(approval.sm2_sig), bytes.fromhex(approval.bls_sig)
    if len(sm2_sig) != sm2.SIGNATURE_LENGTH or len(bls_sig) != bls.SIGNATURE_LENGTH:
        raise BadSignatureLength(
            f"approval signatures must be {sm2.SIGNATURE_LENGTH} (SM2) and {bls.SIGNATURE_LENGTH} (BLS) bytes"
        )
    pub_sm2 = bytes.fromhex(signer.sm2_public_key)
    if not sm2.verify(pub_sm2, expected, sm2_sig, signer.sm2_user_id.encode("utf-8")):
        raise InvalidSignature(f"SM2 signature of {signer.member!r} does not verify for these terms")
    if not bls.verify(bytes.fromhex(signer.bls_public_key), expected, bls_sig):
        raise InvalidSignature(f"BLS signature of {signer.member!r} does not verify for these terms")


class AggregateApproval(BaseModel):
    """What the coordinator submits on chain: one BLS signature of all approvers over one digest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    job_key: str  # hex, sha256(job_id)
    manifest_hash: str
    digest: str
    members: list[str]
    bls_public_keys: list[str]
    bls_signature: str


def aggregate_approvals(
    approvals: Sequence[Approval],
    *,
    job_id: str,
    manifest_hash: bytes | str,
    digest: bytes | str,
    signers: Mapping[str, PublicIdentity],
) -> AggregateApproval:
    """Verify every approval against its registered signer and these terms, then aggregate the BLS
    signatures (the order of ``approvals`` is kept)."""
    if not approvals:
        raise CryptoError("no approvals to aggregate")
    seen: set[str] = set()
    for a in approvals:
        if a.member in seen:
            raise WrongSigner(f"two approvals from {a.member!r}")
        seen.add(a.member)
        if a.member not in signers:
            raise WrongSigner(f"{a.member!r} is not an expected approver")
        verify_approval(a, job_id=job_id, manifest_hash=manifest_hash, digest=digest, signer=signers[a.member])
    agg = bls.aggregate([bytes.fromhex(a.bls_sig) for a in approvals])
    return AggregateApproval(
        job_id=job_id,
        job_key=job_key(job_id).hex(),
        manifest_hash=_hash_bytes(manifest_hash).hex(),
        digest=approval_message(digest).hex(),
        members=[a.member for a in approvals],
        bls_public_keys=[a.bls_public_key for a in approvals],
        bls_signature=agg.hex(),
    )


def verify_aggregate(aggregate: AggregateApproval, *, job_id: str, digest: bytes | str) -> bool:
    """True iff the aggregate BLS signature covers every listed key for these terms (``digest``)."""
    if aggregate.job_id != job_id:
        raise ReplayedApproval(f"aggregate was made for job {aggregate.job_id!r}, not {job_id!r}")
    msg = approval_message(digest)
    if aggregate.digest != msg.hex():
        raise TermsMismatch(f"aggregate of job {job_id!r} was made over other terms")
    return bls.fast_aggregate_verify(
        [bytes.fromhex(k) for k in aggregate.bls_public_keys], msg, bytes.fromhex(aggregate.bls_signature)
    )  # full per-key checks: an aggregate may come from outside
