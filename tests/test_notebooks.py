"""The user notebooks (issue #17 item 4) executed with nbclient against ONE real federation (anvil,
contracts, coordinator, three nodes over 国密 mutual TLS, real SecretFlow parties):

* the bank analyst submits a job, watches it (the departments' officers approve it meanwhile),
  opens the sealed results and plots ROC/KS against a bank-only baseline;
* the tax officer reads the inbox, checks the manifest hash three ways and approves a second job
  (which power then rejects, so it never runs);
* the regulator reads authorizations and receipts from the chain, plots usage and gives the verdict.

Each notebook's parameters are its first cell, replaced here; the notebooks in git carry no outputs.
(``notebooks/researcher.ipynb`` has its own test.)"""

from __future__ import annotations

import threading
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from common.settings import project_root

from .coordinator.fedkit import federation, vertical_spec

pytestmark = pytest.mark.slow

NOTEBOOKS = project_root() / "notebooks"
MINE = ("bank_analyst.ipynb", "department_officer.ipynb", "regulator.ipynb")


def run_notebook(name: str, params: dict, timeout: int = 300) -> nbformat.NotebookNode:
    """Execute ``notebooks/name`` with its first (parameters) cell replaced by ``params``."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert "parameters" in nb.cells[0].metadata.get("tags", []), f"{name}: the first cell holds the parameters"
    nb.cells[0].source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(project_root())}}).execute()
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    """Every text output of the executed notebook (streams and plain-text results)."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


def images_of(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_notebooks_in_git_are_stripped_and_bilingual() -> None:
    for name in MINE:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert any("\u4e00" <= ch <= "\u9fff" for ch in prose) and "The " in prose, name


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    with federation(tmp_path_factory.mktemp("nbfed"), 1200, 17, {"node_timeout_s": 6.0, "poll_interval_s": 0.3}) as f:
        yield f


def _officers_approve(fed, stop: threading.Event) -> None:
    """Every department's officer approves every job waiting for it (the analyst's job), until ``stop``."""
    c, nodes = fed["client"], fed["state"].nodes
    done: set[tuple[str, str]] = set()
    while not stop.is_set():
        for job in c.list(state="PENDING_APPROVAL"):
            for m in ("bank", "tax", "power"):
                if (job.job_id, m) not in done and job.approvals.get(m) in (None, "pending"):
                    c.approve(job.job_id, m, nodes[m])
                    done.add((job.job_id, m))
        stop.wait(0.3)


def test_the_three_notebooks_against_one_federation(fed, no_leaked_processes) -> None:
    st, c = fed["state"], fed["client"]
    base = {"FEDERATION_DIR": str(st.work_dir)}
    bank = next(p for p in fed["data"].parties if p.name == "bank")

    # the analyst: catalog, submit, watch (the officers approve meanwhile), results, ROC/KS and baseline
    stop = threading.Event()
    officers = threading.Thread(target=_officers_approve, args=(fed, stop), daemon=True)
    officers.start()
    try:
        nb = run_notebook("bank_analyst.ipynb", {**base, "BANK": "bank", "LABEL_DATASET": "bank_2024",
                                                 "LABEL_COLUMN": "default", "JOIN_KEY": "uscc",
                                                 "BANK_DATA_CSV": str(bank.csv_path), "MAX_GRADE": 3,
                                                 "EPOCHS": 2, "TIMEOUT_S": 300})
    finally:
        stop.set()
        officers.join(30)
    text = text_of(nb)
    assert "SUCCEEDED" in text and "bank only" in text and images_of(nb) == 1, text[-2000:]
    analyst_job = next(line.split()[1] for line in text.splitlines() if line.startswith("job "))
    assert c.status(analyst_job).state.value == "SUCCEEDED"

    # the tax officer approves a second job after checking its manifest hash; power rejects it
    second = c.submit(vertical_spec(fed, "a second model (notebook test)"))
    nb = run_notebook("department_officer.ipynb", {**base, "MEMBER": "tax", "OFFICER": "approver",
                                                   "JOB_ID": second, "DECISION": "approve", "REASON": ""})
    text = text_of(nb)
    assert "approved by" in text and second in text, text[-2000:]
    assert c.status(second).approvals.get("tax") == "approved"
    c.reject(second, "power", st.nodes["power"], "not for this purpose")
    assert c.wait(second, timeout=60).state.value == "REJECTED"

    # the regulator: the chain alone — one authorization (the analyst's job), its receipts, clean
    nb = run_notebook("regulator.ipynb", {**base, "RPC_URL": None, "REGISTRY": None,
                                          "KNOWN_DATASETS": {m: [f"{m}_2024"] for m in ("bank", "tax", "power")}})
    text = text_of(nb)
    assert "CLEAN" in text and "1 authorizations, 3 receipts" in text and images_of(nb) == 1, text[-2000:]
    assert "tax/tax_2024" in text and "power/power_2024" in text


def test_the_three_notebooks_are_there() -> None:
    names = {p.name for p in Path(NOTEBOOKS).glob("*.ipynb")}
    assert set(MINE) <= names, names
