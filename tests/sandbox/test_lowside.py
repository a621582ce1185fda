"""The researcher flow in real processes: a confined PySyft 0.9.5 low side with mock data, a researcher
with the ordinary syft client, dcp picking the request up, running it isolated on the private data,
checking it against the output policy and depositing the result (or the refusal) back into PySyft.

One datasite for the module (import ≈ 25 s, launch ≈ 20 s, ≈ 950 MiB).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pytest

from nodes.models import ColumnMeta
from nodes.services.mock import mock_frame
from protocols.sandbox.errors import SandboxOutputRefused
from protocols.sandbox.isolate import SandboxLimits, code_sm3, run_isolated
from protocols.sandbox.lowside_client import (
    CodeRequest,
    LowSide,
    MockPublicationRefused,
    lowside_available,
    syft_python,
)
from protocols.sandbox.output_policy import OutputPolicy, check_release

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not lowside_available(), reason="the syft venv (.venv-syft) or bubblewrap is missing"),
]

DATASET = "tax_enterprises"
EMAIL, PASSWORD = "li.wei@university.example.cn", "researcher-pw-2026"
RESEARCHER = Path(__file__).with_name("researcher.py")
METAS = [
    ColumnMeta(dataset_id=1, position=0, name="uscc", dtype="uscc", grade=3),
    ColumnMeta(dataset_id=1, position=1, name="sector", dtype="text", grade=1),
    ColumnMeta(dataset_id=1, position=2, name="vat_paid", dtype="float", grade=2),
    ColumnMeta(dataset_id=1, position=3, name="employees", dtype="int", grade=2),
]
POLICY = OutputPolicy(min_group_size=10)


@pytest.fixture(scope="module")
def lowside(tmp_path_factory: pytest.TempPathFactory, private_csv: Path) -> Iterator[LowSide]:
    site = LowSide(tmp_path_factory.mktemp("lowside"), "tax-bureau-lowside")
    site.start()
    try:
        private = pd.read_csv(private_csv)
        site.publish_mock(DATASET, mock_frame(private, METAS, rows=120, seed=5, min_group_size=10), allowed=True)
        site.create_researcher(EMAIL, "Li Wei", PASSWORD, institution="University")
        yield site
    finally:
        site.stop()


def _json_line(stream: IO[str]) -> dict[str, Any]:
    """The next JSON object line (the syft client prints notices of its own on stdout)."""
    for line in stream:
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("the researcher process ended without answering")


def officers_approve(request: CodeRequest) -> str:
    """The approved code hash. The officers' review in their inbox, the signed approval of the manifest and
    the authorization on chain come when the sandbox engine is wired (#14); nothing of them is simulated
    here: the hash the officers would approve is the one the request carries."""
    return request.code_sm3


def test_a_mock_is_published_only_when_the_policy_allows_it(lowside: LowSide, private_csv: Path) -> None:
    before = lowside.datasets()
    private = pd.read_csv(private_csv)
    with pytest.raises(MockPublicationRefused):
        lowside.publish_mock("court_enforcement", private.head(20), allowed=False)
    assert lowside.datasets() == before == [DATASET]


def test_the_datasite_is_confined(lowside: LowSide, node_files: dict[str, Path], private_csv: Path) -> None:
    import psutil

    pids = [p for p in lowside.pids()
            if psutil.Process(p).name() != "bwrap" and "lowside.py" in " ".join(psutil.Process(p).cmdline())]
    assert pids
    pid = pids[0]
    assert psutil.Process(pid).uids().real != 0
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")  # only its own loopback
    root = Path(f"/proc/{pid}/root")
    assert (root / "usr").is_dir() and (root / str(lowside.state_dir).lstrip("/")).is_dir()
    for path in (*node_files.values(), private_csv, Path("/etc/shadow"), Path.cwd() / "nodes"):
        assert not (root / str(path).lstrip("/")).exists(), path


def test_the_researcher_flow(lowside: LowSide, private_csv: Path, no_leaked_processes: None) -> None:
    private = pd.read_csv(private_csv)
    log_path = lowside.state_dir / "researcher.log"
    with open(log_path, "w") as log:
        researcher = subprocess.Popen(
            [str(syft_python()), str(RESEARCHER), lowside.url, str(lowside.port), EMAIL, PASSWORD, DATASET],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
        )
    try:
        assert researcher.stdout is not None and researcher.stdin is not None
        seen = _json_line(researcher.stdout)
        assert seen["datasets"] == [DATASET]
        assert seen["mock_columns"] == ["uscc", "sector", "vat_paid", "employees"] and seen["mock_rows"] == 120
        assert not set(private["uscc"]) & set(pd.read_csv(lowside.state_dir / "mock" / f"{DATASET}.csv")["uscc"])

        requests = {r.function: r for r in lowside.pending_requests()}
        assert set(requests) == {"sector_vat", "raw_rows"}
        agg = requests["sector_vat"]
        assert agg.inputs == {"tax": DATASET} and agg.researcher.email == EMAIL
        assert "def sector_vat(tax):" in agg.code and agg.code_sm3 == code_sm3(agg.code)

        limits = SandboxLimits(cpu_seconds=10, wall_seconds=120)
        run = run_isolated(agg.code, officers_approve(agg), agg.function, {"tax": private_csv}, limits)
        released = check_release(run.result, run.stdout, POLICY, len(private), private["uscc"])
        lowside.deposit_result(agg.request_id, released.result)

        rows = requests["raw_rows"]
        run = run_isolated(rows.code, officers_approve(rows), rows.function, {"tax": private_csv}, limits)
        with pytest.raises(SandboxOutputRefused) as refused:
            check_release(run.result, run.stdout, POLICY, len(private), private["uscc"])
        lowside.reject(rows.request_id, f"output refused by the data owner's policy: {refused.value}")
        assert lowside.pending_requests() == []

        researcher.stdin.write("answered\n")
        researcher.stdin.flush()
        got = _json_line(researcher.stdout)
    finally:
        researcher.kill()
        researcher.wait()

    want = private.groupby("sector").agg(count=("vat_paid", "size"), mean_vat=("vat_paid", "mean")).reset_index()
    assert isinstance(got["sector_vat"], dict), (got, log_path.read_text()[-3000:])
    table = got["sector_vat"]["table"]
    assert [r[0] for r in table["data"]] == want["sector"].tolist()
    assert [r[1] for r in table["data"]] == want["count"].tolist() and sum(want["count"]) == 200
    assert [r[2] for r in table["data"]] == pytest.approx(want["mean_vat"].tolist())
    assert seen["mock_result"]["count"] != want["count"].tolist()  # the mock is not the data
    assert "APPROVED" in got["requests"]["sector_vat"]["status"]
    assert "REJECTED" in got["requests"]["raw_rows"]["status"]
    assert "unified social credit code" in got["requests"]["raw_rows"]["reason"]
    assert not any(u in json.dumps(got) for u in private["uscc"])
