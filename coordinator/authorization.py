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
