"""The department's bridge between its PySyft low side and dcp (the high side).

It acts as the department's node — its member key, its 国密 TLS identity — and does four things:

* :meth:`LowSideBridge.publish` puts the node's **mock** of a dataset (``GET /datasets/{name}/mock``:
  same schema, no real values) on the low side, for the datasets the officers chose to publish;
* :meth:`LowSideBridge.poll` takes each new PySyft code request and submits it to the coordinator as a
  ``sandbox`` job **in the department's own name, on the researcher's behalf** (the researcher is no member
  and holds no key; the department's signed request and the manifest carry who the researcher is, the
  code's full text and SM3, the dataset and every column the code may read, and the output policy). The
  department's officers then review it in their inbox like any job, and the authorization goes on chain;
* when the job has **succeeded**, it fetches the result (sealed to the department by its own node, opened
  here with the department's key) and deposits it into the PySyft request: the researcher gets it the
  PySyft way;
* when the job ended any other way (officers rejected it, the output policy refused it, it expired, …) it
  denies the PySyft request with the reason, which the researcher reads.

What PySyft holds of each request — its code, the researcher, the answer — is therefore exactly what the
low side already had, plus the released aggregate. Which request became which job is kept in
``jobs.json`` in the state directory, so a restarted bridge neither resubmits nor forgets.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engines.errors import StepRefused
from engines.sandbox.coordinator import KIND, OUTPUT, code_sm3
from protocols.sandbox.isolate import SandboxLimits
from protocols.sandbox.lowside_client import CodeRequest, LowSide
from protocols.sandbox.output_policy import OutputPolicy

log = logging.getLogger("dcp.sandbox.bridge")
FINAL = {"SUCCEEDED", "REJECTED", "EXPIRED", "REVOKED", "FAILED"}


class BridgeError(Exception):
    """The coordinator or the node refused or did not answer (``detail``)."""


@dataclass
class Outcome:
    """What the bridge did with one PySyft request."""

    request_id: str
    job_id: str
    state: str  # submitted, deposited, denied
    reason: str | None = None


class LowSideBridge:
    """One department's bridge (``member``'s keys and 国密 TLS client ``http``)."""

    def __init__(self, member: str, keys: Any, http: httpx.Client, coordinator_url: str, node_url: str | None,
                 lowside: LowSide, state_dir: Path, output_policy: OutputPolicy | None = None,
                 limits: SandboxLimits | None = None, expires_in_s: int = 86_400, node: Any = None) -> None:
        """``node``: the node's own port (``engines.base.NodePort``) when the bridge runs inside the node
        (its mock and columns then come from it, not over HTTP from ``node_url``)."""
        self.member = member
        self.node = node
        self.keys = keys
        self.http = http
        self.coordinator_url = coordinator_url.rstrip("/")
        self.node_url = (node_url or "").rstrip("/")
        self.lowside = lowside
        self.output_policy = output_policy or OutputPolicy()
        self.limits = limits or SandboxLimits()
        self.expires_in_s = expires_in_s
        self._file = Path(state_dir) / "jobs.json"
        self.jobs: dict[str, dict[str, Any]] = json.loads(self._file.read_text()) if self._file.is_file() else {}

    # ------------------------------------------------------------ plumbing

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, url, timeout=60.0, **kw)
        except httpx.HTTPError as exc:
            raise BridgeError(f"{url} did not answer: {type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                raise BridgeError(f"{body.get('error')}: {body.get('detail')}")
            except ValueError:
                raise BridgeError(f"HTTP {r.status_code} from {url}") from None
        return r.json()

    def _save(self) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.jobs, indent=1))
        tmp.replace(self._file)

    # ------------------------------------------------------------ the low side's data

    def publish(self, dataset: str, rows: int = 120, seed: int = 0) -> dict[str, Any]:
        """Publish the node's mock of ``dataset`` on the low side (the officers chose to publish it)."""
        import pandas as pd

        if self.node is not None:
            mock = self.node.mock(dataset, rows, seed)
        else:
            mock = pd.DataFrame(self._call("GET", f"{self.node_url}/datasets/{dataset}/mock",
                                           params={"rows": rows, "seed": seed}))
        return self.lowside.publish_mock(dataset, mock, allowed=True)

    def columns(self, dataset: str) -> list[str]:
        """Every column of ``dataset`` (the asset a researcher's code receives is the whole table)."""
        if self.node is not None:
            return self.node.columns(dataset)
        entry = self._call("GET", f"{self.node_url}/catalog/{dataset}")
        return [c["name"] for c in entry["columns"]]

    # ------------------------------------------------------------ requests -> jobs -> answers

    def spec_of(self, req: CodeRequest) -> dict[str, Any]:
        """The sandbox job spec of one PySyft code request."""
        datasets = sorted(set(req.inputs.values()))
        if len(datasets) != 1:
            raise BridgeError(f"request {req.request_id} reads {datasets}: a sandbox job reads one dataset")
        who = req.researcher
        return {
            "kind": KIND, "requester": self.member,
            "purpose": (f"Researcher {who.name or who.email} <{who.email}> asks to run {req.function}() on "
                        f"{datasets[0]} (PySyft code request {req.request_id}); only an aggregate that passes "
                        f"the output policy is released."),
            "inputs": [{"member": self.member, "dataset": datasets[0], "columns": self.columns(datasets[0])}],
            "engine_params": {
                "code": req.code, "code_sm3": code_sm3(req.code), "function": req.function, "inputs": req.inputs,
                "researcher": {"email": who.email or "", "name": who.name, "verify_key": who.verify_key},
                "lowside_request": req.request_id,
                "output_policy": self.output_policy.model_dump(), "limits": self.limits.model_dump(),
            },
            "expires_in_s": self.expires_in_s, "timeout_s": self.limits.wall_seconds + 120.0,
        }

    def submit(self, req: CodeRequest) -> str:
        """Submit ``req`` as a job signed by the department; the job id."""
        from protocols.signed_request import sign_request

        signed = sign_request(self.keys.sm2.private_key, self.member, self.spec_of(req))
        job = self._call("POST", f"{self.coordinator_url}/jobs", json={"request": signed.model_dump()})["job_id"]
        self.jobs[req.request_id] = {"job_id": job, "state": "submitted", "function": req.function,
                                     "code_sm3": req.code_sm3}
        self._save()
        log.info("PySyft request %s -> job %s", req.request_id, job)
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.coordinator_url}/jobs/{job_id}")

    def result(self, job_id: str) -> dict[str, Any]:
        """The job's released result, opened with the department's key (its SM3 checked)."""
        from protocols.crypto.envelope import open_
        from protocols.crypto.sm3 import sm3_digest

        got = self._call("GET", f"{self.coordinator_url}/jobs/{job_id}/results/{OUTPUT}")
        data = open_(self.keys.sm2.private_key, base64.b64decode(got["envelope_b64"]), f"{job_id}/{OUTPUT}".encode())
        if sm3_digest(data).hex() != got["sm3"]:
            raise BridgeError(f"the result of {job_id} does not match its SM3")
        return json.loads(data)

    def poll(self) -> list[Outcome]:
        """Submit every new request; answer every request whose job has ended. What was done."""
        done: list[Outcome] = []
        for req in self.lowside.pending_requests():
            if req.request_id not in self.jobs:
                try:
                    done.append(Outcome(req.request_id, self.submit(req), "submitted"))
                except (BridgeError, StepRefused) as exc:  # refused at submission (policy, spec): the researcher is told
                    self.lowside.reject(req.request_id, f"refused before review: {exc}")
                    self.jobs[req.request_id] = {"job_id": None, "state": "denied", "reason": str(exc)}
                    self._save()
                    done.append(Outcome(req.request_id, "", "denied", str(exc)))
        for request_id, rec in self.jobs.items():
            if rec["state"] != "submitted":
                continue
            st = self.status(rec["job_id"])
            if st["state"] not in FINAL:
                continue
            if st["state"] == "SUCCEEDED":
                released = self.result(rec["job_id"])
                self.lowside.deposit_result(request_id, released["result"])
                rec.update(state="deposited", epsilon_spent=released.get("epsilon_spent", 0.0))
            else:
                reason = f"{st['state'].lower()}: {st.get('reason') or 'no reason given'} (dcp job {rec['job_id']})"
                self.lowside.reject(request_id, reason)
                rec.update(state="denied", reason=reason)
            self._save()
            done.append(Outcome(request_id, rec["job_id"], rec["state"], rec.get("reason")))
        return done
