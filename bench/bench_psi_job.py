"""A ``psi`` job through dcp next to a bare two-process SecretFlow PSI, in alternating pairs (issue #19 item 4).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_psi_job.py [--rows 1000000] [--common 600000] [--pairs 3]

Two members (bank, tax), each with a dataset of ``--rows`` USCCs (``--common`` of them shared), are
started by ``dcp up`` (anvil, contracts, coordinator, nodes with warm SecretFlow parties, 国密 TLS on
every hop). Each pair runs, in alternating order:

* **dcp**: the bank submits a ``psi`` job (RR22) over both datasets, both nodes approve, and the time
  is taken from submit to SUCCEEDED (the sealed intersection ready for the requester; both usage
  receipts on chain), split by the job's events and the node tasks' stages (polled every 0.1 s);
* **bare**: two fresh processes of this script (``--bare-party``), each ``import secretflow``,
  ``sf.init``, one SPU pair and ``psi`` on a CSV of the same keys, as a SecretFlow user would write it
  with no platform around it (no validation, no sort, no sealing).

Prints one row per run with its stages and the 1-minute load average before and after, then the
medians and the ratio dcp / bare. The machine's cores are shared: read the load next to each number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "uscc"
POLICY = {"max_grade": {"psi": 3}, "default_max_grade": 3}


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---------------------------------------------------------------- data


def make_data(root: Path, rows: int, common: int, seed: int = 19) -> dict[str, Path]:
    """``bank.csv``/``tax.csv`` (key + one feature, for the nodes) and ``*_keys.csv`` (the bare side's
    input: the same keys, as the node's extract writes them). Keys are 18-character text IDs; kept in
    ``root`` and reused by the next run with the same sizes."""
    import numpy as np

    out = {name: root / f"{name}.csv" for name in ("bank", "tax")}
    if all(p.exists() for p in out.values()) and all((root / f"{n}_keys.csv").exists() for n in out):
        return out
    rng = np.random.default_rng(seed)
    ids = rng.permutation(2 * rows - common) * 997 + 10_007  # distinct, scattered
    keys = np.char.add("U91", np.char.zfill(ids.astype(str), 15))
    shared, only = keys[:common], keys[common:]
    sets = {"bank": np.concatenate([shared, only[: rows - common]]), "tax": np.concatenate([shared, only[rows - common:]])}
    root.mkdir(parents=True, exist_ok=True)
    for name, ks in sets.items():
        ks = ks[rng.permutation(len(ks))]
        vals = np.char.mod("%.4f", rng.normal(100, 15, size=len(ks)))
        (root / f"{name}.csv").write_text(f"{KEY},x\n" + "\n".join(np.char.add(np.char.add(ks, ","), vals)) + "\n")
        (root / f"{name}_keys.csv").write_text(f"{KEY}\n" + "\n".join(ks) + "\n")
    return out


def patient_launcher(upload_s: float = 3600.0, wait_s: float = 900.0) -> None:
    """``dcp up`` as it is, with the waits a loaded 2-core machine needs: a node that takes more than
    60 s to answer its first health check, an ingest of 1M rows that takes more than 300 s."""
    import federation.launcher as launcher

    wait, make = launcher._wait_http, launcher.client_for

    def patient_wait(url, proc, what, log, timeout=60.0, **kw):  # noqa: ANN001, ANN003, ANN202
        return wait(url, proc, what, log, max(timeout, wait_s), **kw)

    def patient_client(*a, **k):  # noqa: ANN002, ANN003, ANN202
        client = make(*a, **k)
        post = client.post

        def slow_post(url, *pa, **pk):  # noqa: ANN001, ANN002, ANN003, ANN202
            if "/datasets/upload" in str(url):
                pk["timeout"] = upload_s
            return post(url, *pa, **pk)

        client.post = slow_post
        return client

    launcher._wait_http, launcher.client_for = patient_wait, patient_client


# ---------------------------------------------------------------- bare side


def bare_party(spec_path: Path, me: str) -> int:
    """One party of the bare script; prints its stage times as one JSON line."""
    t0 = time.perf_counter()
    import secretflow as sf
    from secretflow.device import PYUObject

    t_import = time.perf_counter() - t0
    spec = json.loads(spec_path.read_text())
    names = sorted(spec["ports"])
    t1 = time.perf_counter()
    sf.init(address="local", ray_mode=False, logging_level="warning", job_name="bare",
            cluster_config={"parties": {n: {"address": f"127.0.0.1:{spec['ports'][n][0]}",
                                            "listen_addr": f"127.0.0.1:{spec['ports'][n][0]}"} for n in names},
                            "self_party": me},
            cross_silo_comm_backend="grpc", enable_waiting_for_other_parties_ready=True)
    pyu = {n: sf.PYU(n) for n in names}
    spu = sf.SPU({"nodes": [{"party": n, "address": f"127.0.0.1:{spec['ports'][n][1]}",
                             "listen_address": f"127.0.0.1:{spec['ports'][n][1]}"} for n in names],
                  "runtime_config": {"protocol": "SEMI2K", "field": "FM64"}},
                 link_desc={"connect_retry_times": 600, "connect_retry_interval_ms": 100})
    t_connect = time.perf_counter() - t1
    t2 = time.perf_counter()
    refs = [PYUObject(pyu[n], spu.actors[n].psi.remote(
        keys=[KEY], input_path=spec["inputs"][n] if n == me else "", output_path=spec["outputs"][n] if n == me else "",
        receiver=spec["receiver"], table_keys_duplicated=False, broadcast_result=False, protocol="PROTOCOL_RR22"))
        for n in names]
    sf.wait([refs[names.index(me)]])  # its own side only: a peer that has exited answers no cross-party wait
    t_psi = time.perf_counter() - t2
    print(json.dumps({"party": me, "import": t_import, "connect": t_connect, "psi": t_psi}), flush=True)
    sys.stdout.flush()
    os._exit(0)


def run_bare(root: Path, keys: dict[str, Path]) -> dict[str, Any]:
    from common.net import free_ports

    ports = free_ports(4)
    work = Path(tempfile.mkdtemp(prefix="bare-", dir=root))
    spec = {"ports": {"bank": ports[:2], "tax": ports[2:]}, "inputs": {n: str(p) for n, p in keys.items()},
            "outputs": {n: str(work / f"{n}.out.csv") for n in keys}, "receiver": "bank"}
    (work / "spec.json").write_text(json.dumps(spec))
    l0, t0 = load(), time.perf_counter()
    procs = {n: subprocess.Popen([sys.executable, __file__, "--bare-party", n, "--spec", str(work / "spec.json")],
                                 stdout=subprocess.PIPE, stderr=open(work / f"{n}.err", "w"), text=True)  # noqa: SIM115
             for n in ("bank", "tax")}
    outs = {n: p.communicate(timeout=1800)[0] for n, p in procs.items()}
    wall = time.perf_counter() - t0
    for n, p in procs.items():
        if p.returncode != 0:
            raise SystemExit(f"bare party {n} failed: {(work / f'{n}.err').read_text()[-2000:]}")
    bank = json.loads(outs["bank"].strip().splitlines()[-1])
    rows = sum(1 for _ in open(spec["outputs"]["bank"])) - 1  # noqa: SIM115
    return {"side": "bare", "wall": wall, "rows": rows, "load": (l0, load()),
            "stages": {"start+import": bank["import"], "connect": bank["connect"], "psi": bank["psi"],
                       "exit": wall - bank["import"] - bank["connect"] - bank["psi"]}}


# ---------------------------------------------------------------- dcp side


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def run_job(fed: dict[str, Any]) -> dict[str, Any]:
    c, nodes = fed["client"], fed["state"].nodes
    spec = {"kind": "psi", "requester": "bank", "purpose": "common customers (bench_psi_job)", "join_key": KEY,
            "inputs": [{"member": m, "dataset": f"{m}_1m", "columns": []} for m in ("bank", "tax")],
            "expires_in_s": 3600}
    l0 = load()
    t_submit = time.time()
    job = c.submit(spec)
    for m in ("bank", "tax"):
        assert c.approve(job, m, nodes[m])["status"] == "approved"
    seen: dict[str, float] = {}  # first time the bank's task showed each stage
    while True:
        st = c.status(job)
        now = time.time()
        task = st.tasks.get("bank") or {}
        stage = task.get("stage") or ""
        if stage and stage not in seen:
            seen[stage] = now
        if st.state.value in ("SUCCEEDED", "FAILED", "REJECTED", "REVOKED", "EXPIRED"):
            break
        time.sleep(0.1)
    t_done = time.time()
    if st.state.value != "SUCCEEDED":
        raise SystemExit(f"job {job} ended {st.state.value}: {st.reason}")
    ev = {e["to"]: _at(e["at"]) for e in st.events}
    # checkpoints in order; one the 0.1 s poll (of the coordinator's own 0.3 s view) missed takes the
    # next one's time, so its stage counts as 0 and its time goes to the stage before
    marks = [t_submit, ev.get("RUNNING"), seen.get("start"), seen.get("connect:start"), seen.get("psi:start"),
             seen.get("psi:done"), seen.get("done"), ev.get("SUCCEEDED", t_done)]
    for i in range(len(marks) - 2, -1, -1):
        if marks[i] is None:
            marks[i] = marks[i + 1]
    names = ["approvals", "extract", "start+validate", "connect", "psi", "collect+seal+receipt", "coordinator"]
    stages = {n: marks[i + 1] - marks[i] for i, n in enumerate(names)}
    t_r = time.perf_counter()
    st_ = fed["state"]
    keys = c.result(job, "intersection", st_.keys_dir / "bank.keystore.json", st_.passphrase_of("bank"))
    fetch = time.perf_counter() - t_r
    return {"side": "dcp", "wall": ev.get("SUCCEEDED", t_done) - t_submit, "rows": keys.count(b"\n") - 1,
            "load": (l0, load()), "stages": stages, "fetch": fetch, "job": job,
            "after_approval": ev.get("SUCCEEDED", t_done) - (ev.get("RUNNING") or t_submit),
            "seen": sorted(seen, key=seen.get)}


def settle(timeout: float = 240.0) -> None:
    """Wait until the nodes' warm parties have finished importing (they compete for the cores otherwise)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        warm = [p for p in psutil.process_iter(["cmdline"]) if "--warm" in (p.info["cmdline"] or [])]
        try:
            busy = sum(p.cpu_percent(interval=None) for p in warm)
            time.sleep(1.0)
            busy = sum(p.cpu_percent(interval=None) for p in warm)
        except psutil.Error:
            continue
        if len(warm) >= 2 and busy < 10:
            return
    print("warning: the warm parties did not settle", flush=True)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--common", type=int, default=600_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--bare-party")
    ap.add_argument("--spec", type=Path)
    args = ap.parse_args()
    if args.bare_party:
        raise SystemExit(bare_party(args.spec, args.bare_party))

    from rich.console import Console
    from rich.table import Table

    from tests.coordinator.fedkit import DiagnosingClient, started

    patient_launcher()
    data_dir = Path(tempfile.gettempdir()) / f"dcp-bench-psi-data-{args.rows}-{args.common}"
    with tempfile.TemporaryDirectory(prefix="bench-psi-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        files = make_data(data_dir, args.rows, args.common)
        print(f"data: {args.rows:,} × 2 rows, {args.common:,} in common, {time.perf_counter() - t0:.1f} s", flush=True)
        members = [{"name": m, "role": "bank" if m == "bank" else "department", "policy": POLICY,
                    "datasets": [{"name": f"{m}_1m", "file": str(files[m]), "key_column": KEY}]}
                   for m in ("bank", "tax")]
        t0 = time.perf_counter()
        with started(root, members) as state:
            from protocols.crypto.keystore import load_keystore

            bank = load_keystore(state.keys_dir / "bank.keystore.json", state.passphrase_of("bank"))
            fed = {"state": state, "client": DiagnosingClient(state.coordinator_url, root, signer=bank, state=state)}
            print(f"dcp up with the two datasets: {time.perf_counter() - t0:.1f} s", flush=True)
            keys = {m: data_dir / f"{m}_keys.csv" for m in ("bank", "tax")}
            runs: list[dict[str, Any]] = []
            for i in range(args.pairs):
                order = ("dcp", "bare") if i % 2 == 0 else ("bare", "dcp")
                for side in order:
                    settle()
                    r = run_job(fed) if side == "dcp" else run_bare(root, keys)
                    r["pair"] = i + 1
                    runs.append(r)
                    print(json.dumps({k: v for k, v in r.items() if k != "job"}, default=str), flush=True)
            stage_names = ["approvals", "extract", "start+validate", "start+import", "connect", "psi",
                           "collect+seal+receipt", "coordinator", "exit"]
            table = Table(title=f"PSI RR22, 2 parties, {args.rows:,} × {args.rows:,} ({args.common:,} in common), "
                                f"{os.cpu_count()} cores, alternating pairs")
            for col in ("pair", "side", "∩ rows", *stage_names, "submit→SUCCEEDED / wall s", "approved→SUCCEEDED s",
                        "result fetch s", "load before → after"):
                table.add_column(col, justify="right")
            for r in runs:
                table.add_row(str(r["pair"]), r["side"], f"{r['rows']:,}",
                              *[f"{r['stages'][s]:.2f}" if s in r["stages"] else "" for s in stage_names],
                              f"{r['wall']:.2f}", f"{r['after_approval']:.2f}" if "after_approval" in r else "",
                              f"{r['fetch']:.2f}" if "fetch" in r else "", f"{r['load'][0]:.1f} → {r['load'][1]:.1f}")
            Console(width=250).print(table)
            dcp = [r for r in runs if r["side"] == "dcp"]
            bare = [r for r in runs if r["side"] == "bare"]
            md, mb = statistics.median(r["wall"] for r in dcp), statistics.median(r["wall"] for r in bare)
            ma = statistics.median(r["after_approval"] for r in dcp)
            pairs = [next(r for r in dcp if r["pair"] == p)["wall"] / next(r for r in bare if r["pair"] == p)["wall"]
                     for p in range(1, args.pairs + 1)]
            me = statistics.median(r["wall"] - r["stages"]["start+import"] for r in bare)
            print(f"median dcp submit→SUCCEEDED {md:.2f} s, approved→SUCCEEDED {ma:.2f} s, bare {mb:.2f} s; "
                  f"ratio {md / mb:.2f} (per pair {', '.join(f'{x:.2f}' for x in pairs)}); "
                  f"approved→SUCCEEDED / bare {ma / mb:.2f}; bare without its start-up and import {me:.2f} s, "
                  f"approved→SUCCEEDED / that {ma / me:.2f}")


if __name__ == "__main__":
    main()
