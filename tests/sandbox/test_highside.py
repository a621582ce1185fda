"""The engine wrapper's call: a code request run on the private data and checked for release."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from protocols.sandbox.errors import CodeHashMismatch, SandboxError, SandboxOutputRefused
from protocols.sandbox.highside import run_request
from protocols.sandbox.isolate import SandboxLimits, code_sm3
from protocols.sandbox.lowside_client import CodeRequest, Researcher
from protocols.sandbox.output_policy import OutputPolicy

pytestmark = pytest.mark.usefixtures("clean_sandbox")
LIMITS = SandboxLimits(cpu_seconds=10, wall_seconds=120)


def _request(code: str, function: str) -> CodeRequest:
    return CodeRequest(request_id="r1", code=code, code_sm3=code_sm3(code), function=function,
                       researcher=Researcher(email="r@example.cn"), inputs={"tax": "tax_enterprises"})


def test_an_approved_request_is_released(private_csv: Path) -> None:
    code = "@sy.syft_function_single_use(tax=asset)\ndef counts(tax):\n    return {'count': int(len(tax))}\n"
    req = _request(code, "counts")
    got = run_request(req, req.code_sm3, {"tax_enterprises": private_csv}, OutputPolicy(),
                      {"tax_enterprises": ["uscc"]}, LIMITS)
    assert got.result == {"count": 200} and got.epsilon_spent == 0


def test_a_request_changed_after_approval_never_runs(private_csv: Path) -> None:
    req = _request("def counts(tax):\n    return {'count': int(len(tax))}\n", "counts")
    with pytest.raises(CodeHashMismatch):
        run_request(req, code_sm3("def counts(tax):\n    return {}\n"), {"tax_enterprises": private_csv},
                    OutputPolicy(), limits=LIMITS)


def test_a_request_without_its_private_data_is_refused(private_csv: Path) -> None:
    req = _request("def counts(tax):\n    return {'count': 1}\n", "counts")
    with pytest.raises(SandboxError, match="no private data"):
        run_request(req, req.code_sm3, {}, OutputPolicy(), limits=LIMITS)


def test_key_values_of_the_dataset_are_refused(private_csv: Path) -> None:
    code = "def first(tax):\n    return {'first': tax['uscc'].iloc[0]}\n"
    req = _request(code, "first")
    before = hashlib.sha256(private_csv.read_bytes()).hexdigest()
    with pytest.raises(SandboxOutputRefused, match="identifiers"):
        run_request(req, req.code_sm3, {"tax_enterprises": private_csv}, OutputPolicy(),
                    {"tax_enterprises": ["uscc"]}, LIMITS)
    assert hashlib.sha256(private_csv.read_bytes()).hexdigest() == before
