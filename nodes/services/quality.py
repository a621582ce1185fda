"""Quality rules on ingest: ID check characters, nulls, ranges, duplicate keys, type misfits.

Reports hold counts per rule and sample ROW NUMBERS only — never cell values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from dcp.ids import is_valid_resident_id, is_valid_uscc
from nodes.models import QualitySummary, RuleResult

SAMPLE_ROWS = 10


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
            flagged.update(int(r) for r in rows)

    for col in columns:
        s = df[col.name]
        nulls = s.isna()
        add("null", col.name, list(s.index[nulls]))
        if mismatches and mismatches.get(col.name):
            add("type_mismatch", col.name, mismatches[col.name])
        present = s[~nulls]
        if col.dtype == "uscc":
            add("uscc_check", col.name, [r for r, v in present.items() if not is_valid_uscc(v)])
        elif col.dtype == "resident_id":
            add("resident_id_check", col.name, [r for r, v in present.items() if not is_valid_resident_id(v)])
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
