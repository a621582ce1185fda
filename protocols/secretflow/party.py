"""One SecretFlow party process (production mode, no Ray).

    python -m protocols.secretflow.party --config PARTY.json --party NAME

Every party of a job runs this same driver with its own config. It

1. validates its own input (exit 3 if the file is missing, 4 if it is unusable),
2. joins the cluster (``sf.init(..., ray_mode=False)``, gRPC on 127.0.0.1),
3. intersects on the join key with two-party PSI (RR22 by default): the label
   holder runs PSI with each other party in turn, keeping the shrinking
   intersection to itself, then hands the final intersection to every other
   party (see :func:`psi_schedule`); with ``ECDH_3PC`` three parties intersect
   in one go on the job's SPU,
4. trains SS-LR on an SPU shared by all parties and predicts jointly, the
   predictions revealed to the label holder only,
5. writes into its own ``output_dir`` only: ``psi_output.csv`` (its intersected
   rows, sorted by join key) and, at the label holder, ``predictions.csv`` and
   ``metrics.json``.

Progress goes to stdout as JSON lines (``{"event": "stage", ...}``), the last one
``{"event": "result", ...}``; SecretFlow's own logging goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pydantic import ValidationError

from protocols.secretflow.spec import (
    PSI_PROTOCOLS,
    LabelMetrics,
    PartyConfig,
    PartyExit,
    PartyResult,
    StageTimes,
)
from protocols.secretflow.traces import remove_psi_traces

PSI_OUTPUT = "psi_output.csv"
PREDICTIONS = "predictions.csv"
METRICS = "metrics.json"


def staging_dir(output_dir: Path, job_id: str) -> Path:
    """Where a party writes while the job runs; its files move into ``output_dir`` only on success."""
    return output_dir / (".dcp-staging-" + re.sub(r"[^A-Za-z0-9_.-]", "_", job_id))


class InputMissingError(Exception):
    """The party's input CSV does not exist or cannot be read."""


class InputInvalidError(Exception):
    """The party's input CSV cannot be used for this job."""


class EmptyIntersectionError(Exception):
    """PSI found no common key: there is nothing to train on."""


Emit = Callable[..., None]


def make_emitter(party: str, stream: Any = None) -> Emit:
    """A function that prints one JSON progress line per call."""
    out = stream or sys.stdout
    pid = os.getpid()

    def emit(event: str, **fields: Any) -> None:
        out.write(
            json.dumps(
                {"event": event, "party": party, "pid": pid, "t": round(time.time(), 3), **fields},
                default=str,
            )
        )
        out.write("\n")
        out.flush()

    return emit


def feature_columns(cfg: PartyConfig, columns: list[str]) -> list[str]:
    """This party's feature columns: as configured, else all but the join key and label."""
    if cfg.me.features is not None:
        return list(cfg.me.features)
    skip = {cfg.join_key} | ({cfg.label_column} if cfg.me.name == cfg.label_party else set())
    return [c for c in columns if c not in skip]


def validate_input(cfg: PartyConfig) -> int:
    """Check this party's own CSV; return its row count or raise a named input error."""
    path = cfg.me.input_csv
    if not path.is_file():
        raise InputMissingError(f"input file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype={cfg.join_key: str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputMissingError(f"cannot read input file {path}: {exc}") from exc
    cols = list(frame.columns)
    if cfg.join_key not in cols:
        raise InputInvalidError(f"{path}: join key column {cfg.join_key!r} is missing (columns: {cols})")
    keys = frame[cfg.join_key]
    if keys.isna().any() or (keys.str.strip() == "").any():
        raise InputInvalidError(f"{path}: join key {cfg.join_key!r} has empty values")
    dup = keys[keys.duplicated()]
    if len(dup):
        raise InputInvalidError(
            f"{path}: join key {cfg.join_key!r} has {len(dup)} duplicate values, e.g. {dup.iloc[0]!r}"
        )
    feats = feature_columns(cfg, cols)
    missing = [c for c in feats if c not in cols]
    if missing:
        raise InputInvalidError(f"{path}: feature columns missing: {missing}")
    if not feats:
        raise InputInvalidError(f"{path}: no feature columns")
    for c in feats:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise InputInvalidError(f"{path}: feature column {c!r} is not numeric")
        if frame[c].isna().any():
            raise InputInvalidError(f"{path}: feature column {c!r} has missing values")
    if cfg.me.name == cfg.label_party:
        if cfg.label_column not in cols:
            raise InputInvalidError(f"{path}: label column {cfg.label_column!r} is missing")
        labels = set(frame[cfg.label_column].dropna().unique().tolist())
        if frame[cfg.label_column].isna().any() or not labels <= {0, 1}:
            raise InputInvalidError(
                f"{path}: label column {cfg.label_column!r} must be 0/1, got {sorted(labels)[:5]}"
            )
    if len(frame) == 0:
        raise InputInvalidError(f"{path}: no rows")
    return len(frame)


class PsiRound(NamedTuple):
    """One two-party PSI between the label holder and ``peer``."""

    peer: str
    reveal_to_peer: bool  # broadcast the result to the peer (else only the label holder learns it)


def psi_schedule(label_party: str, names: list[str]) -> list[PsiRound]:
    """The two-party PSI rounds, all run by the label holder, that leave every party on the same rows.

    Forward rounds intersect the label holder's running set with each peer in turn,
    the result kept by the label holder only; the last forward round yields the full
    intersection and reveals it to that peer, and one more round with each earlier
    peer hands it the full intersection too. ``k`` peers take ``2k - 1`` rounds, and a
    department never learns more than the final intersection. (The label holder does
    learn its running intersections — inherent in chaining two-party PSI.)
    """
    peers = [n for n in names if n != label_party]
    forward = [PsiRound(p, reveal_to_peer=(i == len(peers) - 1)) for i, p in enumerate(peers)]
    return forward + [PsiRound(p, reveal_to_peer=True) for p in peers[:-1]]


def _runtime_config(protocol: str) -> dict[str, Any]:
    return {"protocol": protocol, "field": "FM64", "fxp_fraction_bits": 18}


def _link_desc(cfg: PartyConfig) -> dict[str, Any]:
    c = cfg.cluster
    return {
        "connect_retry_times": max(1, int(c.connect_timeout_s / 0.1)),
        "connect_retry_interval_ms": 100,
        "recv_timeout_ms": int(c.recv_timeout_s * 1000),
        "http_timeout_ms": int(c.recv_timeout_s * 1000),
    }


def _is_empty(path: str) -> bool:
    with open(path) as f:
        f.readline()  # header
        return not f.readline().strip()


def _load_features(path: str, cols: list[str], standardize: bool) -> np.ndarray:
    frame = pd.read_csv(path)
    x = frame[cols].to_numpy(dtype=np.float32)
    if standardize:
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return x.astype(np.float32)


def _load_label(path: str, col: str) -> np.ndarray:
    return pd.read_csv(path)[col].to_numpy(dtype=np.float32).reshape(-1, 1)


def _write_label_outputs(
    pred: np.ndarray, psi_csv: str, key: str, label_col: str, out_dir: str
) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    frame = pd.read_csv(psi_csv, dtype={key: str})
    score = np.asarray(pred, dtype=float).reshape(-1)
    y = frame[label_col].to_numpy()
    auc = float(roc_auc_score(y, score))
    pd.DataFrame({key: frame[key], "score": score, label_col: y}).to_csv(
        Path(out_dir) / PREDICTIONS, index=False
    )
    metrics = {"auc": auc, "n_rows": int(len(frame)), "positive_rate": float(y.mean())}
    (Path(out_dir) / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics


def run_party(cfg: PartyConfig, input_rows: int, emit: Emit) -> PartyResult:
    """Join the cluster and run PSI → SS-LR → prediction as party ``cfg.me.name``.

    Everything is written to a staging directory inside ``output_dir`` and moved into
    place only when the whole job has succeeded; on failure the staging is removed.
    """
    out_dir = cfg.me.output_dir.resolve()
    stage = staging_dir(out_dir, cfg.job_id)  # nothing half-written ever lands in out_dir
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        result = _run_staged(cfg, input_rows, emit, stage)
        final = []
        for f in result.output_files:  # publish: one rename per file, same filesystem
            os.replace(f, out_dir / f.name)
            final.append(out_dir / f.name)
        return result.model_copy(update={"output_files": final})
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _run_staged(cfg: PartyConfig, input_rows: int, emit: Emit, stage: Path) -> PartyResult:
    import secretflow as sf
    from secretflow.data import FedNdarray, PartitionWay
    from secretflow.device import PYUObject
    from secretflow.ml.linear.ss_sgd import SSRegression

    me = cfg.me.name
    host = cfg.cluster.host
    names = cfg.cluster.names
    label = cfg.label_party
    times = StageTimes()
    t_start = time.perf_counter()

    # ---- connect
    emit("stage", stage="connect", status="start")
    t0 = time.perf_counter()
    cluster_config = {
        "parties": {
            ep.name: {"address": f"{host}:{ep.sf_port}", "listen_addr": f"{host}:{ep.sf_port}"}
            for ep in cfg.cluster.parties
        },
        "self_party": me,
    }
    sf.init(
        address="local",
        cluster_config=cluster_config,
        ray_mode=False,
        logging_level="warning",
        job_name=cfg.job_id,
        cross_silo_comm_backend="grpc",
        cross_silo_comm_options={
            "timeout_in_ms": int(cfg.cluster.recv_timeout_s * 1000),
            "exit_on_sending_failure": True,
        },
        enable_waiting_for_other_parties_ready=True,
    )
    try:
        pyu = {n: sf.PYU(n) for n in names}
        # the job's SPU over all parties: SS-LR runs on it, and so does 3-party PSI
        spu = sf.SPU(
            {
                "nodes": [
                    {
                        "party": n,
                        "address": f"{host}:{cfg.cluster.endpoint(n).spu_port}",
                        "listen_address": f"{host}:{cfg.cluster.endpoint(n).spu_port}",
                    }
                    for n in names
                ],
                "runtime_config": _runtime_config(cfg.spu_protocol),
            },
            link_desc=_link_desc(cfg),
            id="job",
        )
        times.connect = time.perf_counter() - t0
        emit("stage", stage="connect", status="done", seconds=round(times.connect, 3))

        # ---- PSI
        emit("stage", stage="psi", status="start", protocol=cfg.psi_protocol)
        t0 = time.perf_counter()
        sf_protocol, curve = PSI_PROTOCOLS[cfg.psi_protocol]
        pair_spu: dict[str, Any] = {}
        current = {n: (str(cfg.me.input_csv.resolve()) if n == me else "") for n in names}
        if cfg.psi_protocol == "ECDH_3PC":
            rounds: list[tuple[Any, tuple[str, ...], bool, str]] = [(spu, tuple(names), True, "all")]
        else:
            rounds = []
            for peer, reveal in psi_schedule(label, names):
                if peer not in pair_spu:
                    nodes = [
                        {
                            "party": n,
                            "address": f"{host}:{cfg.cluster.endpoint(n).psi_ports[other]}",
                            "listen_address": f"{host}:{cfg.cluster.endpoint(n).psi_ports[other]}",
                        }
                        for n, other in ((label, peer), (peer, label))
                    ]
                    pair_spu[peer] = sf.SPU(
                        {"nodes": nodes, "runtime_config": _runtime_config("SEMI2K")},
                        link_desc=_link_desc(cfg),
                        id=f"psi-{label}-{peer}",
                    )
                rounds.append((pair_spu[peer], (label, peer), reveal, peer))
        for rnd, (dev, members, reveal, peer) in enumerate(rounds):
            out = {n: (str(stage / f"psi-round{rnd}.csv") if n == me else "") for n in members}
            refs = [
                PYUObject(
                    pyu[n],
                    dev.actors[n].psi.remote(
                        keys=[cfg.join_key],
                        input_path=current[n],
                        output_path=out[n],
                        receiver=label,
                        table_keys_duplicated=False,
                        broadcast_result=reveal,
                        protocol=sf_protocol,
                        ecdh_curve=curve,
                    ),
                )
                for n in members
            ]
            sf.wait(refs)  # synchronizes without revealing the reports
            for n in members:
                if n == label or reveal:
                    current[n] = out[n]
            emit("stage", stage="psi", status="round", round=rnd, peer=peer, revealed_to_peer=reveal)
            # one bit, revealed to all: is the running intersection empty? (it only shrinks, so
            # this says no more than the final result will) — lets every party stop cleanly
            if sf.reveal(pyu[label](_is_empty)(current[label])):
                raise EmptyIntersectionError(
                    f"the parties have no {cfg.join_key!r} in common; nothing to train on"
                )

        psi_final = stage / PSI_OUTPUT
        mine = pd.read_csv(current[me], dtype={cfg.join_key: str})
        mine = mine.sort_values(cfg.join_key, kind="stable").reset_index(drop=True)
        my_feats = feature_columns(cfg, list(mine.columns))
        keep = [cfg.join_key, *my_feats]
        if me == label:
            keep.append(cfg.label_column)
        mine[keep].to_csv(psi_final, index=False)
        for f in stage.glob("psi-round*.csv"):
            f.unlink()
        n_inter = len(mine)
        times.psi = time.perf_counter() - t0
        emit("stage", stage="psi", status="done", seconds=round(times.psi, 3), intersection_rows=n_inter)
        for spu_dev in pair_spu.values():
            spu_dev.shutdown()

        # ---- SS-LR
        emit("stage", stage="train", status="start")
        t0 = time.perf_counter()
        my_path = str(psi_final)
        x = FedNdarray(
            partitions={
                pyu[n]: pyu[n](_load_features)(
                    my_path if n == me else "", my_feats if n == me else [], cfg.model.standardize
                )
                for n in names
            },
            partition_way=PartitionWay.VERTICAL,
        )
        y = FedNdarray(
            partitions={
                pyu[label]: pyu[label](_load_label)(my_path if me == label else "", cfg.label_column)
            },
            partition_way=PartitionWay.VERTICAL,
        )
        model = SSRegression(spu)
        m = cfg.model
        # SSRegression trains on full batches only: never let the batch exceed the rows
        batch = min(m.batch_size, n_inter)
        model.fit(
            x,
            y,
            epochs=m.epochs,
            learning_rate=m.learning_rate,
            batch_size=batch,
            sig_type=m.sig_type,
            reg_type="logistic",
            penalty=m.penalty,
            l2_norm=m.l2_norm,
        )
        sf.wait(model.spu_w)
        times.train = time.perf_counter() - t0
        emit("stage", stage="train", status="done", seconds=round(times.train, 3))

        # ---- joint prediction, revealed to the label holder only
        emit("stage", stage="predict", status="start")
        t0 = time.perf_counter()
        pred = model.predict(x, batch_size=batch, to_pyu=pyu[label])
        written = pyu[label](_write_label_outputs)(
            pred.partitions[pyu[label]],
            my_path if me == label else "",
            cfg.join_key,
            cfg.label_column,
            str(stage) if me == label else "",
        )
        sf.wait(written)
        times.predict = time.perf_counter() - t0
        emit("stage", stage="predict", status="done", seconds=round(times.predict, 3))
    finally:
        sf.shutdown()

    metrics = None
    files = [psi_final]
    if me == label:
        metrics = LabelMetrics.model_validate_json((stage / METRICS).read_text())
        files += [stage / PREDICTIONS, stage / METRICS]
    times.total = time.perf_counter() - t_start
    return PartyResult(
        party=me,
        input_rows=input_rows,
        intersection_rows=n_inter,
        output_files=files,
        stages=times,
        metrics=metrics,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (see :class:`PartyExit`)."""
    ap = argparse.ArgumentParser(
        prog="python -m protocols.secretflow.party", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--config", required=True, type=Path, help="party config JSON (PartyConfig)")
    ap.add_argument("--party", required=True, help="this party's name; must match the config")
    args = ap.parse_args(argv)
    emit = make_emitter(args.party)

    def fail(code: PartyExit, msg: str) -> int:
        print(f"[{args.party}] error: {msg}", file=sys.stderr, flush=True)
        emit("error", code=int(code), kind=code.name, message=msg)
        return int(code)

    try:
        cfg = PartyConfig.model_validate_json(args.config.read_text())
    except OSError as exc:
        return fail(PartyExit.CONFIG, f"cannot read config {args.config}: {exc}")
    except ValidationError as exc:
        return fail(PartyExit.CONFIG, f"invalid config {args.config}: {exc}")
    if cfg.me.name != args.party:
        return fail(PartyExit.CONFIG, f"config is for party {cfg.me.name!r}, not {args.party!r}")

    emit("stage", stage="validate", status="start")
    try:
        rows = validate_input(cfg)
    except InputMissingError as exc:
        return fail(PartyExit.INPUT_MISSING, str(exc))
    except InputInvalidError as exc:
        return fail(PartyExit.INPUT_INVALID, str(exc))
    emit("stage", stage="validate", status="done", rows=rows)
    try:
        result = run_party(cfg, rows, emit)
    except EmptyIntersectionError as exc:
        return fail(PartyExit.EMPTY_INTERSECTION, str(exc))
    except Exception as exc:  # any engine failure: report it with its traceback
        traceback.print_exc(file=sys.stderr)
        return fail(PartyExit.RUNTIME, f"{type(exc).__name__}: {exc}")
    finally:
        remove_psi_traces(str(args.config))  # libpsi's /tmp/psi_*.trace files that name our config
    emit("result", result=json.loads(result.model_dump_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
