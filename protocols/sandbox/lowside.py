"""The PySyft 0.9.5 low side: a datasite holding mock data only, driven by dcp over a pipe.

Runs with the syft venv's interpreter (``.venv-syft``, CPython 3.12), confined by
:class:`protocols.sandbox.lowside_client.LowSide` (bubblewrap: no network but its own loopback, only
its state directory writable, none of the node's files). It imports nothing of dcp's except the
stand-alone relay. PySyft <= 0.9.5 executes approved code inside its server (CVE-2026-31220): that is
why this datasite never receives private data and never approves or runs anything itself; dcp runs the
code on the high side and deposits the result here.

Protocol: one JSON object per line on stdin, one JSON answer per line on the original stdout (syft's own
output goes to stderr). Operations: ``publish`` (a mock CSV as a dataset), ``create_researcher``,
``pending`` (code requests waiting for the owner), ``deposit`` (a released result, approving the
request), ``reject`` (with the reason), ``stop``. The first line written is ``{"ready": …}``.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import traceback
import urllib.request
from typing import Any

ADMIN_EMAIL = "info@openmined.org"


def _wait_metadata(port: int, timeout: float) -> None:
    """``launch()`` stops waiting after 20 s; under load the server needs longer."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/v2/metadata"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 — loopback, our own server
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"datasite metadata not served on port {port} after {timeout:g} s")
        time.sleep(0.5)


class Datasite:
    """The datasite and its admin client (the admin password is random and never leaves this process)."""

    def __init__(self, sy: Any, client: Any) -> None:
        self.sy = sy
        self.client = client

    def publish(self, dataset: str, csv: str, description: str) -> dict[str, Any]:
        import pandas as pd

        mock = pd.read_csv(csv)
        # the private slot holds the schema only (no rows): PySyft never has anything but the mock, and
        # code it would execute itself (it does, on approval) sees an empty frame
        asset = self.sy.Asset(name=dataset, description=f"MOCK data of {dataset} (no real values)",
                              data=mock.head(0), mock=mock, mock_is_real=False)
        ds = self.sy.Dataset(name=dataset, description=description, asset_list=[asset])
        self.client.upload_dataset(ds)
        return {"dataset": dataset, "rows": len(mock), "columns": list(mock.columns)}

    def create_researcher(self, email: str, name: str, password: str, institution: str = "") -> dict[str, Any]:
        from syft.service.user.user_roles import ServiceRole

        self.client.users.create(email=email, name=name, password=password, password_verify=password,
                                 institution=institution, role=ServiceRole.DATA_SCIENTIST)
        return {"email": email}

    def researchers(self) -> list[dict[str, str]]:
        from syft.service.user.user_roles import ServiceRole

        return sorted(({"email": u.email, "name": u.name, "institution": u.institution or ""}
                       for u in self.client.users.get_all() if u.role == ServiceRole.DATA_SCIENTIST),
                      key=lambda u: u["email"])

    def datasets(self) -> list[str]:
        return sorted(ds.name for ds in self.client.datasets)

    def _asset_names(self) -> dict[str, str]:
        names = {}
        for ds in self.client.datasets:
            for asset in ds.assets:
                names[str(asset.action_id)] = ds.name
        return names

    def pending(self) -> list[dict[str, Any]]:
        from syft.service.request.request import RequestStatus

        assets = self._asset_names()
        out = []
        for req in self.client.requests:
            if req.status != RequestStatus.PENDING:
                continue
            code = req.code
            inputs: dict[str, str] = {}
            for kwargs in (code.input_policy_init_kwargs or {}).values():
                for arg, uid in kwargs.items():
                    inputs[arg] = assets.get(str(uid), str(uid))
            out.append({
                "request_id": str(req.id), "code": code.raw_code, "function": code.service_func_name,
                "researcher": {"email": req.requesting_user_email, "name": req.requesting_user_name,
                               "verify_key": str(req.requesting_user_verify_key)},
                "inputs": inputs,
            })
        return out

    def _request(self, request_id: str) -> Any:
        for req in self.client.requests:
            if str(req.id) == request_id:
                return req
        raise KeyError(f"no request {request_id}")

    def deposit(self, request_id: str, result: Any) -> dict[str, Any]:
        """Deposit the high side's released result and release it to the researcher, the low-side way.

        On a low side PySyft approves nothing itself: a request counts as approved once its owner may read
        an output of it, which is what syncing from a high-side datasite grants. dcp is the high side, so
        this grants the same READ permissions a sync would (result, job, log), and nothing else."""
        from syft.service.action.action_object import ActionObject
        from syft.service.action.action_permissions import ActionObjectPermission, ActionPermission
        from syft.service.job.job_stash import Job
        from syft.service.log.log import SyftLog
        from syft.types.errors import SyftException

        req = self._request(request_id)
        owner = req.code.user_verify_key
        job = req.deposit_result(result)  # the job and its output history; no permission for anyone yet
        if type(job).__name__ == "SyftError":
            raise SyftException(public_message=str(job))
        read = ActionPermission.READ
        got = self.client.api.services.sync.sync_items(
            [], {ActionObject: [ActionObjectPermission(job.result.id.id, read, owner)],
                 Job: [ActionObjectPermission(job.id, read, owner)],
                 SyftLog: [ActionObjectPermission(job.log_id, read, owner)]},
            [], {}, unignored_batches=set())
        if type(got).__name__ == "SyftError":
            raise SyftException(public_message=str(got))
        status = str(self._request(request_id).status)
        if "APPROVED" not in status:
            raise SyftException(public_message=f"the deposited result did not release the request ({status})")
        return {"request_id": request_id, "deposited": True, "job": str(getattr(job, "id", "")), "status": status}

    def reject(self, request_id: str, reason: str) -> dict[str, Any]:
        got = self._request(request_id).deny(reason=reason)
        if type(got).__name__ == "SyftError":
            raise RuntimeError(str(got))
        return {"request_id": request_id, "rejected": True}


_OPS = ("publish", "create_researcher", "researchers", "pending", "datasets", "deposit", "reject")


def serve(name: str, port: int, socket_path: str | None) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # syft's prints go to stderr; stdout is the protocol's
    import syft as sy

    relay = None
    try:
        # a LOW side: PySyft itself refuses to run code on the assets here (only on mocks), and tells its
        # users the datasite "only hosts mock or synthetic data"; results come from the high side (dcp)
        handle = sy.orchestra.launch(name=name, port=port, host="127.0.0.1", dev_mode=True, reset=True,
                                     server_side_type="low")
    except Exception as exc:  # noqa: BLE001 — answered, then out: syft's threads would keep us alive
        traceback.print_exc()
        proto.write(json.dumps({"ok": False, "error": f"launch failed: {type(exc).__name__}: {exc}"}) + "\n")
        os._exit(1)
    try:
        _wait_metadata(port, 300)
        client = sy.login(url="http://127.0.0.1", port=port, email=ADMIN_EMAIL, password="changethis")
        client.account.set_password(secrets.token_urlsafe(24), confirm=False)  # the default is public
        site = Datasite(sy, client)
        if socket_path:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its neighbour, even under -I
            from _relay import unix_to_tcp
            relay = unix_to_tcp(socket_path, "127.0.0.1", port)
        side = str(client.metadata.server_side_type)
        if side != "low":
            raise RuntimeError(f"the datasite runs as the {side} side, not the low side")
        proto.write(json.dumps({"ready": {"name": name, "port": port, "pid": os.getpid(), "side": side}}) + "\n")
        for line in sys.stdin:
            if not line.strip():
                continue
            msg = json.loads(line)
            op = msg.pop("op")
            if op == "stop":
                proto.write(json.dumps({"ok": True}) + "\n")
                break
            try:
                got = getattr(site, op)(**msg) if op in _OPS else None
                if got is None and op not in ("pending", "datasets", "researchers"):
                    raise ValueError(f"unknown operation {op!r}")
                proto.write(json.dumps({"ok": True, "value": got}, default=str) + "\n")
            except Exception as exc:  # noqa: BLE001 — every failure is answered, the datasite stays up
                traceback.print_exc()
                proto.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        proto.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
    finally:
        if relay is not None:
            relay.close()
        handle.land()
        proto.close()
        sys.stderr.flush()
        os._exit(0)  # syft leaves non-daemon threads behind


if __name__ == "__main__":  # syft's launch spawns processes: the guard is required
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--socket", default=None, help="Unix socket to relay to the datasite's port")
    a = ap.parse_args()
    serve(a.name, a.port, a.socket)
