"""BLS12-381 on chain (EIP-2537): hash-to-curve equals py_ecc's, aggregates verify, and an
aggregate missing one department, a wrong message, or a key without proof of possession fail.

Everything runs on both backends: py-evm (eth-tester) implements the Prague precompiles in pure
Python through py_ecc (~1 s per on-chain verification; the client skips eth-tester's bisecting
gas estimate), anvil natively.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from py_ecc.bls.hash import expand_message_xmd

from contracts import errors as E
from contracts.backends import ChainBackend, open_backend
from contracts.client import deploy_contract
from contracts.models import MemberAdmission, Role
from protocols.crypto import bls

from .conftest import BlsKey, Federation, build_federation, h

DEPTS = ("tax", "power", "court")


def _aggregate(fed: Federation, names: tuple[str, ...], message: bytes) -> bytes:
    return bls.aggregate([fed.bls[n].sign(message) for n in names])


MESSAGES = [b"", b"abc", bytes(range(32)), b"q128_" + b"q" * 128]


@pytest.mark.parametrize(
    ("backend_name", "messages"),
    [("eth_tester", MESSAGES[:2]), ("anvil", MESSAGES)],  # py-evm's pure-Python pairing: 2 suffice
)
def test_hash_to_curve_matches_py_ecc(backend_name: str, messages: list[bytes], no_leaked_processes) -> None:
    from contracts.build import load_artifact

    with open_backend(backend_name) as backend:
        w3 = backend.w3
        addr = deploy_contract(w3, "Bls12381Harness", backend.accounts[0])
        harness = w3.eth.contract(address=addr, abi=load_artifact("Bls12381Harness").abi)
        dst = bls.SIGN_DST
        for message in messages:
            assert harness.functions.expandMessageXmd(message, dst).call() == expand_message_xmd(
                message, dst, 256, hashlib.sha256
            )
            ok, u0, u1 = harness.functions.hashToFieldFp2(message, dst).call()
            assert ok and (u0, u1) == bls.hash_to_field_eip2537(message, dst)
            ok, point = harness.functions.hashToG2(message, dst).call()
            assert ok and point == bls.message_point_eip2537(message, dst)
        # a real signature verifies through the same code, a changed message does not
        sk = bls.keygen(hashlib.sha256(b"harness").digest())
        message = messages[-1]
        pk, sig = bls.to_eip2537_g1(bls.sk_to_pk(sk)), bls.to_eip2537_g2(bls.sign(sk, message))
        assert harness.functions.verify(pk, message, sig, dst).call()
        assert not harness.functions.verify(pk, message + b"!", sig, dst).call()
        assert harness.functions.isValidG1(pk).call()
        assert not harness.functions.isValidG1(bytes(128)).call()
        assert harness.functions.isCompressionOf(bls.sk_to_pk(sk), pk).call()
        assert not harness.functions.isCompressionOf(bls.sk_to_pk(sk + 1), pk).call()


def test_authorize_with_one_aggregate(bls_fed: Federation) -> None:
    fed, c = bls_fed, bls_fed.client
    t = fed.terms("tax.vat", "power.usage", "court.cases")
    tx = c.authorize_with_bls(fed.coordinator, t, _aggregate(fed, DEPTS, c.approval_digest(t)))
    a = c.authorization(t.job_id)
    assert a is not None and a.via_bls and set(a.approvers) == set(fed.departments.values())
    assert tx.gas_used > 0
    ev = c.events("Authorizations", "AggregateApproval")
    assert len(ev) == 1 and ev[0].args["jobId"] == t.job_id and len(ev[0].args["signature"]) == 256
    # and the receipts then flow as usual
    c.record_usage(fed.departments["court"], fed.receipt(t, "court.cases"))
    assert c.runs(t.job_id, fed.datasets["court.cases"]) == 1


def test_aggregate_missing_one_department_fails_on_chain(bls_fed: Federation) -> None:
    fed, c = bls_fed, bls_fed.client
    t = fed.terms("tax.vat", "power.usage", "court.cases")
    partial = _aggregate(fed, ("tax", "power"), c.approval_digest(t))
    with pytest.raises(E.InvalidAggregateSignature):
        c.authorize_with_bls(fed.coordinator, t, partial)
    assert c.authorization(t.job_id) is None


def test_aggregate_for_other_terms_fails(bls_fed: Federation) -> None:
    fed, c = bls_fed, bls_fed.client
    t = fed.terms("tax.vat", "power.usage", manifest="manifest-A")
    sig = _aggregate(fed, ("tax", "power"), c.approval_digest(t))
    other = t.model_copy(update={"manifest_hash": h("manifest-B")})
    with pytest.raises(E.InvalidAggregateSignature):
        c.authorize_with_bls(fed.coordinator, other, sig)
    with pytest.raises(E.NotCoordinator):
        c.authorize_with_bls(fed.bank, t, sig)
    c.authorize_with_bls(fed.coordinator, t, sig)
    assert c.authorization(t.job_id).terms.manifest_hash == h("manifest-A")


def test_owner_without_bls_key(backend: ChainBackend) -> None:
    fed = build_federation(backend, bls_departments=("tax",))
    t = fed.terms("tax.vat", "power.usage")
    with pytest.raises(E.MissingBlsKey) as exc:
        fed.client.authorize_with_bls(fed.coordinator, t, _aggregate(fed, ("tax",), fed.client.approval_digest(t)))
    assert exc.value.error_args["owner"] == fed.departments["power"]


def test_bls_key_needs_proof_of_possession(bls_fed: Federation) -> None:
    fed, c = bls_fed, bls_fed.client
    acct = fed.backend.accounts[12]
    mine, other = BlsKey.make("mine"), BlsKey.make("other")
    bad = MemberAdmission(account=acct, role=Role.DEPARTMENT, name="rogue", sm2_public_key=os.urandom(64),
                          bls_public_key=mine.pk, bls_pop=other.pop)
    # the client refuses it off chain …
    with pytest.raises(E.InvalidInput):
        c.propose_add_member(fed.governors[0], bad)
    # … and the contract refuses it on chain, even when the client check is bypassed
    payload = (acct, int(Role.DEPARTMENT), "rogue", os.urandom(64), bls.to_eip2537_g1(mine.pk), mine.pk,
               bls.to_eip2537_g2(other.pop), "")
    with pytest.raises(E.InvalidProofOfPossession):
        c._send(c.registry.functions.proposeAddMember(payload), fed.governors[0])
    # a compressed key that is not the registered point is refused too
    payload = (acct, int(Role.DEPARTMENT), "rogue", os.urandom(64), bls.to_eip2537_g1(mine.pk), other.pk,
               bls.to_eip2537_g2(mine.pop), "")
    with pytest.raises(E.InvalidBlsKey):
        c._send(c.registry.functions.proposeAddMember(payload), fed.governors[0])
    # a point that is not on the curve
    payload = (acct, int(Role.DEPARTMENT), "rogue", os.urandom(64), b"\x01" * 128, mine.pk,
               bls.to_eip2537_g2(mine.pop), "")
    with pytest.raises(E.InvalidBlsKey):
        c._send(c.registry.functions.proposeAddMember(payload), fed.governors[0])
    assert c.member(acct) is None and c.registry.functions.proposalCount().call() == _base_proposals(fed)


def _base_proposals(fed: Federation) -> int:
    return 2 + len(fed.departments)  # coordinator, bank, departments
