"""What of a sandbox run may be released to the researcher: aggregates only.

:func:`check_release` looks at everything that would leave the node — the function's result *and* what
it printed — and refuses (:class:`SandboxOutputRefused`, with the reason) when

* it is larger than the size cap;
* it contains an identifier: a value of one of the dataset's key columns, or anything that looks like a
  unified social credit code or a resident ID (valid check character), wherever it appears;
* it is row-level: a list or table with about as many entries as the input has rows (``row_share``),
  or printed output with that many lines;
* a grouped table (more than one row) does not say its group sizes (a ``count``/``n``/``size`` column),
  or a group is smaller than the minimum group size (a count of 1 … k-1 anywhere is refused).

Optionally it then adds Laplace noise to every released number: the ε of the run is split evenly over
the numbers, each with the policy's L1 sensitivity, as ``secure_stats`` does per released group
(:func:`protocols.he.stats.noise_rng` makes a retried run re-release the same noise). Charging ε to the
dataset's budget (:class:`protocols.he.budget.PrivacyLedger`) is the caller's step, before release.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from common.ids import is_valid_resident_id, is_valid_uscc
from protocols.sandbox.errors import SandboxOutputRefused

_USCC = re.compile(r"(?<![0-9A-Z])[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}(?![0-9A-Z])")
_RESIDENT_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")
_TOKEN = re.compile(r"[^\s,;:|\"'\[\]{}()=]+")
_COUNT_NAMES = {"count", "counts", "n", "size", "cnt", "num", "n_rows", "rows", "group_size", "freq"}


class OutputPolicy(BaseModel):
    """A dataset's release rules for sandbox results (set by its officers)."""

    model_config = ConfigDict(frozen=True)

    min_group_size: int = Field(10, ge=1)
    max_bytes: int = Field(64 * 1024, gt=0, description="cap on result and printed output together")
    row_share: float = Field(0.5, gt=0, le=1, description="a list this share of the input rows long is row-level")
    epsilon: float | None = Field(None, gt=0, description="Laplace noise on every released number")
    sensitivity: float = Field(1.0, gt=0, description="L1 sensitivity of each released number")


class Release(BaseModel):
    """A result that passed the policy: what the researcher receives."""

    result: Any
    stdout: str = ""
    epsilon_spent: float = 0.0
    noised_values: int = 0


def _refuse(reason: str) -> None:
    raise SandboxOutputRefused(reason)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _lists(value: Any) -> Iterator[list[Any]]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _lists(v)
    elif isinstance(value, list):
        yield value
        for v in value:
            yield from _lists(v)


def _tables(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if isinstance(value.get("table"), dict) and "columns" in value["table"]:
            yield value["table"]
        for v in value.values():
            yield from _tables(v)
    elif isinstance(value, list):
        for v in value:
            yield from _tables(v)


def _counts(value: Any) -> Iterator[float]:
    """Numbers that state a group's size: values under a count-like key, cells of a count-like column."""
    def keyed(v: Any) -> Iterator[float]:
        if isinstance(v, dict):
            for k, x in v.items():
                if str(k).lower() in _COUNT_NAMES and isinstance(x, (int, float)) and not isinstance(x, bool):
                    yield float(x)
                yield from keyed(x)
        elif isinstance(v, list):
            for x in v:
                yield from keyed(x)

    yield from keyed(value)
    for t in _tables(value):
        for i, c in enumerate(t["columns"]):
            if str(c).lower() in _COUNT_NAMES:
                for row in t["data"]:
                    if isinstance(row[i], (int, float)) and not isinstance(row[i], bool):
                        yield float(row[i])


def _identifier_in(text: str, key_values: frozenset[str]) -> str | None:
    for m in _RESIDENT_ID.finditer(text):  # first: a few resident IDs are valid USCC strings too
        if is_valid_resident_id(m.group().upper()):
            return "a resident ID number"
    for m in _USCC.finditer(text):
        if is_valid_uscc(m.group()):
            return "a unified social credit code"
    if key_values:
        for tok in _TOKEN.findall(text):
            if tok in key_values:
                return "a value of the dataset's key column"
    return None


def check_release(
    result: Any,
    stdout: str,
    policy: OutputPolicy,
    input_rows: int,
    key_values: Iterable[object] = (),
    rng: np.random.Generator | None = None,
) -> Release:
    """The releasable form of a run's ``result`` and ``stdout``, or :class:`SandboxOutputRefused`.

    ``input_rows`` is the number of rows the code read (the largest input); ``key_values`` the values of
    the inputs' key columns (identifiers that must never leave). With ``policy.epsilon`` set, ``rng``
    draws the Laplace noise (default: a fresh generator).
    """
    text = json.dumps(result, ensure_ascii=False)
    size = len(text.encode()) + len(stdout.encode())
    if size > policy.max_bytes:
        _refuse(f"output is {size} bytes, over the {policy.max_bytes}-byte cap")
    keys = frozenset(str(v) for v in key_values if v is not None and str(v) != "")
    for where, body in (("result", text), ("printed output", stdout)):
        found = _identifier_in(body, keys)
        if found:
            _refuse(f"the {where} contains {found}: identifiers never leave the node")
    row_level = max(2, math.ceil(policy.row_share * input_rows))
    longest = max((len(x) for x in _lists(result)), default=0)
    if longest >= row_level:
        _refuse(f"the result has a list of {longest} entries for {input_rows} input rows: row-level output")
    lines = sum(1 for ln in stdout.splitlines() if ln.strip())
    if lines >= row_level:
        _refuse(f"the printed output has {lines} lines for {input_rows} input rows: row-level output")
    for t in _tables(result):
        if len(t["data"]) > 1 and not any(str(c).lower() in _COUNT_NAMES for c in t["columns"]):
            _refuse("a grouped table must carry its group sizes (a count column) to be checked")
    small = [c for c in _counts(result) if 0 < c < policy.min_group_size]
    if small:
        _refuse(f"a group of {small[0]:g} is smaller than the minimum group size {policy.min_group_size}")
    if policy.epsilon is None:
        return Release(result=result, stdout=stdout)
    return _noised(result, stdout, policy, rng or np.random.default_rng())


def _numbers(value: Any) -> int:
    return sum(1 for v in _leaves(value) if isinstance(v, (int, float)) and not isinstance(v, bool))


def _noise(value: Any, scale: float, rng: np.random.Generator) -> Any:
    if isinstance(value, dict):
        return {k: _noise(v, scale, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_noise(v, scale, rng) for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    noisy = float(value) + float(rng.laplace(0.0, scale))
    return int(round(noisy)) if isinstance(value, int) else noisy


def _noised(result: Any, stdout: str, policy: OutputPolicy, rng: np.random.Generator) -> Release:
    assert policy.epsilon is not None
    n = _numbers(result)
    if stdout.strip() and any(ch.isdigit() for ch in stdout):
        _refuse("with differential privacy, numbers may be released only in the result, not printed")
    if n == 0:
        return Release(result=result, stdout=stdout, epsilon_spent=0.0)
    scale = policy.sensitivity * n / policy.epsilon  # ε split evenly over the n released numbers
    return Release(result=_noise(result, scale, rng), stdout=stdout, epsilon_spent=policy.epsilon, noised_values=n)
