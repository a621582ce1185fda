"""`make demo`: the bank-credit scenario end to end through a real local federation.

    python -m scenarios.bank_credit.demo [--n 20000] [--seed 7] [--out var/bank_credit_demo] [--auto-approve]

1. generate the synthetic federation (seeded) and let every member preprocess its own columns;
2. start the federation (anvil + contracts, coordinator, one node process per member);
3. ingest each member's dataset into its own node and register it on chain from the member's account;
4. submit the pre-loan training job as the bank (columns from the catalog);
5. show each member's pending approval request (the manifest in words) and approve it through the
   member's own node — automatically where ``federation.yaml`` says ``auto_approve``, else asked;
6. the coordinator writes the authorization on chain; the job runs (PSI, SS-LR, joint prediction);
7. the bank fetches its sealed results and opens them with its own key; further pre-loan models
   (``extra_models`` in ``federation.yaml``, e.g. SGB) are trained the same way;
8. a year later: every member ingests its new snapshot; the bank submits the in-loan scoring job
   (``vertical_predict`` with the stored model parts of step 6, after the same approvals) and
   monitors its current borrowers (PSI, PDs that rose, the post-loan watch list);
9. the report: federated vs bank-only vs centralized on the same rows and split (AUC, KS, uplift,
   gap, PSI, score bands, ROC/KS plots, HTML), the pre-loan white list and the post-loan section;
10. the regulator's audit of the chain, and each node's audit log reconciled with it (its anchors and
    receipts);
11. everything is stopped — also on error and Ctrl-C.

Its configuration (``federation.yaml``, the job templates, the named errors) is
:mod:`scenarios.bank_credit.demo_config`; what a run records (result lines, stage times, peak memory)
is :mod:`scenarios.bank_credit.demo_record`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from scenarios.bank_credit.demo_config import (
    DEFAULT_CONFIG,
    DEFAULT_JOB,
    ApprovalRefused,
    DemoConfig,
    DemoConfigError,
    DemoError,
    TransientJobFailure,
    load_demo_config,
    resolve_job_template,
)
from scenarios.bank_credit.demo_record import (
    Clock,
    DemoResult,
    JobLine,
    ModelLine,
    RssSampler,
    _record_run_stages,
)
from scenarios.bank_credit.federated import PreparedFederation

__all__ = [  # what the tests, the bench and the CLI take from here (defined in demo_config / demo_record)
    "DEFAULT_CONFIG", "DEFAULT_JOB", "ApprovalRefused", "Clock", "DemoConfig", "DemoConfigError", "DemoError",
    "DemoResult", "JobLine", "TransientJobFailure", "is_transient", "load_demo_config", "main",
    "resolve_job_template", "run_demo",
]

WHITE_LIST_MAX_PD = 0.03
HIGH_RISK_MIN_PD = 0.20


# ---------------------------------------------------------------- the federation steps


def ingest(state: Any, prep: PreparedFederation, say: Callable[[str], None]) -> None:
    """Each member uploads its prepared dataset into its own node and registers it on chain from its own
    account — the members at the same time, as independent organisations would."""
    from concurrent.futures import ThreadPoolExecutor

    from coordinator.chain import connect
    from coordinator.manifest import dataset_chain_id
    from federation.launcher import client_for, officer_token
    from protocols.crypto.keystore import load_keystore

    def one(m: str) -> str:
        p = prep.members[m]
        url = state.nodes[m]
        http = client_for(state, m)  # each member reaches its own node over 国密 mutual TLS
        steward = officer_token(state, m, "steward")  # publishing a dataset is a data steward's act
        with p.csv_path.open("rb") as fh:
            r = http.post(f"{url}/datasets/upload", data={
                "name": p.dataset, "description": p.description, "key_column": "uscc",
                "columns": json.dumps(p.columns)}, files={"file": (p.csv_path.name, fh)}, timeout=600,
                headers={"Authorization": f"Bearer {steward}"})
        if r.status_code >= 400:
            raise DemoError(f"ingest of {m}/{p.dataset} into its node failed: {r.text[:300]}")
        entry = http.get(f"{url}/catalog/{p.dataset}", timeout=60).json()
        keys = load_keystore(state.keys_dir / f"{m}.keystore.json", state.passphrase_of(m))
        owner = connect(state.rpc_url, state.registry, keys.chain_private_key)
        did = dataset_chain_id(m, p.dataset)
        if owner.dataset(did) is None:
            owner.register_dataset(state.accounts[m], did, bytes.fromhex(entry["schema_hash"]), entry["max_grade"])
        return (f"{m}: {entry['row_count']:,} rows, {len(entry['columns'])} columns, max grade {entry['max_grade']} "
                f"→ node {url}; registered on chain")

    with ThreadPoolExecutor(max_workers=len(prep.parties)) as pool:
        for line in pool.map(one, prep.parties):  # in member order; the first failure is raised here
            say(line)
    r = client_for(state, prep.bank).post(f"{state.coordinator_url}/catalog/refresh", timeout=120)
    bad = {k: v for k, v in r.json().items() if v != "ok"} if r.status_code < 400 else {"coordinator": r.text[:200]}
    if bad:
        raise DemoError(f"the coordinator could not pull the catalog: {bad}")


def _ask(console: Any, question: str) -> bool:
    from rich.prompt import Confirm

    return Confirm.ask(question, console=console, default=True)


def approve_as_members(
    client: Any, state: Any, job_id: str, cfg: DemoConfig, parties: list[str], auto_approve: bool | None,
    console: Any, interactive: bool, line: JobLine,
) -> None:
    """Show each member's pending request (the manifest in words) and decide it through the member's node.

    Members decide independently: automatic approvals run concurrently (each signs and sends its own
    on-chain approval), a person's decisions are asked one after the other.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.panel import Panel

    from coordinator.nodeclient import NodeClient
    from federation.launcher import client_for, officer_token

    def approve(m: str, node: Any, rid: int, how: str) -> None:
        out = node.decide(rid, True)  # an approver's act: the node client carries the approver's session
        line.approvals[m] = "approved"
        ref = out.get("chain_ref")
        where = (f"its approval on chain in tx {str(ref)[:18]}…" if ref else
                 "the coordinator aggregates the BLS signatures into one on-chain authorization")
        console.print(f"  [green]✓[/green] {m} approved through its node — {how}; SM2 + BLS signature, {where}")

    with ThreadPoolExecutor(max_workers=len(parties)) as pool:
        pending = []
        for m in parties:
            node = NodeClient(m, state.nodes[m], timeout=60.0, http=client_for(state, m),
                              token=officer_token(state, m, "approver"))
            deadline = time.monotonic() + 60
            while (req := node.find_approval(job_id)) is None:
                if time.monotonic() > deadline:
                    raise DemoError(f"no approval request for job {job_id} reached {m}'s inbox within 60 s")
                time.sleep(0.2)
            if req["status"] != "pending":
                raise DemoError(f"the request for job {job_id} in {m}'s inbox is {req['status']}, not pending")
            auto = cfg.member(m).auto_approve if auto_approve is None else auto_approve
            body = "\n".join(req["summary"]) + f"\n[dim]manifest SM3 {req['manifest_hash'][:32]}…[/dim]"
            console.print(Panel(body, title=f"[bold]{m}[/bold]'s inbox — request #{req['id']} ({req['status']})",
                                border_style="yellow", expand=False))
            rid = int(req["id"])
            if auto:
                line.auto_approved.append(m)
                pending.append(pool.submit(approve, m, node, rid, "auto-approved (federation.yaml: auto_approve)"))
                continue
            if interactive:
                decision, how = _ask(console, f"Approve this request as [bold]{m}[/bold]?"), "decided by you"
            elif auto_approve is False:
                raise DemoConfigError(f"{m} needs a person to decide and there is no terminal to ask "
                                      "(run on a terminal, or leave auto_approve unset)")
            else:
                decision, how = True, "approved by the demo on the officer's behalf (no terminal to ask)"
            if decision:
                approve(m, node, rid, how)
            else:
                node.decide(rid, False, f"{m} declined in the demo")
                line.approvals[m] = "rejected"
                line.state = "REJECTED"
                console.print(f"  [red]✗[/red] {m} rejected the request")
                raise ApprovalRefused(f"{m} rejected job {job_id}")
        for f in pending:
            f.result()  # re-raise a failed automatic approval


def _task_line(tasks: dict[str, dict[str, Any]], parties: list[str]) -> str:
    parts = []
    for m in parties:
        t = tasks.get(m) or {}
        parts.append(f"{m}: {t.get('stage') or t.get('status') or '…'}")
    return " | ".join(parts)


# ---------------------------------------------------------------- the demo


def _console(console: Any) -> Any:
    from rich.console import Console

    return console if console is not None else Console()


def _prepare_out_dir(out_dir: Path) -> None:
    from federation.launcher import STATE_FILE, down

    fed = out_dir / "federation"
    if (fed / STATE_FILE).exists():  # a previous demo that was killed hard: stop what it left
        with contextlib.suppress(Exception):
            down(fed)
    import shutil

    for sub in ("federation", "report", "prepared"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)


def run_demo(
    n: int = 20_000,
    seed: int = 7,
    out_dir: Path | None = None,
    auto_approve: bool | None = None,
    *,
    config: Path = DEFAULT_CONFIG,
    job_template: Path = DEFAULT_JOB,
    console: Any = None,
    interactive: bool | None = None,
    scrypt_n: int | None = None,
    sample_rss: bool = False,
    node_timeout_s: float | None = None,
    job_timeout_s: float | None = None,
) -> DemoResult:
    """Run the whole scenario through a real local federation and stop it again (see the module docstring).

    ``auto_approve``: None = per member as ``federation.yaml`` says; True = approve every request
    automatically; False = a person decides every request (needs a terminal). ``interactive``
    defaults to whether stdin is a terminal. ``node_timeout_s`` overrides how long the coordinator waits
    for a node's answer (a node extracts its rows inside the task-start call: ~1 minute at N = 1M).
    ``job_timeout_s`` overrides every job's ``timeout_s``: a party still running then is stopped by its
    node, and the job fails naming it.
    """
    from common.settings import project_root
    from scenarios.bank_credit.generator import generate

    con = _console(console)
    cfg = load_demo_config(config)
    if scrypt_n is not None:
        cfg.scrypt_n = scrypt_n
    if node_timeout_s is not None:
        cfg.coordinator["node_timeout_s"] = node_timeout_s
    if job_timeout_s is not None:
        cfg.job_timeout_s = job_timeout_s
    out = Path(out_dir) if out_dir is not None else project_root() / "var" / "bank_credit_demo"
    out = out.resolve()
    if interactive is None:
        interactive = sys.stdin.isatty()
    result = DemoResult(n_enterprises=n, seed=seed, out_dir=out, bank=cfg.bank, departments=cfg.departments)
    clock = Clock(result)
    con.rule(f"[bold]dcp demo[/bold] — bank credit for small enterprises (N = {n:,}, seed {seed})")
    _prepare_out_dir(out)

    with clock.stage("generate"), con.status("generating the synthetic federation …"):
        data = generate(n, seed, out / "data", overwrite=True)
    con.print(f"[green]✓[/green] generated {n:,} enterprises: 6 departments, 3 banks → {out / 'data'}")
    with clock.stage("prepare"), con.status("each member preprocesses its own columns …"):
        from scenarios.bank_credit.federated import prepare_members

        prep = prepare_members(data, out / "prepared", cfg.bank, cfg.departments)
    con.print("[green]✓[/green] members prepared their own columns (log1p / codes / one-hot, impute, standardise): "
              + ", ".join(f"{m} {p.rows:,}×{len(p.features)}" for m, p in prep.members.items()))

    from federation.launcher import down, up

    fcfg = cfg.federation_config(out / "federation")
    state = None
    regulator = None
    try:
        with clock.stage("federation_up"), con.status("starting the federation …") as status:
            state = up(fcfg, on_step=lambda msg: (status.update(msg), con.print(f"  · {msg}")))
        con.print(f"[green]✓[/green] federation up: anvil {state.rpc_url}, coordinator {state.coordinator_url}, "
                  f"{len(state.nodes)} nodes")
        regulator = _serve_regulator_console(state)
        show_consoles(con, state, regulator[0] if regulator else None)
        sampler = RssSampler({m: state.pids[m] for m in prep.parties}) if sample_rss else None
        with sampler or contextlib.nullcontext():
            _run_job(con, cfg, state, prep, data, out, auto_approve, interactive, job_template, result, clock)
        if sampler is not None:
            result.peak_rss_mb = {k: round(v, 1) for k, v in sampler.peak.items()}
    except ApprovalRefused as exc:
        result.training.reason = str(exc)
        con.print(f"[yellow]the job was rejected: {exc}[/yellow]")
    finally:
        if regulator is not None:
            _stop(regulator[1])
        if state is not None:
            with clock.stage("federation_down"), con.status("stopping the federation …"):
                stopped = down(state.work_dir)
            con.print(f"[green]✓[/green] stopped {len(stopped)} processes ({', '.join(stopped)})")
        (out / "demo_result.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "demo_result.json").write_text(result.model_dump_json(indent=2))
    return result


def officer_logins(state: Any) -> list[tuple[str, str, str, Path]]:
    """(member, officer, roles, password file) of every officer ``dcp up`` made on the federation's nodes."""
    from federation.launcher import OFFICERS, REQUESTER_OFFICERS

    roles = {**OFFICERS, **REQUESTER_OFFICERS}
    return [(member, name, ", ".join(roles.get(name, [])), path)
            for member, files in sorted(state.officer_password_files.items()) for name, path in sorted(files.items())]


def show_consoles(con: Any, state: Any, regulator_url: str | None) -> None:
    """Print where the consoles are and the officers' demo logins (each password is in its 0600 file)."""
    from rich.table import Table

    if regulator_url:
        con.print(f"[bold]regulator console[/bold] (read-only, from the chain; while the demo runs): {regulator_url}/")
    consoles = getattr(state, "consoles", None) or {}
    con.print("[bold]node consoles[/bold] (officers: password + TOTP): "
              + ", ".join(f"{m} {consoles.get(m, u)}/" for m, u in sorted(state.nodes.items())))
    banks = [m for m, files in sorted(state.officer_password_files.items()) if "analyst" in files and m in consoles]
    if banks:  # the requester console: on a bank node's console listener, behind the same sign-in
        con.print("[bold]requester console[/bold] (the bank's analyst): "
                  + ", ".join(f"{m} {consoles[m]}/requester/" for m in banks))
    table = Table(title="officers' demo logins (password: cat the file; the TOTP secret is beside it, "
                        "<name>.totp)", show_lines=False)
    for col in ("member", "officer", "roles", "password file"):
        table.add_column(col)
    for member, name, roles, path in officer_logins(state):
        table.add_row(member, name, roles, str(path))
    con.print(table)


def _serve_regulator_console(state: Any) -> tuple[str, Any] | None:
    """``python -m console.regulator`` over the demo's chain on a free port (stopped with the federation)."""
    import subprocess

    import httpx

    from common.net import free_port
    from common.settings import project_root

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "console.regulator", "--rpc", state.rpc_url, "--registry",
                             state.registry, "--port", str(port)], cwd=project_root(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/static/console.css", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.3)
    _stop(proc)
    return None


def _stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: kill it
        proc.kill()
        proc.wait()


#: What a job's failure reason says when a new run of the same job may succeed (see TransientJobFailure).
TRANSIENT_FAILURES = ("ran longer than", "outlives its peers", "brpc server failed start", "Failed to bind", "Address already in use")
#: How often the bank submits a job in all when its runs fail transiently.
JOB_ATTEMPTS = 2


def is_transient(state: str, reason: str | None) -> bool:
    """Whether a job that ended in ``state`` for ``reason`` may succeed when submitted again."""
    return state == "FAILED" and any(t in (reason or "") for t in TRANSIENT_FAILURES)


def _governed_job(con: Any, cfg: DemoConfig, state: Any, client: Any, spec: dict[str, Any], parties: list[str],
                  auto_approve: bool | None, interactive: bool, clock: Clock, line: JobLine, headline: str,
                  prefix: str = "") -> Any:
    """Submit ``spec`` as the bank, let every owner decide through its node, wait for the authorization on
    chain, run it with live progress and return the final status (stages timed as ``<prefix><stage>``).

    A run that fails transiently (:data:`TRANSIENT_FAILURES`) is submitted once more as a new job: it
    needs its own approvals and authorization, and the failed job stays FAILED on record."""
    args = (con, cfg, state, client, spec, parties, auto_approve, interactive, clock, line, headline, prefix)
    for _ in range(JOB_ATTEMPTS - 1):  # the last attempt's failure, whatever it is, ends the demo
        try:
            return _governed_attempt(*args)
        except TransientJobFailure as exc:
            line.retried.append(str(exc))
            con.print(f"[yellow]![/yellow] {exc}\n  — a failure a new run may not meet: {cfg.bank} submits the job "
                      "again (a new job: new approvals, a new authorization)")
            line.approvals.clear()
            line.auto_approved.clear()
    return _governed_attempt(*args)


def _governed_attempt(con: Any, cfg: DemoConfig, state: Any, client: Any, spec: dict[str, Any], parties: list[str],
                      auto_approve: bool | None, interactive: bool, clock: Clock, line: JobLine, headline: str,
                      prefix: str = "") -> Any:
    """One submission of :func:`_governed_job`."""
    from coordinator.chain import connect
    from coordinator.manifest import dataset_chain_id
    from coordinator.models import JobState
    from protocols.crypto.approvals import job_key

    if cfg.job_timeout_s is not None:
        spec = {**spec, "timeout_s": cfg.job_timeout_s}
    t_submit = time.perf_counter()
    job = client.submit(spec)
    line.job_id = job
    ncols = sum(len(i["columns"]) for i in spec["inputs"])
    what = spec["model"]["algorithm"].upper() + (" prediction" if spec["kind"] == "vertical_predict" else "")
    con.print(f"[green]✓[/green] {spec['requester']} submitted {line.title} job [bold]{job}[/bold]: PSI on "
              f"{spec['join_key']} + {what} over {ncols} columns of {len(spec['inputs'])} members")

    con.rule(f"{line.title}: each data owner decides through its own node")
    with clock.stage(f"{prefix}approvals"):
        try:
            approve_as_members(client, state, job, cfg, parties, auto_approve, con, interactive, line)
        except ApprovalRefused:
            line.state = "REJECTED"
            raise
    terminal = {JobState.AUTHORIZED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED,
                JobState.EXPIRED, JobState.REVOKED}
    with clock.stage(f"{prefix}authorization"), con.status("coordinator writes the authorization on chain …"):
        st = client.wait(job, timeout=120, poll=0.2, until=terminal)
    ch = connect(state.rpc_url, state.registry)
    auth = ch.authorization(job_key(job))
    if auth is None:
        raise DemoError(f"job {job} is {st.state.value} but has no authorization on chain ({st.reason})")
    con.print(f"[green]✓[/green] authorization on chain: {len(auth.approvers)} approvers, manifest SM3 "
              f"{bytes(auth.terms.manifest_hash).hex()[:16]}…, max runs {auth.terms.max_runs}")

    con.rule(headline)
    timeline: list[tuple[float, str]] = []
    last = {"state": "", "line": ""}
    t_auth = time.perf_counter()

    def on_update(s: Any) -> None:
        now = time.perf_counter()
        if s.state.value != last["state"]:
            last["state"] = s.state.value
            con.print(f"  [bold]{s.state.value}[/bold]")
        bank_stage = (s.tasks.get(cfg.bank) or {}).get("stage")
        if bank_stage and (not timeline or timeline[-1][1] != bank_stage):
            timeline.append((now, bank_stage))
        text = _task_line(s.tasks, parties)
        if text != last["line"] and s.tasks:
            last["line"] = text
            con.print(f"    {text}", style="dim")

    with con.status(f"{line.title} running …"):
        final = client.wait(job, timeout=float(spec.get("timeout_s", 1800)) + 120, poll=0.3, on_update=on_update)
    t_done = time.perf_counter()
    line.state = final.state.value
    line.reason = final.reason
    line.events = [e["to"] for e in final.events]
    _record_run_stages(clock, timeline, t_auth, t_done, prefix)
    clock.add(f"{prefix}job_total", t_done - t_submit)
    clock.add(f"{prefix}governance_pre_run", t_auth - t_submit)
    if final.state != JobState.SUCCEEDED:
        msg = f"{line.title} job {job} ended {final.state.value}: {final.reason}"
        if is_transient(final.state.value, final.reason):
            raise TransientJobFailure(msg)
        raise DemoError(msg)
    con.print(f"[green]✓[/green] {line.title} job {job} SUCCEEDED ({' → '.join(line.events)})")
    for inp in spec["inputs"]:
        line.receipts[inp["member"]] = ch.runs(job_key(job), dataset_chain_id(inp["member"], inp["dataset"]))
    return final


def _open(client: Any, state: Any, cfg: DemoConfig, job: str, output: str) -> bytes:
    """The bank fetches one sealed output of ``job`` and opens it with its own keystore."""
    passphrase = state.passphrase_of(cfg.bank)
    return client.result(job, output, state.keys_dir / f"{cfg.bank}.keystore.json", passphrase)


def _in_jobs_dir(template: Path) -> Path:
    """A job template named in ``federation.yaml``: relative paths are in ``jobs/``."""
    return template if template.is_absolute() else DEFAULT_JOB.parent / template


def _load_template(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DemoConfigError(f"cannot read the job template {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise DemoConfigError(f"{path}: a job template is a mapping")
    return raw


def _run_job(con: Any, cfg: DemoConfig, state: Any, prep: PreparedFederation, data: Any, out: Path,
             auto_approve: bool | None, interactive: bool, job_template: Path, result: DemoResult,
             clock: Clock) -> None:
    import pandas as pd

    from contracts.audit import run_audit
    from coordinator.chain import connect
    from coordinator.sdk import DcpClient
    from federation.launcher import transport_for
    from scenarios.bank_credit.federated import (
        federated_scores,
        joined_rows,
        monitoring_blocks,
        plaintext_comparators,
        white_list,
    )

    with clock.stage("ingest"), con.status("ingesting each member's data into its own node …"):
        ingest(state, prep, lambda msg: con.print(f"  · {msg}"))
    con.print("[green]✓[/green] datasets ingested, quality-checked and registered on chain")

    from protocols.crypto.keystore import load_keystore

    bank_keys = load_keystore(state.keys_dir / f"{cfg.bank}.keystore.json", state.passphrase_of(cfg.bank))
    client = DcpClient(state.coordinator_url, timeout=120, signer=bank_keys,  # the bank signs its job requests
                       transport=transport_for(state, cfg.bank))
    rows = joined_rows(prep)  # the evaluator's view (plaintext), used only for the comparison
    spec = resolve_job_template(job_template, client.catalog(), len(rows.keys), prep.test_fraction)
    spec["requester"] = cfg.bank
    train = JobLine(title="pre-loan training", kind="vertical_train")
    result.jobs.append(train)
    _governed_job(con, cfg, state, client, spec, prep.parties, auto_approve, interactive, clock, train,
                  f"running: PSI → {spec['model']['algorithm'].upper()} → joint prediction "
                  "(scores revealed to the bank only)")

    with clock.stage("results"):
        metrics = json.loads(_open(client, state, cfg, train.job_id, "metrics"))
        preds = _open(client, state, cfg, train.job_id, "predictions")
    result.intersection_rows = int(metrics.get("n_rows", 0)) or None
    con.print(f"[green]✓[/green] {cfg.bank} opened its sealed results with its own SM2 key: "
              f"{result.intersection_rows:,} scored rows")
    fed = federated_scores(preds, rows, metrics)
    result.evaluation = fed.evaluation

    extra = []  # further pre-loan models (e.g. SGB) trained through the federation on the same rows and split
    for tmpl in cfg.extra_models:
        extra.append(_extra_model(con, cfg, state, client, prep, rows, Path(tmpl), auto_approve, interactive,
                                  clock, result))

    pop, watch, post = _in_loan_and_post_loan(con, cfg, state, client, prep, data, out, spec, fed, rows,
                                              auto_approve, interactive, clock, result)

    with clock.stage("report"), con.status("building the report …"):
        from scenarios.bank_credit.report import build_report

        bank_only, central = plaintext_comparators(prep, rows, fed.evaluation)
        mon = None if pop is None else monitoring_blocks(prep, data, pop.keys)
        report_dir = out / "report"
        models = [fed.scores(rows, pop), *(e.scores(rows, role="other") for e in extra),
                  bank_only.scores(rows, "bank_only", mon), central.scores(rows, "centralized", mon)]
        summary = build_report(models, report_dir,
                               title=f"Bank credit — {cfg.bank} with {', '.join(prep.departments)} "
                                     f"(N = {result.n_enterprises:,}, {fed.evaluation})",
                               post_loan=None if post is None else _post_loan_rows(post))
        wl = white_list(rows, fed.score, WHITE_LIST_MAX_PD)
        wl.to_csv(report_dir / "white_list.csv", index=False)
        if pop is not None and watch is not None:
            pd.DataFrame({"uscc": pop.keys, "pd": pop.pd}).to_csv(report_dir / "in_loan_scores.csv", index=False)
            watch.to_csv(report_dir / "post_loan_watch_list.csv", index=False)
    result.report_dir = report_dir
    result.report_files = sorted(p.name for p in report_dir.iterdir())
    result.n_test = int(rows.test.sum())
    for ms in summary.models:
        result.models.append(ModelLine(name=ms.name, role=ms.role, auc=ms.auc, ks=ms.ks, psi=ms.psi))
    result.uplift = fed.auc_test - bank_only.auc_test
    result.gap_to_centralized = central.auc_test - fed.auc_test
    in_wl = rows.test & (fed.score <= WHITE_LIST_MAX_PD)
    result.white_list_size = len(wl)
    result.white_list_default_rate = float(rows.y[in_wl].mean()) if in_wl.any() else None
    result.post_loan = post
    _print_summary(con, result, summary, rows)

    with clock.stage("audit"), con.status("the regulator audits the chain …"):
        audit = run_audit(connect(state.rpc_url, state.registry).w3, state.registry)
    result.audit_clean = audit.clean
    result.audit_findings = [f"{f.kind}: {getattr(f, 'detail', '')}" for f in audit.findings]
    result.anchors_on_chain = audit.anchors_count
    with clock.stage("reconcile"), con.status("each node's audit log is reconciled with the chain …"):
        reconcile_nodes(state, result)
    _print_audit(con, audit, result)


def reconcile_nodes(state: Any, result: DemoResult) -> None:
    """Every member's node log against the chain, read as that node's auditor officer (its log page by
    page through ``GET /audit``; the receipts and anchors of its account from the chain itself)."""
    from coordinator.chain import connect
    from federation.launcher import client_for, officer_token
    from nodes.services.reconcile import reconcile_remote

    chain = connect(state.rpc_url, state.registry)
    for member, url in sorted(state.nodes.items()):
        token = officer_token(state, member, "auditor")
        with client_for(state, member, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            report = reconcile_remote(http, url, chain, member)
        result.reconciled[member] = (
            f"clean: {report.entries_checked} entries, {report.receipts_on_chain} receipts, "
            f"{report.anchors_checked} anchors" if report.clean
            else "; ".join(f"{f.kind.value} (entry {f.seq}, tx {f.tx}): {f.detail}" for f in report.findings))
    result.reconciliation_clean = all(v.startswith("clean") for v in result.reconciled.values())


def _model_label(spec: dict[str, Any]) -> tuple[str, str]:
    """(report name, stage prefix) of a pre-loan model job."""
    algo = str(spec["model"]["algorithm"])
    if algo == "ss_lr" and (spec["model"].get("params") or {}).get("woe_bins"):
        return "federated WOE scorecard (SS-LR)", "scorecard_"
    return f"federated {algo.upper().replace('_', '-')}", f"{algo}_"


def _extra_model(con: Any, cfg: DemoConfig, state: Any, client: Any, prep: PreparedFederation, rows: Any,
                 template: Path, auto_approve: bool | None, interactive: bool, clock: Clock,
                 result: DemoResult) -> Any:
    """Another pre-loan model (``jobs/pre_loan_<model>.yaml``) on the same rows and split."""
    from scenarios.bank_credit.federated import federated_scores, read_predictions

    spec = resolve_job_template(_in_jobs_dir(template), client.catalog(), len(rows.keys), prep.test_fraction)
    spec["requester"] = cfg.bank
    name, prefix = _model_label(spec)
    line = JobLine(title=f"pre-loan {name.removeprefix('federated ')}", kind="vertical_train")
    result.jobs.append(line)
    _governed_job(con, cfg, state, client, spec, prep.parties, auto_approve, interactive, clock, line,
                  f"running: PSI → {name.removeprefix('federated ')} → joint prediction (revealed to the bank only)",
                  prefix=prefix)
    with clock.stage(f"{prefix}results"):
        metrics = json.loads(_open(client, state, cfg, line.job_id, "metrics"))
        preds = _open(client, state, cfg, line.job_id, "predictions")
    fed = federated_scores(preds, rows, metrics, name=name)
    frame = read_predictions(preds, rows.keys, "predictions")
    if "points" in frame.columns:  # the scorecard's points, as the engine computed them for the bank
        pts = frame["points"].to_numpy(dtype=np.float64)[rows.test]
        result.scorecard_points = {q: round(float(v), 1) for q, v in
                                   zip(("p10", "median", "p90"), np.percentile(pts, [10, 50, 90]), strict=True)}
        con.print(f"[green]✓[/green] scorecard points of the test rows (engine output): median "
                  f"{result.scorecard_points['median']:.0f}, P10–P90 {result.scorecard_points['p10']:.0f}–"
                  f"{result.scorecard_points['p90']:.0f} (600 at 50:1 good:bad, 20 points to double the odds)")
    return fed


def _in_loan_and_post_loan(con: Any, cfg: DemoConfig, state: Any, client: Any, prep: PreparedFederation,
                           data: Any, out: Path, training_spec: dict[str, Any], fed: Any, rows: Any,
                           auto_approve: bool | None, interactive: bool, clock: Clock,
                           result: DemoResult) -> tuple[Any, Any, Any]:
    """A year later: the members publish their new snapshot, the bank scores its current borrowers with the
    stored joint model (``vertical_predict``), and monitors them: PSI, PDs that rose, the watch list."""
    import pandas as pd

    from scenarios.bank_credit.federated import (
        inner_keys,
        post_loan_summary,
        post_loan_watch_list,
        predict_job_spec,
        prepare_monitoring,
        scored_population,
    )

    tmpl = _load_template(_in_jobs_dir(Path(cfg.in_loan_job)))
    con.rule("a year later: in-loan batch scoring of current borrowers")
    with clock.stage("in_loan_prepare"), con.status("each member prepares its new snapshot …"):
        mon = prepare_monitoring(data, prep, out / "prepared" / "monitoring")
    with clock.stage("in_loan_ingest"), con.status("ingesting the new snapshot into each node …"):
        ingest(state, mon, lambda msg: con.print(f"  · {msg}"))
    spec = predict_job_spec(training_spec, str(result.job_id), mon, purpose=str(tmpl.get("purpose", "")).strip(),
                            expires_in_s=int(tmpl.get("expires_in_s", 3600)),
                            timeout_s=float(tmpl.get("timeout_s", 1800)))
    line = JobLine(title="in-loan scoring", kind="vertical_predict")
    result.jobs.append(line)
    try:
        _governed_job(con, cfg, state, client, spec, mon.parties, auto_approve, interactive, clock, line,
                      "running: PSI → prediction with the stored model parts (scores revealed to the bank only)",
                      prefix="in_loan_")
    except ApprovalRefused as exc:
        con.print(f"[yellow]in-loan scoring was declined ({exc}); no post-loan monitoring this time[/yellow]")
        return None, None, None
    with clock.stage("in_loan_results"):
        pop = scored_population(_open(client, state, cfg, line.job_id, "predictions"), fed.calibration,
                                inner_keys(mon))
    con.print(f"[green]✓[/green] {cfg.bank} opened the in-loan scores of {len(pop.keys):,} current borrowers")
    with clock.stage("post_loan_monitoring"):
        origination = pd.Series(fed.score, index=rows.keys)
        watch = post_loan_watch_list(pop, origination, HIGH_RISK_MIN_PD)
        loans = data.truth_table("loans")  # evaluation only: what happened in the following 12 months
        loans = loans[loans["bank"] == cfg.bank].set_index("uscc")["default_12m_monitoring"]
        post = post_loan_summary(pop, watch, origination, HIGH_RISK_MIN_PD, outcomes=loans)
    return pop, watch, post


def _post_loan_rows(post: Any) -> dict[str, str]:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:.1%}"

    return {
        "current borrowers re-scored (known to every member)": f"{post.scored:,}",
        "mean PD at origination → now": f"{pct(post.mean_pd_origination)} → {pct(post.mean_pd_now)}",
        f"watch list (PD ≥ {post.min_pd:.0%}, or PD doubled and above average)":
            f"{post.high_risk:,} ({post.deteriorated:,} because the PD doubled)",
        "default rate in the next 12 months: watch list / the rest (hidden outcomes, evaluation only)":
            f"{pct(post.default_rate_high_risk)} / {pct(post.default_rate_rest)}",
        "AUC of the re-scored PDs on those outcomes": "—" if post.outcome_auc is None else f"{post.outcome_auc:.3f}",
    }


def _print_summary(con: Any, result: DemoResult, summary: Any, rows: Any) -> None:
    from rich.table import Table

    con.rule("report")
    t = Table(title=f"{result.bank}: test rows {int(rows.test.sum()):,} of {len(rows.keys):,} "
                    f"({result.evaluation})")
    for col in ("model", "AUC", "KS", "Δ AUC vs bank-only", "PSI train→monitoring"):
        t.add_column(col, justify="right" if col != "model" else "left")
    bank_auc = next(m.auc for m in summary.models if m.role == "bank_only")
    for m in summary.models:
        t.add_row(m.name, f"{m.auc:.3f}", f"{m.ks:.3f}", f"{m.auc - bank_auc:+.3f}",
                  "—" if m.psi is None else f"{m.psi:.3f} ({m.psi_verdict})")
    con.print(t)
    con.print(f"uplift over bank-only: [bold]{result.uplift:+.3f}[/bold] AUC; gap to centralized: "
              f"[bold]{result.gap_to_centralized:+.3f}[/bold] (target ≤ 0.01)")
    if result.evaluation == "in-sample":
        con.print("[dim]the engine in this build trains on every intersection row, so all three models are fitted "
                  "on every row and scored on the same holdout rows (in-sample, like with like)[/dim]")
    rate = "n/a" if result.white_list_default_rate is None else f"{result.white_list_default_rate:.1%}"
    con.print(f"pre-loan white list (PD ≤ {WHITE_LIST_MAX_PD:.0%}): {result.white_list_size:,} enterprises; "
              f"default rate among its test rows {rate}")
    post = result.post_loan
    if post is not None:
        rows_ = _post_loan_rows(post)
        con.print("post-loan monitoring: " + "; ".join(f"{k}: [bold]{v}[/bold]" for k, v in rows_.items()))
    con.print("jobs: " + "; ".join(f"{j.title} {j.job_id} {j.state}" for j in result.jobs))
    con.print(f"report: {result.report_dir / 'report.html'} ({', '.join(result.report_files)})")


def _print_audit(con: Any, audit: Any, result: DemoResult) -> None:
    con.rule("the regulator's audit (from the chain alone)")
    con.print(f"{audit.members} members, {audit.datasets} datasets, {audit.authorizations_count} authorizations, "
              f"{audit.receipts_count} usage receipts, {audit.anchors_count} audit anchors")
    for j in result.jobs:
        con.print(f"receipts of the {j.title} job: " + (", ".join(f"{m} {n}" for m, n in j.receipts.items()) or "none"))
    if audit.clean:
        con.print("[bold green]audit clean[/bold green]: every use of data was authorized by its owner")
    else:
        for f in audit.findings:
            con.print(f"[red]finding[/red] {f}")
    for member, what in result.reconciled.items():
        con.print(f"{member}'s node log against the chain: " + (f"[green]{what}[/green]" if what.startswith("clean")
                                                                 else f"[red]{what}[/red]"))
    if result.reconciliation_clean:
        con.print(f"[bold green]reconciled[/bold green]: every node's log agrees with the chain "
                  f"({result.anchors_on_chain} anchors on chain)")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (also what ``dcp demo`` runs)."""
    ap = argparse.ArgumentParser(prog="python -m scenarios.bank_credit.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="enterprises to generate")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="output directory (default var/bank_credit_demo)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--auto-approve", dest="auto", action="store_const", const=True, default=None,
                       help="approve every request automatically")
    group.add_argument("--ask", dest="auto", action="store_const", const=False,
                       help="ask for every member's decision (needs a terminal)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = ap.parse_args(argv)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    from rich.console import Console

    con = Console()
    try:
        res = run_demo(args.n, args.seed, args.out, args.auto, config=args.config, console=con)
    except KeyboardInterrupt:
        con.print("[yellow]interrupted: the federation was stopped[/yellow]")
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, then the exit code
        from coordinator.errors import CoordinatorError
        from scenarios.bank_credit.errors import BankCreditError

        if not isinstance(exc, BankCreditError | CoordinatorError):
            raise
        con.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        return 1
    if res.state != "SUCCEEDED":
        return 1
    return 0 if res.audit_clean and res.reconciliation_clean is not False else 2


if __name__ == "__main__":
    sys.exit(main())
