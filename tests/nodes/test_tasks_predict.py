"""A node's own checks of a vertical_predict task before it runs anything: the task must name the
training job the node approved, that job must have been this node's own and have succeeded with a
model part still here, and the predict columns must equal the training columns (named errors, 422,
audited). The whole train-then-predict path runs in tests/coordinator/test_kinds_federation.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CHAIN_POLICY, TAX_FEATURES, chain_node, vertical_spec
from sqlmodel import Session

from common.net import free_ports
from coordinator.manifest import node_request
from nodes.models import NodeTask

pytestmark = pytest.mark.slow

TRAIN = "job-train-here"


def _approve_in(c, manifest: dict, member: str) -> None:
    item = c.post("/approvals", json=node_request(manifest, member))
    assert item.status_code == 201, item.text
    r = c.post(f"/approvals/{item.json()['id']}/approve")
    assert r.status_code == 200, r.text


def _body(manifest: dict, cluster: dict, **over: object) -> dict:
    inp = next(i for i in manifest["inputs"] if i["member"] == "tax")
    body = {
        "job_id": manifest["job_id"], "party": "tax", "cluster": cluster, "join_key": "uscc",
        "label_party": "bank", "label_column": "default", "psi_protocol": "RR22",
        "model": manifest["engine"]["params"], "stages": ["psi", "predict"], "model_from": manifest["model_from"],
        "inputs": [{"dataset": inp["dataset"], "columns": inp["columns"]}], "features": inp["features"],
        "receivers": {"predictions": ["bank"]}, "timeout_s": 60,
    }
    body.update(over)
    return body


def _record_training(tax, tmp_path: Path, columns: list[str], features: list[str], status: str = "succeeded") -> None:
    """This node's record of a training task it ran (what TaskService writes when a training succeeds)."""
    model_dir = tmp_path / "model-part"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model.json").write_text("{}")
    with Session(tax.app.state.ctx.engine) as session:
        session.add(NodeTask(job_id=TRAIN, status=status, endpoint_json="{}", label_party="bank",
                             model_dir=str(model_dir) if status == "succeeded" else None,
                             datasets_json=json.dumps([{"dataset": "tax_2024", "columns": columns,
                                                        "features": features}])))
        session.commit()


def test_predict_refuses_a_foreign_or_mismatched_model(chain, vertical_data, tmp_path, no_leaked_processes):
    job = "job-predict-refused"
    tax_cols = TAX_FEATURES[:2]
    spec = vertical_spec(tax_cols, kind="vertical_predict", model_from=TRAIN,
                         model={"algorithm": "ss_lr", "params": {}})
    manifest, terms = chain.publish(spec, job)
    assert manifest["model_from"] == TRAIN
    csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path.read_bytes()
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": csv}) as tax:
        policy = {**CHAIN_POLICY, "max_grade": {"vertical_train": 3, "vertical_predict": 3}}
        assert tax.put("/policy", json=policy).status_code == 200
        cluster = _authorized_cluster(chain, tax, job, manifest, terms)

        def refused(body: dict) -> tuple[int, str, str]:
            r = tax.post(f"/tasks/{job}/start", json=body)
            return r.status_code, r.json().get("error"), r.json().get("detail", "")

        # the training job never ran here
        assert refused(_body(manifest, cluster))[:2] == (422, "ModelNotAvailable")
        # a training job other than the one this node approved
        code, err, detail = refused(_body(manifest, cluster, model_from="job-other"))
        assert (code, err) == (422, "TaskMismatch") and "job-other" in detail
        # stages that are not a prediction's
        code, err, _ = refused(_body(manifest, cluster, stages=["psi", "train", "predict"]))
        assert (code, err) == (422, "TaskMismatch")
        # trained here, but on other columns than the predict job asks for
        _record_training(tax, tmp_path, ["uscc", TAX_FEATURES[0], TAX_FEATURES[2]], [TAX_FEATURES[0], TAX_FEATURES[2]])
        code, err, detail = refused(_body(manifest, cluster))
        assert (code, err) == (422, "PredictColumnsMismatch") and TAX_FEATURES[2] in detail

        # every refusal is audited, nothing was extracted or started, the task is still waiting
        refusals = [e for e in tax.get("/audit?limit=1000").json() if e["outcome"] != "ok"]
        named = [e["detail"].get("error") for e in refusals]
        assert {"ModelNotAvailable", "TaskMismatch", "PredictColumnsMismatch"} <= set(named), refusals
        assert tax.get(f"/tasks/{job}").json()["status"] == "ports"
        assert list(tax.app.state.ctx.settings.tmp_dir().glob("task-*")) == []
        assert chain.admin.runs(*_run_key(job)) == 0


def test_predict_refuses_a_training_that_failed_here(chain, vertical_data, tmp_path, no_leaked_processes):
    job = "job-predict-failed-model"
    spec = vertical_spec(TAX_FEATURES[:2], kind="vertical_predict", model_from=TRAIN,
                         model={"algorithm": "ss_lr", "params": {}})
    manifest, terms = chain.publish(spec, job)
    csv = next(p for p in vertical_data.parties if p.name == "tax").csv_path.read_bytes()
    with chain_node(chain, "tax", tmp_path / "tax", {"tax_2024": csv}) as tax:
        assert tax.put("/policy", json={**CHAIN_POLICY, "max_grade": {"vertical_predict": 3}}).status_code == 200
        cluster = _authorized_cluster(chain, tax, job, manifest, terms)
        _record_training(tax, tmp_path, ["uscc", *TAX_FEATURES[:2]], TAX_FEATURES[:2], status="failed")
        r = tax.post(f"/tasks/{job}/start", json=_body(manifest, cluster))
        assert (r.status_code, r.json()["error"]) == (422, "ModelNotAvailable")
        assert "failed" in r.json()["detail"]


def _run_key(job: str) -> tuple[bytes, bytes]:
    from nodes.services.chain import dataset_chain_id
    from protocols.crypto.approvals import job_key

    return job_key(job), dataset_chain_id("tax", "tax_2024")


def _authorized_cluster(chain, tax, job: str, manifest: dict, terms) -> dict:
    """Tax approves ``job``, the bank too, the authorization goes on chain; the cluster with tax's ports
    and a bank that never shows up."""
    _approve_in(tax, manifest, "tax")
    chain.approve_as("bank", terms)
    chain.authorize(terms)
    ep = tax.post(f"/tasks/{job}/ports", json={"peers": ["bank"], "label_party": "bank"}).json()["endpoint"]
    p = free_ports(3)
    return {"host": "127.0.0.1",
            "parties": [{"name": "bank", "sf_port": p[0], "spu_port": p[1], "psi_ports": {"tax": p[2]}}, ep]}
