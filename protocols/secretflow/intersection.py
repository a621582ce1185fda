"""The PSI result written without a pandas round-trip (issue #19 item 4).

After the engine writes a party's intersection, the party keeps it sorted by the join key. For a PSI-only
job the rows go nowhere else, so the file is sorted as bytes: no parse, no float re-formatting (pandas'
default float parser is not round-trip exact, so its round-trip could move a value by one ulp), about a
third of the CPU.
"""

from __future__ import annotations

from pathlib import Path


def sorted_intersection(src: Path, dest: Path, key: str, keep: list[str]) -> int | None:
    """Write the engine's intersection ``src`` to ``dest`` sorted by ``key``, each row byte for byte
    as the engine wrote it (no parse, no float re-formatting, no pandas); return its row count.

    None — and nothing written — when the file is not the plain shape this handles: its header is
    not exactly ``keep`` with ``key`` first, or it has quotes or carriage returns. The caller then
    takes the pandas path. Row order is that of ``sort_values(key, kind="stable")`` on the keys as
    strings (UTF-8 byte order is code-point order)."""
    data = src.read_bytes()
    header, _, body = data.partition(b"\n")
    if b'"' in data or b"\r" in data or header.decode("utf-8", "replace").split(",") != keep or keep[0] != key:
        return None
    rows = body.split(b"\n")
    if rows and rows[-1] == b"":
        rows.pop()
    rows.sort(key=lambda row: row.split(b",", 1)[0])
    dest.write_bytes(header + b"\n" + b"".join(r + b"\n" for r in rows))
    return len(rows)


def key_column(src: Path, key: str) -> bytes | None:
    """The ``key`` column of a plain intersection file (``key`` first, no quotes, no carriage returns) as
    CSV bytes — what ``pd.read_csv(usecols=[key]).to_csv(index=False)`` gives, without parsing a frame.
    None when the file is not that shape (the caller reads it with pandas)."""
    data = src.read_bytes()
    if b'"' in data or b"\r" in data:
        return None
    lines = [line for line in data.split(b"\n") if line]  # pandas skips blank lines too
    if not lines or lines[0].split(b",", 1)[0].decode("utf-8", "replace") != key:
        return None
    return b"".join(line.split(b",", 1)[0] + b"\n" for line in lines)
