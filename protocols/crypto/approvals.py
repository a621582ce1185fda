"""Signed approvals of a job manifest (SM2 + BLS).

The approval message (shared with the chain)
============================================

Every approver of a job signs the same 80-byte message, with SM2 (identity, GB/T 32918,
SM3 inside) and with BLS12-381 (aggregated on chain)::

    approval_message(job_id, manifest_hash) =
        b"DCP-APPROVAL-V1:"            # 16 ASCII bytes, domain separation / version
        || job_key(job_id)             # 32 bytes
        || manifest_hash               # 32 bytes: the SM3 digest of the canonical manifest

    job_key(job_id) = sha256(utf8(job_id))       # Solidity: sha256(bytes(jobId))

The contract does not need SM3: it receives ``manifest_hash`` as a ``bytes32`` and
recomputes the 80-byte message with ``abi.encodePacked("DCP-APPROVAL-V1:", jobKey,
manifestHash)``; the BLS signature is over those 80 bytes with the IETF POP ciphersuite
(DST ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``), see :mod:`protocols.crypto.bls`.
Binding the job key and the manifest hash into the message is what makes an approval
for one job (or one manifest) useless for any other.
"""

from __future__ import annotations

import hashlib

APPROVAL_DOMAIN = b"DCP-APPROVAL-V1:"
MANIFEST_HASH_LENGTH = 32


def job_key(job_id: str) -> bytes:
    """The 32-byte on-chain key of a job: ``sha256(utf8(job_id))``."""
    return hashlib.sha256(job_id.encode("utf-8")).digest()


def approval_message(job_id: str, manifest_hash: bytes) -> bytes:
    """The 80-byte message every approver signs (see the module docstring)."""
    if len(manifest_hash) != MANIFEST_HASH_LENGTH:
        from protocols.crypto.errors import ManifestMismatch

        raise ManifestMismatch(f"manifest hash must be {MANIFEST_HASH_LENGTH} bytes, got {len(manifest_hash)}")
    return APPROVAL_DOMAIN + job_key(job_id) + bytes(manifest_hash)
