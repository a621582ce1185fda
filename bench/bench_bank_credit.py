"""The bank-credit scenario end to end: time per stage, the ratio to bare SecretFlow, governance overhead,
peak memory per node.

    .venv/bin/python bench/bench_bank_credit.py [--n 20000 100000] [--try-1m] [--main-job-only] [--gateways]
                                                [--pairs K] [--out DIR]

For each N the whole demo runs once (``scenarios.bank_credit.demo.run_demo`` with every approval
automatic): a real anvil, coordinator and five node processes (bank_a, tax, social, power, court),
five SecretFlow parties over gRPC. Then a bare SecretFlow run (``protocols.secretflow.runner.
run_vertical_job``) does the same PSI and training on the same member CSVs, with the federation down.

* platform = ingest + job (submit → SUCCEEDED) + fetching/opening the results — of the pre-loan
  training path only: the stages ``ingest``, ``job_total`` and ``results`` are picked by name, so the
  demo's later jobs (in-loan / post-loan scoring, SGB: stages ``in_loan_*``, ``post_loan_*``,
  ``sgb_*``) are timed and shown but never counted in the ratio or the governance share;
* ratio = platform / bare SecretFlow (target ≤ 1.15 at N = 100k);
* governance = approvals + on-chain authorization + receipts (the time after the engine finished
  until the job is SUCCEEDED: usage receipts, sealing) as a share of the platform time (target ≤ 5 %);
  "receipts" as the demo times it starts when the label holder's engine reports its last stage, so it
  includes the SecretFlow parties' own exit; "governance strict" counts instead what the nodes
  measure themselves (``task.succeed`` in each node's audit log): sealing the outputs and the usage
  receipt on chain, slowest node;
* peak RSS per node = the node process plus its SecretFlow party, sampled every 0.25 s.

``--gateways``: every member's node runs its 国密 gateway (``gateway`` in its node settings: its own free
port on 127.0.0.1, the other members' gateways as its peers), so every engine link of the platform's
jobs crosses two gateways over TLS 1.3 SM4-GCM-SM3 (the bare run stays direct). Each gateway writes what
a job's links cost it when the job closes (``gateway.close`` in the node's audit log: plaintext bytes
each way, the gateway thread's user+sys CPU seconds, when it was open); the bench adds, for the main
job: MB carried (Σ bytes sent by the gateways = bytes that crossed between members), MB/s over the
span the job was open at the gateways, the gateways' CPU seconds and their share of that span's wall
time (in cores) and of the CPU the whole federation's process tree (nodes, parties, coordinator, anvil)
used in it (sampled every 0.5 s). ``--pairs K`` runs K platform / bare pairs per N, alternating.

Stage times inside the run come from polling the label holder's task stage (±0.3 s).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

STAGES = ("generate", "prepare", "federation_up", "ingest", "approvals", "authorization", "run_setup",
          "engine_start", "psi", "train", "predict", "receipts", "results", "report", "audit", "federation_down")
#: The pre-loan training path that the ratio to bare SecretFlow compares (picked by name).
PLATFORM_STAGES = ("ingest", "job_total", "results")
#: Governance inside that path: approvals, the authorization on chain, receipts.
GOVERNANCE_STAGES = ("approvals", "authorization", "receipts")


def bare_secretflow(out: Path, res) -> float:  # noqa: ANN001
    """Wall seconds of run_vertical_job on the same prepared CSVs and parameters."""
    from protocols.secretflow.runner import run_vertical_job
    from scenarios.bank_credit.demo import load_demo_config
    from scenarios.bank_credit.federated import sslr_params
    from scenarios.bank_credit.schema import KEY, LABEL

    cfg = load_demo_config()
    parties = [cfg.bank, *cfg.departments]
    import pandas as pd

    spec = {
        "parties": [], "join_key": KEY, "label_party": cfg.bank, "label_column": LABEL,
        "model": sslr_params(res.intersection_rows or 0), "work_dir": str(out / "bare" / "run"),
        "timeout_s": 3600,
    }
    for m in parties:
        csv = out / "prepared" / f"{m}_2024.csv"
        cols = list(pd.read_csv(csv, nrows=1).columns)
        feats = [c for c in cols if c not in (KEY, LABEL)]
        spec["parties"].append({"name": m, "input_csv": str(csv), "output_dir": str(out / "bare" / m),
                                "features": feats})
    t0 = time.perf_counter()
    run_vertical_job(spec)
    return time.perf_counter() - t0


class LoadSampler:
    """The 1-minute load average, sampled every 5 s (the 2 cores are shared: say how loaded they were)."""

    def __init__(self) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(5.0)

    def mean_and_reset(self) -> float:
        got, self.samples = self.samples, []
        return sum(got) / len(got) if got else os.getloadavg()[0]

    def stop(self) -> None:
        self._stop.set()


class TreeCpu:
    """User+sys CPU seconds of this process's descendants (the federation: anvil, coordinator, nodes and
    their SecretFlow parties), summed, sampled every 0.5 s as ``(time.time(), total)``; a process that
    ended keeps its last sample (so up to 0.5 s of a short-lived process's CPU is missed)."""

    def __init__(self, every: float = 0.5) -> None:
        import threading

        self.series: list[tuple[float, float]] = []
        self._last: dict[tuple[int, float], float] = {}
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                procs = me.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        self._last[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    continue
            self.series.append((time.time(), sum(self._last.values())))
            self._stop.wait(self._every)

    def at(self, when: float) -> float:
        """The total at ``when`` (linear between samples)."""
        s = self.series
        if not s:
            return 0.0
        if when <= s[0][0]:
            return s[0][1]
        for (t0, c0), (t1, c1) in zip(s, s[1:], strict=False):
            if t0 <= when <= t1:
                return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 1.0)
        return s[-1][1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def bench_config(root: Path, tag: str, main_job_only: bool, gateways: bool) -> Path | None:
    """A copy of the demo's ``federation.yaml`` for one run: ``main_job_only`` leaves out its extra pre-loan
    models (WOE scorecard, SGB) — the pre-loan SS-LR job, the in-loan scoring and the post-loan monitoring
    still run; ``gateways`` gives every member's node a gateway on its own free 127.0.0.1 port with every
    other member's gateway as a peer. None: the demo's own file as it is."""
    import yaml

    from common.net import free_ports
    from scenarios.bank_credit.demo import DEFAULT_CONFIG

    if not (main_job_only or gateways):
        return None
    doc = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if main_job_only:
        doc["extra_models"] = []
    if gateways:
        names = [m["name"] for m in doc["members"]]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        for m in doc["members"]:
            m.setdefault("node", {})["gateway"] = {
                "listen_host": "127.0.0.1", "listen_port": ports[m["name"]],
                "peers": {o: f"127.0.0.1:{ports[o]}" for o in names if o != m["name"]}}
    path = root / f"federation.{tag}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def gateway_reports(out: Path, job_id: str) -> dict[str, dict]:
    """Each node's ``gateway.close`` audit entry for ``job_id`` (what the job's links cost its gateway)."""
    import json
    import sqlite3

    got: dict[str, dict] = {}
    for db in sorted((out / "federation" / "nodes").glob("*/*.db")):
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT detail FROM auditentry WHERE action = 'gateway.close' AND target = ?",
                                (job_id,)).fetchall()
        for (detail,) in rows:
            got[db.parent.name] = json.loads(detail)
    return got


def gateway_summary(reports: dict[str, dict], tree: TreeCpu) -> dict[str, float]:
    """The main job's gateways together: MB carried between members, MB/s, CPU and its shares."""
    start = min(r["opened_at"] for r in reports.values())
    end = max(r["closed_at"] for r in reports.values())
    span = end - start
    sent = sum(r["sent"] for r in reports.values())
    received = sum(r["received"] for r in reports.values())
    cpu = sum(r["cpu_s"] for r in reports.values())
    total = tree.at(end) - tree.at(start)
    return {"gateways": len(reports), "span_s": span, "mb": sent / 1e6, "mb_received": received / 1e6,
            "mb_s": sent / 1e6 / span if span > 0 else 0.0, "cpu_s": cpu, "cpu_max_s": max(r["cpu_s"] for r in reports.values()),
            "connections": sum(r["connections"] for r in reports.values()),
            "share_wall": cpu / span if span > 0 else 0.0, "tree_cpu_s": total,
            "share_cpu": cpu / total if total > 0 else 0.0}


def run_one(n: int, root: Path, console: Console, config: Path | None = None, tag: str = "") -> dict:
    from scenarios.bank_credit.demo import DEFAULT_CONFIG, run_demo

    out = root / f"n{n}{tag}"
    log = io.StringIO()
    load = LoadSampler()
    tree = TreeCpu()
    loadavg = {"before": Path("/proc/loadavg").read_text().strip()}
    t0 = time.perf_counter()
    try:
        res = run_demo(n, 7, out, auto_approve=True, console=Console(file=log, width=140), interactive=False,
                       sample_rss=True, config=config or DEFAULT_CONFIG)
    finally:
        tree.stop()
    wall = time.perf_counter() - t0
    load_demo = load.mean_and_reset()
    loadavg["after_platform"] = Path("/proc/loadavg").read_text().strip()
    if res.state != "SUCCEEDED":
        raise RuntimeError(f"N={n}: the job ended {res.state}: {res.reason}\n{log.getvalue()[-2000:]}")
    reports = gateway_reports(out, res.job_id)
    gw = gateway_summary(reports, tree) if reports else None
    bare = bare_secretflow(out, res)
    load_bare = load.mean_and_reset()
    loadavg["after_bare"] = Path("/proc/loadavg").read_text().strip()
    load.stop()
    # the pre-loan training path, by stage name (the demo's other jobs have prefixed stages)
    platform = sum(res.seconds(s) for s in PLATFORM_STAGES)
    governance = sum(res.seconds(s) for s in GOVERNANCE_STAGES)
    after = after_engine(out, res)
    strict = res.seconds("approvals") + res.seconds("authorization") + after["seal_receipt_s"]
    import json

    (out / "bench-run.json").write_text(json.dumps({  # the run's numbers, kept even if a later run is cut short
        "n": n, "tag": tag, "platform": platform, "bare": bare, "governance": governance,
        "governance_strict": strict, "load": [load_demo, load_bare], "loadavg": loadavg, "gateways": gw,
        "gateway_reports": reports, "stages": [st.model_dump() for st in res.stages],
        "intersection_rows": res.intersection_rows, "peak_rss_mb": res.peak_rss_mb}, indent=1, default=str))
    console.print(f"  N = {n:,}{tag}: platform {platform:.1f} s, bare {bare:.1f} s, ratio {platform / bare:.3f}; "
                  f"/proc/loadavg {loadavg}" + (f"; gateways {gw}" if gw else ""))
    return {"n": n, "res": res, "wall": wall, "bare": bare, "platform": platform, "governance": governance,
            "load": (load_demo, load_bare), "after": after, "governance_strict": strict, "gw": gw,
            "gw_reports": reports, "loadavg": loadavg, "tag": tag}


def after_engine(out: Path, res) -> dict[str, float]:  # noqa: ANN001
    """From each node's audit log (its SQLite file, read after the run): the slowest node's party exit
    after its result, and its sealing of outputs + usage receipt on chain (the ``task.succeed`` entry)."""
    import json
    import sqlite3

    got = {"party_exit_s": 0.0, "seal_receipt_s": 0.0}
    for db in sorted((out / "federation" / "nodes").glob("*/*.db")):
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT detail FROM auditentry WHERE action = 'task.succeed' AND target = ?",
                                (res.job_id,)).fetchall()
        for (detail,) in rows:
            d = json.loads(detail)
            for k in got:
                got[k] = max(got[k], float(d.get(k) or 0.0))
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--try-1m", action="store_true", help="also try N = 1,000,000 once and report why it fails")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    ap.add_argument("--main-job-only", action="store_true",
                    help="leave out the demo's extra pre-loan models (WOE scorecard, SGB), which at N = 1M "
                         "take longer than everything else together; they are never in the ratio")
    ap.add_argument("--gateways", action="store_true",
                    help="every member's engine links through its node's 国密 gateway (loopback, own port each); "
                         "adds the gateways' MB, MB/s and CPU share for the main job")
    ap.add_argument("--pairs", type=int, default=1, help="platform / bare pairs per N, run alternately")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))
    sizes = list(args.n) + ([1_000_000] if args.try_1m else [])
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-bank-credit-"))
    runs, failures = [], {}
    for n in sizes:
        for k in range(args.pairs):
            tag = f"-{k + 1}" if args.pairs > 1 else ""
            console.print(f"N = {n:,}{tag} …")
            config = bench_config(root, f"n{n}{tag}", args.main_job_only, args.gateways)
            try:
                runs.append(run_one(n, root, console, config, tag))
            except Exception as exc:  # noqa: BLE001 - a size that cannot run is reported, not faked
                failures[f"{n:,}{tag}"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                traceback.print_exc(limit=3)

    table = Table(title=f"bank-credit end to end, 5 parties (bank_a + tax, social, power, court), SS-LR — "
                        f"{os.cpu_count()} cores, seconds")
    table.add_column("stage")
    for r in runs:
        table.add_column(f"N={r['n']:,}{r['tag']}", justify="right")
    for s in STAGES:
        table.add_row(s, *[f"{r['res'].seconds(s):.1f}" for r in runs])
    rows = [
        ("∩ rows (PSI)", lambda r: f"{r['res'].intersection_rows:,}"),
        ("platform (ingest+job+results)", lambda r: f"{r['platform']:.1f}"),
        ("bare SecretFlow (same PSI+train)", lambda r: f"{r['bare']:.1f}"),
        ("ratio platform / bare", lambda r: f"{r['platform'] / r['bare']:.2f}"),
        ("ratio job only / bare", lambda r: f"{r['res'].seconds('job_total') / r['bare']:.2f}"),
        ("governance (approvals+auth+receipts)", lambda r: f"{r['governance']:.1f}"),
        ("governance share of platform", lambda r: f"{r['governance'] / r['platform']:.1%}"),
        ("demo wall (incl. generate, up, report)", lambda r: f"{r['wall']:.1f}"),
        ("… after the engine: party exit (slowest node)", lambda r: f"{r['after']['party_exit_s']:.1f}"),
        ("… after the engine: seal + receipt on chain (slowest node)", lambda r: f"{r['after']['seal_receipt_s']:.1f}"),
        ("governance strict (approvals+auth+seal/receipt)", lambda r: f"{r['governance_strict']:.1f}"),
        ("governance strict share of platform", lambda r: f"{r['governance_strict'] / r['platform']:.1%}"),
        ("load average during demo / bare run", lambda r: f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"),
        ("/proc/loadavg after platform / after bare", lambda r: f"{r['loadavg']['after_platform'].split()[0]} / "
                                                               f"{r['loadavg']['after_bare'].split()[0]}"),
        ("AUC federated / centralized / bank-only", lambda r: " / ".join(
            f"{r['res'].model(k).auc:.3f}" for k in ("federated", "centralized", "bank_only"))),
        ("evaluation", lambda r: r["res"].evaluation),
        ("peak RSS per node, MB (max)", lambda r: f"{max(r['res'].peak_rss_mb.values()):.0f}"),
    ]
    mine = {*STAGES, "job_total", "governance_pre_run"}  # every other stage belongs to another job of the demo
    other = sorted({s.stage for r in runs for s in r["res"].stages if s.stage not in mine})
    for s in other:
        table.add_row(f"{s} (other job, not in ratio)", *[f"{r['res'].seconds(s):.1f}" for r in runs], style="dim")
    _add_rows(table, rows, runs)
    console.print(table)
    if runs:
        mem = Table(title="peak RSS per node (node process + its SecretFlow party), MB")
        mem.add_column("N")
        names = list(runs[0]["res"].peak_rss_mb)
        for name in names:
            mem.add_column(name, justify="right")
        for r in runs:
            mem.add_row(f"{r['n']:,}", *[f"{r['res'].peak_rss_mb.get(nm, 0):.0f}" for nm in names])
        console.print(mem)
    gw_runs = [r for r in runs if r["gw"]]
    if gw_runs:
        gt = Table(title="the main job (pre-loan SS-LR) through the 国密 gateways (TLS 1.3 SM4-GCM-SM3, loopback): "
                         "dcp vs bare SecretFlow, and what the gateways carried and cost")
        gt.add_column("")
        for r in gw_runs:
            gt.add_column(f"N={r['n']:,}{r['tag']}", justify="right")
        grows = [
            ("dcp through gateways (platform), s", lambda r: f"{r['platform']:.1f}"),
            ("bare SecretFlow, s", lambda r: f"{r['bare']:.1f}"),
            ("ratio platform / bare", lambda r: f"{r['platform'] / r['bare']:.3f}"),
            ("gateways reporting / connections", lambda r: f"{r['gw']['gateways']} / {r['gw']['connections']}"),
            ("job open at the gateways, s", lambda r: f"{r['gw']['span_s']:.1f}"),
            ("MB carried between members (Σ sent)", lambda r: f"{r['gw']['mb']:.1f}"),
            ("MB/s during the job", lambda r: f"{r['gw']['mb_s']:.2f}"),
            ("gateway CPU s (Σ 5 / busiest)", lambda r: f"{r['gw']['cpu_s']:.1f} / {r['gw']['cpu_max_s']:.1f}"),
            ("gateway CPU / job wall (cores)", lambda r: f"{r['gw']['share_wall']:.1%}"),
            ("federation CPU in the job, s", lambda r: f"{r['gw']['tree_cpu_s']:.1f}"),
            ("gateway share of federation CPU", lambda r: f"{r['gw']['share_cpu']:.1%}"),
            ("load average during demo / bare", lambda r: f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"),
        ]
        _add_rows(gt, grows, gw_runs)
        console.print(gt)
        for r in gw_runs:
            console.print(f"N={r['n']:,}{r['tag']} per gateway: " + "; ".join(
                f"{m}: {g['sent'] / 1e6:.1f} MB out, {g['received'] / 1e6:.1f} MB in, {g['cpu_s']:.1f} s CPU"
                for m, g in sorted(r["gw_reports"].items())) + f"; /proc/loadavg {r['loadavg']}")
    for n, why in failures.items():
        console.print(f"[red]N = {n} did not complete:[/red] {why}")



def _add_rows(table: Table, rows: list, runs: list[dict]) -> None:
    """One row per ``(label, fn)`` with ``fn(run)`` in each run's column; the ratios in bold."""
    for label, fn in rows:
        table.add_row(label, *[fn(r) for r in runs], style="bold" if label.startswith("ratio") else None)


if __name__ == "__main__":
    main()
