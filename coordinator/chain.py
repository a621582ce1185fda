"""The coordinator's and the nodes' view of the chain: a connected :class:`ChainClient` that signs
with a member keystore's chain key, and checks of signed approvals against the Registry."""

from __future__ import annotations

from typing import Any

from coordinator.errors import ChainUnavailable


def connect(rpc_url: str, registry: str, chain_private_key: bytes | None = None) -> Any:
    """A :class:`contracts.client.ChainClient` on ``rpc_url`` that signs as the keystore's account."""
    from eth_account import Account
    from web3 import HTTPProvider, Web3

    from contracts.client import ChainClient
    from contracts.errors import ChainError

    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
    signers = {}
    if chain_private_key is not None:
        acct = Account.from_key(chain_private_key)
        signers[acct.address] = acct
    try:
        return ChainClient.connect(w3, registry, signers=signers)
    except ChainError as exc:
        raise ChainUnavailable(f"cannot attach to the Registry {registry} on {rpc_url}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - connection refused etc.
        raise ChainUnavailable(f"chain at {rpc_url} did not answer: {type(exc).__name__}") from None


def member_by_name(client: Any, name: str) -> Any:
    """The active Registry member called ``name`` (None if absent)."""
    for m in client.members(active_only=True):
        if m.name == name:
            return m
    return None


def approval_matches_registry(approval: Any, member: Any) -> bool:
    """Whether a signed approval's keys are the ones the Registry holds for ``member``."""
    from protocols.crypto.bls import to_eip2537_g1

    try:
        bls_ok = to_eip2537_g1(bytes.fromhex(approval.bls_public_key)) == bytes(member.bls_public_key)
    except Exception:  # noqa: BLE001 - malformed key in the approval
        return False
    return bytes.fromhex(approval.sm2_public_key) == bytes(member.sm2_public_key) and bls_ok and (
        approval.chain_address.lower() == member.account.lower()
    )
