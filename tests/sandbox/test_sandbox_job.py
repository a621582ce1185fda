"""The sandbox job kind in real processes, as an operator runs it: a federation (anvil, coordinator, two
nodes over 国密 TLS) whose tax node has an ``engines.sandbox`` section, so the node itself launches its
confined PySyft low side with the mock, runs the bridge turning each code request into a ``sandbox`` job,
and its admin officer creates the researcher's account; the officers deciding in their inbox, the isolated run, the chain receipt, and the
researcher — the notebook ``notebooks/researcher.ipynb`` on a kernel in ``.venv-syft``, or the ordinary
syft client in its own process — receiving the result or the reason the PySyft way.

One federation (its node's datasite included) for the module: ≈ 30 s + ≈ 45 s idle.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import psutil
import pytest

from coordinator.manifest import dataset_chain_id
from coordinator.nodeclient import NodeClient
from engines.errors import StepRefused
from engines.sandbox.coordinator import code_sm3
from engines.sandbox.node import SandboxNodeEngine
from federation.launcher import client_for, officer_token
from protocols.crypto.approvals import job_key
from protocols.sandbox.isolate import isolation_available
from protocols.sandbox.lowside_client import lowside_available, syft_python

from ..coordinator.fedkit import DiagnosingClient, chain, started

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "researcher.ipynb"
DATASET = "tax_enterprises"
GRADE4 = "tax_audit_flags"  # a grade-4 column: the policy (sandbox up to grade 3) keeps its mock off the low side
EMAIL = "li.wei@university.example.cn"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),  # ≈ 2.5 min idle; syft's imports crawl on a loaded machine
    pytest.mark.skipif(not (lowside_available() and isolation_available()),
                       reason="the syft venv (.venv-syft) or bubblewrap is missing"),
]

REJECTED_RESEARCHER = """
import json, sys
import syft as sy
url, port, email, pw, dataset = sys.argv[1:6]
client = sy.login(url=url, port=int(port), email=email, password=pw)
asset = client.datasets[dataset].assets[0]

@sy.syft_function_single_use(tax=asset)
def row_dump(tax):
    return tax.to_dict(orient="list")

@sy.syft_function_single_use(tax=asset)
def vat_by_firm(tax):
    return tax[["uscc", "vat_paid"]].head(50).to_dict(orient="records")

for fn in (row_dump, vat_by_firm):
    client.code.request_code_execution(fn)
print(json.dumps({"requested": 2}), flush=True)
sys.stdin.readline()
out = {}
for req in client.requests:
    out[req.code.service_func_name] = {"status": str(req.status), "reason": str(req.deny_reason)}
print(json.dumps(out), flush=True)
"""


def _get(http: Any, url: str, token: str | None = None) -> Any:
    r = http.get(url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory, private_csv: Path) -> Iterator[SimpleNamespace]:
    """The tax node started with its ``engines.sandbox`` section: it launches its low side itself, publishes
    the mock of the listed dataset and runs the bridge; its admin officer creates the researcher's account."""
    root = tmp_path_factory.mktemp("sandboxjob")
    sandbox = {"publish": [DATASET, GRADE4], "mock_rows": 120, "mock_seed": 5, "poll_s": 0.5,
               "output_policy": {"min_group_size": 10}, "limits": {"cpu_seconds": 20, "wall_seconds": 120},
               "expires_in_s": 900}
    members = [
        {"name": "tax", "role": "department",
         "policy": {"max_grade": {"sandbox": 3}, "default_max_grade": 2, "min_group_size": 10},
         "datasets": [{"name": DATASET, "file": str(private_csv), "key_column": "uscc"},
                      {"name": GRADE4, "file": str(private_csv), "key_column": "uscc",
                       "columns": {"employees": {"grade": 4}}}],
         "node": {"engines": {"sandbox": sandbox}}},
        {"name": "bank", "role": "bank", "policy": {}},
    ]
    lowside_pids: list[int] = []
    with started(root, members) as state:
        tax = state.nodes["tax"]
        http = client_for(state, "tax")
        try:
            admin = officer_token(state, "tax", "admin")
            deadline = time.monotonic() + 600  # the datasite's import and launch: ≈ 45 s idle
            while (st := _get(http, f"{tax}/engines", admin)["sandbox"])["state"] != "ready" or \
                    len(st["published"]) + len(st["refused"]) < 2:
                assert st["state"] in ("starting", "ready"), st
                assert time.monotonic() < deadline, st
                time.sleep(1.0)
            made = http.post(f"{tax}/engines/sandbox/researchers", timeout=120,
                             headers={"Authorization": f"Bearer {admin}"},
                             json={"email": EMAIL, "name": "Li Wei", "institution": "University"})
            assert made.status_code == 201, made.text
            approver = officer_token(state, "tax", "approver")
            officer = NodeClient("tax", tax, 60.0, http=http, token=approver)
            site = SimpleNamespace(url=st["url"], port=st["port"],
                                   state_dir=next(state.work_dir.rglob("engines/sandbox/lowside")))
            lowside_pids += _lowside_pids(site.state_dir)
            yield SimpleNamespace(state=state, site=site, root=root, officer=officer, http=http, admin=admin, approver=approver,
                                  status=st, password=made.json()["password"],
                                  client=DiagnosingClient(state.coordinator_url, root, state=state))
        finally:
            http.close()
    # dcp down stopped the node, and the node its low side: nothing of the datasite is left
    assert lowside_pids and not [p for p in lowside_pids if psutil.pid_exists(p)
                                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def _lowside_pids(state_dir: Path) -> list[int]:
    """The host PIDs of the datasite's process tree (bubblewrap and what runs inside)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if str(state_dir / "datasite.sock") in " ".join(p.info["cmdline"] or []):
            out += [p.pid, *(c.pid for c in p.children(recursive=True))]
    return sorted(set(out))


def _requests(desk: SimpleNamespace) -> list[dict[str, Any]]:
    """What the node's bridge did with each PySyft request (officers read it at /engines/sandbox/requests)."""
    return _get(desk.http, f"{desk.state.nodes['tax']}/engines/sandbox/requests", desk.approver)


def _submitted(desk: SimpleNamespace, function: str, alive: Any, timeout: float = 300.0) -> str:
    """Wait until the node's bridge turned the request of ``function`` into a job; its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in _requests(desk):
            if rec.get("job_id") and rec.get("function") == function:
                return rec["job_id"]
        assert alive(), "the researcher stopped before requesting"
        time.sleep(0.5)
    raise AssertionError(f"no request of {function} reached the bridge")


def _answered(desk: SimpleNamespace, job: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the bridge answered the PySyft request of ``job`` (deposited or denied)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = next((r for r in _requests(desk) if r.get("job_id") == job), None)
        if rec and rec["state"] != "submitted":
            return rec
        time.sleep(0.3)
    raise AssertionError(f"the bridge never answered the request of {job}")


def test_the_node_runs_its_low_side_confined(desk: SimpleNamespace) -> None:
    """The node launched its PySyft datasite as the LOW side, in bubblewrap: a uid of its own, its own
    network namespace, and none of the node's database, keystore, work files or the private CSV."""
    st = desk.status
    assert st["side"] == "low" and st["published"] == [DATASET] and st["port"] == desk.site.port
    assert list(st["refused"]) == [GRADE4] and "employees" in st["refused"][GRADE4]
    inside = [p for p in _lowside_pids(desk.site.state_dir)
              if psutil.Process(p).name() != "bwrap" and "lowside.py" in " ".join(psutil.Process(p).cmdline())]
    assert inside
    pid = inside[0]
    assert psutil.Process(pid).uids().real != 0
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    node_dir = desk.state.work_dir / "nodes" / "tax"
    secrets_ = [*node_dir.glob("*.db"), node_dir / "node.yaml", node_dir / "session.key",
                *desk.state.keys_dir.glob("tax*"), *desk.state.passphrase_files.values()]
    assert any(p.exists() for p in secrets_)
    root = Path(f"/proc/{pid}/root")
    assert (root / str(desk.site.state_dir).lstrip("/")).is_dir()
    for path in secrets_:
        assert not (root / str(path).lstrip("/")).exists(), path
    assert list((root / str(node_dir).lstrip("/")).iterdir()) == [root / str(node_dir / "engines").lstrip("/")]


def test_only_the_nodes_admin_officers_create_researcher_accounts(desk: SimpleNamespace) -> None:
    """A member (the bank, even the coordinator), a bad token, an approver: refused, and no account appears."""
    tax = desk.state.nodes["tax"]
    url = f"{tax}/engines/sandbox/researchers"
    body = {"email": "mallory@evil.example.com", "name": "Mallory", "password": "mallory-pw-123456"}
    before = _get(desk.http, url, desk.admin)
    assert EMAIL in [r["email"] for r in before] and body["email"] not in [r["email"] for r in before]
    approver = desk.approver
    clients = {m: client_for(desk.state, m) for m in ("bank", "coordinator")}
    try:
        for who, http, headers, want in (
            ("bank member", clients["bank"], {}, (403, "Forbidden")),
            ("coordinator", clients["coordinator"], {}, (403, "Forbidden")),
            ("forged token", clients["bank"], {"Authorization": "Bearer dcp1.forged.token"}, (401, "NotAuthenticated")),
            ("approver officer", desk.http, {"Authorization": f"Bearer {approver}"}, (403, "Forbidden")),
        ):
            r = http.post(url, json=body, headers=headers, timeout=60)
            assert (r.status_code, r.json()["error"]) == want, (who, r.text)
        listed = clients["bank"].get(url, timeout=60)  # nor may a member list the accounts
        assert (listed.status_code, listed.json()["error"]) == (403, "Forbidden")
    finally:
        for c in clients.values():
            c.close()
    assert _get(desk.http, url, desk.admin) == before  # no account was created
    dup = desk.http.post(url, json={"email": EMAIL, "name": "Li Wei again"}, timeout=60,
                         headers={"Authorization": f"Bearer {desk.admin}"})
    assert (dup.status_code, dup.json()["error"]) == (409, "ResearcherExists")
    bad = desk.http.post(url, json={"email": "not-an-address", "name": "X"}, timeout=60,
                         headers={"Authorization": f"Bearer {desk.admin}"})
    assert (bad.status_code, bad.json()["error"]) == (422, "InvalidRequest")
    assert _get(desk.http, url, desk.admin) == before


def test_an_admin_officer_adds_researchers_with_the_cli(desk: SimpleNamespace,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dcp.cli import build_app

    monkeypatch.setenv("DCP_FEDERATION_DIR", str(desk.state.work_dir))
    base = ["--url", desk.state.nodes["tax"], "--member", "tax"]
    run = CliRunner().invoke
    out = run(build_app(), ["node", "researchers", "add", "zhang.min@stats.example.cn", "--name", "Zhang Min",
                            "--institution", "Statistics Bureau", *base, "--token", desk.admin])
    assert out.exit_code == 0, out.output
    assert "initial password (shown once): " in out.output
    out = run(build_app(), ["node", "researchers", "list", *base, "--token", desk.approver])
    assert out.exit_code == 0 and "zhang.min@stats.example.cn\tZhang Min\tStatistics Bureau" in out.output
    out = run(build_app(), ["node", "researchers", "add", "eve@evil.example.com", "--name", "Eve", *base,
                            "--token", desk.approver])
    assert out.exit_code == 1 and "Forbidden" in out.output
    out = run(build_app(), ["node", "engines", *base, "--token", desk.approver])
    assert out.exit_code == 0 and json.loads(out.output)["sandbox"]["side"] == "low"
    assert "eve@evil.example.com" not in json.dumps(_get(desk.http, f"{base[1]}/engines/sandbox/researchers",
                                                        desk.admin))


def _inbox(desk: SimpleNamespace, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (req := desk.officer.find_approval(job)) is None:
        assert time.monotonic() < deadline, f"{job} never reached tax's inbox"
        time.sleep(0.3)
    return req


def _runs(desk: SimpleNamespace, job: str) -> int:
    return chain({"state": desk.state}).runs(job_key(job), dataset_chain_id("tax", DATASET))


def _kernel(tmp: Path) -> Path:
    """A kernel spec for the notebook: ipykernel in .venv-syft (the notebook uses syft)."""
    spec = tmp / "jupyter" / "kernels" / "dcp-syft"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(syft_python()), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3.12 (.venv-syft)", "language": "python"}))
    return tmp / "jupyter"


def test_the_researcher_notebook_receives_the_approved_aggregate(
        desk: SimpleNamespace, private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        no_leaked_processes: None) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert "LOWSIDE_PORT" in nb.cells[0].source  # the parameters come first
    nb.cells[0].source = (f"LOWSIDE_URL = {desk.site.url!r}\nLOWSIDE_PORT = {desk.site.port}\nEMAIL = {EMAIL!r}\n"
                          f"PASSWORD = {desk.password!r}\nDATASET = {DATASET!r}\nWAIT_S = 400\nPOLL_S = 0.5\n")
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel(tmp_path)))
    runner = NotebookClient(nb, kernel_name="dcp-syft", timeout=480, resources={"metadata": {"path": str(tmp_path)}})
    failed: list[BaseException] = []

    def run() -> None:
        try:
            runner.execute()
        except BaseException as exc:  # noqa: BLE001 - asserted below
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        job = _submitted(desk, "sector_summary", lambda: thread.is_alive() and not failed)
        got = desk.client.manifest(job)["manifest"]
        section = got["engine"]
        assert got["kind"] == "sandbox" and got["requester"] == "tax"  # the department, on the researcher's behalf
        assert section["researcher"]["email"] == EMAIL and EMAIL in got["purpose"]
        assert "def sector_summary(tax):" in section["code"] and section["code_sm3"] == code_sm3(section["code"])
        assert got["inputs"][0]["dataset"] == DATASET
        assert got["inputs"][0]["columns"] == ["uscc", "sector", "vat_paid", "employees"]
        assert section["output_policy"]["min_group_size"] == 10
        # the officers see the code in full in their inbox, inside what their node signs
        req = _inbox(desk, job)
        assert req["manifest"]["engine"] == section
        assert any(section["code_sm3"] in line for line in req["summary"])
        assert _runs(desk, job) == 0
        assert desk.client.approve(job, "tax", desk.state.nodes["tax"])["status"] == "approved"
        final = desk.client.wait(job, timeout=300)
        assert final.state.value == "SUCCEEDED", final.reason
        assert _runs(desk, job) == 1  # the receipt is on chain
        assert _answered(desk, job)["state"] == "deposited"
        thread.join(timeout=420)
        assert not thread.is_alive(), "the notebook did not finish"
    finally:
        if thread.is_alive():  # the test failed while the notebook waits: end its kernel
            import psutil

            for p in psutil.Process().children(recursive=True):
                if "ipykernel_launcher" in " ".join(p.cmdline()):
                    p.kill()
        thread.join(timeout=60)
    assert not failed, failed
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    answer = json.loads(text.split("RESEARCHER-ANSWER ", 1)[1])
    private = pd.read_csv(private_csv)
    want = private.groupby("sector").agg(count=("vat_paid", "size"), mean_vat=("vat_paid", "mean")).reset_index()
    table = answer["result"]["table"]
    assert [r[0] for r in table["data"]] == want["sector"].tolist()
    assert [r[1] for r in table["data"]] == want["count"].tolist()
    assert [r[2] for r in table["data"]] == pytest.approx(want["mean_vat"].tolist())
    assert not any(u in json.dumps(answer) for u in private["uscc"])
    # PySyft never held a private row: its state directory has the mock only
    for f in desk.site.state_dir.rglob("*"):
        if f.is_file() and f.stat().st_size < 50 << 20:
            data = f.read_bytes()
            assert not any(u.encode() in data for u in private["uscc"][:20]), f


def test_rejected_or_refused_requests_release_nothing_and_the_researcher_reads_why(
        desk: SimpleNamespace, private_csv: Path, no_leaked_processes: None) -> None:
    script = desk.root / "rejected_researcher.py"  # syft reads a function's source from its file
    script.write_text(REJECTED_RESEARCHER)
    log = open(desk.root / "rejected-researcher.log", "w")  # noqa: SIM115 - closed in finally
    researcher = subprocess.Popen(
        [str(syft_python()), str(script), desk.site.url, str(desk.site.port), EMAIL, desk.password, DATASET],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert researcher.stdin is not None and researcher.stdout is not None
        for line in researcher.stdout:
            if line.startswith("{"):
                break
        dump = _submitted(desk, "row_dump", lambda: researcher.poll() is None)
        listing = _submitted(desk, "vat_by_firm", lambda: researcher.poll() is None)
        tax = desk.state.nodes["tax"]
        as_coordinator = client_for(desk.state, "coordinator")
        try:
            # the officers reject the row dump: it never runs, not even when the step is called directly
            _inbox(desk, dump)
            reason = "row-level data is never released to researchers"
            assert desk.client.reject(dump, "tax", tax, reason)["status"] == "rejected"
            final = desk.client.wait(dump, timeout=120)
            assert final.state.value == "REJECTED" and reason in (final.reason or "")
            forced = as_coordinator.post(f"{tax}/tasks/{dump}/run", json={}, timeout=30)
            assert (forced.status_code, forced.json()["error"]) == (403, "NotAuthorized"), forced.text
            assert as_coordinator.get(f"{tax}/tasks/{dump}", timeout=30).status_code == 404
            assert _runs(desk, dump) == 0
            # the officers approve the listing; a step body carrying other code is refused by name
            _inbox(desk, listing)
            assert desk.client.approve(listing, "tax", tax)["status"] == "approved"
            other = as_coordinator.post(f"{tax}/tasks/{listing}/run", json={"code": "def f(tax): return {}"}, timeout=30)
            assert (other.status_code, other.json()["error"]) == (422, "TaskMismatch"), other.text
            final = desk.client.wait(listing, timeout=300)
            assert final.state.value == "FAILED" and "SandboxOutputRefused" in (final.reason or ""), final.reason
            # its code read the private rows: that use is on chain although nothing was released
            assert _runs(desk, listing) == 1
        finally:
            as_coordinator.close()
        assert _answered(desk, dump)["state"] == _answered(desk, listing)["state"] == "denied"
        researcher.stdin.write("answered\n")
        researcher.stdin.flush()
        got = next(json.loads(line) for line in researcher.stdout if line.startswith("{"))
    finally:
        researcher.kill()
        researcher.wait()
        log.close()
    assert "REJECTED" in got["row_dump"]["status"] and reason in got["row_dump"]["reason"]
    assert "REJECTED" in got["vat_by_firm"]["status"] and "output_refused" in got["vat_by_firm"]["reason"]
    private = pd.read_csv(private_csv)
    assert not any(u in json.dumps(got) for u in private["uscc"])


class _Port:
    """A node's task port as the sandbox step sees it, for the one check that needs no federation."""

    def __init__(self, section: dict[str, Any]) -> None:
        self.job_id = "job-changed"
        self.approved = {"engine": section, "inputs": [{"dataset": DATASET, "columns": ["sector"]}]}
        self.extracted = 0

    def policy(self) -> Any:
        return SimpleNamespace(min_group_size=10, privacy_budgets={})

    def scratch(self) -> Path:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="dcp-step-"))

    def stage(self, stage: str) -> None:
        return None

    def key_column(self, dataset: str) -> str:
        return "uscc"

    def extract(self, dataset: str, columns: list[str], dest: Path) -> int:
        self.extracted += 1
        pd.DataFrame({"sector": ["a"] * 20}).to_csv(dest, index=False)
        return 20

    def finish(self, outputs: dict[str, bytes], rows: int) -> dict[str, Any]:
        raise AssertionError("code changed after approval was released")


def test_code_changed_after_approval_never_runs(clean_sandbox: None) -> None:
    approved = "def counts(tax):\n    return {'count': int(len(tax))}\n"
    section = {"name": "sandbox", "protocol": "x", "code": approved + "print(open('/etc/passwd').read())\n",
               "code_sm3": code_sm3(approved), "function": "counts", "inputs": {"tax": DATASET},
               "researcher": {"email": EMAIL}}
    port = _Port(section)
    with pytest.raises(StepRefused) as refused:
        SandboxNodeEngine().step(port, "run", None)  # type: ignore[arg-type]
    assert refused.value.error == "CodeHashMismatch"
    assert port.extracted == 0  # refused before any private data was read


def test_nothing_of_the_coordinator_or_the_nodes_names_the_kind() -> None:
    for module in ("coordinator", "nodes"):
        named = [str(p) for p in (ROOT / module).rglob("*.py") if "sandbox" in p.read_text(encoding="utf-8").lower()]
        assert named == [], module


def test_a_node_refuses_to_start_with_a_malformed_engines_section(tmp_path: Path) -> None:
    from nodes.context import NodeContext
    from nodes.errors import ConfigError
    from nodes.settings import NodeSettings

    for engines, said in (({"nosuch": {}}, "no engine is called 'nosuch'"),
                          ({"sandbox": {"publish": "all", "shell": "/bin/sh"}}, "engines.sandbox"),
                          ({"secretflow": {}}, "runs no service")):
        with pytest.raises(ConfigError) as refused:
            NodeContext.build(NodeSettings(name="tax", work_dir=tmp_path / "node", engines=engines))
        assert said in refused.value.detail, refused.value.detail
