"""Signed approvals of a job manifest (SM2 + BLS).

The approval message (shared with the chain)
============================================

Every approver of a job signs the same 80-byte message, with SM2 (identity, GB/T 32918,
SM3 inside, the member's own user ID in Z_A) and with BLS12-381 (aggregated on chain)::

    approval_message(job_id, manifest_hash) =
        b"DCP-APPROVAL-V1:"            # 16 ASCII bytes, domain separation / version
        || job_key(job_id)             # 32 bytes
        || manifest_hash               # 32 bytes: the SM3 digest of the canonical manifest

    job_key(job_id) = sha256(utf8(job_id))       # Solidity: sha256(bytes(jobId))

The contract does not need SM3: it receives ``manifest_hash`` as a ``bytes32`` and
recomputes the 80-byte message with ``abi.encodePacked("DCP-APPROVAL-V1:", jobKey,
manifestHash)``; the BLS signature is over those 80 bytes with the IETF POP ciphersuite
(DST ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``), see :mod:`protocols.crypto.bls`
and the shared vectors in ``tests/crypto/vectors/bls_vectors.json``.  Binding the job key
and the manifest hash into the message is what makes an approval for one job (or one
manifest) useless for any other.

Verification (:func:`verify_approval`) checks, in order: the job (:class:`ReplayedApproval`),
the manifest (:class:`ManifestMismatch`), the signer against the expected registered
identity (:class:`WrongSigner`), signature lengths (:class:`BadSignatureLength`) and both
signatures (:class:`InvalidSignature`).
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

APPROVAL_DOMAIN = b"DCP-APPROVAL-V1:"
MANIFEST_HASH_LENGTH = 32


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


def _hash_bytes(h: bytes | str) -> bytes:
    if isinstance(h, str):
        try:
            h = bytes.fromhex(h.removeprefix("0x"))
        except ValueError as exc:
            raise ManifestMismatch(f"manifest hash is not hex: {exc}") from exc
    if len(h) != MANIFEST_HASH_LENGTH:
        raise ManifestMismatch(f"manifest hash must be {MANIFEST_HASH_LENGTH} bytes, got {len(h)}")
    return bytes(h)


def approval_message(job_id: str, manifest_hash: bytes | str) -> bytes:
    """The 80-byte message every approver signs (see the module docstring)."""
    return APPROVAL_DOMAIN + job_key(job_id) + _hash_bytes(manifest_hash)


class Approval(BaseModel):
    """One member's signed approval of one job's manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    manifest_hash: str  # SM3, 64 hex chars
    member: str
    sm2_user_id: str
    chain_address: str
    sm2_public_key: str
    bls_public_key: str
    key_version: int
    sm2_sig: str  # 128 hex chars r||s
    bls_sig: str  # 192 hex chars
    signed_at: datetime

    @field_validator("manifest_hash", "sm2_sig", "bls_sig", "sm2_public_key", "bls_public_key")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.lower().removeprefix("0x")
        bytes.fromhex(v)  # ValueError → pydantic ValidationError
        return v

    def message(self) -> bytes:
        """The signed message."""
        return approval_message(self.job_id, self.manifest_hash)


def sign_approval(
    keys: MemberKeys, job_id: str, manifest_hash: bytes | str, *, now: datetime | None = None
) -> Approval:
    """Approve ``manifest_hash`` for ``job_id`` with the member's SM2 and BLS keys."""
    msg = approval_message(job_id, manifest_hash)
    pub = keys.public
    return Approval(
        job_id=job_id,
        manifest_hash=_hash_bytes(manifest_hash).hex(),
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
    signer: PublicIdentity,
) -> None:
    """Accept ``approval`` only for this job, this manifest and this registered signer; raise otherwise."""
    if approval.job_id != job_id:
        raise ReplayedApproval(f"approval was made for job {approval.job_id!r}, not {job_id!r}")
    expected = _hash_bytes(manifest_hash)
    if approval.manifest_hash != expected.hex():
        raise ManifestMismatch("approval is for a different manifest (manifest changed after approval?)")
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
    msg = approval_message(job_id, expected)
    pub_sm2 = bytes.fromhex(signer.sm2_public_key)
    if not sm2.verify(pub_sm2, msg, sm2_sig, signer.sm2_user_id.encode("utf-8")):
        raise InvalidSignature(
            f"SM2 signature of {signer.member!r} does not verify for this job and manifest"
        )
    if not bls.verify(bytes.fromhex(signer.bls_public_key), msg, bls_sig):
        raise InvalidSignature(
            f"BLS signature of {signer.member!r} does not verify for this job and manifest"
        )


class AggregateApproval(BaseModel):
    """What the coordinator submits on chain: one BLS signature for all approvers of one manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    job_key: str  # hex, sha256(job_id)
    manifest_hash: str
    members: list[str]
    bls_public_keys: list[str]
    bls_signature: str


def aggregate_approvals(
    approvals: Sequence[Approval],
    *,
    job_id: str,
    manifest_hash: bytes | str,
    signers: Mapping[str, PublicIdentity],
) -> AggregateApproval:
    """Verify every approval against its registered signer, then aggregate the BLS signatures."""
    if not approvals:
        raise CryptoError("no approvals to aggregate")
    seen: set[str] = set()
    for a in approvals:
        if a.member in seen:
            raise WrongSigner(f"two approvals from {a.member!r}")
        seen.add(a.member)
        if a.member not in signers:
            raise WrongSigner(f"{a.member!r} is not an expected approver")
        verify_approval(a, job_id=job_id, manifest_hash=manifest_hash, signer=signers[a.member])
    agg = bls.aggregate([bytes.fromhex(a.bls_sig) for a in approvals])
    return AggregateApproval(
        job_id=job_id,
        job_key=job_key(job_id).hex(),
        manifest_hash=_hash_bytes(manifest_hash).hex(),
        members=[a.member for a in approvals],
        bls_public_keys=[a.bls_public_key for a in approvals],
        bls_signature=agg.hex(),
    )


def verify_aggregate(aggregate: AggregateApproval, *, job_id: str, manifest_hash: bytes | str) -> bool:
    """True iff the aggregate BLS signature covers every listed key for this job and manifest."""
    if aggregate.job_id != job_id:
        raise ReplayedApproval(f"aggregate was made for job {aggregate.job_id!r}, not {job_id!r}")
    msg = approval_message(job_id, manifest_hash)
    return bls.fast_aggregate_verify(
        [bytes.fromhex(k) for k in aggregate.bls_public_keys], msg, bytes.fromhex(aggregate.bls_signature)
    )  # full per-key checks: an aggregate may come from outside
