"""The node's extract and the party's input check, before and after issue #19 item 4, in CPU seconds.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_psi_extract.py --db NODE.db --dataset NAME [--repeat 3]

On a copy of a node's database (e.g. one ``bench_psi_job.py`` left, 1M rows): the old path (the column
read into pandas frames, ``to_csv``, then the party's ``validate_input`` reading the whole file back
with pandas) against the new one (rows streamed from SQLite into the file with the party's cell checks
made while writing, then the party's header-only check). CPU seconds of this process
(``time.process_time``) are what the 2-core machine's load does not change; wall seconds are printed
with the load average.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _old_extract(ds, name: str, columns: list[str], dest: Path) -> int:  # noqa: ANN001
    """The extract as it was: every column as a frame, written by pandas."""
    import numpy as np
    import pandas as pd
    from sqlmodel import Session

    from nodes.services.datasets import _as_bool, _data_table, _raw_columns

    with Session(ds.engine) as session:
        d = ds._get(session, name)
        metas = {m.name: m for m in ds._columns(session, d)}
        table = _data_table(d.table_name, [(c, metas[c].dtype) for c in columns])
        _, cols = _raw_columns(session.connection(), table, columns)
    data = {}
    for c, col in zip(columns, cols, strict=True):
        t = metas[c].dtype
        if t == "float":
            data[c] = pd.Series(np.array(col, dtype=np.float64))
        elif t == "int":
            data[c] = pd.Series(pd.array(list(col), dtype="Int64"))
        elif t == "bool":
            data[c] = pd.Series([_as_bool(v) for v in col], dtype=object)
        else:
            data[c] = pd.Series(col, dtype=object)
    df = pd.DataFrame(data, columns=columns)
    df.to_csv(dest, index=False)
    return len(df)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--key", default="uscc")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from nodes.db import make_engine
    from nodes.services.audit import AuditLog
    from nodes.services.datasets import DatasetService, ExtractCheck
    from protocols.secretflow.inputs import validate_input
    from protocols.secretflow.spec import ClusterSpec, PartyConfig, PartyEndpoint, PartySpec

    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        db = Path(tmp) / "node.db"
        shutil.copy(args.db, db)
        engine = make_engine(f"sqlite:///{db}")
        ds = DatasetService("bench", engine, AuditLog("bench", engine))
        eps = [PartyEndpoint(name=n, sf_port=1000 + i, spu_port=2000 + i, psi_ports={o: 3000 + i for o in "ab" if o != n})
               for i, n in enumerate("ab")]

        def cfg(path: Path, rows: int | None) -> PartyConfig:
            return PartyConfig(job_id="j", cluster=ClusterSpec(parties=eps), join_key=args.key, label_party="a",
                               stages=["psi"], me=PartySpec(name="b", input_csv=path, output_dir=Path(tmp) / "o",
                                                            features=[], checked_rows=rows))

        res: dict[str, list[tuple[float, float]]] = {k: [] for k in ("old extract", "old validate", "new extract",
                                                                       "new validate")}

        def timed(label: str, fn) -> object:  # noqa: ANN001
            c0, w0 = time.process_time(), time.perf_counter()
            out = fn()
            res[label].append((time.process_time() - c0, time.perf_counter() - w0))
            return out

        load0 = float(Path("/proc/loadavg").read_text().split()[0])
        for _ in range(args.repeat):
            old, new = Path(tmp) / "old.csv", Path(tmp) / "new.csv"
            rows = timed("old extract", lambda old=old: _old_extract(ds, args.dataset, [args.key], old))
            timed("old validate", lambda old=old: validate_input(cfg(old, None)))
            rows2 = timed("new extract", lambda new=new: ds.extract_csv(args.dataset, [args.key], new,
                                                                      check=ExtractCheck(key=args.key)))
            timed("new validate", lambda new=new, rows2=rows2: validate_input(cfg(new, rows2)))
            assert rows == rows2 and old.read_bytes() == new.read_bytes(), "the two extracts differ"
        load1 = float(Path("/proc/loadavg").read_text().split()[0])
    print(f"{rows:,} rows, key only; median of {args.repeat}; load average {load0:.1f} → {load1:.1f}")
    print(f"{'step':<14} {'CPU s':>7} {'wall s':>7}")
    for label, xs in res.items():
        print(f"{label:<14} {statistics.median(x[0] for x in xs):>7.2f} {statistics.median(x[1] for x in xs):>7.2f}")
    old_cpu = sum(statistics.median(x[0] for x in res[k]) for k in ("old extract", "old validate"))
    new_cpu = sum(statistics.median(x[0] for x in res[k]) for k in ("new extract", "new validate"))
    print(f"{'total':<14} old {old_cpu:.2f} CPU s, new {new_cpu:.2f} CPU s (identical files)")


if __name__ == "__main__":
    main()
