"""Where an idle federation's memory goes (issue #19 item 5), process by process.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_idle_memory.py [--jobs 3] [--rows 20000]

Brings a three-member federation up as ``dcp up`` does (anvil, coordinator, bank/tax/power nodes,
each node with its warm SecretFlow party), waits until every process's RSS has settled, and prints
for each process its RSS, PSS (shared pages divided among the processes that map them), USS (its
private pages: what stopping it would free), anonymous memory (heaps, arenas), and the mappings
that hold most of its RSS — all from ``/proc/PID/smaps_rollup`` and ``/proc/PID/smaps``. Then it
runs ``--jobs`` SS-LR jobs one after the other and prints each node's and party's RSS after each,
to show what a job leaves behind. Every number comes with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

MiB = 1024


def rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            out[key] = int(parts[0])
    return out


def by_mapping(pid: int) -> dict[str, int]:
    """RSS (kB) per mapped object: a file's base name, or ``[anon]`` / ``[heap]`` / ``[stack]``."""
    rss: dict[str, int] = defaultdict(int)
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            path = head[5].strip() if len(head) == 6 else ""
            name = os.path.basename(path) if path.startswith("/") else (path or "[anon]")
        elif line.startswith("Rss:"):
            rss[name] += int(line.split()[1])
    return dict(rss)


def kind(name: str) -> str:
    if name in ("[anon]", "[heap]"):
        return "heap + anonymous (Python objects, arenas, C++ allocations)"
    if ".so" in name:
        return "shared libraries"
    return "other files / stacks"


def processes(state) -> list[tuple[str, psutil.Process]]:  # noqa: ANN001
    """(label, process) of the federation: anvil, coordinator, each node and its party children."""
    out = []
    for label, pid in state.pids.items():
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        out.append((label if label in ("anvil", "coordinator") else f"node {label}", proc))
        if label not in ("anvil", "coordinator"):
            for child in proc.children(recursive=True):
                cmd = " ".join(child.cmdline())
                if "protocols.secretflow.party" in cmd:
                    out.append((f"  {label}'s SecretFlow party" + (" (warm, idle)" if "--warm" in cmd else ""),
                                child))
    return out


def settle(state, timeout: float = 240.0, parties_expected: bool = True) -> float:  # noqa: ANN001
    """Wait until every node has a party (unless they start on demand) and no process's RSS moved by
    more than 1 % over 3 s."""
    t0 = time.monotonic()
    last: dict[int, int] = {}
    while time.monotonic() - t0 < timeout:
        procs = processes(state)
        now = {}
        for _, p in procs:
            try:
                now[p.pid] = p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        parties = sum("party" in label for label, _ in procs)
        nodes = sum(label.startswith("node") for label, _ in procs)
        if (parties >= nodes or not parties_expected) and last and now.keys() == last.keys() and all(
                abs(now[k] - last[k]) <= 0.01 * last[k] for k in now):
            return time.monotonic() - t0
        last = now
        time.sleep(3)
    return time.monotonic() - t0


def table(state) -> list[tuple[str, int, int, int, int, str]]:  # noqa: ANN001
    rows = []
    for label, p in processes(state):
        try:
            r, m = rollup(p.pid), by_mapping(p.pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        uss = r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
        kinds: dict[str, int] = defaultdict(int)
        for name, kb in m.items():
            kinds[kind(name)] += kb
        top = sorted(((kb, name) for name, kb in m.items() if kind(name) == "shared libraries"), reverse=True)[:3]
        libs = ", ".join(f"{name} {kb / MiB:.0f}" for kb, name in top)
        heap = kinds["heap + anonymous (Python objects, arenas, C++ allocations)"]
        sos = kinds["shared libraries"]
        rows.append((label, r["Rss"], r["Pss"], uss, heap, f"{sos / MiB:.0f} MiB ({libs})"))
    return rows


def show(rows, load) -> None:  # noqa: ANN001
    print(f"\nidle federation, load average {load[0]:.2f} / {load[1]:.2f} (1 / 5 min)")
    print(f"{'process':<40} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8} {'anon MiB':>9}  shared libraries (top 3, MiB)")
    for label, rss, pss, uss, heap, libs in rows:
        print(f"{label:<40} {rss / MiB:>8.0f} {pss / MiB:>8.0f} {uss / MiB:>8.0f} {heap / MiB:>9.0f}  {libs}")
    print(f"{'total':<40} {sum(r[1] for r in rows) / MiB:>8.0f} {sum(r[2] for r in rows) / MiB:>8.0f} "
          f"{sum(r[3] for r in rows) / MiB:>8.0f} {sum(r[4] for r in rows) / MiB:>9.0f}")


def main() -> None:
    from tests.coordinator.fedkit import federation, vertical_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3, help="SS-LR jobs to run after the idle measurement")
    ap.add_argument("--rows", type=int, default=20000, help="rows per party of the jobs' data")
    ap.add_argument("--on-demand", action="store_true",
                    help="nodes keep no warm party at idle: one starts when a job reserves the node's ports "
                         "(DCP_NODE_WARM_ENGINE_ON_DEMAND=1)")
    args = ap.parse_args()
    if args.on_demand:
        os.environ["DCP_NODE_WARM_ENGINE_ON_DEMAND"] = "1"  # the nodes dcp up starts inherit it
    from bench_psi_job import patient_launcher

    patient_launcher()  # a loaded machine's nodes may take more than 60 s to answer
    root = Path(tempfile.mkdtemp(prefix="dcp-bench-mem-"))
    with federation(root, n_rows=args.rows, seed=11, coordinator={"poll_interval_s": 0.3}) as fed:
        state, c = fed["state"], fed["client"]
        waited = settle(state, parties_expected=not args.on_demand)
        print(f"settled after {waited:.0f} s ({'warm parties on demand' if args.on_demand else 'always warm'})")
        show(table(state), os.getloadavg())
        growth = []
        for k in range(args.jobs):
            t0 = time.perf_counter()
            job = c.submit(vertical_spec(fed, f"memory bench {k}"))
            for m in ("bank", "tax", "power"):
                c.approve(job, m, state.nodes[m])
            final = c.wait(job, timeout=900)
            wall = time.perf_counter() - t0
            settle(state, timeout=90, parties_expected=not args.on_demand)
            growth.append((k + 1, f"{final.state.value} {wall:.0f}s",
                           {label: p.memory_info().rss for label, p in processes(state)}, os.getloadavg()[0]))
        if growth:
            labels = list(growth[-1][2])
            print(f"\nRSS (MiB) after each SS-LR job of {args.rows:,} rows per party (one after the other)")
            print(f"{'after job':<10} {'state, s':<15} {'load':>5}  " + "  ".join(f"{x.strip()[:22]:>22}" for x in labels))
            for k, st, rss, load in growth:
                print(f"{k:<10} {st:<15} {load:>5.1f}  "
                      + "  ".join(f"{rss.get(x, 0) / 2**20:>22.0f}" for x in labels))


if __name__ == "__main__":
    main()
