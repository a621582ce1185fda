"""The coordinator side of the sandbox engine: kind ``sandbox``.

A sandbox job is one department's: it reads one dataset of that department, whose node is also the
requester — the node submits the job **on behalf of a researcher** (the researcher is no member of the
federation and holds no key; the node signs the request with its own member key, and the manifest carries
who the researcher is). Its manifest's engine section holds everything the department's officers review
and sign: the code's full text (``code``) and SM3 (``code_sm3``), the function it calls, which argument
reads which dataset, the researcher's identity as the low side knows it, the PySyft request it answers,
the output policy and the resource limits. The section travels in the department's slice too
(``slice_carries_engine``), so the node runs exactly the code its officers approved.

The one step (``run``) runs at the department's node; its output ``result`` is sealed to the requester
(the same node), which deposits it into the PySyft request.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engines.base import RUNNING, Engine, JobContext, Progress
from engines.errors import PartyRefused, PartyUnavailable, PortError, SpecRefused
from protocols.crypto.sm3 import sm3_hex
from protocols.sandbox.isolate import SandboxLimits
from protocols.sandbox.output_policy import OutputPolicy

KIND = "sandbox"
PROTOCOL = "sandbox/bubblewrap+prlimit/v1"
OUTPUT = "result"
_PY_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_CODE_CHARS = 200_000


class Researcher(BaseModel):
    """Who asked, as the low side knows them (not a federation member)."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=254)
    name: str = Field(default="", max_length=200)
    institution: str = Field(default="", max_length=200)
    verify_key: str = Field(default="", max_length=200, description="the researcher's PySyft verify key")


class SandboxParams(BaseModel):
    """The spec's ``engine_params`` of a sandbox job (and, with name and protocol, its manifest section)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=MAX_CODE_CHARS, description="the code's full text, as submitted")
    code_sm3: str = Field(pattern=r"^[0-9a-f]{64}$", description="SM3 (hex) of code, UTF-8")
    function: str = Field(pattern=_PY_NAME, description="the function the code defines and the run calls")
    inputs: dict[str, str] = Field(min_length=1, description="the function's argument -> the dataset it reads")
    researcher: Researcher
    lowside_request: str | None = Field(default=None, max_length=200, description="the PySyft request answered")
    output_policy: OutputPolicy = Field(default_factory=OutputPolicy)
    limits: SandboxLimits = Field(default_factory=SandboxLimits)

    @field_validator("inputs")
    @classmethod
    def _args(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [a for a in v if not re.match(_PY_NAME, a)]
        if bad:
            raise ValueError(f"argument names {bad} are not Python names")
        return v


def code_sm3(code: str) -> str:
    """SM3 (hex) of the code text exactly as submitted (UTF-8)."""
    return sm3_hex(code.encode("utf-8"))


def params_of(section: dict[str, Any]) -> SandboxParams:
    """The parameters in a manifest's (or slice's) engine section."""
    return SandboxParams.model_validate({k: v for k, v in section.items() if k not in ("name", "protocol")})


class SandboxEngine(Engine):
    """Checks a sandbox spec, writes the section the officers sign, runs the one step and collects."""

    name = "sandbox"
    kinds = (KIND,)
    outputs = {KIND: (OUTPUT,)}
    min_members = 1
    needs_join_key = False
    slice_carries_engine = True

    def _params(self, spec: Any) -> SandboxParams:
        if spec.engine_params is None:
            raise SpecRefused("InvalidJobSpec", "engine_params: a sandbox job carries its code, function, inputs, "
                                                "researcher and output policy")
        try:
            return SandboxParams.model_validate(spec.engine_params)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise SpecRefused("InvalidJobSpec", f"engine_params.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None

    def check_spec(self, spec: Any) -> None:
        p = self._params(spec)
        if len(spec.inputs) != 1:
            raise SpecRefused("InvalidJobSpec", "a sandbox job reads the datasets of one department, in one input")
        inp = spec.inputs[0]
        if spec.requester != inp.member:
            raise SpecRefused("SandboxRequesterNotOwner",
                              f"a sandbox job is submitted by the data owner's node on a researcher's behalf: "
                              f"requester {spec.requester!r} is not {inp.member!r}")
        if code_sm3(p.code) != p.code_sm3:
            raise SpecRefused("CodeHashMismatch", "engine_params.code_sm3 is not the SM3 of engine_params.code")
        other = sorted(set(p.inputs.values()) - {inp.dataset})
        if other:
            raise SpecRefused("InvalidJobSpec", f"engine_params.inputs read {other}, not the job's dataset {inp.dataset!r}")
        if not inp.columns:
            raise SpecRefused("InvalidJobSpec", "inputs: name every column the code may read")
        if spec.he is not None or spec.label is not None or spec.model_from is not None:
            raise SpecRefused("InvalidJobSpec", "a sandbox job takes no he section, label or model_from")

    def used_columns(self, spec: Any, member: str) -> list[str]:
        return list(spec.input_of(member).columns)

    def manifest_section(self, spec: Any, job_id: str) -> dict[str, Any]:
        return {"name": self.name, "protocol": PROTOCOL, **self._params(spec).model_dump(mode="json")}

    def advance(self, ctx: JobContext) -> Progress:
        limits = params_of(ctx.manifest["engine"]).limits
        for t in ctx.tasks():
            if t.status not in ("new", "running"):
                continue
            try:
                if t.status == "new":  # the step runs the code and answers when it is released (or refused)
                    got = ctx.call(t.member, "POST", f"/tasks/{ctx.job_id}/run", {},
                                   timeout=limits.wall_seconds + 120.0)
                else:  # a step another call started (a restarted coordinator): ask how it is going
                    got = ctx.call(t.member, "GET", f"/tasks/{ctx.job_id}")
            except PartyRefused as exc:
                return Progress("failed", f"{exc.member} refused: {exc.error}: {exc.node_detail}")
            except PartyUnavailable as exc:
                return ctx.silent(t.member, exc)
            if got["status"] == "failed":
                return Progress("failed", f"{t.member}: {got.get('error')}")
            ctx.update_task(t.member, status=got["status"], stage=got["stage"], detail_json=json.dumps(got))
        if not all(t.status == "succeeded" for t in ctx.tasks()):
            return RUNNING
        try:
            got = ctx.call(ctx.manifest["requester"], "GET", f"/tasks/{ctx.job_id}/outputs/{OUTPUT}")
        except PortError as exc:
            return Progress("failed", f"collecting the result failed: {exc.detail}")
        return Progress("done", results={OUTPUT: {k: got[k] for k in ("name", "receiver", "envelope_b64", "sm3")}})

    def abort(self, ctx: JobContext) -> None:
        for t in ctx.tasks():
            if t.status in ("new", "succeeded", "failed", "stopped"):
                continue
            try:
                ctx.call(t.member, "POST", f"/tasks/{ctx.job_id}/stop")
            except PortError:
                pass
