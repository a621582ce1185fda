"""Hostile peers on the chain (real anvil): the development chain's unlocked accounts are no governors,
and a member removed by governance is refused by a node within ``identity_cache_s``."""

from __future__ import annotations

import time

import pytest

from tests.authkit import AsPeer, officer_client

GOVERNORS, THRESHOLD = 3, 2


@pytest.fixture(scope="module")
def chain(tmp_path_factory):  # noqa: ANN201
    """Anvil with the contracts governed as ``dcp up`` governs them, and members tax and bank."""
    from contracts.anvil import AnvilNode
    from contracts.models import MemberAdmission, Role
    from federation.launcher import governed_deployment
    from protocols.crypto.keystore import create_keystore

    keys_dir = tmp_path_factory.mktemp("keys")
    anvil = AnvilNode(accounts=4)
    anvil.start()
    try:
        w3 = anvil.web3()
        funder = w3.eth.accounts[0]

        def fund(addr: str) -> None:
            w3.eth.send_transaction({"from": funder, "to": addr, "value": w3.to_wei(10, "ether")})

        gov = [create_keystore(keys_dir, f"governor-{i}", "pw", scrypt_n=2**10)[1] for i in range(GOVERNORS)]
        admin, governors = governed_deployment(w3, gov, THRESHOLD, fund)
        members = {}
        for name, role in (("tax", Role.DEPARTMENT), ("bank", Role.BANK), ("coordinator", Role.COORDINATOR)):
            k = create_keystore(keys_dir, name, "pw", scrypt_n=2**10)[1]
            admin.admit(governors, MemberAdmission(account=k.public.chain_address, role=role, name=name,
                                                   sm2_public_key=bytes.fromhex(k.public.sm2_public_key)))
            members[name] = k
        yield anvil, w3, admin, governors, members
    finally:
        anvil.stop()


def _raw_tx(w3, sender: str, fn) -> dict:  # noqa: ANN001
    """eth_sendTransaction straight to the node (the unlocked-account attack), gas given so anvil
    does not refuse at estimation; returns the receipt."""
    tx = fn.build_transaction({"from": sender, "gas": 500_000, "nonce": w3.eth.get_transaction_count(sender)})
    h = w3.provider.make_request("eth_sendTransaction", [{k: (hex(v) if isinstance(v, int) else v)
                                                         for k, v in tx.items() if k != "chainId"}])
    return w3.eth.wait_for_transaction_receipt(h["result"])


def test_unlocked_dev_accounts_cannot_remove_a_member(chain):
    anvil, w3, admin, governors, members = chain
    tax = members["tax"].public.chain_address
    unlocked = list(w3.eth.accounts)
    assert not set(unlocked) & set(governors)  # the governors are keystore accounts
    before = (admin.member(tax).active, admin.governors(), admin.threshold(),
              admin.registry.functions.proposalCount().call())
    r1 = _raw_tx(w3, unlocked[0], admin.registry.functions.proposeRemoveMember(tax))
    r2 = _raw_tx(w3, unlocked[1], admin.registry.functions.approve(0))
    assert r1["status"] == 0 and r2["status"] == 0  # NotGovernor: reverted on chain
    after = (admin.member(tax).active, admin.governors(), admin.threshold(),
             admin.registry.functions.proposalCount().call())
    assert after == before and after[0] is True


def test_removed_member_is_refused_within_the_cache_bound(chain, tmp_path):
    """The coordinator's key works; governance removes the coordinator; within identity_cache_s its
    calls are refused (MemberInactive) and the node's inbox stays unchanged."""
    from nodes.app import create_app
    from nodes.services.chain import NodeChain
    from nodes.settings import NodeSettings

    anvil, w3, admin, governors, members = chain
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        tax = members["tax"]
        node_chain = NodeChain.connect(anvil.url, admin.deployment.registry, keys=tax, member="tax")
        s = NodeSettings(name="tax", work_dir=tmp_path / "tax", identity_cache_s=1.0, officer_scrypt_n=2**10,
                         anchor_interval_s=0)
        coord_key = {"coordinator": bytes.fromhex(members["coordinator"].public.sm2_public_key)}
        with officer_client(create_app(s, chain=node_chain), keys=coord_key) as c:
            assert isinstance(c.app, AsPeer)
            ok = c.get("/catalog", headers={"Authorization": ""})
            assert ok.status_code == 200
            admin.remove(governors, members["coordinator"].public.chain_address)
            removed_at = time.monotonic()
            while True:
                r = c.get("/approvals", headers={"Authorization": ""})
                if r.status_code != 200:
                    break
                assert time.monotonic() - removed_at < 1.0 + 0.5, "still admitted after identity_cache_s"
                time.sleep(0.05)
            assert (r.status_code, r.json()["error"]) == (403, "MemberInactive")
            assert time.monotonic() - removed_at <= 1.0 + 0.5
            r = c.post("/approvals", json={}, headers={"Authorization": ""})
            assert (r.status_code, r.json()["error"]) == (403, "MemberInactive")
            assert c.app.state.ctx.approvals.list() == []
            # an unknown key (a certificate for a key never admitted): UnknownMember
            r = c.get("/catalog", headers={"Authorization": "", "x-test-peer": "outsider"})
            assert (r.status_code, r.json()["error"]) == (403, "UnknownMember")
    finally:
        w3.provider.make_request("evm_revert", [snap])
