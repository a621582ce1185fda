"""he_score and secure_stats as job kinds, in a real federation: anvil, the contracts, a coordinator
and three nodes (bank, tax, power), each its own process with its own database and keys.

Approvals, the on-chain authorization and the usage receipts are those of every other kind; the
coordinator only relays ciphertexts and sums them; each node checks the manifest against the chain,
the requester's node holds the CKKS secret key and decrypts the total only."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coordinator.manifest import dataset_chain_id
from coordinator.models import JobState
from coordinator.sdk import RemoteError
from federation.launcher import officer_token
from protocols.crypto.approvals import job_key
from protocols.secretflow.synthetic import make_vertical_data
from tests.coordinator.fedkit import DiagnosingClient, http, started

pytestmark = pytest.mark.slow

GRADES = {"vertical_train": 3, "he_score": 3, "secure_stats": 3}
BUDGETS = {"tax_stats": 1.5, "power_stats": 5.0}
EDGES = [0, 25, 50, 75, 101]
PRECISE = {"poly_modulus_degree": 16384, "coeff_mod_bit_sizes": [60, 50, 50, 60], "scale_bits": 50}


def _stats_frames(n_tax: int = 60, n_power: int = 48) -> dict[str, pd.DataFrame]:
    """Employees per enterprise: tax has exactly 3 rows below 2 (a small cell for the [0, 2) bin)."""
    from common.ids import random_uscc

    rng = np.random.default_rng(3)
    tax = np.concatenate([[1, 1, 1], np.round(np.linspace(2, 100, n_tax - 3))])
    power = np.round(np.linspace(3, 100, n_power))
    import random

    r = random.Random(5)
    out = {}
    for name, vals in (("tax", tax), ("power", power)):
        rng.shuffle(vals)
        out[name] = pd.DataFrame({"uscc": [random_uscc(r) for _ in vals], "employees": vals.astype(int)})
    return out


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("hefed")
    data = make_vertical_data(root / "data", n_rows=300, overlap=0.6, seed=11)
    stats = _stats_frames()
    members = []
    for p in data.parties:
        datasets = [{"name": f"{p.name}_2024", "file": str(p.csv_path), "key_column": "uscc"}]
        if p.name in stats:
            path = root / "data" / f"{p.name}_stats.csv"
            stats[p.name].to_csv(path, index=False)
            datasets.append({"name": f"{p.name}_stats", "file": str(path), "key_column": "uscc"})
        members.append({
            "name": p.name, "role": "bank" if p.name == "bank" else "department", "datasets": datasets,
            "policy": {"max_grade": GRADES, "default_max_grade": 2, "min_group_size": 10,
                       "privacy_budgets": {k: v for k, v in BUDGETS.items() if k.startswith(p.name)}},
        })
    with started(root, members) as state:
        yield {"state": state, "data": data, "stats": stats, "root": root, "client": DiagnosingClient(state.coordinator_url, root, state=state)}


def chain(fed):
    from coordinator.chain import connect

    st = fed["state"]
    return connect(st.rpc_url, st.registry)


def approve(fed, job_id, members):
    c, nodes = fed["client"], fed["state"].nodes
    for m in members:
        out = c.approve(job_id, m, nodes[m])
        assert out["status"] == "approved"


def result(fed, job_id, name) -> bytes:
    st = fed["state"]
    return fed["client"].result(job_id, name, st.keys_dir / "bank.keystore.json", st.passphrase_of("bank"))


def stats_spec(**he) -> dict:
    return {
        "kind": "secure_stats", "requester": "bank", "purpose": "employment profile of SME borrowers (test)",
        "inputs": [{"member": "tax", "dataset": "tax_stats", "columns": ["employees"]},
                   {"member": "power", "dataset": "power_stats", "columns": ["employees"]}],
        "he": {"statistics": ["count", "sum", "mean", "histogram"], "bin_edges": EDGES, "min_group_size": 10, **he},
        "expires_in_s": 900,
    }


def he_tasks_left(fed) -> list[Path]:
    """Private HE directories (secret contexts, mask keys) still on any node's disk."""
    root = fed["state"].work_dir / "nodes"
    return [p for p in root.glob("*/tmp/step-*")]


def test_secure_stats_exact_without_dp(fed, no_leaked_processes):
    from contracts.audit import run_audit

    c = fed["client"]
    job = c.submit(stats_spec())
    approve(fed, job, ("tax", "power"))
    final = c.wait(job, timeout=120)
    assert final.state.value == "SUCCEEDED", final.reason
    assert [e["to"] for e in final.events] == ["SUBMITTED", "PENDING_APPROVAL", "AUTHORIZED", "RUNNING", "SUCCEEDED"]
    got = json.loads(result(fed, job, "stats"))
    values = np.concatenate([fed["stats"]["tax"]["employees"], fed["stats"]["power"]["employees"]])
    assert got["count"] == len(values)
    assert got["sum"] == pytest.approx(values.sum(), abs=1e-3)
    assert got["mean"] == pytest.approx(values.mean(), abs=1e-5)
    assert got["histogram"] == np.histogram(values, bins=EDGES)[0].tolist()
    assert got["contributors"] == ["power", "tax"] and got["epsilon"] is None
    # the manifest the departments signed carries the query; receipts for both datasets; audit clean
    m = c.manifest(job)["manifest"]
    assert m["engine"]["he"]["query"]["bin_edges"] == EDGES and m["join_key"] is None
    assert m["inputs"][0]["columns"] == ["employees"]
    ch = chain(fed)
    for member in ("tax", "power"):
        assert ch.runs(job_key(job), dataset_chain_id(member, f"{member}_stats")) == 1
    assert run_audit(ch.w3, fed["state"].registry).clean
    assert not he_tasks_left(fed)


def test_secure_stats_small_bin_refused_nothing_released(fed, no_leaked_processes):
    c, st = fed["client"], fed["state"]
    job = c.submit(stats_spec(bin_edges=[0, 2, 101]))
    approve(fed, job, ("tax", "power"))
    final = c.wait(job, timeout=120)
    assert final.state.value == "FAILED"
    assert final.reason.startswith("tax refused: MinimumGroupSizeViolation"), final.reason
    assert "bin[0, 2)=3" in final.reason
    with pytest.raises(RemoteError) as err:
        result(fed, job, "stats")
    assert err.value.error == "ResultNotReady"
    assert chain(fed).runs(job_key(job), dataset_chain_id("tax", "tax_stats")) == 0
    # the requester's secret context is gone, its task stopped; the tax node's task failed with the reason
    bank = http(fed, "coordinator").get(f"{st.nodes['bank']}/tasks/{job}", timeout=10).json()
    assert bank["status"] == "stopped"
    tax = http(fed, "coordinator").get(f"{st.nodes['tax']}/tasks/{job}", timeout=10).json()
    assert tax["status"] == "failed" and tax["error"].startswith("MinimumGroupSizeViolation")
    assert not he_tasks_left(fed)


def test_dp_budget_exhausted_on_the_second_run(fed, no_leaked_processes):
    c, st = fed["client"], fed["state"]
    spent0 = http(fed, "tax").get(f"{st.nodes['tax']}/budgets/tax_stats", timeout=10).json()
    assert spent0["budget"] == 1.5 and spent0["spent"] == 0.0
    dp = {"statistics": ["count", "sum"], "bin_edges": None, "lower": 0, "upper": 100, "epsilon": 1.0}
    job1 = c.submit(stats_spec(**dp))
    approve(fed, job1, ("tax", "power"))
    first = c.wait(job1, timeout=120)
    assert first.state.value == "SUCCEEDED", first.reason
    got = json.loads(result(fed, job1, "stats"))
    assert got["epsilon"] == 1.0 and abs(got["count"] - 108) < 60  # noisy, but of the right size
    after = http(fed, "tax").get(f"{st.nodes['tax']}/budgets/tax_stats", timeout=10).json()
    assert after["spent"] == pytest.approx(1.0) and after["remaining"] == pytest.approx(0.5)
    job2 = c.submit(stats_spec(**dp))
    approve(fed, job2, ("tax", "power"))
    second = c.wait(job2, timeout=120)
    assert second.state.value == "FAILED"
    assert second.reason.startswith("tax refused: PrivacyBudgetExceeded"), second.reason
    assert http(fed, "tax").get(f"{st.nodes['tax']}/budgets/tax_stats", timeout=10).json()["spent"] == pytest.approx(1.0)
    assert chain(fed).runs(job_key(job2), dataset_chain_id("tax", "tax_stats")) == 0


def _model(fed) -> tuple[dict, dict[str, list[str]]]:
    """Weights per raw column (hidden weight / column std, so every term is of order one)."""
    weights, cols = {}, {}
    hidden = {"bank": [0.35, -0.45, 0.55], "tax": [-0.8, 0.6, -0.5], "power": [-0.4, -0.7, 0.65]}
    for p in fed["data"].parties:
        frame = pd.read_csv(p.csv_path)
        cols[p.name] = list(p.features)
        weights[p.name] = {f: h / float(frame[f].std()) for f, h in zip(p.features, hidden[p.name], strict=True)}
    return {"intercept": -1.0, "weights": weights}, cols


def test_he_score_end_to_end_matches_plaintext(fed, no_leaked_processes):
    from contracts.audit import run_audit

    c, st, d = fed["client"], fed["state"], fed["data"]
    # 1. the PSI that aligns the rows: a (small) joint training job of the same bank
    psi = c.submit({
        "kind": "vertical_train", "requester": "bank", "purpose": "PSI and a first model (test)", "join_key": "uscc",
        "label": {"member": "bank", "dataset": "bank_2024", "column": "default"},
        "inputs": [{"member": p.name, "dataset": f"{p.name}_2024", "columns": p.features} for p in d.parties],
        "model": {"algorithm": "ss_lr", "params": {"epochs": 1, "batch_size": 128}}, "expires_in_s": 900,
    })
    approve(fed, psi, ("bank", "tax", "power"))
    assert c.wait(psi, timeout=300).state.value == "SUCCEEDED"
    # 2. the bank's model stays on the bank's node; the spec names its commitment
    model, cols = _model(fed)
    steward = {"Authorization": f"Bearer {officer_token(st, 'bank', 'steward')}"}  # the bank's data steward
    r = http(fed, "bank").put(f"{st.nodes['bank']}/models/credit_v1", json=model, timeout=30, headers=steward)
    assert r.status_code == 200, r.text
    commitment = r.json()["commitment"]
    spec = {
        "kind": "he_score", "requester": "bank", "purpose": "model-protected pre-loan scoring (test)",
        "join_key": "uscc",
        "inputs": [{"member": p.name, "dataset": f"{p.name}_2024", "columns": cols[p.name]} for p in d.parties],
        # raw columns reach ~5e6 (loan amounts, VAT): a 50-bit scale keeps |error| far below 1e-3
        # (the default 40-bit scale gives ~2e-3 on these values; see protocols/he/README.md, Parameters)
        "he": {"aligned_by": psi, "model": "credit_v1", "model_commitment": commitment, "params": PRECISE},
        "expires_in_s": 900,
    }
    job = c.submit(spec)
    m = c.manifest(job)["manifest"]
    assert m["engine"]["he"]["n_rows"] == d.true_intersection
    assert m["engine"]["model_commitment"] == commitment and m["engine"]["he"]["masked"] is True
    approve(fed, job, ("bank", "tax", "power"))
    final = c.wait(job, timeout=180)
    assert final.state.value == "SUCCEEDED", final.reason
    scores = pd.read_csv(io.BytesIO(result(fed, job, "scores")), dtype={"uscc": str})
    assert len(scores) == d.true_intersection and scores["uscc"].is_unique
    # the plaintext reference from the parties' own files
    expect = np.full(len(scores), model["intercept"])
    for p in d.parties:
        frame = pd.read_csv(p.csv_path, dtype={"uscc": str}).set_index("uscc").loc[scores["uscc"]]
        expect += frame[cols[p.name]].to_numpy() @ np.array([model["weights"][p.name][f] for f in cols[p.name]])
    err = np.abs(scores["logit"].to_numpy() - expect).max()
    assert err < 1e-3, err
    assert np.allclose(scores["probability"], 1 / (1 + np.exp(-expect)), atol=1e-4)
    # receipts of all three datasets on chain, the regulator's audit clean, no secret left behind
    ch = chain(fed)
    for p in d.parties:
        assert ch.runs(job_key(job), dataset_chain_id(p.name, f"{p.name}_2024")) == 1
    assert run_audit(ch.w3, st.registry).clean
    for member in ("bank", "tax", "power"):
        t = http(fed, "coordinator").get(f"{st.nodes[member]}/tasks/{job}", timeout=10).json()
        assert t["status"] == "succeeded" and t["receipt_tx"].startswith("0x")
    assert not he_tasks_left(fed)
    # the departments cannot read the bank's result
    from protocols.crypto.errors import CryptoError

    with pytest.raises(CryptoError):
        c.result(job, "scores", st.keys_dir / "tax.keystore.json", st.passphrase_of("bank"))


def test_malformed_total_relayed_to_the_requester_is_refused(fed, no_leaked_processes):
    """A rogue relay: the test authorizes a job on chain itself (the owners' and the coordinator's keys)
    and hands the requester's node garbage instead of a summed ciphertext."""
    from coordinator.chain import connect
    from coordinator.manifest import build_manifest, terms_of
    from coordinator.spec import parse_spec
    from protocols.crypto.keystore import load_keystore

    st = fed["state"]
    keys = {m: load_keystore(st.keys_dir / f"{m}.keystore.json", st.passphrase_of(m)) for m in ("coordinator", "tax", "power")}
    spec = parse_spec(stats_spec())
    job_id = "job-rogue-relay-1"
    manifest = build_manifest(spec, job_id, "bank")
    terms = terms_of(manifest, st.accounts["bank"])
    for m in ("tax", "power"):
        connect(st.rpc_url, st.registry, keys[m].chain_private_key).approve(st.accounts[m], terms)
    connect(st.rpc_url, st.registry, keys["coordinator"].chain_private_key).authorize(st.accounts["coordinator"], terms)
    bank = st.nodes["bank"]
    # a manifest that is not the authorized one is refused before any key is made
    forged = json.loads(json.dumps(manifest))
    forged["engine"]["he"]["query"]["min_group_size"] = 1
    r = http(fed, "coordinator").post(f"{bank}/tasks/{job_id}/start", json={"manifest": forged}, timeout=60)
    assert r.status_code == 403 and r.json()["error"] == "NotAuthorized"
    r = http(fed, "coordinator").post(f"{bank}/tasks/{job_id}/start", json={"manifest": manifest}, timeout=60)
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["public_context_b64"])
    assert len(he_tasks_left(fed)) == 1
    bad = base64.b64encode(b"DCPHE1\x00\x00\x00\x05{oops").decode()
    r = http(fed, "coordinator").post(f"{bank}/tasks/{job_id}/finish", json={"total_b64": bad}, timeout=60)
    assert r.status_code == 422 and r.json()["error"] == "MalformedCiphertext", r.text
    t = http(fed, "coordinator").get(f"{bank}/tasks/{job_id}", timeout=10).json()
    assert t["status"] == "failed" and t["error"].startswith("MalformedCiphertext")
    assert not he_tasks_left(fed)  # the secret context was deleted with the refusal
    # and nothing more can be asked of that task
    r = http(fed, "coordinator").post(f"{bank}/tasks/{job_id}/finish", json={"total_b64": bad}, timeout=60)
    assert r.status_code == 409 and r.json()["error"] == "TaskExists"


def _tax_state(fed, job: str) -> dict:
    """What a hijack must not change at tax: its task, its receipts on chain, its ε ledger, its secrets."""
    st = fed["state"]
    r = http(fed, "coordinator").get(f"{st.nodes['tax']}/tasks/{job}", timeout=10)
    task = r.json() if r.status_code == 200 else r.json()["error"]
    spent = http(fed, "tax").get(f"{st.nodes['tax']}/budgets/tax_stats", timeout=10).json()["spent"]
    scratch = sorted(p.name for d in (st.work_dir / "nodes" / "tax" / "tmp").glob("step-*") for p in d.iterdir())
    return {"task": task, "runs": chain(fed).runs(job_key(job), dataset_chain_id("tax", "tax_stats")),
            "spent": spent, "scratch": scratch}


def test_he_hijack_is_refused_and_changes_nothing(fed, no_leaked_processes):
    """The hijack of issue 15: an outsider calls tax's ``start`` first, then ``contribute`` with its own
    CKKS context and an X25519 key standing in for power's, to decrypt tax's masked contribution.
    Only the authenticated coordinator may call a step (403 for anyone else), and even the coordinator's
    key cannot relay material that the requester and the contributors did not sign (MaterialNotSigned):
    nothing is computed, contributed, charged or receipted, tax's task stays as it was, and the real job
    then succeeds with the genuine material."""
    import os
    import signal

    from protocols.crypto import sm2
    from protocols.crypto.keystore import load_keystore
    from protocols.he.binding import material_message
    from protocols.he.context import make_context
    from protocols.he.masks import mask_keypair
    from protocols.manifest import manifest_sm3

    c, st = fed["client"], fed["state"]
    tax, bank_pid = st.nodes["tax"], st.pids["bank"]
    job = c.submit(stats_spec())
    manifest = c.manifest(job)["manifest"]
    mhash = manifest_sm3(manifest).hex()  # the authorization's manifest hash
    os.kill(bank_pid, signal.SIGSTOP)  # the coordinator's first step (the requester's start) waits on it
    try:
        approve(fed, job, ("tax", "power"))
        assert c.wait(job, timeout=60, until={JobState.RUNNING}).state == JobState.RUNNING
        before = _tax_state(fed, job)
        assert before["task"] == "TaskNotFound" and before["runs"] == 0
        outsider_ctx = make_context(None)
        o_priv, o_pub = mask_keypair()
        forged = {"public_context_b64": base64.b64encode(outsider_ctx.public).decode(),
                  "mask_group": {"job_id": job, "members": {"tax": "00" * 32, "power": o_pub.hex()}}}
        # 1. an outsider (a member that is not the coordinator: power's or the requester's own identity)
        for who in ("power", "bank"):
            r = http(fed, who).post(f"{tax}/tasks/{job}/start", json={"manifest": manifest}, timeout=60)
            assert (r.status_code, r.json()["error"]) == (403, "Forbidden"), r.text
            r = http(fed, who).post(f"{tax}/tasks/{job}/contribute", json=forged, timeout=60)
            assert (r.status_code, r.json()["error"]) == (403, "Forbidden"), r.text
        assert _tax_state(fed, job) == before
        # 2. the coordinator's key relaying the outsider's material: tax starts (as the coordinator would)
        #    and signs its mask key, but refuses a context the requester did not sign
        as_coordinator = http(fed, "coordinator")
        r = as_coordinator.post(f"{tax}/tasks/{job}/start", json={"manifest": manifest}, timeout=120)
        assert r.status_code == 200, r.text
        started = r.json()
        tax_key = bytes.fromhex(started["mask_public_key"])
        keys = {m: load_keystore(st.keys_dir / f"{m}.keystore.json", st.passphrase_of(m)).sm2 for m in ("tax", "bank")}
        assert sm2.verify(keys["tax"].public_key, material_message("mask_key", job, mhash, "tax", tax_key.hex()),
                          bytes.fromhex(started["mask_key_signature"]))
        group = {"job_id": job, "members": {"tax": tax_key.hex(), "power": o_pub.hex()}}
        outsider_sm2 = sm2.generate_keypair()
        fp = outsider_ctx.fingerprint
        hijack = {"public_context_b64": forged["public_context_b64"], "mask_group": group,
                  "context_signature": sm2.sign(outsider_sm2.private_key, material_message("context", job, mhash, "bank", fp)).hex(),
                  "mask_signatures": {"tax": started["mask_key_signature"],
                                      "power": sm2.sign(outsider_sm2.private_key, material_message(
                                          "mask_key", job, mhash, "power", o_pub.hex())).hex()}}
        after_start = _tax_state(fed, job)
        assert after_start["task"]["status"] == "running" and after_start["runs"] == 0
        for body in (hijack, {**hijack, "context_signature": None, "mask_signatures": None}):
            r = as_coordinator.post(f"{tax}/tasks/{job}/contribute", json=body, timeout=120)
            assert (r.status_code, r.json()["error"]) == (403, "MaterialNotSigned"), r.text
            assert "context" in r.json()["detail"] and "bank" in r.json()["detail"]
            assert "contribution_b64" not in r.text
        # 3. a context the requester did sign, but a mask key for power that power did not sign
        signed_ctx = {**hijack, "context_signature": sm2.sign(keys["bank"].private_key, material_message(
            "context", job, mhash, "bank", fp)).hex()}
        for sigs in (hijack["mask_signatures"], {"tax": started["mask_key_signature"]}):
            r = as_coordinator.post(f"{tax}/tasks/{job}/contribute", json={**signed_ctx, "mask_signatures": sigs},
                                    timeout=120)
            assert (r.status_code, r.json()["error"]) == (403, "MaterialNotSigned"), r.text
            assert "mask key" in r.json()["detail"] and "power" in r.json()["detail"]
        assert _tax_state(fed, job) == after_start  # nothing contributed, charged, receipted; the task as it was
    finally:
        os.kill(bank_pid, signal.SIGCONT)
    # the real job, with the genuine material, is unharmed
    final = c.wait(job, timeout=180)
    assert final.state.value == "SUCCEEDED", final.reason
    got = json.loads(result(fed, job, "stats"))
    values = np.concatenate([fed["stats"]["tax"]["employees"], fed["stats"]["power"]["employees"]])
    assert got["count"] == len(values) and got["sum"] == pytest.approx(values.sum(), abs=1e-3)
    assert chain(fed).runs(job_key(job), dataset_chain_id("tax", "tax_stats")) == 1
    assert not he_tasks_left(fed)
