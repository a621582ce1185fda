"""The output policy: aggregates pass; identifiers, row-level output, small groups and oversize refuse."""

from __future__ import annotations

import random

import numpy as np
import pytest

from common.ids import id_check_char, random_uscc
from protocols.sandbox.errors import SandboxOutputRefused
from protocols.sandbox.output_policy import OutputPolicy, check_release

KEYS = [random_uscc(random.Random(i)) for i in range(100)]
POLICY = OutputPolicy(min_group_size=10)


def _table(rows: list[list[object]], columns: list[str]) -> dict:
    return {"table": {"columns": columns, "index": list(range(len(rows))), "data": rows}}


def test_an_aggregate_table_with_group_sizes_is_released_unchanged() -> None:
    result = _table([["retail", 40, 1.5e5], ["services", 60, 2.5e5]], ["sector", "count", "mean_vat"])
    got = check_release(result, "done\n", POLICY, 100, KEYS)
    assert got.result == result and got.stdout == "done\n" and got.epsilon_spent == 0


def test_a_key_column_value_is_refused_even_without_id_shape() -> None:
    with pytest.raises(SandboxOutputRefused, match="key column"):
        check_release({"top": "ACME-0042"}, "", POLICY, 100, ["ACME-0042", "ACME-0043"])


@pytest.mark.parametrize("where", ["result", "stdout"])
def test_a_uscc_is_refused_wherever_it_appears(where: str) -> None:
    code = random_uscc(random.Random(999))  # not even one of the dataset's: any valid USCC shape
    result, out = ({"who": code}, "") if where == "result" else ({"n": 100}, f"first: {code}\n")
    with pytest.raises(SandboxOutputRefused, match="unified social credit code"):
        check_release(result, out, POLICY, 100, KEYS)


def test_a_resident_id_is_refused() -> None:
    with pytest.raises(SandboxOutputRefused, match="resident ID"):
        body = "11010119900307803"
        check_release({"x": body + id_check_char(body)}, "", POLICY, 100)


def test_a_list_about_as_long_as_the_input_is_row_level() -> None:
    with pytest.raises(SandboxOutputRefused, match="row-level"):
        check_release({"vat": [float(i) for i in range(60)]}, "", POLICY, 100)


def test_printing_many_lines_is_row_level() -> None:
    with pytest.raises(SandboxOutputRefused, match="printed output has 80 lines"):
        check_release({"n": 100}, "\n".join(f"{i} 12.5 retail" for i in range(80)), POLICY, 100)


def test_a_group_smaller_than_the_minimum_is_refused() -> None:
    result = _table([["retail", 97, 1.0], ["mining", 3, 9.0]], ["sector", "count", "mean_vat"])
    with pytest.raises(SandboxOutputRefused, match="group of 3"):
        check_release(result, "", POLICY, 100)
    with pytest.raises(SandboxOutputRefused, match="group of 2"):
        check_release({"mining": {"n": 2, "mean": 9.0}}, "", POLICY, 100)


def test_a_grouped_table_without_group_sizes_is_refused() -> None:
    with pytest.raises(SandboxOutputRefused, match="count column"):
        check_release(_table([["retail", 1.0], ["mining", 9.0]], ["sector", "mean_vat"]), "", POLICY, 100)


def test_output_over_the_size_cap_is_refused() -> None:
    with pytest.raises(SandboxOutputRefused, match="over the 1024-byte cap"):
        check_release({"s": "x" * 2000}, "", OutputPolicy(max_bytes=1024), 100)


def test_laplace_noise_spends_epsilon_split_over_the_released_numbers() -> None:
    policy = OutputPolicy(epsilon=1.0, sensitivity=1.0)
    result = {"count": 100, "mean_vat": 2.5e5}
    got = check_release(result, "", policy, 100, KEYS, rng=np.random.default_rng(7))
    want = np.random.default_rng(7).laplace(0.0, 2.0, 2)  # scale = sensitivity * 2 numbers / ε
    assert got.result == {"count": int(round(100 + want[0])), "mean_vat": pytest.approx(2.5e5 + want[1])}
    assert got.epsilon_spent == 1.0 and got.noised_values == 2
    with pytest.raises(SandboxOutputRefused, match="printed"):
        check_release(result, "mean 250000.0\n", policy, 100)
