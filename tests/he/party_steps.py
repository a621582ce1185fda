"""One HE step per process, over files only (used by test_processes.py): proves the steps need no shared state.

python tests/he/party_steps.py <step> <dir> [party]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocols.he import score  # noqa: E402
from protocols.he.context import make_context  # noqa: E402


def main() -> None:
    step, d = sys.argv[1], Path(sys.argv[2])
    if step == "keys":  # requester
        pair = make_context()
        (d / "public.ctx").write_bytes(pair.public)
        (d / "requester").mkdir()
        (d / "requester" / "secret.ctx").write_bytes(pair.secret)
        return
    if step == "weights":  # requester
        for dep in ("tax", "power"):
            w = np.load(d / f"plain_w_{dep}.npy")
            (d / f"enc_w_{dep}.bin").write_bytes(score.encrypt_weights((d / "public.ctx").read_bytes(), w))
        own = np.load(d / "plain_own.npy")
        (d / "partial_bank.bin").write_bytes(score.own_partial((d / "public.ctx").read_bytes(), own, "bank"))
        return
    if step == "partial":  # department
        dep = sys.argv[3]
        x = np.load(d / f"x_{dep}.npy")
        out = score.partial_scores(
            (d / "public.ctx").read_bytes(), (d / f"enc_w_{dep}.bin").read_bytes(), x, dep
        )
        (d / f"partial_{dep}.bin").write_bytes(out)
        return
    if step == "sum":  # aggregator
        parts = [(d / f"partial_{p}.bin").read_bytes() for p in ("bank", "tax", "power")]
        (d / "total.bin").write_bytes(score.sum_partials((d / "public.ctx").read_bytes(), parts))
        return
    if step == "decrypt":  # requester
        n = int(sys.argv[3])
        s = score.decrypt_scores(
            (d / "requester" / "secret.ctx").read_bytes(), (d / "total.bin").read_bytes(), n
        )
        np.save(d / "requester" / "scores.npy", s)
        return
    raise SystemExit(f"unknown step {step}")


if __name__ == "__main__":
    main()
