"""What a party checks before the engine starts: its own input CSV and the stored model part a
prediction needs. Each problem is a named error (the party exits 3, 4 or 7: :class:`PartyExit`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from protocols.secretflow.spec import MODEL_PART_FILE, ModelPart, PartyConfig


class InputMissingError(Exception):
    """The party's input CSV does not exist or cannot be read."""


class InputInvalidError(Exception):
    """The party's input CSV cannot be used for this job."""


class ModelInvalidError(Exception):
    """The stored model part is missing, corrupt, or does not fit this job or the other parties' parts."""


def is_predict_only(cfg: PartyConfig) -> bool:
    """The job predicts with a stored model instead of training one."""
    return "predict" in cfg.stages and "train" not in cfg.stages


def feature_columns(cfg: PartyConfig, columns: list[str], part: ModelPart | None = None) -> list[str]:
    """This party's feature columns: as configured, else the stored model's, else all but key and label."""
    if cfg.me.features is not None:
        return list(cfg.me.features)
    if part is not None:
        return list(part.features)
    skip = {cfg.join_key} | ({cfg.label_column} if cfg.me.name == cfg.label_party and cfg.label_column else set())
    return [c for c in columns if c not in skip]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model_part(cfg: PartyConfig) -> ModelPart | None:
    """This party's stored model part, checked against the job (None unless the job predicts with one)."""
    if not is_predict_only(cfg):
        return None
    assert cfg.me.model_dir is not None  # enforced by the config
    src = cfg.me.model_dir
    path = src / MODEL_PART_FILE
    if not path.is_file():
        raise ModelInvalidError(f"no stored model part at {path}")
    try:
        part = ModelPart.model_validate_json(path.read_text())
    except (OSError, ValidationError, UnicodeDecodeError) as exc:
        raise ModelInvalidError(f"{path} is not a model part: {exc}") from exc
    if part.party != cfg.me.name:
        raise ModelInvalidError(f"{path} is the model part of {part.party!r}, not of {cfg.me.name!r}")
    if part.parties != cfg.cluster.names:
        raise ModelInvalidError(f"the model was trained by {part.parties}, this job has {cfg.cluster.names}")
    if part.spu_protocol != cfg.spu_protocol:
        raise ModelInvalidError(f"the model's shares are {part.spu_protocol}, the job asks for {cfg.spu_protocol}")
    for name, digest in part.files_sha256.items():
        f = src / name
        if not f.is_file() or file_sha256(f) != digest:
            raise ModelInvalidError(f"model file {f} is missing or was modified")
    if cfg.me.features is not None and list(cfg.me.features) != part.features:
        raise ModelInvalidError(f"the model uses features {part.features}, the job gives {list(cfg.me.features)}")
    return part


def validate_input(cfg: PartyConfig, part: ModelPart | None = None) -> int:
    """Check this party's own CSV; return its row count or raise a named input error."""
    path = cfg.me.input_csv
    if not path.is_file():
        raise InputMissingError(f"input file not found: {path}")
    if cfg.me.checked_rows is not None:  # the node checked the cells as it wrote them
        return _check_header(cfg, path, part, cfg.me.checked_rows)
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
    feats = _check_columns(cfg, path, cols, part)
    for c in feats:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise InputInvalidError(f"{path}: feature column {c!r} is not numeric")
        if frame[c].isna().any():
            raise InputInvalidError(f"{path}: feature column {c!r} has missing values")
    if cfg.me.name == cfg.label_party and cfg.label_column:
        labels = set(frame[cfg.label_column].dropna().unique().tolist())
        if cfg.stages != ["psi"] and (frame[cfg.label_column].isna().any() or not labels <= {0, 1}):
            raise InputInvalidError(
                f"{path}: label column {cfg.label_column!r} must be 0/1, got {sorted(labels)[:5]}"
            )
    if len(frame) == 0:
        raise InputInvalidError(f"{path}: no rows")
    return len(frame)


def _check_header(cfg: PartyConfig, path: Path, part: ModelPart | None, rows: int) -> int:
    """The column checks of :func:`validate_input` on the header alone (a node-checked input: the
    cells were checked as the node wrote them, :class:`nodes.services.datasets.ExtractCheck`)."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as fh:
            cols = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputMissingError(f"cannot read input file {path}: {exc}") from exc
    if cfg.join_key not in cols:
        raise InputInvalidError(f"{path}: join key column {cfg.join_key!r} is missing (columns: {cols})")
    _check_columns(cfg, path, cols, part)
    return rows


def _check_columns(cfg: PartyConfig, path: Path, cols: list[str], part: ModelPart | None) -> list[str]:
    """The checks of a party's input that need only its columns' names: the features there, the join key
    and the label none of them, the label there for its party; return the features."""
    feats = feature_columns(cfg, cols, part)
    missing = [c for c in feats if c not in cols]
    if missing:
        raise InputInvalidError(f"{path}: feature columns missing: {missing}")
    if not feats and cfg.stages != ["psi"]:
        raise InputInvalidError(f"{path}: no feature columns")
    if cfg.join_key in feats:
        raise InputInvalidError(f"{path}: the join key cannot be a feature")
    if cfg.me.name == cfg.label_party and cfg.label_column:
        if cfg.label_column not in cols:
            raise InputInvalidError(f"{path}: label column {cfg.label_column!r} is missing")
        if cfg.label_column in feats:
            raise InputInvalidError(f"{path}: the label cannot be a feature")
    return feats
