"""The researcher sandbox: isolation start-up overhead, request -> released result, low-side memory.

    .venv/bin/python bench/bench_sandbox.py [--runs 5] [--no-lowside]

* isolation overhead: the same trivial approved function (the harness loads one small CSV with pandas
  and calls it) run ``--runs`` times in the sandbox (bubblewrap + prlimit + setpriv, ``run_isolated``)
  and as a plain child process of the same interpreter (same harness, no namespaces or limits); the
  overhead is the difference of the medians;
* request -> result, the whole dcp path (``--no-federation`` skips it): a federation (anvil, coordinator,
  two nodes over 国密 TLS) whose tax node has an ``engines.sandbox`` section, so the node launches its
  confined low side with its mock and runs the bridge (``engines/sandbox/service.py``) polling every 0.5 s;
  its admin officer creates the researcher's account (``POST /engines/sandbox/researchers``); a researcher (ordinary syft client, its own process)
  calling ``request_code_execution``. The clock starts when that call returns and stops when the researcher
  holds the result; an officer approves in the inbox as soon as the request is there. The job's own events
  split the time: low side -> job, job -> approval, approval -> released, released -> deposited;
* low-side RSS: resident memory of the datasite's process tree after the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from protocols.sandbox.highside import answer, run_request  # noqa: E402
from protocols.sandbox.isolate import HARNESS, code_sm3, run_isolated  # noqa: E402
from protocols.sandbox.lowside_client import LowSide, syft_python  # noqa: E402
from protocols.sandbox.output_policy import OutputPolicy  # noqa: E402

CODE = "def analysis(tax):\n    return {'count': int(len(tax))}\n"
RESEARCHER = """
import sys, time, json
import syft as sy
url, port, email, pw = sys.argv[1:5]
client = sy.login(url=url, port=int(port), email=email, password=pw)
asset = client.datasets["tax"].assets[0]

@sy.syft_function_single_use(tax=asset)
def sector_counts(tax):
    return tax.groupby("sector").agg(count=("vat_paid", "size")).reset_index()

client.code.request_code_execution(sector_counts)
t0 = time.time()
while True:
    try:
        code = next(c for c in client.code.get_all() if c.service_func_name == "sector_counts")
        if code.output_history:
            got = code.output_history[-1].outputs[0]
            got = got.get() if hasattr(got, "get") else got
            break
    except Exception:  # not approved yet
        pass
    time.sleep(0.25)
print(json.dumps({"t_request": t0, "t_result": time.time(), "result": got}), flush=True)
"""


def _data(tmp: Path, rows: int = 1000) -> Path:
    import random

    rng = random.Random(1)
    path = tmp / "tax.csv"
    pd.DataFrame({"sector": [rng.choice("ABC") for _ in range(rows)],
                  "vat_paid": [rng.uniform(1e4, 1e6) for _ in range(rows)]}).to_csv(path, index=False)
    return path


def _plain(csv: Path, tmp: Path) -> float:
    job = tmp / "job.json"
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    job.write_text(json.dumps({"code": CODE, "entrypoint": "analysis", "inputs": {"tax": str(csv)},
                               "output_dir": str(out), "read_prefixes": ["/"], "write_prefixes": ["/"]}))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-B", str(HARNESS), str(job)], check=True)
    return time.perf_counter() - t0


def bench_layers(runs: int) -> dict[str, float]:
    """The isolation layers alone: ``/usr/bin/true`` under prlimit + bubblewrap (the same namespaces and
    mounts) against ``/usr/bin/true`` as a plain child."""
    wrapped = ["prlimit", "--as=1073741824", "--nproc=32", "--", "bwrap", "--unshare-ipc", "--unshare-pid",
               "--unshare-net", "--unshare-uts", "--unshare-cgroup", "--die-with-parent", "--new-session",
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
               "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--", "/usr/bin/true"]
    times: dict[str, list[float]] = {"wrapped": [], "plain": []}
    for _ in range(runs * 4):
        for name, cmd in (("wrapped", wrapped), ("plain", ["/usr/bin/true"])):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            times[name].append(time.perf_counter() - t0)
    w, p = statistics.median(times["wrapped"]), statistics.median(times["plain"])
    return {"wrapped_ms": w * 1e3, "plain_ms": p * 1e3, "overhead_ms": (w - p) * 1e3}


def bench_isolation(runs: int, tmp: Path) -> dict[str, float]:
    csv = _data(tmp)
    sandboxed, plain = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_isolated(CODE, code_sm3(CODE), "analysis", {"tax": csv})
        sandboxed.append(time.perf_counter() - t0)
        plain.append(_plain(csv, tmp))
    s, p = statistics.median(sandboxed), statistics.median(plain)
    return {"sandboxed_s": s, "plain_s": p, "overhead_s": s - p}


def bench_lowside(tmp: Path) -> dict[str, float]:
    csv = _data(tmp)
    site = LowSide(tmp / "lowside", "bench-lowside")
    (tmp / "lowside").mkdir()
    t0 = time.perf_counter()
    site.start()
    started = time.perf_counter() - t0
    try:
        site.publish_mock("tax", pd.read_csv(csv).sample(200, random_state=2), allowed=True)
        site.create_researcher("r@example.cn", "R", "bench-pw-123")
        script = tmp / "researcher.py"
        script.write_text(RESEARCHER)
        proc = subprocess.Popen([str(syft_python()), str(script), site.url, str(site.port), "r@example.cn",
                                 "bench-pw-123"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            while True:
                reqs = site.pending_requests()
                if reqs:
                    break
                time.sleep(0.5)
            req = reqs[0]
            answer(site, req, run_request(req, req.code_sm3, {"tax": csv}, OutputPolicy()))
            assert proc.stdout is not None
            line = next(ln for ln in proc.stdout if ln.startswith("{"))
            got = json.loads(line)
        finally:
            proc.kill()
            proc.wait()
        rss = site.rss_bytes()
    finally:
        site.stop()
    return {"start_s": started, "request_to_result_s": got["t_result"] - got["t_request"], "rss_mib": rss / 2**20}


def _tree_rss(state_dir: Path) -> int:
    """Resident memory of the datasite's process tree (found by its socket in ``state_dir``)."""
    import psutil

    total, seen = 0, set()
    for p in psutil.process_iter(["cmdline"]):
        if str(state_dir / "datasite.sock") in " ".join(p.info["cmdline"] or []):
            for q in [p, *p.children(recursive=True)]:
                if q.pid not in seen:
                    seen.add(q.pid)
                    try:
                        total += q.memory_info().rss
                    except psutil.Error:
                        pass
    return total


def bench_job(tmp: Path) -> dict[str, float]:
    """The researcher's request through the sandbox job kind, as an operator runs it: the tax node started
    with ``engines.sandbox`` (it launches its low side and runs the bridge, polling every 0.5 s), its admin
    officer creating the researcher's account, an approver approving as soon as the request is in the inbox."""
    from datetime import datetime

    from federation.launcher import FederationConfig, client_for, down, officer_token, up

    csv = _data(tmp)
    cfg = FederationConfig.model_validate({
        "work_dir": str(tmp / "fed"), "scrypt_n": 2**12,
        "coordinator": {"node_timeout_s": 6.0, "poll_interval_s": 0.3},
        "members": [{"name": "tax", "role": "department", "policy": {"max_grade": {"sandbox": 3}},
                     "datasets": [{"name": "tax", "file": str(csv)}],
                     "node": {"engines": {"sandbox": {"publish": ["tax"], "mock_rows": 200, "mock_seed": 2,
                                                      "poll_s": 0.5}}}},
                    {"name": "bank", "role": "bank"}]})
    t0 = time.perf_counter()
    state = up(cfg)
    t_up = time.perf_counter() - t0
    http = client_for(state, "tax")
    node = state.nodes["tax"]
    try:
        admin = {"Authorization": f"Bearer {officer_token(state, 'tax', 'admin')}"}
        token = {"Authorization": f"Bearer {officer_token(state, 'tax', 'approver')}"}
        while (st := http.get(f"{node}/engines", headers=admin, timeout=60).json()["sandbox"])["state"] != "ready" \
                or not st["published"]:
            if st["state"] not in ("starting", "ready"):
                raise RuntimeError(f"the low side did not start: {st}")
            time.sleep(0.5)
        started = time.perf_counter() - t0
        made = http.post(f"{node}/engines/sandbox/researchers", headers=admin, timeout=120,
                         json={"email": "r@example.cn", "name": "R"})
        made.raise_for_status()
        password = made.json()["password"]
        state_dir = next(state.work_dir.rglob("engines/sandbox/lowside"))
        inbox = f"{node}/approvals"
        script = tmp / "researcher.py"
        script.write_text(RESEARCHER)
        proc = subprocess.Popen([str(syft_python()), str(script), st["url"], str(st["port"]), "r@example.cn",
                                 password], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        t_seen: dict[str, float] = {}
        try:
            job, approved = None, False
            while True:
                for rec in http.get(f"{node}/engines/sandbox/requests", headers=token, timeout=30).json():
                    if rec.get("job_id") and job is None:
                        job, t_seen["job"] = rec["job_id"], time.time()
                    if rec["state"] in ("deposited", "denied"):
                        t_seen["deposited"] = time.time()
                if "deposited" in t_seen:
                    break
                if job and not approved:
                    pending = [a for a in http.get(inbox, headers=token, timeout=30).json() if a["job_id"] == job]
                    if pending:
                        r = http.post(f"{inbox}/{pending[0]['id']}/approve", headers=token, timeout=60)
                        r.raise_for_status()
                        approved, t_seen["approved"] = True, time.time()
                time.sleep(0.2)
            assert proc.stdout is not None
            got = json.loads(next(ln for ln in proc.stdout if ln.startswith("{")))
        finally:
            proc.kill()
            proc.wait()
        events = {e["to"]: datetime.fromisoformat(e["at"]).timestamp()
                  for e in http.get(f"{state.coordinator_url}/jobs/{job}", timeout=30).json()["events"]}
        rss = _tree_rss(state_dir)
    finally:
        http.close()
        down(state.work_dir)
    return {"up_s": t_up, "start_s": started, "request_to_result_s": got["t_result"] - got["t_request"],
            "rss_mib": rss / 2**20, "to_job_s": t_seen["job"] - got["t_request"],
            "to_approval_s": t_seen["approved"] - t_seen["job"],
            "run_s": events["SUCCEEDED"] - events.get("RUNNING", events["AUTHORIZED"]),
            "authorize_s": events.get("RUNNING", events["AUTHORIZED"]) - t_seen["approved"],
            "deposit_s": got["t_result"] - events["SUCCEEDED"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-lowside", action="store_true", help="only the isolation numbers")
    ap.add_argument("--no-federation", action="store_true", help="the low side alone (no dcp job path)")
    a = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as d:
        iso = bench_isolation(a.runs, Path(d))
        t = Table(title=f"isolation start-up (median of {a.runs}, trivial function, 1000-row CSV)")
        for c in ("sandboxed", "plain process", "overhead"):
            t.add_column(c, justify="right")
        t.add_row(f"{iso['sandboxed_s']:.2f} s", f"{iso['plain_s']:.2f} s", f"{iso['overhead_s']:.2f} s")
        console.print(t)
        lay = bench_layers(a.runs)
        t = Table(title=f"the isolation layers alone (median of {a.runs * 4}, /usr/bin/true)")
        for c in ("prlimit + bubblewrap", "plain", "overhead"):
            t.add_column(c, justify="right")
        t.add_row(f"{lay['wrapped_ms']:.1f} ms", f"{lay['plain_ms']:.1f} ms", f"{lay['overhead_ms']:.1f} ms")
        console.print(t)
        if not a.no_lowside and not a.no_federation:
            job = bench_job(Path(d))
            t = Table(title="researcher request -> released result through the sandbox job (officer approves at once)")
            for c in ("dcp up -> low side ready", "request -> result", "low side -> job", "job -> approved",
                      "approved -> running", "isolated run + release", "released -> researcher", "datasite RSS"):
                t.add_column(c, justify="right")
            t.add_row(f"{job['start_s']:.0f} s", f"{job['request_to_result_s']:.1f} s", f"{job['to_job_s']:.1f} s",
                      f"{job['to_approval_s']:.1f} s", f"{job['authorize_s']:.1f} s", f"{job['run_s']:.1f} s",
                      f"{job['deposit_s']:.1f} s", f"{job['rss_mib']:.0f} MiB")
            console.print(t)
        elif not a.no_lowside:
            low = bench_lowside(Path(d))
            t = Table(title="PySyft low side (confined datasite, immediate approval)")
            for c in ("dcp up -> low side ready", "request -> result", "datasite RSS"):
                t.add_column(c, justify="right")
            t.add_row(f"{low['start_s']:.0f} s", f"{low['request_to_result_s']:.1f} s", f"{low['rss_mib']:.0f} MiB")
            console.print(t)


if __name__ == "__main__":
    main()
