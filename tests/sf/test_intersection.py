"""The PSI-only result sorted as bytes (``protocols/secretflow/intersection.py``): the same rows in the
same order as the pandas path, each row's text untouched, and a refusal (None, nothing written) for
any shape it does not handle, so the party falls back to pandas."""

from __future__ import annotations

import pandas as pd
import pytest

from protocols.secretflow.intersection import sorted_intersection

KEEP = ["uscc", "a", "n"]


def _pandas_path(src, dest, key, keep):  # noqa: ANN001, ANN202 - what the party did before
    mine = pd.read_csv(src, dtype={key: str}).sort_values(key, kind="stable").reset_index(drop=True)
    mine[keep].to_csv(dest, index=False)
    return len(mine)


def test_rows_sorted_like_pandas_and_their_text_untouched(tmp_path) -> None:
    src = tmp_path / "psi.csv"
    rows = ["91C,0.18432458137364527,3", "91A,1e-05,1", "91B,2.50,2", "91AB,-0.0,4"]
    src.write_bytes(("uscc,a,n\n" + "\n".join(rows) + "\n").encode())
    assert sorted_intersection(src, tmp_path / "fast.csv", "uscc", KEEP) == 4
    fast = (tmp_path / "fast.csv").read_text()
    # byte for byte the engine's rows, sorted by key (pandas would have re-formatted 2.50, 1e-05 …)
    assert fast == "uscc,a,n\n91A,1e-05,1\n91AB,-0.0,4\n91B,2.50,2\n91C,0.18432458137364527,3\n"
    assert _pandas_path(src, tmp_path / "slow.csv", "uscc", KEEP) == 4
    a, b = (pd.read_csv(tmp_path / f, dtype={"uscc": str}) for f in ("fast.csv", "slow.csv"))
    assert a["uscc"].tolist() == b["uscc"].tolist() and a["n"].tolist() == b["n"].tolist()
    assert (a["a"] - b["a"]).abs().max() <= 1e-15


def test_sorted_by_the_key_not_by_the_line(tmp_path) -> None:
    """'A!' sorts after 'A' as a key, but the line 'A!,…' sorts before 'A,…' ('!' < ',')."""
    src = tmp_path / "psi.csv"
    src.write_bytes(b"uscc,a,n\nA!,1,1\nA,2,2\n")
    assert sorted_intersection(src, tmp_path / "out.csv", "uscc", KEEP) == 2
    assert (tmp_path / "out.csv").read_bytes() == b"uscc,a,n\nA,2,2\nA!,1,1\n"


@pytest.mark.parametrize(("text", "keep"), [
    (b'uscc,a,n\n"91A",1,1\n', KEEP),            # quoted: a CSV parser's job
    (b"uscc,a,n\r\n91A,1,1\r\n", KEEP),           # CRLF
    (b"uscc,a,n,extra\n91A,1,1,9\n", KEEP),       # a column the result must not carry
    (b"a,uscc,n\n1,91A,1\n", ["a", "uscc", "n"]),  # the key not first
])
def test_other_shapes_are_left_to_pandas(tmp_path, text, keep) -> None:
    src = tmp_path / "psi.csv"
    src.write_bytes(text)
    assert sorted_intersection(src, tmp_path / "out.csv", "uscc", keep) is None
    assert not (tmp_path / "out.csv").exists()


def test_key_column_is_what_pandas_gives(tmp_path) -> None:
    from protocols.secretflow.intersection import key_column

    src = tmp_path / "psi.csv"
    src.write_bytes(b"uscc,a,n\n0091A,1e-05,1\n91B,2.50,2\n\n91C,3,3\n")
    slow = pd.read_csv(src, dtype={"uscc": str}, usecols=["uscc"]).to_csv(index=False).encode()
    assert key_column(src, "uscc") == slow == b"uscc\n0091A\n91B\n91C\n"  # leading zeros kept
    src.write_bytes(b'uscc,a\n"91,A",1\n')
    assert key_column(src, "uscc") is None  # quoted: pandas' job
    src.write_bytes(b"a,uscc\n1,91A\n")
    assert key_column(src, "uscc") is None  # the key not first
