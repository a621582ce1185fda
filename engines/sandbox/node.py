"""The node side of the sandbox engine: run the code this node's officers approved, on its own data.

The one step ``run`` (empty body: everything it runs is in the slice this node signed):

1. the code, its SM3, function, inputs, output policy and limits come from the **approved slice**
   (``slice_carries_engine``), never from the caller; code whose SM3 is not the approved one never runs;
2. the approved columns of the approved dataset are extracted to a private scratch file;
3. the code runs isolated (:func:`protocols.sandbox.isolate.run_isolated`: bubblewrap, prlimit, a fresh
   uid, no network, the data read-only);
4. its output must pass the output policy (:func:`protocols.sandbox.output_policy.check_release`) with
   the node's own minimum group size as the floor; with ``epsilon`` the Laplace noise is charged to the
   dataset's ε budget (the node's ledger, as ``secure_stats`` does) before anything is released;
5. the released result is sealed to the requester and the usage receipt goes on chain (``task.finish``).
   An output the policy refuses releases nothing, but the code did read the private rows: that use still
   goes on chain — a receipt with the rows read and, for result hash, the SM3 of the refusal — and the
   task fails ``SandboxOutputRefused`` (the researcher reads the reason in PySyft).

Every refusal fails the task under its own name (:class:`engines.errors.StepRefused`, e.g.
``SandboxOutputRefused``, ``CodeHashMismatch``, ``PrivacyBudgetExceeded``); the scratch file is deleted in
every case.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from engines.base import NodeEngine
from engines.errors import StepRefused
from engines.sandbox.coordinator import KIND, OUTPUT, params_of


class RunIn(BaseModel):
    """The body of ``run``: nothing (what runs is what the node approved)."""

    model_config = ConfigDict(extra="forbid")


class SandboxNodeEngine(NodeEngine):
    kinds = (KIND,)
    steps = {"run": RunIn}

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def step(self, task: Any, name: str, body: BaseModel) -> dict[str, Any]:
        with self._lock:
            if task.job_id in self._running:  # a second call while the first still runs: never twice
                return {"job_id": task.job_id, "status": "running", "stage": "run"}
            self._running.add(task.job_id)
        try:
            return self._run(task)
        finally:
            with self._lock:
                self._running.discard(task.job_id)

    def _run(self, task: Any) -> dict[str, Any]:
        import pandas as pd

        from protocols.crypto.sm3 import sm3_digest
        from protocols.he.errors import HeError
        from protocols.sandbox.errors import SandboxError, SandboxOutputRefused
        from protocols.sandbox.isolate import check_approved, run_isolated
        from protocols.sandbox.output_policy import check_release

        section = task.approved.get("engine")
        if not isinstance(section, dict) or section.get("name") != "sandbox":
            raise StepRefused("CodeNotApproved", "the slice this node approved carries no code to run", 403)
        try:
            p = params_of(section)
        except ValidationError as exc:
            raise StepRefused("CodeNotApproved", f"the approved engine section is malformed: {exc.errors()[0]['msg']}",
                              403) from None
        inputs = task.approved.get("inputs", [])
        if len(inputs) != 1 or set(p.inputs.values()) != {inputs[0]["dataset"]}:
            raise StepRefused("CodeNotApproved", "the code reads other datasets than the one this node approved", 403)
        dataset, columns = inputs[0]["dataset"], list(inputs[0]["columns"])
        node_policy = task.policy()
        policy = p.output_policy.model_copy(update={
            "min_group_size": max(p.output_policy.min_group_size, node_policy.min_group_size)})
        try:  # before anything is read: code changed after approval never runs
            check_approved(p.code, p.code_sm3)
        except SandboxError as exc:
            raise StepRefused(type(exc).__name__, f"{exc.code}: {exc}"[:1000]) from None
        scratch = task.scratch()
        try:
            task.stage("extract")
            private = scratch / f"{dataset}.csv"
            rows = task.extract(dataset, columns, private)
            # the run's fresh uid reads it through a read-only bind; on the host it stays inside the 0700 scratch
            os.chmod(private, 0o644)
            key = task.key_column(dataset)
            keys = pd.read_csv(private, usecols=[key], dtype=str)[key].dropna().tolist() if key in columns else []
            task.stage("run")
            run = run_isolated(p.code, p.code_sm3, p.function, {arg: private for arg in p.inputs}, p.limits)
            task.stage("release")
            try:
                release = check_release(run.result, run.stdout, policy, rows, keys)
            except SandboxOutputRefused as exc:
                # the code read the private rows: the use goes on chain although nothing is released. The
                # receipt names the refusal (its SM3), not a result, and the researcher gets the reason
                refusal = f"{exc.code}: {exc}"[:1000]
                tx = task.receipt(dataset, rows, sm3_digest(f"dcp-sandbox-refused|{p.code_sm3}|{refusal}".encode()))
                task.stage("refused", receipt_tx=tx)
                task.audit("sandbox.output_refused", {"rows_read": rows, "rows_released": 0, "receipt_tx": tx,
                                                      "code_sm3": p.code_sm3, "refusal": refusal})
                raise
            if release.epsilon_spent:
                ledger = task.ledger()
                if dataset in policy.privacy_budgets:
                    ledger.set_budget(dataset, policy.privacy_budgets[dataset])
                ledger.charge(dataset, task.job_id, release.epsilon_spent,
                              purpose=f"sandbox {p.function} for {p.researcher.email}")
        except SandboxError as exc:
            raise StepRefused(type(exc).__name__, f"{exc.code}: {exc}"[:1000]) from None
        except HeError as exc:  # the ε budget: missing or spent
            raise StepRefused(type(exc).__name__, str(exc)[:1000]) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        out = {"result": release.result, "stdout": release.stdout, "code_sm3": run.code_sm3,
               "epsilon_spent": release.epsilon_spent, "noised_values": release.noised_values,
               "min_group_size": policy.min_group_size, "wall_seconds": round(run.wall_seconds, 3)}
        return task.finish({OUTPUT: json.dumps(out, ensure_ascii=False).encode()}, rows=rows)

    def service(self, port: Any, config: dict[str, Any]) -> Any:
        """The node's low side and bridge (``engines.sandbox`` in its settings; engines/sandbox/service.py)."""
        from engines.sandbox.service import make_service

        return make_service(port, config)

    def stop(self, task: Any) -> None:
        return None  # run_isolated ends its process group with the request; nothing else is kept

    def recover(self, task: Any) -> None:
        shutil.rmtree(task.scratch(), ignore_errors=True)
