"""A toy third engine, registered from the test suite only: every party of a ``toy_constant`` job
records its usage receipt and the requester's node answers a constant, sealed to the requester.

It touches no coordinator or node module: the coordinator and the nodes load it through the engine
registry (``DCP_ENGINES=tests.toy_engine``), as any next engine would be."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from engines import registry
from engines.base import RUNNING, Engine, JobContext, NodeEngine, Progress
from engines.errors import PartyRefused, PartyUnavailable, PortError

KIND = "toy_constant"
ANSWER = b"42\n"


class ToyEngine(Engine):
    """The coordinator side: ask every party for its step, then collect the requester's answer."""

    name = "toy"
    kinds = (KIND,)
    outputs = {KIND: ("answer",)}

    def manifest_section(self, spec: Any, job_id: str) -> dict[str, Any]:
        return {"name": "toy", "protocol": "toy/constant", "constant": ANSWER.decode().strip()}

    def advance(self, ctx: JobContext) -> Progress:
        for t in ctx.tasks():
            if t.status != "new":
                continue
            try:
                got = ctx.call(t.member, "POST", f"/tasks/{ctx.job_id}/answer", {"note": "toy"})
            except PartyRefused as exc:
                return Progress("failed", f"{exc.member} refused: {exc.error}: {exc.node_detail}")
            except PartyUnavailable as exc:
                return ctx.silent(t.member, exc)
            ctx.update_task(t.member, status=got["status"], stage=got["stage"], detail_json=json.dumps(got))
        if not all(t.status == "succeeded" for t in ctx.tasks()):
            return RUNNING
        requester = ctx.manifest["requester"]
        try:
            got = ctx.call(requester, "GET", f"/tasks/{ctx.job_id}/outputs/answer")
        except PortError as exc:
            return Progress("failed", f"collecting the answer failed: {exc.detail}")
        return Progress("done", results={"answer": {k: got[k] for k in ("name", "receiver", "envelope_b64", "sm3")}})

    def abort(self, ctx: JobContext) -> None:
        for t in ctx.tasks():
            if t.status in ("new", "succeeded", "failed", "stopped"):
                continue
            try:
                ctx.call(t.member, "POST", f"/tasks/{ctx.job_id}/stop")
            except PortError:
                pass


class AnswerIn(BaseModel):
    """The body of the toy's one step."""

    model_config = ConfigDict(extra="forbid")

    note: str


class ToyNodeEngine(NodeEngine):
    """The node side: the requester's node answers the constant; every party records its receipt."""

    kinds = (KIND,)
    steps = {"answer": AnswerIn}

    def __init__(self) -> None:
        self.recovered: list[str] = []

    def step(self, task: Any, name: str, body: BaseModel) -> dict[str, Any]:
        task.stage("answer")
        outputs = {"answer": ANSWER} if task.member == task.approved["requester"] else {}
        return task.finish(outputs, rows=0)

    def recover(self, task: Any) -> None:
        self.recovered.append(task.job_id)


ENGINE = ToyEngine()
NODE_ENGINE = ToyNodeEngine()


def register_engines() -> None:
    """What ``DCP_ENGINES`` calls in every process of the federation."""
    registry.register(ENGINE, NODE_ENGINE)
