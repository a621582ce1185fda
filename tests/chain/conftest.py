"""Fixtures of the chain tests: a backend per test (eth-tester in process, or a real anvil on a
free port), a deployed federation with governors, a coordinator, a bank and departments."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from contracts.backends import ChainBackend, open_backend
from contracts.client import ChainClient
from contracts.models import MemberAdmission, Role, Terms, UsageReceipt

BACKENDS = ["eth_tester", "anvil"]


def h(text: str) -> bytes:
    """A 32-byte id/hash for tests."""
    return hashlib.sha256(text.encode()).digest()


@dataclass
class BlsKey:
    sk: int
    pk: bytes
    pop: bytes

    @classmethod
    def make(cls, seed: str) -> BlsKey:
        from protocols.crypto import bls

        sk = bls.keygen(hashlib.sha256(seed.encode()).digest())
        return cls(sk=sk, pk=bls.sk_to_pk(sk), pop=bls.pop_prove(sk))

    def sign(self, message: bytes) -> bytes:
        from protocols.crypto import bls

        return bls.sign(self.sk, message)


@dataclass
class Federation:
    backend: ChainBackend
    client: ChainClient
    governors: list[str]
    coordinator: str
    bank: str
    departments: dict[str, str]
    outsider: str
    datasets: dict[str, bytes] = field(default_factory=dict)
    bls: dict[str, BlsKey] = field(default_factory=dict)

    def terms(self, *dataset_names: str, job: str = "job-1", manifest: str = "manifest-1", **kw: int) -> Terms:
        return Terms(
            job_id=h(job),
            manifest_hash=h(manifest),
            dataset_ids=tuple(self.datasets[n] for n in dataset_names),
            requester=self.bank,
            expiry=kw.get("expiry", self.backend.now() + 3600),
            max_runs=kw.get("max_runs", 2),
        )

    def owner_of(self, dataset_name: str) -> str:
        return self.departments[dataset_name.split(".")[0]]

    def approve_all(self, terms: Terms) -> None:
        owners = {self.client.dataset(d).owner for d in terms.dataset_ids}
        for o in owners:
            self.client.approve(o, terms)

    def authorized(self, *dataset_names: str, **kw: int) -> Terms:
        t = self.terms(*dataset_names, **kw)
        self.approve_all(t)
        self.client.authorize(self.coordinator, t)
        return t

    def receipt(self, terms: Terms, dataset_name: str, started_ago: int = 5, **kw: int) -> UsageReceipt:
        now = self.backend.now()
        return UsageReceipt(
            job_id=terms.job_id,
            dataset_id=self.datasets[dataset_name],
            row_count=kw.get("row_count", 1000),
            result_hash=h("result"),
            started_at=kw.get("started_at", now - started_ago),
            finished_at=kw.get("finished_at", now),
        )


def build_federation(backend: ChainBackend, bls_departments: tuple[str, ...] = ()) -> Federation:
    """3 governors (threshold 2), a coordinator, a bank, departments tax/power/court, one dataset
    each (tax.vat, power.usage, court.cases); departments in ``bls_departments`` get BLS keys."""
    acc = backend.accounts
    governors = acc[0:3]
    client = ChainClient.deploy(backend.w3, acc[0], governors, 2)
    fed = Federation(
        backend=backend,
        client=client,
        governors=governors,
        coordinator=acc[3],
        bank=acc[4],
        departments={"tax": acc[5], "power": acc[6], "court": acc[7]},
        outsider=acc[9],
    )
    client.admit(governors, MemberAdmission(account=fed.coordinator, role=Role.COORDINATOR, name="coordinator",
                                            sm2_public_key=os.urandom(64)))
    client.admit(governors, MemberAdmission(account=fed.bank, role=Role.BANK, name="bank",
                                            sm2_public_key=os.urandom(64)))
    for name, account in fed.departments.items():
        extra = {}
        if name in bls_departments:
            key = BlsKey.make(name)
            fed.bls[name] = key
            extra = {"bls_public_key": key.pk, "bls_pop": key.pop}
        client.admit(governors, MemberAdmission(account=account, role=Role.DEPARTMENT, name=name,
                                                sm2_public_key=os.urandom(64), **extra))
    for ds in ("tax.vat", "power.usage", "court.cases"):
        fed.datasets[ds] = h(ds)
        client.register_dataset(fed.owner_of(ds), h(ds), h(f"schema:{ds}"), 2)
    return fed


@pytest.fixture(params=BACKENDS)
def backend(request, no_leaked_processes) -> Iterator[ChainBackend]:
    """A fresh backend per test (for tests that deploy their own contracts)."""
    with open_backend(request.param) as b:
        yield b


@pytest.fixture
def anvil_backend(no_leaked_processes) -> Iterator[ChainBackend]:
    with open_backend("anvil") as b:
        yield b


def _shared(request, bls_departments: tuple[str, ...]) -> Iterator[Federation]:
    with open_backend(request.param) as b:
        yield build_federation(b, bls_departments=bls_departments)


@pytest.fixture(scope="module", params=BACKENDS)
def _fed_base(request) -> Iterator[Federation]:
    yield from _shared(request, ())


@pytest.fixture(scope="module", params=BACKENDS)
def _bls_fed_base(request) -> Iterator[Federation]:
    yield from _shared(request, ("tax", "power", "court"))


def _isolated(base: Federation) -> Iterator[Federation]:
    snap = base.backend.snapshot()
    try:
        yield base
    finally:
        base.backend.revert(snap)


@pytest.fixture
def fed(_fed_base: Federation) -> Iterator[Federation]:
    """A deployed federation (built once per module and backend; each test starts from a snapshot)."""
    yield from _isolated(_fed_base)


@pytest.fixture
def bls_fed(_bls_fed_base: Federation) -> Iterator[Federation]:
    """Like ``fed`` with BLS keys (and proofs of possession) for every department."""
    yield from _isolated(_bls_fed_base)
