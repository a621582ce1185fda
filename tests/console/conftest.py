"""Fixtures of the console tests: a real anvil with the contracts deployed and a federation's jobs
on it (authorizations, receipts, a revocation, a planted audit finding, anchors), the regulator
console served by ``python -m console.regulator``, and the system Chromium driven by Playwright
(started once per module, always closed)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from common.net import free_port
from contracts.backends import AnvilBackend, ChainBackend
from contracts.client import ChainClient
from contracts.models import MemberAdmission, Role, Terms, UsageReceipt

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"
#: Chromium from Debian's ``chromium`` package (the real binary; /usr/bin/chromium is a wrapper script).
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
#: Launch flags for a closed network: no sandbox (root in a container), no GPU, nothing phoning home.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
#: Rows per list page of the console under test (small, so pagination shows).
PAGE_SIZE = 10
#: How many filler jobs the scenario writes (so authorizations span several pages).
FILLER_JOBS = 22


def h(text: str) -> bytes:
    """A 32-byte id/hash for tests."""
    return hashlib.sha256(text.encode()).digest()


def hx(text: str) -> str:
    """:func:`h` as the console writes it (``0x`` hex)."""
    return "0x" + h(text).hex()


@dataclass
class Scenario:
    """What the scenario put on the chain, for the tests to look for."""

    backend: ChainBackend
    client: ChainClient
    names: dict[str, str]
    accounts: dict[str, str]
    datasets: dict[str, bytes]
    main_job: str = "credit-2026-001"
    revoked_job: str = "credit-2026-002"
    early_job: str = "credit-2026-003"
    filler_jobs: list[str] = field(default_factory=list)
    main_receipts: list[UsageReceipt] = field(default_factory=list)

    @property
    def rpc_url(self) -> str:
        return self.backend.node.url  # type: ignore[attr-defined]


def build_scenario(backend: ChainBackend) -> Scenario:
    """Three governors; a coordinator, a bank, three departments (names in Chinese, as a real
    deployment would register them); one dataset each; then:

    * ``credit-2026-001``: tax + power, 3 runs allowed; tax uses it twice, power once, a day apart;
    * ``credit-2026-002``: tax + court; court uses it once; then tax revokes it;
    * ``credit-2026-003``: tax only; tax records a run of *zero seconds* (its times were not
      measured) — the chain accepts it, the audit finds it;
    * ``batch-2026-NNN``: filler jobs on power's data, one receipt each, six hours apart;
    * audit anchors: tax twice, power once.
    """
    acc = backend.accounts
    governors = acc[0:3]
    client = ChainClient.deploy(backend.w3, acc[0], governors, 2)
    names = {"coordinator": "联合建模协调方", "bank": "城市商业银行", "tax": "市税务局",
             "power": "市供电公司", "court": "市中级人民法院"}
    accounts = {"coordinator": acc[3], "bank": acc[4], "tax": acc[5], "power": acc[6], "court": acc[7]}
    roles = {"coordinator": Role.COORDINATOR, "bank": Role.BANK}
    for key, account in accounts.items():
        client.admit(governors, MemberAdmission(account=account, role=roles.get(key, Role.DEPARTMENT),
                                                name=names[key], sm2_public_key=os.urandom(64)))
    datasets = {"tax": h("tax.vat"), "power": h("power.usage"), "court": h("court.cases")}
    for owner, ds in datasets.items():
        client.register_dataset(accounts[owner], ds, h(f"schema:{owner}"), 2)
    sc = Scenario(backend=backend, client=client, names=names, accounts=accounts, datasets=datasets)

    def authorize(job: str, owners: tuple[str, ...], max_runs: int = 3) -> Terms:
        terms = Terms(job_id=h(job), manifest_hash=h(f"manifest:{job}"),
                      dataset_ids=tuple(datasets[o] for o in owners), requester=accounts["bank"],
                      expiry=backend.now() + 60 * 86_400, max_runs=max_runs)
        for o in owners:
            client.approve(accounts[o], terms)
        client.authorize(accounts["coordinator"], terms)
        return terms

    def use(terms: Terms, owner: str, rows: int, started_ago: int = 1800) -> UsageReceipt:
        now = backend.now()
        receipt = UsageReceipt(job_id=terms.job_id, dataset_id=datasets[owner], row_count=rows,
                               result_hash=h(f"result:{terms.job_id.hex()}:{owner}:{now}"),
                               started_at=now - started_ago, finished_at=now)
        client.record_usage(accounts[owner], receipt)
        return receipt

    main = authorize(sc.main_job, ("tax", "power"))
    backend.advance_time(3600)
    sc.main_receipts.append(use(main, "tax", 120_000))
    backend.advance_time(86_400)
    sc.main_receipts.append(use(main, "power", 118_500))
    backend.advance_time(86_400)
    sc.main_receipts.append(use(main, "tax", 120_000))

    revoked = authorize(sc.revoked_job, ("tax", "court"))
    backend.advance_time(3600)
    use(revoked, "court", 45_000)
    client.revoke(accounts["tax"], revoked.job_id)

    early = authorize(sc.early_job, ("tax",))
    backend.advance_time(600)
    created = client.authorization(early.job_id).created_at  # type: ignore[union-attr]
    assert created is not None
    use(early, "tax", 9_999, started_ago=0)

    client.anchor_audit_head(accounts["tax"], h("tax-log-head-1"), 40)
    for i in range(1, FILLER_JOBS + 1):
        job = f"batch-2026-{i:03d}"
        sc.filler_jobs.append(job)
        terms = authorize(job, ("power",), max_runs=1)
        backend.advance_time(3 * 3600)
        use(terms, "power", 10_000 + i)
        backend.advance_time(3 * 3600)
    client.anchor_audit_head(accounts["tax"], h("tax-log-head-2"), 95)
    client.anchor_audit_head(accounts["power"], h("power-log-head-1"), 61)
    return sc


@pytest.fixture(scope="session")
def scenario() -> Iterator[Scenario]:
    """A real anvil with :func:`build_scenario` on it (built once for the console tests, which only
    read it; stopped after)."""
    backend = AnvilBackend()
    try:
        yield build_scenario(backend)
    finally:
        backend.close()


@dataclass
class Served:
    """A console served by a child process."""

    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def regulator_console(scenario: Scenario) -> Iterator[Served]:
    """``python -m console.regulator`` against the scenario's chain (a real process on a free port)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.regulator", "--rpc", scenario.rpc_url,
         "--registry", scenario.client.deployment.registry, "--port", str(port), "--page-size", str(PAGE_SIZE)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/static/console.css", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"the regulator console did not start:\n{out[-3000:]}")
            time.sleep(0.2)
        yield Served(url=url, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chromium_path() -> str | None:
    """The system Chromium's binary, or None."""
    for cand in CHROMIUM_CANDIDATES:
        if os.access(cand, os.X_OK) and not _is_script(cand):
            return cand
    found = shutil.which("chromium")
    return found


def _is_script(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"#!"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """The system Chromium (Debian's ``chromium``) through Playwright: launched once per module with
    ``executable_path`` — never a downloaded browser — and always closed."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        pytest.fail("no system Chromium: run `make bootstrap` as root (requirements/debian.txt) "
                    "or `apt-get install chromium fonts-noto-cjk`")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


# ---------------------------------------------------------------- the node console on a real node


@dataclass(frozen=True)
class Officer:
    """An officer as the console sees one (name, roles)."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Desk:
    """The tests' stand-in for the officers' login (issue #13, not built yet): who is signed in."""

    officer: Officer

    def login(self) -> Officer:
        return self.officer


def inbox_request(job_id: str, **kw: object) -> dict:
    """An approval request as the coordinator sends it to the tax node."""
    from datetime import datetime, timedelta, timezone

    body = {
        "job_id": job_id, "kind": "psi", "protocol": "secretflow/psi-rr22", "requester": "bank_a",
        "requester_role": "bank", "purpose": "find shared small-enterprise customers for pre-loan credit",
        "inputs": [{"dataset": "tax_2024", "columns": ["uscc", "vat_paid"]}],
        "receivers": {"intersection": ["bank_a"]},
        "expiry": (datetime.now(timezone.utc) + timedelta(days=2)).isoformat(), "max_runs": 2,
    }
    body.update(kw)
    return body


def seeded_node(work_dir: Path, desk: Desk, page_size: int = 20, jobs: tuple[str, ...] = ("job-1", "job-2", "job-3")):
    """A real tax node (no chain) with a dataset, a policy and ``jobs`` waiting in its inbox, its
    console mounted at /console with ``desk``'s login; returns the app (enter a TestClient to start it)."""
    import io

    from console.node import create_node_console
    from nodes.app import create_app
    from nodes.settings import NodeSettings
    from tests.authkit import officer_client

    # the inbox requests here are unsigned test requests (the signed path is tested in tests/security)
    app = create_app(NodeSettings(name="tax", work_dir=work_dir, require_signed_requests=False))
    app.mount("/console", create_node_console(app.state.ctx.approvals, officer=desk.login, page_size=page_size))
    frame = pd.DataFrame({"uscc": [f"91310000{i:010d}" for i in range(40)],
                          "vat_paid": [1000.0 + i for i in range(40)]})
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    with officer_client(app) as c:  # the API as the coordinator's TLS peer with a steward's session
        r = c.post("/datasets/upload", data={"name": "tax_2024", "key_column": "uscc"},
                   files={"file": ("t.csv", buf.getvalue().encode(), "text/csv")})
        assert r.status_code == 201, r.text
        assert c.put("/policy", json={"max_grade": {"psi": 3}, "default_max_grade": 3,
                                      "allowed_roles": ["bank"]}).status_code == 200
        for job in jobs:
            assert c.post("/approvals", json=inbox_request(job)).status_code in (200, 201)
    return app


@pytest.fixture(scope="module")
def node_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Desk]]:
    """The tax node with its console, served by uvicorn on a free port in this process (the login
    is the test's :class:`Desk`); stopped after the module."""
    import threading

    import uvicorn

    desk = Desk(Officer("director_li", frozenset({"approver"})))
    app = seeded_node(tmp_path_factory.mktemp("tax-node"), desk)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the node did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", desk
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# ---------------------------------------------------------------- one `dcp up` federation for the browser modules


#: The bank's console lists this many rows per page (so the requester test's job list paginates).
BANK_PAGE_SIZE = 2


@pytest.fixture(scope="session")
def console_fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """ONE federation (``dcp up``: anvil, the contracts, the coordinator, the bank's, tax's and power's
    nodes over 国密 TLS, each with its officers' console listener) shared by the node console's and the
    requester console's browser modules. The bank's node knows where the regulator console will run
    (``regulator_port``; the requester module starts it) and lists two rows per page."""
    from tests.coordinator.fedkit import federation

    regulator_port = free_port()
    coordinator = {"node_timeout_s": 6.0, "poll_interval_s": 0.3, "authorization_mode": "per_owner"}
    node = {"bank": {"regulator_console_url": f"http://127.0.0.1:{regulator_port}",
                     "console_page_size": BANK_PAGE_SIZE, "session_ttl_s": 3600.0}}
    with federation(tmp_path_factory.mktemp("console-fed"), 600, 5, coordinator, node=node) as f:
        f["regulator_port"] = regulator_port
        yield f


#: The sign-in form's labels.
SIGN_IN_WORDS = {
    "zh-CN": {"name": "用户名", "password": "密码", "code": "动态口令（身份验证器应用）", "sign_in": "登录"},
    "en": {"name": "Officer name", "password": "Password", "code": "One-time code (authenticator app)",
           "sign_in": "Sign in"},
}
_last_step: dict[tuple[str, str], int] = {}


def officer_password(state: Any, member: str, officer: str) -> str:
    """The password ``dcp up`` gave ``officer`` of ``member``'s node."""
    return state.officer_password_files[member][officer].read_text().strip()


def fresh_code(state: Any, member: str, officer: str) -> str:
    """The officer's current TOTP code, waiting for the next step if this one was used already (a
    step signs an officer in once)."""
    from console.node.totp import STEP_S, current_code

    secret = (state.officer_password_files[member][officer].parent / f"{officer}.totp").read_text().strip()
    key = (member, officer)
    while int(time.time() // STEP_S) <= _last_step.get(key, -1):
        time.sleep(0.5)
    _last_step[key] = int(time.time() // STEP_S)
    return current_code(secret)


def sign_in_form(page: Any, state: Any, member: str, officer: str, lang: str, as_member: str | None = None) -> None:
    """Fill the console's sign-in form on ``page`` as ``officer`` of ``as_member`` (default: ``member``)."""
    w = SIGN_IN_WORDS[lang]
    who = as_member or member
    page.get_by_label(w["name"]).fill(officer)
    page.get_by_label(w["password"]).fill(officer_password(state, who, officer))
    page.get_by_label(w["code"]).fill(fresh_code(state, who, officer))
    page.get_by_role("button", name=w["sign_in"], exact=True).click()
