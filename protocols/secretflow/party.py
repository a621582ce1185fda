"""One SecretFlow party process (production mode, no Ray).

    python -m protocols.secretflow.party --config PARTY.json --party NAME
    python -m protocols.secretflow.party --warm [--node-dir DIR]  # pre-started; the task comes on stdin

Every party of a job runs this same driver with its own config. It

1. validates its own input (exit 3 if the file is missing, 4 if it is unusable, 7 if the
   stored model part a prediction needs is missing or does not fit),
2. joins the cluster (``sf.init(..., ray_mode=False)``, gRPC; each party listens on its own
   host, :meth:`ClusterSpec.host_of`),
3. intersects on the join key with two-party PSI (RR22 by default): the label
   holder runs PSI with each other party in turn, keeping the shrinking
   intersection to itself, then hands the final intersection to every other
   party (see :func:`psi_schedule`); with ``ECDH_3PC`` three parties intersect
   in one go on the job's SPU,
4. per ``stages``: stops there (``["psi"]``); or **trains** (SS-LR, SS-XGB or SGB, see
   :mod:`protocols.secretflow.learners`) on the train rows — every row, or those that
   :func:`protocols.secretflow.split.holdout_mask` keeps out of the test set — and stores
   its own private model part; or **loads** the part an earlier training job stored;
   then **predicts** every intersection row jointly, the scores revealed to the label
   holder only,
5. writes into its own ``output_dir`` only: ``psi_output.csv`` (its intersected rows,
   sorted by join key: the key and its own feature columns — with ``features: []`` the
   keys only), its model part under ``model_dir`` (default ``output_dir/model``), and, at
   the label holder, ``predictions.csv`` (key, score, label if known, split if any) and
   ``metrics.json`` (AUC and KS on all / train / test rows).

Progress goes to stdout as JSON lines (``{"event": "stage", ...}``), the last one
``{"event": "result", ...}``; SecretFlow's own logging goes to stderr.

What is revealed beyond each party's own outputs: one bit after every PSI round (is the
running intersection empty?), one bit after PSI when training (are the train rows'
labels all one class?), and, before a stored model predicts, every party's model
fingerprint (training job id, algorithm, parties, SPU protocol) so that mismatched
parts fail by name.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from protocols.secretflow.events import Emit, make_emitter, private_event_stream  # noqa: F401 - re-exported
from protocols.secretflow.inputs import (  # noqa: F401 - re-exported: the party's checks before the engine
    InputInvalidError,
    InputMissingError,
    ModelInvalidError,
    feature_columns,
    file_sha256,
    is_predict_only,
    load_model_part,
    validate_input,
)
from protocols.secretflow.intersection import sorted_intersection
from protocols.secretflow.leave import _leave  # noqa: F401 - re-exported
from protocols.secretflow.lifeline import die_with_parent
from protocols.secretflow.spec import (
    MODEL_PART_FILE,
    PSI_PROTOCOLS,
    LabelMetrics,
    ModelPart,
    PartyConfig,
    PartyExit,
    PartyResult,
    Scorecard,
    StageTimes,
)
from protocols.secretflow.split import auc_ks, holdout_mask, two_classes
from protocols.secretflow.traces import remove_psi_traces

PSI_OUTPUT = "psi_output.csv"
PREDICTIONS = "predictions.csv"
METRICS = "metrics.json"
MODEL_DIR = "model"


def staging_dir(output_dir: Path, job_id: str) -> Path:
    """Where a party writes while the job runs; its files move into ``output_dir`` only on success."""
    return output_dir / (".dcp-staging-" + re.sub(r"[^A-Za-z0-9_.-]", "_", job_id))


class EmptyIntersectionError(Exception):
    """PSI found no common key: there is nothing to train on."""


class SingleClassError(Exception):
    """The training rows' labels are all one class: nothing to learn, AUC undefined."""


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


PD_CLIP = 1e-6  # points of a PD the fixed-point sigmoid rounded to 0 or 1
FIELD = "FM64"
FXP_FRACTION_BITS = 18


def _runtime_config(protocol: str) -> dict[str, Any]:
    return {"protocol": protocol, "field": FIELD, "fxp_fraction_bits": FXP_FRACTION_BITS}


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


class _Rows(NamedTuple):
    """This party's intersected rows, in key order, as plain local arrays (never leave the process)."""

    keys: np.ndarray
    x: np.ndarray  # float32 features (standardized for SS-LR)
    y: np.ndarray | None  # labels, at the label holder only
    test: np.ndarray | None  # hold-out mask, if the job splits


def _write_label_outputs(
    pred: Any,
    rows: _Rows,
    key: str,
    label_col: str | None,
    out_dir: Path,
    algorithm: str,
    scorecard: Scorecard | None = None,
    logit: bool = False,
) -> LabelMetrics | None:
    values = np.asarray(pred, dtype=float).reshape(-1)
    if logit:  # the log-odds themselves: the exact PD
        score = 1.0 / (1.0 + np.exp(-values))
    else:
        score = values
    frame = pd.DataFrame({key: rows.keys, "score": score})
    if scorecard is not None:
        if logit:
            log_odds = values
        else:  # fixed point may round a PD to 0 or 1: clip to finite log-odds
            clipped = np.clip(score, PD_CLIP, 1.0 - PD_CLIP)
            log_odds = np.log(clipped / (1.0 - clipped))
        frame["points"] = scorecard.points(log_odds)
    if rows.y is not None and label_col:
        frame[label_col] = rows.y.astype(int)
    if rows.test is not None:
        frame["split"] = np.where(rows.test, "test", "train")
    frame.to_csv(out_dir / PREDICTIONS, index=False)
    if rows.y is None:
        return None
    y = rows.y
    overall = auc_ks(y, score)
    if overall is None:
        return None  # a prediction-only run on one-class labels: scores, but no AUC
    m: dict[str, Any] = {
        "algorithm": algorithm,
        "auc": overall[0],
        "ks": overall[1],
        "n_rows": int(len(y)),
        "positive_rate": float(y.mean()),
    }
    if rows.test is not None:
        for name, mask in (("train", ~rows.test), ("test", rows.test)):
            both = auc_ks(y[mask], score[mask])
            m[f"auc_{name}"] = both[0] if both else None
            m[f"ks_{name}"] = both[1] if both else None
            m[f"n_{name}"] = int(mask.sum())
            m[f"positive_rate_{name}"] = float(y[mask].mean()) if mask.any() else None
    metrics = LabelMetrics.model_validate(m)
    (out_dir / METRICS).write_text(metrics.model_dump_json(indent=2, exclude_none=True))
    return metrics


def run_party(cfg: PartyConfig, input_rows: int, emit: Emit, part: ModelPart | None = None) -> PartyResult:
    """Join the cluster and run the job's stages as party ``cfg.me.name``.

    Everything is written to a staging directory inside ``output_dir`` and moved into
    place only when the whole job has succeeded; on failure the staging is removed.
    """
    out_dir = cfg.me.output_dir.resolve()
    stage = staging_dir(out_dir, cfg.job_id)  # nothing half-written ever lands in out_dir
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        result = _run_staged(cfg, input_rows, emit, stage, part)
        final = []
        for f in result.output_files:  # publish: one rename per file, same filesystem
            os.replace(f, out_dir / f.name)
            final.append(out_dir / f.name)
        model_dir = None
        if result.model_dir is not None:
            model_dir = _publish_dir(result.model_dir, (cfg.me.model_dir or out_dir / MODEL_DIR).resolve())
        return result.model_copy(update={"output_files": final, "model_dir": model_dir})
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish_dir(src: Path, target: Path) -> Path:
    """Move the staged directory ``src`` to ``target``, replacing an older one only once the new is in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.parent / f".{target.name}.incoming-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.move(str(src), str(incoming))  # a rename on the same filesystem, else a copy
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(incoming, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _run_staged(
    cfg: PartyConfig, input_rows: int, emit: Emit, stage: Path, part: ModelPart | None
) -> PartyResult:
    import secretflow as sf
    from secretflow.device import PYUObject

    me = cfg.me.name
    names = cfg.cluster.names
    label = cfg.label_party
    times = StageTimes()
    t_start = time.perf_counter()

    # ---- connect
    emit("stage", stage="connect", status="start")
    t0 = time.perf_counter()
    host = cfg.cluster.host_of
    cluster_config = {
        "parties": {
            ep.name: {"address": f"{host(ep.name)}:{ep.sf_port}", "listen_addr": f"{host(ep.name)}:{ep.sf_port}"}
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
    model_dir: Path | None = None
    metrics: LabelMetrics | None = None
    files: list[Path] = []
    failed = True
    try:
        pyu = {n: sf.PYU(n) for n in names}
        # the job's SPU over all parties: the learners run on it, and so does 3-party PSI. A two-party
        # PSI-only job runs on the pair's own SPU alone: one link set-up fewer (issue #19 item 4)
        spu = None if cfg.stages == ["psi"] and cfg.psi_protocol != "ECDH_3PC" else sf.SPU(
            {
                "nodes": [
                    {
                        "party": n,
                        "address": f"{host(n)}:{cfg.cluster.endpoint(n).spu_port}",
                        "listen_address": f"{host(n)}:{cfg.cluster.endpoint(n).spu_port}",
                    }
                    for n in names
                ],
                "runtime_config": _runtime_config(cfg.spu_protocol),
            },
            link_desc=_link_desc(cfg),
            id="job",
        )
        if spu is not None:
            _ENGINE_DEVICES.append(spu)
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
                            "address": f"{host(n)}:{cfg.cluster.endpoint(n).psi_ports[other]}",
                            "listen_address": f"{host(n)}:{cfg.cluster.endpoint(n).psi_ports[other]}",
                        }
                        for n, other in ((label, peer), (peer, label))
                    ]
                    pair_spu[peer] = sf.SPU(
                        {"nodes": nodes, "runtime_config": _runtime_config("SEMI2K")},
                        link_desc=_link_desc(cfg),
                        id=f"psi-{label}-{peer}",
                    )
                    _ENGINE_DEVICES.append(pair_spu[peer])
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
        n_inter = None
        if cfg.stages == ["psi"]:  # the rows go nowhere else: sort them as bytes (intersection.py)
            with Path(current[me]).open("rb") as f:
                header = f.readline().decode("utf-8", "replace").strip().split(",")
            keep = [cfg.join_key, *feature_columns(cfg, header, part)]
            if me == label and cfg.label_column and cfg.label_column in header:
                keep.append(str(cfg.label_column))
            n_inter = sorted_intersection(Path(current[me]), psi_final, cfg.join_key, keep)
        if n_inter is None:
            mine = pd.read_csv(current[me], dtype={cfg.join_key: str})
            mine = mine.sort_values(cfg.join_key, kind="stable").reset_index(drop=True)
            my_feats = feature_columns(cfg, list(mine.columns), part)
            keep = [cfg.join_key, *my_feats]
            has_label = me == label and bool(cfg.label_column) and cfg.label_column in mine.columns
            if has_label:
                keep.append(str(cfg.label_column))
            mine[keep].to_csv(psi_final, index=False)
            n_inter = len(mine)
        for f in stage.glob("psi-round*.csv"):
            f.unlink()
        files.append(psi_final)
        times.psi = time.perf_counter() - t0
        emit("stage", stage="psi", status="done", seconds=round(times.psi, 3), intersection_rows=n_inter)
        # the pair SPUs stay up until the process ends (_ENGINE_DEVICES): no link is torn down mid-job

        if cfg.stages != ["psi"]:
            model_dir, metrics = _learn(cfg, sf, spu, pyu, mine, my_feats, has_label, part, stage, emit, times)
            files += [f for f in (stage / PREDICTIONS, stage / METRICS) if me == label and f.exists()]
        failed = False
    finally:
        _leave(after_error=failed, emit=emit)

    times.total = time.perf_counter() - t_start
    return PartyResult(
        party=me,
        input_rows=input_rows,
        intersection_rows=n_inter,
        output_files=files,
        stages=times,
        metrics=metrics,
        model_dir=model_dir,
    )


def _learn(
    cfg: PartyConfig,
    sf: Any,
    spu: Any,
    pyu: dict[str, Any],
    mine: pd.DataFrame,
    my_feats: list[str],
    has_label: bool,
    part: ModelPart | None,
    stage: Path,
    emit: Emit,
    times: StageTimes,
) -> tuple[Path | None, LabelMetrics | None]:
    """Train (and store this party's model part) or load a stored part; then predict if asked."""
    from secretflow.data import FedNdarray, PartitionWay

    from protocols.secretflow.learners import LEARNERS, Session, standardize_stats
    from protocols.secretflow.woe import (
        WOE_IV,
        WOE_RULES,
        WoeRulesError,
        fit_woe,
        load_rules,
        predict_logit,
        substitute,
        write_points_tables,
    )

    me, names, label = cfg.me.name, cfg.cluster.names, cfg.label_party
    algorithm = part.algorithm if part is not None else cfg.model.algorithm
    learner = LEARNERS[algorithm]
    s = Session(sf=sf, spu=spu, pyu=pyu, me=me, names=names, label=label, params=cfg.model)
    keys = mine[cfg.join_key].to_numpy()
    x = mine[my_feats].to_numpy(dtype=np.float64)
    y = mine[cfg.label_column].to_numpy() if has_label else None
    test = None
    if cfg.model.test_fraction is not None:
        test = holdout_mask(keys, cfg.model.test_fraction, cfg.model.split_salt)
    train_rows = ~test if test is not None else np.ones(len(keys), dtype=bool)

    t_train = time.perf_counter()
    if "train" in cfg.stages:
        emit("stage", stage="train", status="start", algorithm=algorithm)
        # one bit, revealed to all: can the train rows teach anything (both classes present)?
        one_class = sf.reveal(
            pyu[label](_const_fn(not two_classes(y[train_rows])) if me == label else _none)()
        )
        if one_class:
            raise SingleClassError(
                f"the {int(train_rows.sum())} training rows' labels {cfg.label_column!r} are all one class"
                if me == label
                else "the training rows' labels are all one class (reported by the label holder)"
            )

    mean = std = None
    rules: dict[str, Any] | None = None
    woe_iv: dict[str, Any] | None = None
    scorecard = part.scorecard if part is not None else cfg.model.scorecard
    if algorithm == "ss_lr" and scorecard is not None:
        # SS-LR on WOE: bin rules fitted on the train rows now, or the stored ones
        if part is not None:
            assert part.woe_rules is not None and cfg.me.model_dir is not None
            try:
                rules = load_rules(cfg.me.model_dir / part.woe_rules, my_feats)
            except WoeRulesError as exc:
                raise ModelInvalidError(str(exc)) from exc
        else:
            t0 = time.perf_counter()
            emit("stage", stage="woe", status="start", bins=cfg.model.woe_bins, method=cfg.model.woe_method)
            rules, woe_iv = fit_woe(s, x[train_rows], y[train_rows] if y is not None else None, my_feats, stage)
            times.woe = time.perf_counter() - t0
            emit("stage", stage="woe", status="done", seconds=round(times.woe, 3))
        x = substitute(rules, x, my_feats)
    elif algorithm == "ss_lr":
        if part is not None:
            mean, std = np.asarray(part.mean), np.asarray(part.std)
        elif cfg.model.standardize:
            mean, std = standardize_stats(x[train_rows])
        if mean is not None and std is not None:
            x = (x - mean) / std
    rows = _Rows(keys=keys, x=x.astype(np.float32), y=y, test=test)

    def fed(arrays: dict[str, Any]) -> Any:
        return FedNdarray(
            partitions={pyu[n]: s.own(n, arrays.get(n)) for n in arrays}, partition_way=PartitionWay.VERTICAL
        )

    feats_of = dict.fromkeys(names)  # only this party's own entry is ever filled in
    feats_of[me] = rows.x

    model_dir: Path | None = None
    if "train" in cfg.stages:
        t0 = t_train
        x_train = fed({n: (v[train_rows] if v is not None else None) for n, v in feats_of.items()})
        y_train = fed({label: (y[train_rows].astype(np.float32).reshape(-1, 1) if me == label else None)})
        n_train = int(train_rows.sum())
        model = learner["train"](s, x_train, y_train, n_train)
        emit("stage", stage="train", status="done", seconds=round(time.perf_counter() - t0, 3))
        # store this party's part privately
        model_dir = stage / MODEL_DIR
        model_dir.mkdir()
        fields = learner["save"](s, model, model_dir)
        if rules is not None:
            (model_dir / WOE_RULES).write_text(json.dumps(rules, indent=1))
            if woe_iv is not None:
                (model_dir / WOE_IV).write_text(json.dumps(woe_iv, indent=1))
            if cfg.model.points_tables:
                assert scorecard is not None
                write_points_tables(s, model, rules, scorecard, len(my_feats), model_dir)
            fields |= {"woe_rules": WOE_RULES, "scorecard": scorecard}
        stored = sorted(p.name for p in model_dir.rglob("*") if p.is_file())
        mpart = ModelPart(
            model_id=cfg.job_id,
            algorithm=algorithm,
            party=me,
            parties=names,
            label_party=label,
            features=my_feats,
            spu_protocol=cfg.spu_protocol,
            mean=None if mean is None else [float(v) for v in mean],
            std=None if std is None else [float(v) for v in std],
            files_sha256={
                str(p.relative_to(model_dir)): file_sha256(p) for p in sorted(model_dir.rglob("*")) if p.is_file()
            },
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields,
        )
        (model_dir / MODEL_PART_FILE).write_text(mpart.model_dump_json(indent=2))
        for p in model_dir.rglob("*"):  # a model part is private to its party
            p.chmod(0o700 if p.is_dir() else 0o600)
        model_dir.chmod(0o700)
        assert stored  # every learner stores something for every party
        times.train = time.perf_counter() - t0
        emit("stage", stage="model", status="done", files=len(stored) + 1)
    else:
        assert part is not None and cfg.me.model_dir is not None
        emit("stage", stage="load", status="start", algorithm=algorithm)
        t0 = time.perf_counter()
        # every party's fingerprint, revealed to all: mismatched parts fail by name, not in the SPU
        prints = sf.reveal(
            [pyu[n](_const_fn(part.fingerprint()) if n == me else _none)() for n in names]
        )
        if len(set(prints)) != 1:
            detail = ", ".join(f"{n}: {p.split('|')[0]}" for n, p in zip(names, prints, strict=True))
            raise ModelInvalidError(f"the parties hold parts of different models ({detail})")
        model = learner["load"](s, json.loads(part.model_dump_json()), cfg.me.model_dir)
        times.load = time.perf_counter() - t0
        emit("stage", stage="load", status="done", seconds=round(times.load, 3))

    metrics = None
    if "predict" in cfg.stages:
        emit("stage", stage="predict", status="start")
        t0 = time.perf_counter()
        x_all = fed(feats_of)
        # a WOE scorecard with the exact logistic link reveals the log-odds (PD and points follow
        # exactly); with an approximate link, the model's own PD, and the points from it
        exact = scorecard is not None and (part.sig_type if part is not None else cfg.model.sig_type) == "real"
        if exact:
            pred = predict_logit(s, model, x_all, len(keys))
        else:
            pred = learner["predict"](s, model, x_all, len(keys))
        writer = (
            (
                lambda p: _write_label_outputs(
                    p, rows, cfg.join_key, cfg.label_column, stage, algorithm, scorecard, logit=exact
                )
            )
            if me == label
            else _none1
        )
        done = pyu[label](writer)(pred.partitions[pyu[label]])
        sf.wait(done)
        if me == label and (stage / METRICS).exists():
            metrics = LabelMetrics.model_validate_json((stage / METRICS).read_text())
        times.predict = time.perf_counter() - t0
        emit("stage", stage="predict", status="done", seconds=round(times.predict, 3))
    return model_dir, metrics


def _const_fn(value: Any) -> Callable[[], Any]:
    return lambda: value


#: The job's SPU devices, kept for the life of the process. A device that is dropped destroys its
#: links, and a link's destructor flushes its queued sends with the GIL held: to a peer that has left,
#: that is minutes of retries in which no thread of the party runs. The process ends with os._exit.
_ENGINE_DEVICES: list[Any] = []


def _none() -> None:
    return None


def _none1(_: Any) -> None:
    return None


def dump_stacks_on_signal() -> None:
    """SIGUSR1 writes every thread's Python stack to stderr (the task's log), and the party goes on.

    A node sends it before it kills a party that outran its time or was stopped, so the log says
    where the engine waited. Registered once, when the module runs as a process."""
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)


def main(argv: list[str] | None = None, events: Any = None) -> int:
    """Entry point; returns the process exit code (see :class:`PartyExit`). Events go to ``events``
    (default stdout)."""
    ap = argparse.ArgumentParser(
        prog="python -m protocols.secretflow.party", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--config", required=True, type=Path, help="party config JSON (PartyConfig)")
    ap.add_argument("--party", required=True, help="this party's name; must match the config")
    args = ap.parse_args(argv)
    emit = make_emitter(args.party, events)

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
        part = load_model_part(cfg)
        rows = validate_input(cfg, part)
    except InputMissingError as exc:
        return fail(PartyExit.INPUT_MISSING, str(exc))
    except InputInvalidError as exc:
        return fail(PartyExit.INPUT_INVALID, str(exc))
    except ModelInvalidError as exc:
        return fail(PartyExit.MODEL_INVALID, str(exc))
    emit("stage", stage="validate", status="done", rows=rows)
    try:
        result = run_party(cfg, rows, emit, part)
    except EmptyIntersectionError as exc:
        return fail(PartyExit.EMPTY_INTERSECTION, str(exc))
    except SingleClassError as exc:
        return fail(PartyExit.SINGLE_CLASS, str(exc))
    except ModelInvalidError as exc:
        return fail(PartyExit.MODEL_INVALID, str(exc))
    except Exception as exc:  # any engine failure: report it with its traceback
        traceback.print_exc(file=sys.stderr)
        return fail(PartyExit.RUNTIME, f"{type(exc).__name__}: {exc}")
    finally:
        remove_psi_traces(str(args.config))  # libpsi's /tmp/psi_*.trace files that name our config
    emit("result", result=json.loads(result.model_dump_json()))
    return 0


class WarmHandoff(BaseModel):
    """The one line a warm party reads on stdin: the task it runs, and where it runs it."""

    model_config = ConfigDict(extra="forbid")

    config: Path
    party: str
    cwd: Path
    env: dict[str, str] = {}
    stderr: Path | None = None
    """Where the party's stderr goes from now on (the task's log); default: where it went so far."""


def preload() -> float:
    """Import everything a party needs before it knows its task (the slow part of a cold start); seconds."""
    t0 = time.perf_counter()
    import jax
    import secretflow  # noqa: F401 - imported for its start-up cost
    from secretflow.data import FedNdarray  # noqa: F401
    from secretflow.device import PYUObject  # noqa: F401

    import protocols.secretflow.learners  # noqa: F401
    import protocols.secretflow.woe  # noqa: F401

    jax.devices()  # the CPU backend's own start-up
    return time.perf_counter() - t0


def warm_main(argv: list[str] | None = None, stdin: Any = None, events: Any = None) -> int:
    """A pre-started party: ``python -m protocols.secretflow.party --warm [--node-dir DIR]``.

    ``--node-dir`` only names, in the process list, the node that keeps this party.

    Imports the engine, prints ``{"event": "warm", ...}`` on stdout, then waits for ONE
    :class:`WarmHandoff` JSON line on stdin; applies its cwd, environment and stderr, and runs
    exactly what :func:`main` runs with ``--config``/``--party``. EOF (the node stops) -> 0, quietly.
    An unusable handoff line -> an ``error`` event and exit 2 (config).
    """
    ap = argparse.ArgumentParser(prog="python -m protocols.secretflow.party --warm")
    ap.add_argument("--warm", action="store_true", required=True, help="wait for the task on stdin")
    ap.add_argument("--node-dir", type=Path, default=None, help="the node that keeps this party (informational)")
    ap.parse_args(argv)
    source = stdin or sys.stdin
    seconds = preload()
    out = events or sys.stdout
    out.write(json.dumps({"event": "warm", "pid": os.getpid(), "t": round(time.time(), 3),
                          "seconds": round(seconds, 3)}) + "\n")
    out.flush()
    line = source.readline()
    if not line.strip():
        return 0
    try:
        handoff = WarmHandoff.model_validate_json(line)
    except ValidationError as exc:
        msg = f"invalid warm handoff: {exc.errors()[0]['msg']}"
        print(f"[warm] error: {msg}", file=sys.stderr, flush=True)
        make_emitter("?", events)("error", code=int(PartyExit.CONFIG), kind=PartyExit.CONFIG.name, message=msg)
        return int(PartyExit.CONFIG)
    if handoff.stderr is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(handoff.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        if events is not None:  # fd 1 is the engine's log (private_event_stream): it follows stderr
            os.dup2(fd, 1)
        os.close(fd)
    os.environ.update(handoff.env)
    os.chdir(handoff.cwd)
    import tempfile

    tempfile.tempdir = None  # TMPDIR is read again on the next use
    return main(["--config", str(handoff.config), "--party", handoff.party], events)


if __name__ == "__main__":
    die_with_parent()  # a runner that names itself in DCP_PARTY_PARENT_PID takes this party with it
    dump_stacks_on_signal()
    events = private_event_stream()
    code = warm_main(events=events) if sys.argv[1:2] == ["--warm"] else main(events=events)
    # an engine thread (a PSI that lost its peer, a link's sender) may never end, and the interpreter
    # would wait for it at exit; the result or the error is reported and every output is in place
    events.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
