"""The high side of one code request, in the two calls an engine wrapper makes.

:func:`run_request` runs an approved request on the node's private data (isolated, SM3-checked) and
checks the output against the dataset's policy; :func:`answer` deposits the released result into the
PySyft request, or the refusal with its reason. Approval (officers, manifest, chain) happens before
``run_request`` and the receipt after it: both are the engine's, not this module's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from protocols.sandbox.errors import SandboxError
from protocols.sandbox.isolate import SandboxLimits, run_isolated
from protocols.sandbox.lowside_client import CodeRequest, LowSide
from protocols.sandbox.output_policy import OutputPolicy, Release, check_release


def run_request(
    request: CodeRequest,
    approved_sm3: str,
    data: dict[str, Path],
    policy: OutputPolicy,
    key_columns: dict[str, list[str]] | None = None,
    limits: SandboxLimits | None = None,
    rng: np.random.Generator | None = None,
) -> Release:
    """Run ``request`` on ``data`` (dataset id -> private CSV) and return what may be released.

    ``key_columns`` names each dataset's key columns (their values never leave). Raises the named
    :class:`SandboxError` of a refusal (hash mismatch, an escape, a limit, the output policy).
    """
    missing = set(request.inputs.values()) - set(data)
    if missing:
        raise SandboxError(f"no private data given for {sorted(missing)}")
    inputs = {arg: data[ds] for arg, ds in request.inputs.items()}
    rows, keys = 0, []
    for ds in set(request.inputs.values()):
        cols = (key_columns or {}).get(ds, [])
        frame = pd.read_csv(data[ds], usecols=cols or None, dtype=str)
        rows = max(rows, len(frame))
        for c in cols:
            keys.extend(frame[c].dropna().tolist())
    run = run_isolated(request.code, approved_sm3, request.function, inputs, limits)
    return check_release(run.result, run.stdout, policy, rows, keys, rng=rng)


def answer(lowside: LowSide, request: CodeRequest, outcome: Release | SandboxError | str) -> None:
    """Deposit a released result, or deny the request with the refusal (or the officers' reason)."""
    if isinstance(outcome, Release):
        lowside.deposit_result(request.request_id, outcome.result)
    elif isinstance(outcome, SandboxError):
        lowside.reject(request.request_id, f"{outcome.code}: {outcome}")
    else:
        lowside.reject(request.request_id, outcome)
