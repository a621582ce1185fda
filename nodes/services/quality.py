"""Quality rules on ingest: ID check characters, nulls, ranges, duplicate keys, type misfits.

Reports hold counts per rule and sample ROW NUMBERS only — never cell values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.ids import USCC_ALPHABET, is_valid_resident_id, is_valid_uscc
from nodes.models import QualitySummary, RuleResult

SAMPLE_ROWS = 10

_USCC_W = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)  # GB 32100: 3^i mod 31
_ID_W = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)  # GB 11643: 2^(17-i) mod 11
_ID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
_USCC_VAL = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(USCC_ALPHABET):
    _USCC_VAL[ord(_c)] = _i
    _USCC_VAL[ord(_c.lower())] = _i  # codes are checked case-insensitively
_USCC_ALPHA = np.frombuffer(USCC_ALPHABET.encode(), dtype=np.uint8)


def _ascii_block(codes: list[str]) -> np.ndarray:
    """18-character ASCII strings as an (n, 18) byte matrix."""
    return np.frombuffer("".join(codes).encode("ascii"), dtype=np.uint8).reshape(len(codes), 18)


def _split_ascii18(values: pd.Series) -> tuple[list[int], list[str], list[int]]:
    """Positions of 18-character ASCII strings (and those strings), and positions of every other cell."""
    fast_pos: list[int] = []
    fast: list[str] = []
    slow_pos: list[int] = []
    for i, v in enumerate(values.tolist()):
        if isinstance(v, str) and len(v) == 18 and v.isascii():
            fast_pos.append(i)
            fast.append(v)
        else:
            slow_pos.append(i)
    return fast_pos, fast, slow_pos


def valid_uscc_mask(values: pd.Series) -> np.ndarray:
    """``is_valid_uscc`` of every cell, vectorized over the 18-character ASCII cells (the rest
    go through ``is_valid_uscc`` itself, so the answers are the same)."""
    ok = np.zeros(len(values), dtype=bool)
    fast_pos, fast, slow_pos = _split_ascii18(values)
    if fast:
        vals = _USCC_VAL[_ascii_block(fast)]
        chars_ok = (vals >= 0).all(axis=1)
        total = (np.where(vals[:, :17] >= 0, vals[:, :17], 0) * _USCC_W).sum(axis=1)
        ok[fast_pos] = chars_ok & ((31 - total % 31) % 31 == vals[:, 17])
    cells = values.tolist()
    for i in slow_pos:
        ok[i] = is_valid_uscc(cells[i])
    return ok


def valid_resident_id_mask(values: pd.Series) -> np.ndarray:
    """``is_valid_resident_id`` of every cell, vectorized like :func:`valid_uscc_mask`."""
    ok = np.zeros(len(values), dtype=bool)
    fast_pos, fast, slow_pos = _split_ascii18(values)
    if fast:
        block = _ascii_block(fast)
        digits = block[:, :17].astype(np.int64) - ord("0")
        digits_ok = ((digits >= 0) & (digits <= 9)).all(axis=1)
        check = _ID_CHECK[(np.where(digits_ok[:, None], digits, 0) * _ID_W).sum(axis=1) % 11]
        last = block[:, 17]
        last = np.where(last == ord("x"), ord("X"), last)
        ok[fast_pos] = digits_ok & (check == last)
    cells = values.tolist()
    for i in slow_pos:
        ok[i] = is_valid_resident_id(cells[i])
    return ok


@dataclass(frozen=True)
class ColumnRules:
    name: str
    dtype: str
    min_value: float | None = None
    max_value: float | None = None


def _result(rule: str, column: str, rows: Sequence[int]) -> RuleResult:
    rows = sorted(int(r) for r in rows)
    return RuleResult(rule=rule, column=column, count=len(rows), sample_rows=rows[:SAMPLE_ROWS])


def run_rules(
    df: pd.DataFrame,
    columns: Sequence[ColumnRules],
    key_column: str | None,
    mismatches: dict[str, list[int]] | None = None,
) -> tuple[list[RuleResult], int]:
    """All rule results with a non-zero count, and the number of rows with at least one issue.

    ``df`` holds typed cells indexed by 1-based row number.
    """
    results: list[RuleResult] = []
    flagged: set[int] = set()

    def add(rule: str, column: str, rows: Sequence[int]) -> None:
        if len(rows):
            results.append(_result(rule, column, rows))
            flagged.update(rows)

    for col in columns:
        s = df[col.name]
        nulls = s.isna()
        add("null", col.name, list(s.index[nulls]))
        if mismatches and mismatches.get(col.name):
            add("type_mismatch", col.name, mismatches[col.name])
        present = s[~nulls]
        if col.dtype == "uscc":
            add("uscc_check", col.name, present.index[~valid_uscc_mask(present)].tolist())
        elif col.dtype == "resident_id":
            add("resident_id_check", col.name, present.index[~valid_resident_id_mask(present)].tolist())
        if col.dtype in ("int", "float") and (col.min_value is not None or col.max_value is not None):
            num = pd.to_numeric(present, errors="coerce")
            out = pd.Series(False, index=num.index)
            if col.min_value is not None:
                out |= num < col.min_value
            if col.max_value is not None:
                out |= num > col.max_value
            add("range", col.name, list(num.index[out]))
    if key_column is not None:
        keys = df[key_column]
        dup = keys.notna() & keys.duplicated(keep=False)
        add("duplicate_key", key_column, list(keys.index[dup]))
    return results, len(flagged)


def summarize(total_rows: int, rows_with_issues: int, results: Sequence[RuleResult]) -> QualitySummary:
    per_rule: dict[str, int] = {}
    for r in results:
        per_rule[r.rule] = per_rule.get(r.rule, 0) + r.count
    return QualitySummary(total_rows=total_rows, rows_with_issues=rows_with_issues, issues_per_rule=per_rule)
