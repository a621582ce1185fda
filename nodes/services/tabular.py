"""Reading CSV / Parquet / SQL sources into string frames, inferring and converting column types.

Everything is read as text first (so IDs keep their leading zeros and check characters), then
each column gets a type; cells that do not fit the type become NULL and are reported as
``type_mismatch`` — never silently dropped.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from common.ids import is_valid_resident_id, is_valid_uscc
from nodes.errors import BadDataFile, BadEncoding, EmptyDataFile, UnsupportedFormat

ROW_COL = "_row"
_INT_RE = re.compile(r"^[+-]?(0|[1-9]\d{0,14})$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RID_RE = re.compile(r"^\d{6}(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dXx]$")
_USCC_RE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$")
_TRUE = {"true", "yes", "y", "t"}
_FALSE = {"false", "no", "n", "f"}
_USCC_HINTS = ("uscc", "credit_code", "信用代码")
_RID_HINTS = ("resident_id", "id_card", "idcard", "id_number", "身份证")
TYPE_SHARE = 0.95  # share of non-null cells that must fit a numeric/date type
ID_SHARE = 0.8  # share of non-null cells that must look like an ID for the ID types


def detect_format(filename: str | None, declared: str | None) -> str:
    """``csv`` or ``parquet`` from the declared format or the file suffix."""
    fmt = (declared or "").lower().strip()
    if not fmt and filename:
        suffix = Path(filename).suffix.lower()
        fmt = {".csv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "")
    if fmt not in ("csv", "parquet"):
        raise UnsupportedFormat(f"cannot tell the format of {filename!r}: declare format=csv or format=parquet")
    return fmt


def _check_encoding(path: Path, encoding: str) -> None:
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError as exc:
        raise BadEncoding(f"unknown encoding {encoding!r}") from exc
    offset = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise BadEncoding(
                    f"the file is not valid {encoding} (first bad byte at offset {offset + exc.start}); "
                    "declare its encoding, e.g. encoding=gb18030"
                ) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise BadEncoding(f"the file ends inside a {encoding} character") from None


def read_csv_text(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> pd.DataFrame:
    """A CSV file as a frame of strings (``None`` for empty cells)."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # tolerate a BOM
    if path.stat().st_size == 0:
        raise EmptyDataFile("the file is empty")
    _check_encoding(path, encoding)
    with path.open(encoding=encoding, newline="") as fh:
        header = next(csv.reader(fh, delimiter=delimiter), None)
    if not header or all(not h.strip() for h in header):
        raise EmptyDataFile("the file has no header row")
    names = [h.strip() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BadDataFile(f"duplicate column names: {dupes}")
    if any(not n for n in names):
        raise BadDataFile("a column has an empty name")
    try:
        df = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding=encoding, sep=delimiter, header=0, names=names,
            skipinitialspace=False,
        )
    except pd.errors.ParserError as exc:
        msg = str(exc).split("\n")[0]
        raise BadDataFile(f"not a well-formed CSV file: {msg}") from None
    except (ValueError, csv.Error) as exc:
        raise BadDataFile(f"not a well-formed CSV file: {type(exc).__name__}") from None
    if len(df) == 0:
        raise EmptyDataFile("the file has a header but no data rows")
    return _normalize(df)


def read_parquet_text(path: Path) -> pd.DataFrame:
    """A Parquet file as a frame of strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise EmptyDataFile("the file is empty")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise BadDataFile(f"not a readable Parquet file: {type(exc).__name__}") from None
    if table.num_rows == 0:
        raise EmptyDataFile("the Parquet file has no rows")
    return _stringify(table.to_pandas())


def _stringify(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(df)))
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_float_dtype(s):
            vals = [None if pd.isna(v) else (str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))) for v in s]
        elif pd.api.types.is_datetime64_any_dtype(s):
            vals = [None if pd.isna(v) else (v.date().isoformat() if v == v.normalize() else v.isoformat()) for v in s]
        else:
            vals = [None if v is None or (isinstance(v, float) and pd.isna(v)) else _cell_str(v) for v in s]
        out[str(c)] = pd.Series(vals, dtype=object)
    return _normalize(out)


def _cell_str(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def _clean_cells(s: pd.Series) -> pd.Series:
    """Cells stripped of surrounding whitespace; empty or blank cells become None.

    Columns of strings only (every CSV column) are cleaned vectorized; others cell by cell."""
    if pd.api.types.infer_dtype(s, skipna=False) == "string":
        stripped = s.str.strip()
        return stripped.mask(stripped == "", None).astype(object)
    return pd.Series(
        [None if v is None or (isinstance(v, str) and v.strip() == "") else (v.strip() if isinstance(v, str) else v)
         for v in s],
        index=s.index, dtype=object,
    )


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    df.columns = [str(c).strip() for c in df.columns]
    if ROW_COL in df.columns:
        raise BadDataFile(f"column name {ROW_COL!r} is reserved")
    df = df.astype(object)
    df = pd.DataFrame({c: _clean_cells(df[c]) for c in df.columns}, index=df.index)
    df.index = pd.RangeIndex(1, len(df) + 1)  # 1-based data row numbers
    return df


# ---------------------------------------------------------------- inference and conversion


def _share(values: list[str], pred) -> float:  # noqa: ANN001
    if not values:
        return 0.0
    return sum(map(bool, map(pred, values))) / len(values)


_CHUNK = 8192


def _fits(values: list[str], pattern: re.Pattern[str], share: float) -> list[bool] | None:
    """Whether each of ``values`` matches ``pattern`` if at least ``share`` of them do (the same test
    as ``_share(values, pattern.match) >= share``), else None — given up as soon as too many missed."""
    n = len(values)
    if n == 0:
        return None
    give_up = n * (1.0 - share) + 1.0  # safely past the threshold: no rounding question
    flags: list[bool] = []
    bad = 0
    match = pattern.match
    for start in range(0, n, _CHUNK):
        hits = [match(v) is not None for v in values[start:start + _CHUNK]]
        flags.extend(hits)
        bad += len(hits) - sum(hits)
        if bad > give_up:
            return None
    return flags if (n - bad) / n >= share else None


def _is_date(v: str) -> bool:
    if not _DATE_RE.match(v):
        return False
    try:
        date.fromisoformat(v)
    except ValueError:
        return False
    return True


def infer_dtype(name: str, values: pd.Series) -> str:
    """The most specific type that at least ``TYPE_SHARE`` of the non-null cells fit."""
    return _infer(name, values)[0]


def infer_and_convert(name: str, values: pd.Series, dtype: str | None = None) -> tuple[str, Converted]:
    """``dtype`` (inferred when None, see :func:`infer_dtype`) and the column converted to it; the
    pattern matches of the inference are reused by the conversion."""
    fits = None
    if dtype is None:
        dtype, fits = _infer(name, values)
    return dtype, convert_column(values, dtype, fits)


def _infer(name: str, values: pd.Series) -> tuple[str, list[bool] | None]:
    vals = [v for v in values.tolist() if v is not None]
    if not vals:
        return "string", None
    lname = name.lower()
    if any(h in lname for h in _RID_HINTS):
        return "resident_id", None
    if any(h in lname for h in _USCC_HINTS):
        return "uscc", None
    if all(isinstance(v, str) for v in vals):  # the matches can serve the conversion as well
        if (fits := _fits(vals, _INT_RE, TYPE_SHARE)) is not None:
            return "int", fits
        if (fits := _fits(vals, _FLOAT_RE, TYPE_SHARE)) is not None:
            return "float", fits
    else:
        if _fits([str(v) for v in vals], _INT_RE, TYPE_SHARE) is not None:
            return "int", None
        if _fits([str(v) for v in vals], _FLOAT_RE, TYPE_SHARE) is not None:
            return "float", None
    return _infer_other(vals), None


def _infer_other(vals: list[str]) -> str:
    if _share(vals, lambda v: v.lower() in _TRUE | _FALSE) >= TYPE_SHARE:
        return "bool"
    if _share(vals, _is_date) >= TYPE_SHARE:
        return "date"
    rid = _share(vals, lambda v: bool(_RID_RE.match(v)))
    uscc = _share(vals, lambda v: bool(_USCC_RE.match(v.upper())))
    if max(rid, uscc) >= ID_SHARE:
        if rid >= ID_SHARE and _share(vals, is_valid_resident_id) >= _share(vals, is_valid_uscc):
            return "resident_id"
        return "uscc"
    return "string"


def default_grade(dtype: str) -> int:
    """Identifiers are more sensitive than indicators by default (editable afterwards)."""
    return 3 if dtype in ("uscc", "resident_id") else 2


@dataclass
class Converted:
    """Typed cells of one column, and the rows whose cell did not fit the type."""

    values: list[object]
    mismatched_rows: list[int] = field(default_factory=list)


def convert_column(values: pd.Series, dtype: str, fits: list[bool] | None = None) -> Converted:
    """Convert string cells to ``dtype``; misfits become None and are listed by row number.

    ``fits``: for int and float, whether each non-null cell (in order) matches the type's pattern,
    when already known (:func:`infer_and_convert`)."""
    cells = values.tolist()
    rows = values.index.tolist()
    out: list[object] = [None] * len(cells)
    bad: list[int] = []
    present = [i for i, v in enumerate(cells) if v is not None]
    texts = [str(cells[i]) for i in present]
    if dtype in ("int", "float", "date"):
        if dtype == "date":
            fits = [_is_date(v) for v in texts]
            make = str
        else:
            if fits is None or len(fits) != len(texts):
                match = (_INT_RE if dtype == "int" else _FLOAT_RE).match
                fits = [match(v) is not None for v in texts]
            make = int if dtype == "int" else float
        for i, v, ok in zip(present, texts, fits, strict=True):
            if ok:
                out[i] = make(v)
            else:
                bad.append(int(rows[i]))
    elif dtype == "bool":
        for i, v in zip(present, texts, strict=True):
            lv = v.lower()
            if lv in _TRUE or lv == "1":
                out[i] = True
            elif lv in _FALSE or lv == "0":
                out[i] = False
            else:
                bad.append(int(rows[i]))
    elif dtype in ("uscc", "resident_id"):
        for i, v in zip(present, texts, strict=True):
            out[i] = v.upper()
    else:
        for i, v in zip(present, texts, strict=True):
            out[i] = v
    return Converted(out, bad)
