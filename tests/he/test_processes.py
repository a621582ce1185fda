"""he_score with every party in its own process, exchanging only files of bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.settings import project_root
from protocols.he.context import load_public_context

STEPS = Path(__file__).with_name("party_steps.py")


def _run(*args: str) -> None:
    subprocess.run([sys.executable, str(STEPS), *args], check=True, cwd=project_root(), timeout=300)


@pytest.mark.slow
def test_he_score_across_processes(tmp_path, no_leaked_processes):
    rng = np.random.default_rng(5)
    n = 5000
    x = {p: rng.standard_normal((n, k)) for p, k in (("bank", 2), ("tax", 3), ("power", 2))}
    w = {p: rng.normal(0, 1, v.shape[1]) for p, v in x.items()}
    b = -0.7
    for dep in ("tax", "power"):
        np.save(tmp_path / f"x_{dep}.npy", x[dep])
        np.save(tmp_path / f"plain_w_{dep}.npy", w[dep])
    np.save(tmp_path / "plain_own.npy", x["bank"] @ w["bank"] + b)
    _run("keys", str(tmp_path))
    _run("weights", str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, str(STEPS), "partial", str(tmp_path), dep], cwd=project_root())
        for dep in ("tax", "power")
    ]  # the two departments score at the same time
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    _run("sum", str(tmp_path))
    _run("decrypt", str(tmp_path), str(n))
    got = np.load(tmp_path / "requester" / "scores.npy")
    expected = b + sum(x[p] @ w[p] for p in x)
    assert np.abs(got - expected).max() <= 1e-3
    # what crossed process boundaries never contained the secret key
    assert not load_public_context((tmp_path / "public.ctx").read_bytes()).has_secret_key()
