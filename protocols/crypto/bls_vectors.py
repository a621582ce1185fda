"""Deterministic BLS12-381 test vectors shared with the chain's contract tests.

``python -m protocols.crypto.bls_vectors [OUT]`` writes ``tests/crypto/vectors/bls_vectors.json``.
All byte strings are ``0x``-prefixed hex.  Keys come from fixed IKM (``bytes([i]) * 32``),
so anyone can regenerate the file and get the same bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from protocols.crypto import bls
from protocols.crypto.approvals import APPROVAL_TYPEHASH_TEXT, approval_message, job_key

VECTOR_MEMBERS = 5
VECTOR_JOB_ID = "job-2024-credit-0001"
#: Stand-in manifest hash (32 bytes) so the vectors do not depend on the manifest format.
VECTOR_MANIFEST_HASH = bytes(range(32))
#: Stand-in approval digest (32 bytes; the message is the digest of the job's chain terms, see
#: protocols.crypto.approvals) so the vectors do not depend on the terms' ABI encoding.
VECTOR_DIGEST = bytes(range(32, 64))


def _h(b: bytes) -> str:
    return "0x" + b.hex()


def build_vectors() -> dict[str, Any]:
    """Compute the vector set (takes a few seconds: py_ecc is pure Python)."""
    message = approval_message(VECTOR_DIGEST)
    members = []
    sks = []
    for i in range(1, VECTOR_MEMBERS + 1):
        ikm = bytes([i]) * 32
        sk = bls.keygen(ikm)
        sks.append(sk)
        pk = bls.sk_to_pk(sk)
        pop = bls.pop_prove(sk)
        sig = bls.sign(sk, message)
        members.append(
            {
                "ikm": _h(ikm),
                "sk": _h(bls.sk_to_bytes(sk)),
                "pubkey": _h(pk),
                "pubkey_eip2537": _h(bls.to_eip2537_g1(pk)),
                "pop": _h(pop),
                "pop_eip2537": _h(bls.to_eip2537_g2(pop)),
                "signature": _h(sig),
                "signature_eip2537": _h(bls.to_eip2537_g2(sig)),
            }
        )
    sigs = [bytes.fromhex(m["signature"][2:]) for m in members]
    pks = [bytes.fromhex(m["pubkey"][2:]) for m in members]
    agg_sig = bls.aggregate(sigs)
    agg_pk = bls.aggregate_pubkeys(pks)
    u0, u1 = bls.hash_to_field_eip2537(message)
    pop_u0, pop_u1 = bls.hash_to_field_eip2537(pks[0], bls.POP_DST)
    tampered = approval_message(VECTOR_DIGEST[:-1] + bytes([VECTOR_DIGEST[-1] ^ 1]))
    return {
        "description": "BLS12-381 G2ProofOfPossession (IETF) vectors with EIP-2537 encodings; see protocols/crypto/bls.py",
        "ciphersuite": bls.SIGN_DST.decode(),
        "pop_dst": bls.POP_DST.decode(),
        "precompiles": {
            "G1ADD": "0x0b",
            "G1MSM": "0x0c",
            "G2ADD": "0x0d",
            "G2MSM": "0x0e",
            "PAIRING_CHECK": "0x0f",
            "MAP_FP_TO_G1": "0x10",
            "MAP_FP2_TO_G2": "0x11",
        },
        "neg_g1_generator_eip2537": _h(bls.neg_g1_generator_eip2537()),
        "approval": {
            "typehash_text": APPROVAL_TYPEHASH_TEXT,
            "job_id": VECTOR_JOB_ID,
            "job_key": _h(job_key(VECTOR_JOB_ID)),
            "manifest_hash": _h(VECTOR_MANIFEST_HASH),
            "digest": _h(VECTOR_DIGEST),
            "message": _h(message),
            "hash_to_field_u0_eip2537": _h(u0),
            "hash_to_field_u1_eip2537": _h(u1),
            "message_point_eip2537": _h(bls.message_point_eip2537(message)),
        },
        "members": members,
        "aggregate": {
            "signature": _h(agg_sig),
            "signature_eip2537": _h(bls.to_eip2537_g2(agg_sig)),
            "pubkey": _h(agg_pk),
            "pubkey_eip2537": _h(bls.to_eip2537_g1(agg_pk)),
            "pairing_check_input": _h(bls.pairing_check_input(agg_pk, message, agg_sig)),
            "expected": True,
        },
        "pop_member0": {
            "hash_to_field_u0_eip2537": _h(pop_u0),
            "hash_to_field_u1_eip2537": _h(pop_u1),
            "message_point_eip2537": _h(bls.message_point_eip2537(pks[0], bls.POP_DST)),
            "pairing_check_input": _h(
                bls.to_eip2537_g1(pks[0])
                + bls.message_point_eip2537(pks[0], bls.POP_DST)
                + bls.neg_g1_generator_eip2537()
                + bls.to_eip2537_g2(bytes.fromhex(members[0]["pop"][2:]))
            ),
            "expected": True,
        },
        "negative": {
            "tampered_message": _h(tampered),
            "pairing_check_input_tampered": _h(bls.pairing_check_input(agg_pk, tampered, agg_sig)),
            "aggregate_missing_last_signer_pubkey": _h(bls.aggregate_pubkeys(pks[:-1])),
            "pairing_check_input_missing_signer": _h(
                bls.pairing_check_input(bls.aggregate_pubkeys(pks[:-1]), message, agg_sig)
            ),
            "expected": False,
        },
    }


def default_path() -> Path:
    """Where the committed vectors live."""
    return Path(__file__).resolve().parents[2] / "tests" / "crypto" / "vectors" / "bls_vectors.json"


def main(argv: list[str] | None = None) -> None:
    """Write the vectors file (path from argv or :func:`default_path`)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else default_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(build_vectors(), indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
