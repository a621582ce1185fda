"""``python -m protocols.gateway``: two gateway processes from YAML files carry a link; SIGHUP closes a
job that left the file; SIGTERM stops the process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from common.net import free_ports
from protocols.gmtls.certs import write_credentials
from tests.gateway.conftest import Engine, roundtrip

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp: Path, me: str, listen: int, local: dict, peer: str, peer_port: int, members: dict) -> Path:
    cert, key = (tmp / f"{me}.tls.crt", tmp / f"{me}.tls.key")
    data = {"member": me, "listen_port": listen, "cert": str(cert), "key": str(key), "members": members,
            "jobs": {"j1": {"local_ports": local,
                            "peers": {peer: {"host": "127.0.0.1", "port": peer_port, "key": members[peer]}}}}}
    path = tmp / f"{me}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(path: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "protocols.gateway", "--config", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)


def test_two_gateway_processes_carry_a_link_and_reload_their_jobs(tmp_path, people, engines, no_leaked_processes):
    for m in ("alice", "bob"):
        write_credentials(tmp_path, m, people[m].private_key)
    members = {m: people[m].public_key.hex() for m in ("alice", "bob", "carol")}
    ga, gb, a_fed = free_ports(3)
    bob_engine = Engine()
    engines.append(bob_engine)
    procs = []
    try:
        pa, ready_a = _start(_config(tmp_path, "alice", ga, {"fed": a_fed}, "bob", gb, members))
        procs.append(pa)
        b_path = _config(tmp_path, "bob", gb, {"fed": bob_engine.port}, "alice", ga, members)
        pb, ready_b = _start(b_path)
        procs.append(pb)
        assert ready_a["member"] == "alice" and ready_a["listen"] == ["127.0.0.1", ga]
        assert set(ready_b["jobs"]["j1"]) == {"alice"}
        port = ready_a["jobs"]["j1"]["bob"]["fed"]
        assert roundtrip(port, b"through two processes") == b"through two processes"
        live = socket.create_connection(("127.0.0.1", port), timeout=10)
        live.sendall(b"ping")
        assert live.recv(4) == b"ping"
        pa.send_signal(signal.SIGHUP)  # alice's file did not change: same routes, live link kept
        assert json.loads(pa.stdout.readline()) == ready_a
        live.sendall(b"pong")
        assert live.recv(4) == b"pong"
        b_path.write_text(yaml.safe_dump({**yaml.safe_load(b_path.read_text()), "jobs": {}}))
        pb.send_signal(signal.SIGHUP)
        assert json.loads(pb.stdout.readline())["jobs"] == {}
        assert live.recv(4) == b""  # bob closed the job: its live link is cut
        live.close()
        assert roundtrip(port, b"after the job left bob's file") == b""
        assert bob_engine.accepted == 2
    finally:
        for p in procs:
            p.terminate()
        codes = [p.wait(timeout=15) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
    assert codes == [0, 0]


def test_a_bad_config_exits_with_a_message(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("member: alice\nlisten_port: 1\ncert: x\nkey: y\nmembers: {alice: '00'}\n")
    done = subprocess.run([sys.executable, "-m", "protocols.gateway", "--config", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "members.alice" in done.stderr and "64 bytes" in done.stderr
