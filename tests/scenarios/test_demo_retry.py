"""The demo's bank submits a job once more when its run failed for a passing reason (a stalled engine
stopped at its time limit, a link port another process took) — never when the failure would recur."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from scenarios.bank_credit import demo as demo_mod
from scenarios.bank_credit.demo import DemoError, JobLine, TransientJobFailure, is_transient

BRPC = ("bank_a's task failed: RUNTIME: FedLocalError: Failed to create link: what: \n\t[external/yacl~/yacl/"
        "link/transport/brpc_link.cc:106] brpc server failed start (stages then: bank_a connect:start)")
TIMEOUT = "court's task failed: the party ran longer than 420s and was stopped (stages then: court train:start)"


@pytest.mark.parametrize(("state", "reason", "expected"), [
    ("FAILED", BRPC, True),
    ("FAILED", TIMEOUT, True),
    ("FAILED", "tax's task failed: INPUT_INVALID: column 'vat_paid' is not numeric", False),
    ("FAILED", "node court stopped answering for 65s: connection refused", False),
    ("REJECTED", "court rejected: not for this purpose", False),
    ("REVOKED", "the party ran longer than 420s", False),
    ("FAILED", None, False),
])
def test_which_failures_a_new_run_may_not_meet(state, reason, expected):
    assert is_transient(state, reason) is expected


class _Attempts:
    """Stands in for one submission: fails with the given errors in turn, then succeeds."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    def __call__(self, con, cfg, state, client, spec, parties, auto, interactive, clock, line, headline, prefix):  # noqa: ANN001
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "final"


def _run(monkeypatch, errors: list[Exception]) -> tuple[JobLine, _Attempts, str]:
    attempts = _Attempts(errors)
    monkeypatch.setattr(demo_mod, "_governed_attempt", attempts)
    cfg = demo_mod.load_demo_config(demo_mod.DEFAULT_CONFIG)
    line = JobLine(title="pre-loan training", kind="vertical_train")
    buf = io.StringIO()
    demo_mod._governed_job(Console(file=buf, width=200), cfg, None, None, {}, ["bank_a", "tax"], None, False,
                           None, line, "running")
    return line, attempts, buf.getvalue()


def test_a_transient_failure_is_submitted_once_more_as_a_new_job(monkeypatch):
    line, attempts, text = _run(monkeypatch, [TransientJobFailure(f"pre-loan training job job-1 ended FAILED: {BRPC}")])
    assert attempts.calls == 2
    assert len(line.retried) == 1 and "brpc server failed start" in line.retried[0]
    assert "bank_a submits the job again" in text and "new approvals" in text


def test_a_second_transient_failure_ends_the_demo(monkeypatch):
    errors: list[Exception] = [TransientJobFailure("job-1 ended FAILED: " + TIMEOUT),
                               TransientJobFailure("job-2 ended FAILED: " + TIMEOUT)]
    with pytest.raises(TransientJobFailure, match="job-2"):
        _run(monkeypatch, errors)


def test_a_lasting_failure_is_never_submitted_again(monkeypatch):
    attempts = _Attempts([DemoError("pre-loan training job job-1 ended FAILED: tax's task failed: INPUT_INVALID")])
    monkeypatch.setattr(demo_mod, "_governed_attempt", attempts)
    cfg = demo_mod.load_demo_config(demo_mod.DEFAULT_CONFIG)
    with pytest.raises(DemoError, match="INPUT_INVALID"):
        demo_mod._governed_job(Console(file=io.StringIO()), cfg, None, None, {}, ["bank_a"], None, False, None,
                               JobLine(title="t", kind="vertical_train"), "running")
    assert attempts.calls == 1


class _Submitted(Exception):
    pass


class _RecordingClient:
    """Takes the submission and stops the attempt there: what the bank would have sent."""

    def __init__(self) -> None:
        self.specs: list[dict] = []

    def submit(self, spec: dict) -> str:
        self.specs.append(spec)
        raise _Submitted


def test_job_timeout_s_overrides_every_template_timeout():
    cfg = demo_mod.load_demo_config(demo_mod.DEFAULT_CONFIG)
    template = {"kind": "vertical_train", "timeout_s": 1800, "inputs": []}
    for override, expected in ((None, 1800), (420.0, 420.0)):
        cfg.job_timeout_s = override
        client = _RecordingClient()
        with pytest.raises(_Submitted):
            demo_mod._governed_attempt(Console(file=io.StringIO()), cfg, None, client, template, ["bank_a"], None,
                                       False, None, JobLine(title="t", kind="vertical_train"), "running")
        assert client.specs[0]["timeout_s"] == expected
    assert template["timeout_s"] == 1800  # the template itself is left as it was
