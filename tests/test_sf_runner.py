"""The SecretFlow runner: real party processes over gRPC, and no process left behind.

The multi-process tests start one ``python -m protocols.secretflow.party`` per party
(production mode, ray_mode=False) and check results against ground truth computed
in the clear here: the true key overlap and scikit-learn on the plaintext join.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from pydantic import ValidationError

from common.settings import project_root
from protocols.secretflow import party as party_mod
from protocols.secretflow.errors import (
    DcpRunError,
    EmptyIntersectionError,
    JobSpecError,
    PartyFailedError,
    PartyInputError,
    RunTimeoutError,
)
from protocols.secretflow.runner import build_party_configs, run_vertical_job
from protocols.secretflow.spec import ModelParams, PartyExit, PartySpec, VerticalJobSpec, sslr_schedule
from protocols.secretflow.synthetic import make_vertical_data, plaintext_reference
from protocols.secretflow.traces import remove_psi_traces


def party_processes(tmp_path: Path) -> list[str]:
    """Live party processes of this test (by module name and the test's own tmp path)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "protocols.secretflow.party" in cmd and str(tmp_path) in cmd:
                if proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(f"{proc.info['pid']}: {cmd[:160]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def psi_traces_naming(tmp_path: Path) -> list[Path]:
    """libpsi's /tmp/psi_*.trace files written by this test's parties (they embed the cmdline)."""
    return [p for p in Path("/tmp").glob("psi_*.trace") if str(tmp_path).encode() in p.read_bytes()]


def true_overlap(spec: VerticalJobSpec) -> set[str]:
    keys = None
    for p in spec.parties:
        s = set(pd.read_csv(p.input_csv, dtype={spec.join_key: str})[spec.join_key])
        keys = s if keys is None else keys & s
    assert keys is not None
    return keys


# ---------------------------------------------------------------- fast: spec, configs, input checks


def test_spec_rejects_unknown_label_party_and_duplicate_names(tmp_path):
    a = PartySpec(name="a", input_csv=tmp_path / "a.csv", output_dir=tmp_path / "a")
    b = PartySpec(name="b", input_csv=tmp_path / "b.csv", output_dir=tmp_path / "b")
    with pytest.raises(ValidationError, match="label_party 'c'"):
        VerticalJobSpec(parties=[a, b], join_key="id", label_party="c", label_column="y")
    with pytest.raises(ValidationError, match="unique"):
        VerticalJobSpec(parties=[a, a], join_key="id", label_party="a", label_column="y")
    shared = b.model_copy(update={"output_dir": tmp_path / "a"})
    with pytest.raises(ValidationError, match="own output_dir"):
        VerticalJobSpec(parties=[a, shared], join_key="id", label_party="a", label_column="y")
    with pytest.raises(ValidationError, match="psi_protocol"):
        VerticalJobSpec(parties=[a, b], join_key="id", label_party="a", label_column="y", psi_protocol="KKRT")
    with pytest.raises(ValidationError, match="ECDH_3PC needs exactly 3 parties"):
        VerticalJobSpec(
            parties=[a, b], join_key="id", label_party="a", label_column="y", psi_protocol="ECDH_3PC"
        )


def test_party_configs_hold_only_own_paths_and_distinct_ports(tmp_path):
    data = make_vertical_data(tmp_path / "data", n_rows=100, seed=1)
    spec = data.job_spec(tmp_path / "out")
    configs = build_party_configs(spec)
    assert set(configs) == {"bank", "tax", "power"}
    ports = []
    for name, cfg in configs.items():
        assert cfg.me.name == name
        text = cfg.model_dump_json()
        for other in set(configs) - {name}:
            assert f"{other}.csv" not in text  # no party learns another's input path
        ep = cfg.cluster.endpoint(name)
        ports += [ep.sf_port, ep.spu_port, *ep.psi_ports.values()]
    assert len(ports) == len(set(ports)) == 3 * 2 + 2 * 2
    assert set(configs["bank"].cluster.endpoint("bank").psi_ports) == {"tax", "power"}
    assert set(configs["bank"].cluster.endpoint("tax").psi_ports) == {"bank"}


def test_psi_schedule_reveals_only_the_final_intersection_to_departments():
    R = party_mod.PsiRound
    # forward rounds stay with the label holder until the last, then earlier peers are resynced
    assert party_mod.psi_schedule("l", ["a", "b", "l"]) == [R("a", False), R("b", True), R("a", True)]
    assert party_mod.psi_schedule("l", ["a", "l"]) == [R("a", True)]
    four = party_mod.psi_schedule("l", ["a", "b", "c", "l"])
    assert [r.peer for r in four] == ["a", "b", "c", "a", "b"]
    assert [r.reveal_to_peer for r in four] == [False, False, True, True, True]


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (lambda f: f.drop(columns=["uscc"]), PartyExit.INPUT_INVALID, "join key column 'uscc' is missing"),
        (lambda f: pd.concat([f, f.head(2)]), PartyExit.INPUT_INVALID, "2 duplicate values"),
        (lambda f: f.drop(columns=["tax_vat_paid"]), PartyExit.INPUT_INVALID, "feature columns missing"),
        (lambda f: f.assign(tax_credit_grade="A"), PartyExit.INPUT_INVALID, "is not numeric"),
    ],
)
def test_party_rejects_bad_input_before_joining(tmp_path, capsys, mutate, code, message):
    data = make_vertical_data(tmp_path / "data", n_rows=50, seed=2)
    tax_csv = tmp_path / "data" / "tax.csv"
    mutate(pd.read_csv(tax_csv)).to_csv(tax_csv, index=False)
    cfg = build_party_configs(data.job_spec(tmp_path / "out"))["tax"]
    cfg_path = tmp_path / "tax.json"
    cfg_path.write_text(cfg.model_dump_json())
    assert party_mod.main(["--config", str(cfg_path), "--party", "tax"]) == code
    out, err = capsys.readouterr()
    assert message in err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["event"] == "error" and last["code"] == code
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_party_rejects_config_for_another_party(tmp_path):
    data = make_vertical_data(tmp_path / "data", n_rows=50, seed=2)
    cfg = build_party_configs(data.job_spec(tmp_path / "out"))["tax"]
    cfg_path = tmp_path / "tax.json"
    cfg_path.write_text(cfg.model_dump_json())
    assert party_mod.main(["--config", str(cfg_path), "--party", "bank"]) == PartyExit.CONFIG
    cfg_path.write_text("{not json")
    assert party_mod.main(["--config", str(cfg_path), "--party", "tax"]) == PartyExit.CONFIG


def test_staging_dir_stays_inside_the_output_dir_for_any_job_id(tmp_path):
    for job_id in ("sf-1", "job/../../etc", "a b/c"):
        stage = party_mod.staging_dir(tmp_path, job_id)
        assert stage.parent == tmp_path and stage.name.startswith(".dcp-staging-")


def test_remove_psi_traces_removes_only_matching_files(tmp_path):
    mine = tmp_path / "psi_AAA.trace"
    mine.write_bytes(b"\x00python\x12protocols.secretflow.party\x12/run/1/party-tax.json\x00")
    other = tmp_path / "psi_BBB.trace"
    other.write_bytes(b"\x00python\x12protocols.secretflow.party\x12/run/2/party-tax.json\x00")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("/run/1/party-tax.json")
    assert remove_psi_traces("/run/1/party-", trace_dir=tmp_path) == 1
    assert not mine.exists() and other.exists() and unrelated.exists()
    assert remove_psi_traces("", trace_dir=tmp_path) == 0


# ---------------------------------------------------------------- real processes


@pytest.mark.slow
def test_three_parties_psi_and_sslr_match_plaintext(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=10_000, overlap=0.6, seed=11)
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=300)
    events: list[dict] = []
    result = run_vertical_job(spec, on_event=events.append)

    truth = true_overlap(spec)
    assert len(truth) == data.true_intersection == 6000
    assert set(result.parties) == {"bank", "tax", "power"}
    key_columns = []
    for name, res in result.parties.items():
        assert res.input_rows == 10_000
        assert res.intersection_rows == len(truth)
        frame = pd.read_csv(tmp_path / "out" / name / "psi_output.csv", dtype={"uscc": str})
        assert set(frame["uscc"]) == truth
        key_columns.append(frame["uscc"].tolist())
    assert key_columns[0] == key_columns[1] == key_columns[2]  # rows aligned across parties
    # every party left through the barrier on its main thread, its queued sends gone out: no party
    # left while a peer still waited for one of its messages
    leaves = {e["party"]: e for e in events if e.get("event") == "stage" and e.get("stage") == "leave"}
    assert {n: (e["barrier"], e["flushed"]) for n, e in leaves.items()} == {
        n: ("ok", True) for n in ("bank", "tax", "power")}, leaves

    # each party wrote into its own directory only; only the label holder got predictions
    assert sorted(p.name for p in (tmp_path / "out" / "tax").iterdir()) == ["model", "psi_output.csv"]
    assert sorted(p.name for p in (tmp_path / "out" / "power").iterdir()) == ["model", "psi_output.csv"]
    assert sorted(p.name for p in (tmp_path / "out" / "bank").iterdir()) == [
        "metrics.json",
        "model",
        "predictions.csv",
        "psi_output.csv",
    ]
    for name, res in result.parties.items():  # each party's private model part: its own share only
        assert res.model_dir == tmp_path / "out" / name / "model"
        assert sorted(p.name for p in res.model_dir.iterdir()) == ["model.json", "weights.share"]
    tax_cols = pd.read_csv(tmp_path / "out" / "tax" / "psi_output.csv", nrows=1).columns
    assert "default" not in tax_cols and not any(c.startswith("bank_") for c in tax_cols)

    reference = plaintext_reference(spec)
    assert reference.n_rows == len(truth)
    assert result.metrics.n_rows == len(truth)
    assert abs(result.metrics.auc - reference.auc) < 0.01, (result.metrics.auc, reference.auc)
    assert result.metrics.auc > 0.7
    preds = pd.read_csv(tmp_path / "out" / "bank" / "predictions.csv", dtype={"uscc": str})
    assert len(preds) == len(truth) and preds["uscc"].tolist() == key_columns[0]
    assert json.loads((tmp_path / "out" / "bank" / "metrics.json").read_text())["auc"] == pytest.approx(
        result.metrics.auc
    )

    # nothing written anywhere else (engine scratch and logs stay in the run's work dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out", "work"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bank", "power", "tax"]

    stages = result.stages
    assert stages.psi > 0 and stages.train > 0 and stages.predict > 0
    done = {(e["party"], e["stage"]) for e in events if e["event"] == "stage" and e.get("status") == "done"}
    assert {("bank", "psi"), ("tax", "train"), ("power", "predict")} <= done
    assert party_processes(tmp_path) == []
    assert psi_traces_naming(tmp_path) == []


@pytest.mark.slow
def test_ecdh_sm2_psi_gives_the_same_intersection(tmp_path, no_leaked_processes):
    """国密 mode: ECDH-PSI on the SM2 curve (here with the 3-party ABY3 SPU protocol for SS-LR)."""
    data = make_vertical_data(tmp_path / "data", n_rows=2_000, overlap=0.5, seed=5)
    spec = data.job_spec(
        tmp_path / "out",
        psi_protocol="ECDH_SM2",
        model=ModelParams(epochs=2),
        work_dir=tmp_path / "work",
        timeout_s=300,
    ).model_copy(update={"spu_protocol": "ABY3"})
    result = run_vertical_job(spec)
    assert result.metrics.auc > 0.7
    truth = true_overlap(spec)
    assert all(r.intersection_rows == len(truth) == 1000 for r in result.parties.values())
    for name in ("bank", "tax", "power"):
        frame = pd.read_csv(tmp_path / "out" / name / "psi_output.csv", dtype={"uscc": str})
        assert set(frame["uscc"]) == truth
    # the PSI library really ran ECDH on SM2 (its config line is in the party's log)
    log = (tmp_path / "work" / "logs" / "tax.stderr.log").read_text()
    assert '"curve":"CURVE_SM2"' in log and "PROTOCOL_ECDH" in log
    assert party_processes(tmp_path) == []


@pytest.mark.slow
def test_ecdh_3pc_psi_intersects_three_parties_at_once(tmp_path, no_leaked_processes):
    """One three-party ECDH PSI: no party learns a pairwise intersection along the way."""
    data = make_vertical_data(tmp_path / "data", n_rows=2_000, overlap=0.4, seed=12)
    spec = data.job_spec(
        tmp_path / "out", psi_protocol="ECDH_3PC", model=ModelParams(epochs=1), work_dir=tmp_path / "work"
    )
    events: list[dict] = []
    result = run_vertical_job(spec, on_event=events.append)
    truth = true_overlap(spec)
    assert all(r.intersection_rows == len(truth) == 800 for r in result.parties.values())
    frames = [
        pd.read_csv(tmp_path / "out" / n / "psi_output.csv", dtype={"uscc": str})
        for n in ("bank", "tax", "power")
    ]
    assert set(frames[0]["uscc"]) == truth
    assert frames[0]["uscc"].tolist() == frames[1]["uscc"].tolist() == frames[2]["uscc"].tolist()
    assert [e["peer"] for e in events if e.get("status") == "round" and e["party"] == "bank"] == ["all"]
    assert "ECDH_PSI_3PC" in (tmp_path / "work" / "logs" / "bank.stderr.log").read_text()  # libpsi legacy 3PC
    assert party_processes(tmp_path) == []


@pytest.mark.slow
def test_missing_input_file_fails_with_named_error(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=500, seed=3)
    (tmp_path / "data" / "power.csv").unlink()
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=120)
    t0 = time.monotonic()
    with pytest.raises(PartyInputError) as info:
        run_vertical_job(spec)
    assert time.monotonic() - t0 < 60
    err = info.value
    assert isinstance(err, PartyFailedError) and isinstance(err, DcpRunError)
    assert err.party == "power"
    assert err.exit_code == PartyExit.INPUT_MISSING
    assert "input file not found" in str(err) and "power.csv" in err.stderr_tail
    assert party_processes(tmp_path) == []
    assert not (tmp_path / "out" / "power").exists()


@pytest.mark.slow
def test_disjoint_keys_fail_with_empty_intersection_error(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=300, seed=10)
    power_csv = tmp_path / "data" / "power.csv"
    frame = pd.read_csv(power_csv, dtype={"uscc": str})
    frame.assign(uscc="X" + frame["uscc"]).to_csv(power_csv, index=False)
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=120)
    with pytest.raises(EmptyIntersectionError) as info:
        run_vertical_job(spec)
    assert info.value.exit_code == PartyExit.EMPTY_INTERSECTION
    assert "no 'uscc' in common" in str(info.value)
    assert not (tmp_path / "out" / "bank" / "predictions.csv").exists()
    assert party_processes(tmp_path) == []


@pytest.mark.slow
def test_party_killed_mid_run_fails_fast_and_stops_the_rest(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=3_000, seed=4)
    spec = data.job_spec(
        tmp_path / "out", model=ModelParams(epochs=30), work_dir=tmp_path / "work", timeout_s=300
    )
    killed: dict[str, float] = {}

    def kill_tax_when_training(event: dict) -> None:
        if event["party"] == "tax" and event.get("stage") == "train" and event.get("status") == "start":
            os.kill(event["pid"], signal.SIGKILL)
            killed["at"] = time.monotonic()

    with pytest.raises(PartyFailedError) as info:
        run_vertical_job(spec, on_event=kill_tax_when_training, grace_s=3)
    assert "at" in killed, "the tax party never reported training"
    assert time.monotonic() - killed["at"] < 20
    assert info.value.party == "tax"
    assert info.value.exit_code == -signal.SIGKILL
    assert "SIGKILL" in str(info.value)
    assert party_processes(tmp_path) == []
    # nothing half-written: no party published anything, and the staging areas are gone
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    assert list((tmp_path / "out").rglob(".dcp-staging-*")) == []


@pytest.mark.slow
def test_timeout_stops_every_party(tmp_path, no_leaked_processes):
    data = make_vertical_data(tmp_path / "data", n_rows=500, seed=6)
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(RunTimeoutError) as info:
        run_vertical_job(spec, grace_s=2)
    assert time.monotonic() - t0 < 15
    assert sorted(info.value.running) == ["bank", "power", "tax"]
    assert party_processes(tmp_path) == []


_RUNNER_SCRIPT = """
import sys
from pathlib import Path
from protocols.secretflow.runner import run_vertical_job
from protocols.secretflow.spec import VerticalJobSpec
spec = VerticalJobSpec.model_validate_json(Path(sys.argv[1]).read_text())
def show(e):
    if e.get("stage") == "connect":
        print("PARTY-UP", e["party"], flush=True)
try:
    run_vertical_job(spec, on_event=show, grace_s=3)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(130)
except Exception as exc:
    print("ERROR", type(exc).__name__, flush=True)
    sys.exit(1)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "expect"),
    [(signal.SIGINT, "INTERRUPTED"), (signal.SIGTERM, "RunCancelledError"), (signal.SIGKILL, None)],
)
def test_signal_to_runner_stops_every_party(tmp_path, no_leaked_processes, sig, expect):
    """SIGINT / SIGTERM: the runner stops every party, then exits. SIGKILL: the runner cannot stop
    anything, and each party dies with it all the same (PR_SET_PDEATHSIG, protocols/secretflow/lifeline)."""
    data = make_vertical_data(tmp_path / "data", n_rows=3_000, seed=8)
    spec = data.job_spec(tmp_path / "out", model=ModelParams(epochs=50), work_dir=tmp_path / "work")
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    runner = subprocess.Popen(
        [sys.executable, "-c", _RUNNER_SCRIPT, str(spec_path)],
        cwd=project_root(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        for line in runner.stdout:  # wait until a party has joined the cluster
            if line.startswith("PARTY-UP"):
                break
        assert len(party_processes(tmp_path)) == 3
        runner.send_signal(sig)
        # the runner stops each party (SIGTERM, 3 s grace, SIGKILL) before it exits: seconds on an idle
        # machine; 30 s was once not enough at the end of a full CI run
        out, _ = runner.communicate(timeout=90)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode != 0
    if expect is None:  # killed outright: the kernel takes the parties (no runner code ran)
        assert runner.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while party_processes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
    else:
        assert expect in out
    assert party_processes(tmp_path) == []


def test_a_party_started_for_a_runner_already_gone_exits_at_once(tmp_path):
    """The window between the fork and the party's prctl: a party whose runner is not its parent any
    more (here: a pid that is not ours) exits with ORPHANED; one whose runner is there gets SIGKILL as
    its parent-death signal; without the variable nothing is set."""
    from protocols.secretflow import lifeline

    code = ("import os, sys; from protocols.secretflow.lifeline import die_with_parent, death_signal; "
            "env = dict(os.environ); print(die_with_parent(env), death_signal(), env.get("
            "'DCP_PARTY_PARENT_PID'), flush=True)")
    env = {**os.environ, "PYTHONPATH": str(project_root())}
    run = lambda extra: subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True,  # noqa: E731
                                       text=True, timeout=60, cwd=project_root())
    gone = run({lifeline.PARENT_ENV: "1"})  # pid 1 is never the parent of a child of this test
    assert gone.returncode == lifeline.ORPHANED and gone.stdout == ""
    ours = run({lifeline.PARENT_ENV: str(os.getpid())})
    assert ours.returncode == 0 and ours.stdout.split() == ["True", str(int(signal.SIGKILL)), "None"]
    plain = run({})
    assert plain.returncode == 0 and plain.stdout.split() == ["False", "0", "None"]


# ---------------------------------------------------------------- CLI


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from dcp.cli import build_app

    return CliRunner().invoke(build_app(), args)


def test_runner_rejects_invalid_spec_mapping(tmp_path):
    with pytest.raises(JobSpecError, match="label_party"):
        run_vertical_job({"parties": [], "join_key": "id", "label_column": "y"})
    assert party_processes(tmp_path) == []


def test_sf_run_rejects_bad_spec_files_with_exit_2(tmp_path):
    missing = _cli(["sf", "run", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "cannot read spec" in missing.output
    (tmp_path / "bad.yaml").write_text("parties: [1\n")
    bad = _cli(["sf", "run", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2 and "not valid YAML" in bad.output
    example = _cli(["sf", "example"]).output
    (tmp_path / "court.yaml").write_text(example.replace("label_party: bank", "label_party: court"))
    wrong = _cli(["sf", "run", str(tmp_path / "court.yaml")])
    assert wrong.exit_code == 2 and "label_party 'court'" in wrong.output


def test_sf_example_spec_loads_with_paths_relative_to_the_file(tmp_path):
    from dcp.commands.sf import load_spec

    (tmp_path / "job.yaml").write_text(_cli(["sf", "example"]).output)
    spec = load_spec(tmp_path / "job.yaml")
    assert spec.party("tax").input_csv == tmp_path / "data" / "tax.csv"
    assert spec.party("bank").output_dir == tmp_path / "out" / "bank"
    assert spec.psi_protocol == "RR22" and spec.label_party == "bank"


@pytest.mark.slow
def test_sf_run_cli_reports_a_failed_party_with_exit_1(tmp_path, no_leaked_processes):
    from dcp.commands.sf import EXAMPLE_SPEC

    make_vertical_data(tmp_path / "data", n_rows=300, seed=9)
    (tmp_path / "data" / "tax.csv").unlink()
    (tmp_path / "job.yaml").write_text(EXAMPLE_SPEC + "work_dir: work\n")
    res = _cli(["sf", "run", str(tmp_path / "job.yaml")])
    assert res.exit_code == 1
    assert "PartyInputError" in res.output and "'tax'" in res.output
    assert party_processes(tmp_path) == []


@pytest.mark.slow
def test_demo_command_runs_end_to_end(tmp_path, no_leaked_processes):
    res = _cli(["demo-engine", "--rows", "1500", "--epochs", "3", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert "900 rows (true overlap 900)" in res.output
    metrics = json.loads((tmp_path / "demo" / "out" / "bank" / "metrics.json").read_text())
    assert metrics["n_rows"] == 900 and 0.5 < metrics["auc"] <= 1.0
    assert party_processes(tmp_path) == []


@pytest.mark.slow
def test_a_taken_link_port_fails_the_job_instead_of_hanging(tmp_path, monkeypatch, no_leaked_processes):
    """Another process holds one party's PSI link port: that party cannot start its link server.
    Every party must leave (no shutdown barrier after a failure, no engine thread keeping the process)
    and the job fails with a named error long before its timeout."""
    import socket

    from protocols.secretflow import runner as runner_mod

    real = runner_mod.free_ports
    held: list[socket.socket] = []

    def ports_with_one_taken(n: int, host: str = "127.0.0.1") -> list[int]:
        got = real(n, host)
        if not held:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, got[-1]))  # the first party's last port: a PSI link port
            s.listen()
            held.append(s)
        return got

    monkeypatch.setattr(runner_mod, "free_ports", ports_with_one_taken)
    data = make_vertical_data(tmp_path / "data", n_rows=300, seed=8)
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=600)
    t0 = time.monotonic()
    try:
        with pytest.raises(PartyFailedError) as info:
            run_vertical_job(spec, grace_s=3)
    finally:
        for s in held:
            s.close()
    assert time.monotonic() - t0 < 120, "the job waited instead of failing"
    # the first party to report may be the one without a link server or a peer it took down with it;
    # either way it left on its own (not killed by the runner) with the engine-failure code
    assert info.value.exit_code == PartyExit.RUNTIME
    assert info.value.party in {"bank", "tax", "power"}
    assert party_processes(tmp_path) == []


def test_leaving_is_bounded_after_success_and_after_an_error():
    """A barrier that a peer never answers, or sends that never go out, must not keep a party alive."""
    import threading

    release = threading.Event()
    calls: list[str] = []

    def hanging_barrier() -> None:
        calls.append("barrier")
        release.wait(30)  # interrupted by the SIGALRM bound on the main thread

    def stuck_flush(grace: float) -> bool:
        calls.append(f"flush {grace}")
        return False

    events: list[tuple[str, dict]] = []
    emit = lambda e, **f: events.append((e, f))  # noqa: E731
    t0 = time.monotonic()
    party_mod._leave(after_error=False, emit=emit, grace_s=0.5, barrier=hanging_barrier, flush=stuck_flush)
    assert time.monotonic() - t0 < 3
    assert calls == ["barrier", "flush 0.5"]
    assert events[0] == ("stage", {"stage": "leave", "status": "done", "barrier": "timeout after 0 s", "flushed": False})
    assert events[1][0] == "warning" and "barrier timeout" in events[1][1]["message"]
    # after an error: no barrier (a failed peer never answers it), only the flush
    calls.clear()
    events.clear()
    party_mod._leave(after_error=True, emit=emit, grace_s=0.5, barrier=hanging_barrier, flush=lambda g: True)
    assert calls == []
    assert events == [("stage", {"stage": "leave", "status": "done", "barrier": "skipped: after an error",
                                 "flushed": True})]
    # a barrier that raises (SecretFlow's fed layer refuses any thread but the main one) is reported
    events.clear()
    party_mod._leave(after_error=False, emit=emit, grace_s=0.5, barrier=lambda: 1 / 0, flush=lambda g: True)
    assert events[0][1]["barrier"].startswith("error: ZeroDivisionError")
    release.set()


@pytest.mark.slow
def test_a_party_leaves_only_once_its_slowest_peer_has_ended(tmp_path, no_leaked_processes):
    """The label holder ends its program first; tax is frozen (SIGSTOP) for a few seconds right then.
    The label holder must wait in the barrier until tax has its last message and has ended too: a
    party that left at once could leave tax waiting for ever for a message still in its send queue."""
    import threading

    data = make_vertical_data(tmp_path / "data", n_rows=2_000, overlap=0.6, seed=5)
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=240,
                         model=ModelParams(epochs=1))
    pids: dict[str, int] = {}
    resumed: list[float] = []
    events: list[dict] = []

    def on_event(e: dict) -> None:
        events.append(e)
        pids.setdefault(e["party"], e["pid"])
        if (e["party"], e.get("stage"), e.get("status")) == ("bank", "predict", "done") and "tax" in pids:
            os.kill(pids["tax"], signal.SIGSTOP)

            def resume() -> None:
                resumed.append(time.time())
                os.kill(pids["tax"], signal.SIGCONT)

            threading.Timer(4.0, resume).start()

    result = run_vertical_job(spec, on_event=on_event)
    assert resumed, "the label holder never reported the end of its predictions"
    assert result.metrics.auc > 0.6
    leave = {e["party"]: e for e in events if e.get("stage") == "leave"}
    assert {n: e["barrier"] for n, e in leave.items()} == {"bank": "ok", "tax": "ok", "power": "ok"}
    assert leave["bank"]["t"] >= resumed[0] - 0.05, "the label holder left while tax was still frozen"


@pytest.mark.slow
def test_sslr_defaults_fit_a_small_intersection(tmp_path, no_leaked_processes):
    """A spec that leaves SS-LR's epochs and batch size out trains as well as plaintext LR on 1,000 rows
    (the old fixed default, 5 epochs of 1,024-row batches, made 5 gradient steps here and undertrained)."""
    data = make_vertical_data(tmp_path / "data", n_rows=1_250, overlap=0.8, seed=21)
    spec = data.job_spec(tmp_path / "out", work_dir=tmp_path / "work", timeout_s=300)
    assert spec.model.epochs is None and spec.model.batch_size is None
    result = run_vertical_job(spec)
    reference = plaintext_reference(spec)
    assert result.metrics.n_rows == reference.n_rows == 1_000
    assert sslr_schedule(1_000) == (8, 64)
    assert abs(result.metrics.auc - reference.auc) < 0.02, (result.metrics.auc, reference.auc)
    assert party_processes(tmp_path) == []
