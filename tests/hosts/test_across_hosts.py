"""A federation across hosts, set up with the README's per-host commands only (no ``dcp up``).

Each member runs on its own "host": a Linux network namespace (``hosts-bank``, ``hosts-tax``,
``hosts-power``; the chain and the coordinator share ``hosts-chain``), each joined by a veth pair to
a bridge in ``hosts-lan`` (10.231.0.0/24; ``DCP_NETNS_PREFIX`` replaces ``hosts``, e.g. for several
runs on one machine). The test reads the shell blocks of the README's "Across
machines" section and runs each on its host, exactly as written, with the variables the README's table
names. A ``secure_stats`` job, a SecretFlow PSI job and a PSI + SS-LR ``vertical_train`` job (their
engine links through each node's 国密 gateway) run across the hosts, the regulator's audit finds each
job's receipts on chain, and ``tcpdump`` on the bridge captures every link: no column name, no
``uscc``, no HTTP request line and no gRPC path is in any payload but the chain's JSON-RPC (anvil is
plain HTTP; the test checks that the detector does find plaintext there).

Where namespaces cannot be made (no root, no ``ip``, no ``tcpdump``) the test fails and says so.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common.net import free_ports
from common.settings import project_root

pytestmark = pytest.mark.slow

ROOT = project_root()
NS = os.environ.get("DCP_NETNS_PREFIX", "hosts")  # names and interfaces: at most 15 - 7 characters
LAN = f"{NS}-lan"
HOSTS = {"chain": "10.231.0.1", "bank": "10.231.0.2", "tax": "10.231.0.3", "power": "10.231.0.4"}
DEPARTMENTS = ("tax", "power")
SECRET_WORDS = [b"employees", b"uscc", b"tax_stats", b"power_stats", b"bank_2024", b"tax_2024", b"power_2024",
                b"bank_loan_amount", b"tax_vat_paid", b"power_kwh", b"application/grpc", b"PRI * HTTP/2.0"]
REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) /\S* HTTP/1\.[01]")
GRPC_PATH = re.compile(rb"/[A-Za-z_][\w.]*\.[A-Z]\w*/[A-Z]\w+")


def readme_blocks() -> list[tuple[str, str]]:
    """The README's "Across machines" blocks: ``(tag, script)`` in order (tag e.g. ``member service``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Across machines"):]
    section = section[:section.index("\n### ", 5)]
    return [(m.group(1).strip(), m.group(2)) for m in
            re.finditer(r"<!-- hosts: ([a-z0-9 -]+) -->\n```bash\n(.*?)```", section, re.S)]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def make_network() -> None:
    """The namespaces, the bridge and one veth pair per host (FAILS, never skips, if it cannot)."""
    missing = [c for c in ("ip", "tcpdump") if shutil.which(c) is None]
    if missing:
        pytest.fail(f"cannot run the multi-host test: {', '.join(missing)} not installed "
                    "(requirements/debian.txt; the bootstrap installs them as root)")
    try:
        sh("ip", "netns", "add", LAN)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"this machine cannot create network namespaces (needs root / CAP_SYS_ADMIN): {exc.stderr.strip()}")
    sh("ip", "-n", LAN, "link", "add", f"{NS}-br", "type", "bridge")
    sh("ip", "-n", LAN, "link", "set", f"{NS}-br", "up")
    for name, addr in HOSTS.items():
        ns = f"{NS}-{name}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"{NS}-{name}0", "netns", ns, "type", "veth", "peer", "name", f"{NS}-{name}1",
           "netns", LAN)
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", f"{NS}-{name}0")
        sh("ip", "-n", ns, "link", "set", f"{NS}-{name}0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", LAN, "link", "set", f"{NS}-{name}1", "master", f"{NS}-br", "up")


def drop_network() -> None:
    for ns in [*(f"{NS}-{n}" for n in HOSTS), LAN]:
        sh("ip", "netns", "del", ns, check=False)


def stats_data(directory: Path) -> dict[str, list[int]]:
    """Employees per enterprise for tax (60 rows) and power (48 rows), keyed by random USCCs (30 enterprises
    in both: the PSI job's intersection)."""
    from common.ids import random_uscc

    r = random.Random(7)
    values = {"tax": [1 + (i * 37) % 100 for i in range(60)], "power": [3 + (i * 53) % 97 for i in range(48)]}
    keys = [random_uscc(r) for _ in range(78)]
    own = {"tax": keys[:60], "power": keys[30:]}
    for name, vals in values.items():
        d = directory / name / "data"
        d.mkdir(parents=True, exist_ok=True)
        lines = ["uscc,employees", *(f"{k},{v}" for k, v in zip(own[name], vals, strict=True))]
        (d / f"{name}_stats.csv").write_text("\n".join(lines) + "\n")
    return values


def credit_data(directory: Path) -> tuple[int, set[str]]:
    """The credit model's data (``protocols.secretflow.synthetic``, 600 rows a member): ``<member>_2024.csv``
    in each member's ``data``; returns the three-way intersection's size and its keys."""
    import pandas as pd

    from protocols.secretflow.synthetic import make_vertical_data

    made = make_vertical_data(directory / "synthetic", n_rows=600, overlap=0.6, seed=15)
    keys = []
    for p in made.parties:
        keys.append(set(pd.read_csv(p.csv_path, dtype={"uscc": str})["uscc"]))
        p.csv_path.rename(directory / p.name / "data" / f"{p.name}_2024.csv")
    common = set.intersection(*keys)
    assert len(common) == made.true_intersection
    return made.true_intersection, common


def pcap_flows(path: Path) -> dict[tuple[str, int, str, int], bytes]:
    """TCP payloads per (src, sport, dst, dport), concatenated in capture order (Ethernet, IPv4)."""
    data = path.read_bytes()
    flows: dict[tuple[str, int, str, int], bytearray] = {}
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16: pos + 16 + incl]
        pos += 16 + incl
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        tcp = 14 + ihl
        sport, dport = struct.unpack_from("!HH", frame, tcp)
        payload = frame[tcp + (frame[tcp + 12] >> 4) * 4: 14 + total]
        if payload:
            key = (".".join(map(str, frame[26:30])), sport, ".".join(map(str, frame[30:34])), dport)
            flows.setdefault(key, bytearray()).extend(payload)
    return {k: bytes(v) for k, v in flows.items()}


def plaintext_in(payload: bytes) -> list[str]:
    found = [w.decode() for w in SECRET_WORDS if w in payload]
    found += [m.group(0).decode(errors="replace") for m in REQUEST_LINE.finditer(payload)][:1]
    found += [m.group(0).decode(errors="replace") for m in GRPC_PATH.finditer(payload)][:1]
    return found


@pytest.mark.timeout(1800)  # ~3 min idle; under a shared machine's load far more
def test_a_federation_across_hosts_from_the_readme(tmp_path, no_leaked_processes):
    blocks = readme_blocks()
    tags = [t for t, _ in blocks]
    assert tags.count("member service") == 1 and tags.count("department") == 3 and "regulator" in tags, tags
    values = stats_data(tmp_path)
    (tmp_path / "bank" / "data").mkdir(parents=True)
    n_common, common_keys = credit_data(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    rpc_port, coord_port, node_port, gw_port = free_ports(4)
    venv_bin = ROOT / ".venv" / "bin"
    base_env = {
        "PATH": f"{venv_bin}:{ROOT / 'contracts' / 'node_modules' / '.bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8",
        "CHAIN": HOSTS["chain"], "RPC_PORT": str(rpc_port), "RPC": f"http://{HOSTS['chain']}:{rpc_port}",
        "COORD_PORT": str(coord_port), "COORD": f"https://{HOSTS['chain']}:{coord_port}",
        "NODE_PORT": str(node_port), "SHARED": str(shared), "GW_PORT": str(gw_port),
        **{f"{m.upper()}_GW": f"{HOSTS[m]}:{gw_port}" for m in ("bank", "tax", "power")},
        **{f"{m.upper()}_NODE": f"https://{HOSTS[m]}:{node_port}" for m in ("bank", "tax", "power")},
    }
    governors = ("governor-1", "governor-2", "governor-3")
    where = {"bank": "bank", "tax": "tax", "power": "power", "coordinator": "chain", "chain": "chain",
             "regulator": "chain", **dict.fromkeys(governors, "chain")}
    for m in where:
        (tmp_path / m).mkdir(exist_ok=True)
    (tmp_path / "bank" / "secure_stats.yaml").write_text(
        (ROOT / "coordinator" / "examples" / "secure_stats.yaml").read_text())
    for spec in ("psi.yaml", "credit_job.yaml"):
        (tmp_path / "bank" / spec).write_text((ROOT / "coordinator" / "examples" / spec).read_text())
    services: list[subprocess.Popen[bytes]] = []
    extra: dict[str, str] = {}

    def env_of(me: str) -> dict[str, str]:
        host = HOSTS[where[me]]
        return {**base_env, **extra, "ME": me, "HOST": host, "NODE": f"https://{host}:{node_port}",
                "DCP_FEDERATION_DIR": str(tmp_path / me / "fed"), "DCP_MEMBER": me}

    def run(me: str, script: str, timeout: float = 300) -> str:
        p = subprocess.run(["ip", "netns", "exec", f"{NS}-{where[me]}", "bash", "-euo", "pipefail", "-c", script],
                           cwd=tmp_path / me, env=env_of(me), capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"{me}: {script}\n--- stdout\n{p.stdout[-2000:]}\n--- stderr\n{p.stderr[-3000:]}"
        return p.stdout

    def start(me: str, script: str) -> None:
        log = (tmp_path / me / "service.log").open("ab")
        services.append(subprocess.Popen(
            ["ip", "netns", "exec", f"{NS}-{where[me]}", "bash", "-c", "exec " + script.strip()],
            cwd=tmp_path / me, env=env_of(me), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def wait_port(me: str, port: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(["ip", "netns", "exec", f"{NS}-{where[me]}", "bash", "-c",
                                    f"exec 3<>/dev/tcp/{HOSTS[where[me]]}/{port}"], capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.3)
        log = (tmp_path / me / "service.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"{me}: nothing listens on port {port} after {timeout:.0f}s\n{log}")

    def each(members: tuple[str, ...], fn) -> list:  # noqa: ANN001 — every host at once, as separate machines would
        with ThreadPoolExecutor(len(members)) as pool:
            return list(pool.map(fn, members))

    members = ("bank", "tax", "power")
    capture = tmp_path / "links.pcap"
    results: dict[str, str] = {}  # output name -> what `dcp job result` printed
    jobs: list[str] = []  # the submitted jobs, in order
    tcpdump = None
    t0 = time.monotonic()
    try:
        make_network()
        tcpdump = subprocess.Popen(["ip", "netns", "exec", LAN, "tcpdump", "-i", f"{NS}-br", "-U", "-s", "0",
                                    "-w", str(capture)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True)
        for tag, script in blocks:
            began = time.monotonic()
            if tag == "chain service":
                start("chain", script)
                wait_port("chain", rpc_port)
            elif tag in governors:
                run(tag, script)
                if "deployment.json" in script:
                    extra["REGISTRY"] = json.loads((shared / "deployment.json").read_text())["registry"]
            elif tag == "each":
                each((*members, "coordinator", *governors), lambda m, s=script: run(m, s))
            elif tag == "member":
                each(members, lambda m, s=script: run(m, s))
            elif tag == "member service":
                for m in members:
                    start(m, script)
                for m in members:
                    wait_port(m, node_port)
            elif tag == "coordinator":
                run("coordinator", script)
            elif tag == "coordinator service":
                start("coordinator", script)
                wait_port("coordinator", coord_port)
            elif tag == "bank" and "submit" in script:
                extra["JOB"] = run("bank", script).strip().splitlines()[-1]
                assert extra["JOB"].startswith("job-"), extra["JOB"]
                jobs.append(extra["JOB"])
            elif tag == "department":
                each(DEPARTMENTS, lambda m, s=script: run(m, s))
            elif tag == "bank":
                results[script.split()[-1]] = run("bank", script, timeout=400)
            elif tag == "regulator":
                run("regulator", script)
            else:
                pytest.fail(f"README block with an unknown host tag {tag!r}")
            print(f"{time.monotonic() - began:6.1f}s  {tag}: {script.splitlines()[0][:70]}", flush=True)
        setup_s = time.monotonic() - t0
        audit = json.loads((tmp_path / "regulator" / "audit.json").read_text())
    finally:
        for p in reversed(services):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in services:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if tcpdump is not None:
            time.sleep(0.5)
            os.killpg(tcpdump.pid, signal.SIGINT)
            tcpdump.wait(10)
        drop_network()

    # each job ended SUCCEEDED (the bank's `dcp job status --watch`), through the same transitions
    assert len(jobs) == 3, jobs
    for job in jobs:
        st = json.loads((tmp_path / "bank" / f"{job}.json").read_text())
        assert st["state"] == "SUCCEEDED" and not st["reason"], (job, st["state"], st["reason"])
        assert [e["to"] for e in st["events"]][-3:] == ["AUTHORIZED", "RUNNING", "SUCCEEDED"], st["events"]
    stats_job, psi_job, credit_job = jobs
    got = json.loads(results["stats"])
    truth = values["tax"] + values["power"]
    assert got["count"] == len(truth) and abs(got["sum"] - sum(truth)) < 1e-3 * sum(truth), got
    both = [set((tmp_path / m / "data" / f"{m}_stats.csv").read_text().split()[1:]) for m in DEPARTMENTS]
    keys = [{line.split(",")[0] for line in rows} for rows in both]
    psi = results["intersection"].split()
    assert psi[0] == "uscc" and set(psi[1:]) == keys[0] & keys[1] and len(psi) == 31, psi[:3]
    metrics = json.loads(results["metrics"])
    assert metrics["n_rows"] == n_common and 0.6 < metrics["auc"] <= 1.0, metrics
    # the regulator's audit: clean, each job's authorization on chain with one receipt per dataset it names
    from protocols.crypto.approvals import job_key
    from protocols.manifest import dataset_chain_id

    assert audit["findings"] == [], audit["findings"]
    on_chain = {j["job_id"]: j for j in audit["jobs"]}
    for job, datasets in ((stats_job, {"tax": "tax_stats", "power": "power_stats"}),
                          (psi_job, {"tax": "tax_stats", "power": "power_stats"}),
                          (credit_job, {m: f"{m}_2024" for m in ("bank", "tax", "power")})):
        entry = on_chain["0x" + job_key(job).hex()]
        want = {"0x" + dataset_chain_id(m, d).hex() for m, d in datasets.items()}
        assert {r["dataset_id"] for r in entry["receipts"]} == want and len(entry["receipts"]) == len(want), entry

    flows = pcap_flows(capture)
    chain_rpc = {k: v for k, v in flows.items() if rpc_port in (k[1], k[3])}
    others = {k: v for k, v in flows.items() if k not in chain_rpc}
    # the detector works: anvil's JSON-RPC is plain HTTP on the same links
    assert any(REQUEST_LINE.search(v) for v in chain_rpc.values()), "no plaintext found even on the chain's RPC"
    # every service hop crossed the bridge: the coordinator's and each node's port carried payload
    ports = {p for k in others for p in (k[1], k[3])}
    assert {coord_port, node_port, gw_port} <= ports, sorted(ports)  # the PSI's links crossed the gateways
    assert sum(len(v) for v in others.values()) > 50_000
    secrets = [k.encode() for k in sorted(common_keys)[:50] + sorted(keys[0] & keys[1])[:20]]  # joined USCCs
    leaks = {f"{k[0]}:{k[1]}->{k[2]}:{k[3]}": found for k, v in others.items()
             if (found := plaintext_in(v) + [s.decode() for s in secrets if s in v][:1])}
    assert not leaks, f"plaintext on the links: {leaks}"
    print(f"set-up and jobs {setup_s:.0f}s; {len(others)} TLS flows, {sum(len(v) for v in others.values())} bytes")
