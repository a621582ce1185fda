"""How the dataset owners' signed approvals become the job's authorization on chain.

Both modes start from the same signed approvals (:mod:`protocols.crypto.approvals`): each owner's
node checks the coordinator's terms and signs their **approval digest** (the 32 bytes
``Authorizations.approvalDigest(terms)`` computes) with SM2 and BLS. The coordinator verifies every
approval against the keys the Registry holds for its member (:func:`check_approval`), then:

* ``per_owner`` — each owner's node has also approved the terms on chain from its own account
  (``Authorizations.approve``); once every dataset of the terms has its owner's approval on chain
  (:func:`owners_approved_on_chain`) the coordinator calls ``authorize``: one transaction per owner
  plus one.
* ``bls_aggregate`` — the nodes send nothing to the chain. The coordinator aggregates the owners'
  BLS signatures (:func:`aggregate_signature`, one signature per distinct owner, refused with
  :class:`AggregateIncomplete` if an owner's is missing) and submits one ``authorizeWithBls``; the
  contract sums the owners' registered BLS keys and checks the pairing with the EIP-2537 precompiles,
  so an aggregate that lacks any owner's signature is refused on chain (``InvalidAggregateSignature``).

The mode is fixed per job at submission (:func:`choose_mode`, ``CoordinatorSettings.authorization_mode``)
and served to the nodes with the job's manifest and terms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from coordinator.errors import CoordinatorError

MODES = ("per_owner", "bls_aggregate")


class AggregateIncomplete(CoordinatorError):
    """An owner of a dataset in the terms has no verified approval to aggregate."""

    status_code = 409


def choose_mode(setting: str, owner_bls_keys: Iterable[str]) -> str:
    """The mode of a job: the configured one, or for ``auto`` ``bls_aggregate`` when every owner has
    a BLS key registered (``owner_bls_keys``: the Registry's keys, hex, empty when none)."""
    if setting in MODES:
        return setting
    keys = list(owner_bls_keys)
    return "bls_aggregate" if keys and all(keys) else "per_owner"


def check_approval(chain: Any, member: str, approval_json: str | None, *, job_id: str, terms: Any) -> str | None:
    """Why ``member``'s signed approval is not acceptable for ``terms`` (None when it is).

    The approval must be signed, with the SM2 and BLS keys the Registry holds for ``member``, over the
    approval digest of exactly these terms on this deployment."""
    from coordinator.chain import approval_matches_registry, member_by_name
    from protocols.crypto.approvals import Approval, verify_approval
    from protocols.crypto.errors import CryptoError
    from protocols.crypto.keystore import PublicIdentity

    try:
        approval = Approval.model_validate_json(approval_json or "{}")
    except Exception as exc:  # noqa: BLE001 - pydantic error
        return f"unreadable approval ({type(exc).__name__})"
    reg = member_by_name(chain, member)
    if reg is None or not approval_matches_registry(approval, reg):
        return "not signed with the keys the Registry holds for this member"
    ident = PublicIdentity(
        member=approval.member, key_version=approval.key_version, created_at=approval.signed_at,
        sm2_user_id=approval.sm2_user_id, sm2_public_key=approval.sm2_public_key,
        chain_address=approval.chain_address, bls_public_key=approval.bls_public_key, bls_pop="00" * 96,
    )
    if ident.member != member:
        return f"the approval is signed by {ident.member!r}"
    try:
        verify_approval(approval, job_id=job_id, manifest_hash=bytes(terms.manifest_hash),
                        digest=chain.approval_digest(terms), signer=ident)
    except CryptoError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def owners_of(chain: Any, terms: Any) -> list[str]:
    """The distinct on-chain owners of the terms' datasets, in first-appearance order (as the contract)."""
    owners: list[str] = []
    for d in terms.dataset_ids:
        owner = chain.registry.functions.ownerOf(d).call()
        if owner not in owners:
            owners.append(owner)
    return owners


def owners_approved_on_chain(chain: Any, terms: Any) -> bool:
    """``per_owner``: whether every dataset of the terms has its owner's approval of them on chain."""
    digest = chain.approval_digest(terms)
    for d in terms.dataset_ids:
        owner = chain.registry.functions.ownerOf(d).call()
        if chain.authorizations.functions.approvalOf(digest, d).call() != owner:
            return False
    return True


def aggregate_signature(chain: Any, terms: Any, approvals: Mapping[str, str]) -> bytes:
    """``bls_aggregate``: the aggregate of one BLS signature per owner of the terms' datasets.

    ``approvals``: member name -> verified approval JSON. Raises :class:`AggregateIncomplete` when an
    owner has none (the chain would refuse the aggregate)."""
    from protocols.crypto import bls
    from protocols.crypto.approvals import Approval

    by_address = {}
    for member, text in approvals.items():
        a = Approval.model_validate_json(text)
        by_address[a.chain_address.lower()] = (member, a)
    sigs, missing = [], []
    for owner in owners_of(chain, terms):
        found = by_address.get(owner.lower())
        if found is None:
            m = chain.member(owner)
            missing.append(m.name if m is not None else owner)
            continue
        sigs.append(bytes.fromhex(found[1].bls_sig))
    if missing:
        raise AggregateIncomplete(f"no verified approval to aggregate from {', '.join(missing)}")
    return bls.aggregate(sigs)


def _approval_problem(approval: Any, *, member: str, job_id: str, terms: Any, digest: bytes) -> str | None:
    """Every check of :func:`protocols.crypto.approvals.verify_approval` except the BLS pairing (which
    :func:`verify_approvals` does for all approvals of a job at once), with the same named errors."""
    from protocols.crypto import bls, sm2
    from protocols.crypto.approvals import TermsMismatch, approval_message
    from protocols.crypto.errors import (
        BadSignatureLength,
        CryptoError,
        InvalidSignature,
        ManifestMismatch,
        ReplayedApproval,
    )

    def named(exc: CryptoError) -> str:
        return f"{type(exc).__name__}: {exc}"

    if approval.member != member:
        return f"the approval is signed by {approval.member!r}"
    if approval.job_id != job_id:
        return named(ReplayedApproval(f"approval was made for job {approval.job_id!r}, not {job_id!r}"))
    if approval.manifest_hash != bytes(terms.manifest_hash).hex():
        return named(ManifestMismatch("approval is for a different manifest (manifest changed after approval?)"))
    expected = approval_message(digest)
    if approval.digest != expected.hex():
        return named(TermsMismatch(
            f"approval of job {job_id!r} was signed over other terms (chain, contract, datasets, requester, "
            "expiry or runs differ)"))
    sm2_sig, bls_sig = bytes.fromhex(approval.sm2_sig), bytes.fromhex(approval.bls_sig)
    if len(sm2_sig) != sm2.SIGNATURE_LENGTH or len(bls_sig) != bls.SIGNATURE_LENGTH:
        return named(BadSignatureLength(
            f"approval signatures must be {sm2.SIGNATURE_LENGTH} (SM2) and {bls.SIGNATURE_LENGTH} (BLS) bytes"))
    if not sm2.verify(bytes.fromhex(approval.sm2_public_key), expected, sm2_sig, approval.sm2_user_id.encode("utf-8")):
        return named(InvalidSignature(f"SM2 signature of {member!r} does not verify for these terms"))
    return None


def _bls_batch_ok(items: list[tuple[bytes, bytes]], message: bytes, key_cache: dict[bytes, Any]) -> bool:
    """Whether every ``(public key, signature)`` in ``items`` is a valid BLS signature of ``message``.

    Small-exponent batch verification: with fresh random 64-bit weights r_i it checks
    e(Σ r_i·pk_i, H(m)) = e(G1, Σ r_i·σ_i) — two pairings for any number of approvals instead of two
    each. A set with any invalid signature passes with probability at most 2^-64. Each key is
    validated (subgroup, not infinity) once per coordinator (``key_cache``); each signature is
    decompressed and subgroup-checked every time."""
    import secrets

    from py_ecc.bls import G2ProofOfPossession as Pop
    from py_ecc.bls.g2_primitives import pubkey_to_G1, signature_to_G2, subgroup_check
    from py_ecc.bls.hash_to_curve import hash_to_G2
    from py_ecc.optimized_bls12_381 import FQ12, G1, Z1, Z2, add, final_exponentiate, multiply, neg, pairing

    try:
        sum_pk, sum_sig = Z1, Z2
        for pk, sig in items:
            point = key_cache.get(pk)
            if point is None:
                if not Pop.KeyValidate(pk):
                    return False
                point = key_cache[pk] = pubkey_to_G1(pk)
            sig_point = signature_to_G2(sig)
            if not subgroup_check(sig_point):
                return False
            r = secrets.randbits(64) | 1
            sum_pk = add(sum_pk, multiply(point, r))
            sum_sig = add(sum_sig, multiply(sig_point, r))
        h = hash_to_G2(message, Pop.DST, Pop.xmd_hash_function)
        check = pairing(sum_sig, G1, final_exponentiate=False) * pairing(h, neg(sum_pk), final_exponentiate=False)
        return final_exponentiate(check) == FQ12.one()
    except Exception:  # noqa: BLE001 - a malformed point (py_ecc raises several kinds): not valid
        return False


def verify_approvals(
    chain: Any, approvals: Mapping[str, str | None], *, job_id: str, terms: Any,
    key_cache: dict[bytes, Any] | None = None,
) -> dict[str, str | None]:
    """:func:`check_approval` for several members' approvals of one job at once: member -> why its
    approval is unacceptable (None when it is).

    Each approval gets every check of :func:`check_approval` (Registry keys, job, manifest, terms
    digest, signer, signature lengths, SM2 signature); the BLS signature of each that passes is verified
    with the native backend (blspy, ≈ 1 ms each). Without it (pure-Python py_ecc, ≈ 0.8 s a pairing pair
    on an idle core, ≈ 2.5 s under load — which held every job of a 20-job burst in PENDING_APPROVAL, the
    scheduler stepping jobs one after another) they are verified together (:func:`_bls_batch_ok`) and,
    if the batch fails, each on its own so the bad one is named. The Registry is read once, the digest
    computed once."""
    from coordinator.chain import approval_matches_registry
    from protocols.crypto import bls
    from protocols.crypto.approvals import Approval, approval_message

    out: dict[str, str | None] = {}
    registry = {m.name: m for m in chain.members(active_only=True)}
    digest = chain.approval_digest(terms)
    message = approval_message(digest)
    candidates: dict[str, Any] = {}
    for member, text in approvals.items():
        try:
            approval = Approval.model_validate_json(text or "{}")
        except Exception as exc:  # noqa: BLE001 - pydantic error
            out[member] = f"unreadable approval ({type(exc).__name__})"
            continue
        reg = registry.get(member)
        if reg is None or not approval_matches_registry(approval, reg):
            out[member] = "not signed with the keys the Registry holds for this member"
            continue
        problem = _approval_problem(approval, member=member, job_id=job_id, terms=terms, digest=digest)
        if problem is not None:
            out[member] = problem
            continue
        candidates[member] = approval
    if not bls.native_available():  # pure Python: one two-pairing batch instead of two pairings each
        items = [(bytes.fromhex(a.bls_public_key), bytes.fromhex(a.bls_sig)) for a in candidates.values()]
        if candidates and _bls_batch_ok(items, message, key_cache if key_cache is not None else {}):
            out.update({m: None for m in candidates})
            return out
    # native (blspy, ≈ 1 ms a signature): each on its own, every culprit named; after a failed batch the same
    for member, a in candidates.items():
        ok = bls.verify(bytes.fromhex(a.bls_public_key), message, bytes.fromhex(a.bls_sig))
        out[member] = None if ok else f"InvalidSignature: BLS signature of {member!r} does not verify for these terms"
    return out
