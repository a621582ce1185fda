"""HE material bound to the authorization: who made a CKKS context or a mask key, for which job.

The requester's node signs the fingerprint (SM3) of the public CKKS context it made, and every
contributor's node signs the X25519 mask key it made, each with its SM2 identity key (the one in the
chain's Registry). The signed message names the job and the manifest hash of its authorization on
chain, so a signature is good for that authorization only::

    b"dcp/he-material/v1\\n" + canonical_json({"what": "context" | "mask_key", "job_id": …,
                                               "manifest_hash": 64 hex, "member": …, "value": hex})

A department verifies the context's signature against the requester's Registry key and every mask
key's against its member's key before it computes anything: an outsider's
context or mask key standing in for a member's is refused (:class:`MaterialNotSigned`).
"""

from __future__ import annotations

from typing import Literal

from protocols.crypto import sm2
from protocols.crypto.approvals import canonical_json
from protocols.he.errors import HeError

DOMAIN = b"dcp/he-material/v1\n"
What = Literal["context", "mask_key"]


class MaterialNotSigned(HeError):
    """A CKKS context or a mask key is not signed by the member it is said to come from, for this job."""


def material_message(what: What, job_id: str, manifest_hash: str, member: str, value: str) -> bytes:
    """The bytes a member signs for one piece of HE material (``value``: hex)."""
    return DOMAIN + canonical_json({"what": what, "job_id": job_id, "manifest_hash": manifest_hash.lower(),
                                    "member": member, "value": value.lower()})


def sign_material(private_key: bytes, what: What, job_id: str, manifest_hash: str, member: str, value: str) -> str:
    """``member``'s SM2 signature (128 hex) over one piece of material."""
    return sm2.sign(private_key, material_message(what, job_id, manifest_hash, member, value)).hex()


def verify_material(public_key: bytes | None, what: What, job_id: str, manifest_hash: str, member: str, value: str,
                    signature: str | None) -> None:
    """Refuse (:class:`MaterialNotSigned`) unless ``signature`` is ``member``'s over the material."""
    if public_key is None:
        raise MaterialNotSigned(f"{member} is not an active member with an SM2 key in the Registry")
    try:
        sig = bytes.fromhex(signature or "")
        ok = len(sig) == sm2.SIGNATURE_LENGTH and sm2.verify(
            public_key, material_message(what, job_id, manifest_hash, member, value), sig)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise MaterialNotSigned(f"the {what.replace('_', ' ')} said to be {member}'s is not signed by {member} "
                                f"for this job's authorization")

