"""Fixtures of the hostile-peer suite: a tax node and a coordinator in process, each reached as the
member whose key a test names (``tests.authkit.AsPeer``: the scope key the 国密 TLS server sets)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from common.ids import random_uscc
from nodes.app import create_app
from nodes.settings import NodeSettings
from protocols.signed_request import sign_request
from tests.authkit import TEST_SCRYPT_N, OfficerClient, member_key, officer_client, peer_entries

PURPOSE = "find shared small-enterprise customers for pre-loan credit"


def tax_csv(n: int = 40) -> bytes:
    rng = random.Random(3)
    rows = ["uscc,vat_paid,industry"] + [f"{random_uscc(rng)},{rng.randint(1000, 90000)},retail" for _ in range(n)]
    return ("\n".join(rows) + "\n").encode()


def upload(c: OfficerClient, name: str, data: bytes, **fields: str):  # noqa: ANN201
    return c.post("/datasets/upload", data={"name": name, **fields}, files={"file": ("d.csv", data)})


def psi_spec(**over) -> dict:
    spec = {"kind": "psi", "requester": "bank", "purpose": PURPOSE, "join_key": "uscc",
            "inputs": [{"member": "bank", "dataset": "bank_2024", "columns": ["uscc"]},
                       {"member": "tax", "dataset": "tax_2024", "columns": ["uscc"]}]}
    spec.update(over)
    return spec


def inbox_request(job_id: str = "job-0001", signer: str = "bank", spec: dict | None = None, **over) -> dict:
    """What the coordinator files at tax's node, with the requester's signed request."""
    body = {
        "job_id": job_id, "kind": "psi", "protocol": "secretflow/psi-rr22", "requester": "bank",
        "requester_role": "bank", "purpose": PURPOSE, "inputs": [{"dataset": "tax_2024", "columns": ["uscc"]}],
        "receivers": {"intersection": ["bank"]},
        "expiry": (datetime.now(timezone.utc) + timedelta(days=2)).isoformat(), "max_runs": 1,
    }
    body["request"] = sign_request(member_key(signer).private_key, signer, spec or psi_spec()).model_dump()
    body.update(over)
    return body


@pytest.fixture
def tax(tmp_path) -> Iterator[OfficerClient]:
    """Tax's node: dataset tax_2024, a policy (set by two officers), one pending signed request."""
    s = NodeSettings(name="tax", work_dir=tmp_path / "tax", peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N,
                     max_body_bytes=1024 * 1024, sql_sources={"own": {"url": f"sqlite:///{tmp_path / 'tax' / 'tax.db'}"}})
    with officer_client(create_app(s)) as c:
        assert upload(c, "tax_2024", tax_csv(), key_column="uscc").status_code == 201
        r = c.put("/policy", json={"max_grade": {"psi": 3}, "allowed_roles": ["bank"], "min_group_size": 10,
                                   "negative_list": ["personal_id"]})
        assert r.status_code == 200, r.text
        r = c.post("/approvals", json=inbox_request())
        assert r.status_code == 201, r.text
        yield c


def node_state(c: OfficerClient) -> dict:
    """Everything an attack on the node could change, read through the node's own services."""
    ctx = c.app.state.ctx
    return {
        "policy": ctx.policy.current().model_dump(exclude={"updated_at"}),
        "datasets": [(d.name, d.row_count, [(col.name, col.grade, col.category) for col in d.columns])
                     for d in ctx.datasets.list()],
        "approvals": [(a.id, a.job_id, a.status, a.decided_by) for a in ctx.approvals.list()],
        "proposals": [(p.id, p.status) for p in ctx.officers.proposals()],
        "audit_ok": ctx.audit.verify().ok,
        "audit_ok_entries": [(e.seq, e.action) for e in ctx.audit.entries(0, 1000) if e.outcome == "ok"],
        "tasks_stopped": [e.seq for e in ctx.audit.entries(0, 1000) if e.action.startswith("task.")],
    }


@pytest.fixture
def coord(tmp_path):  # noqa: ANN201
    """The seeded coordinator (tests/coordkit.py): no worker, bank and tax with catalogs."""
    from tests.coordkit import seeded_coordinator

    c = seeded_coordinator(tmp_path / "coord")
    yield c
    c.close()


@pytest.fixture
def coord_client(coord):  # noqa: ANN201
    from fastapi.testclient import TestClient

    from coordinator.app import create_app
    from tests.authkit import AsPeer

    with TestClient(AsPeer(create_app(coord.settings, coord), "bank")) as c:
        yield c
