"""Authorization mode choice, the mode column added to older databases, the manifest served to nodes,
and the shared manifest helpers (protocols/manifest.py) on malformed input."""

from __future__ import annotations

import sqlite3

import pytest
from sqlmodel import create_engine

from coordinator.authorization import choose_mode
from coordinator.db import init_db
from coordinator.manifest import build_manifest, node_request
from coordinator.models import Member
from coordinator.service import Coordinator
from coordinator.settings import CoordinatorSettings
from coordinator.spec import parse_spec
from protocols.manifest import dataset_chain_id, inputs_of, manifest_sm3, receivers_of, slice_matches

from .test_spec import base

BLS = "ab" * 128


def test_choose_mode():
    assert choose_mode("per_owner", [BLS, BLS]) == "per_owner"
    assert choose_mode("bls_aggregate", ["", ""]) == "bls_aggregate"
    assert choose_mode("auto", [BLS, BLS, BLS]) == "bls_aggregate"
    assert choose_mode("auto", [BLS, ""]) == "per_owner"  # one owner without a BLS key
    assert choose_mode("auto", []) == "per_owner"
    with pytest.raises(ValueError):
        CoordinatorSettings(authorization_mode="trust_me")


def test_mode_column_is_added_to_an_older_database(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the job table as the first release created it
        conn.execute("CREATE TABLE job (id INTEGER PRIMARY KEY, job_id VARCHAR, kind VARCHAR, requester VARCHAR, "
                     "purpose VARCHAR, state VARCHAR, reason VARCHAR, spec_json VARCHAR, manifest_json VARCHAR, "
                     "manifest_hash VARCHAR, terms_json VARCHAR, expires_at DATETIME, max_runs INTEGER, "
                     "stage VARCHAR, cluster_json VARCHAR, results_json VARCHAR, auth_tx VARCHAR, "
                     "created_at DATETIME, updated_at DATETIME)")
        conn.execute("INSERT INTO job (job_id, kind) VALUES ('job-old', 'psi')")
    engine = create_engine(f"sqlite:///{db}")
    init_db(engine)
    init_db(engine)  # idempotent
    engine.dispose()
    with sqlite3.connect(db) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(job)")]
        assert "authorization_mode" in cols
        assert conn.execute("SELECT job_id, authorization_mode FROM job").fetchall() == [("job-old", None)]


@pytest.mark.parametrize(("setting", "keys", "mode"), [
    ("auto", {"bank": BLS, "tax": BLS}, "bls_aggregate"),
    ("auto", {"bank": BLS, "tax": ""}, "per_owner"),
    ("per_owner", {"bank": BLS, "tax": BLS}, "per_owner"),
])
def test_mode_fixed_at_submission_and_served_to_nodes(coord, setting, keys, mode):
    from sqlmodel import Session

    coord.settings.authorization_mode = setting
    with Session(coord.engine) as s:
        for name, key in keys.items():
            m = s.get(Member, name)
            m.bls_public_key, m.account = key, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            s.add(m)
        s.commit()
    job = coord.submit(parse_spec(base())).job_id
    served = coord.manifest_of(job)
    assert served["authorization_mode"] == mode == coord.get_job(job).authorization_mode
    assert served["terms"]["manifest_hash"] == "0x" + served["manifest_hash"]
    coord.settings.authorization_mode = "per_owner" if mode == "bls_aggregate" else "bls_aggregate"
    assert coord.manifest_of(job)["authorization_mode"] == mode  # a later setting does not change a job


def test_shared_manifest_helpers():
    spec = parse_spec(base())
    m = build_manifest(spec, "job-x", "bank")
    assert [i["dataset_id"] for i in m["inputs"]] == [dataset_chain_id(i.member, i.dataset).hex() for i in spec.inputs]
    assert receivers_of(m) == {o.name: [o.receiver] for o in spec.outputs}
    node_slice = node_request(m, "tax")
    assert node_slice["inputs"] == inputs_of(m, "tax")
    assert slice_matches(m, "tax", node_slice)
    assert not slice_matches(m, "bank", node_slice)
    assert not slice_matches(m, "tax", {**node_slice, "purpose": "marketing"})
    assert not slice_matches(m, "tax", {**node_slice, "max_runs": 2})
    # malformed input is a mismatch, never an exception
    assert not slice_matches(m, "tax", {**node_slice, "expiry": "not a date"})
    assert not slice_matches({"inputs": "nonsense"}, "tax", node_slice)
    assert not slice_matches(m, "tax", {})
    assert manifest_sm3(m) == manifest_sm3(dict(reversed(list(m.items()))))


def test_coordinator_without_chain_refuses_to_verify(tmp_path):
    c = Coordinator(CoordinatorSettings(work_dir=tmp_path, worker=False))
    try:
        from coordinator.errors import ChainUnavailable

        with pytest.raises(ChainUnavailable):
            c.chain()
    finally:
        c.close()
