"""Plaintext comparison models: bank-only LR and centralized LR on the joined data.

The centralized model pools every member's columns in one place — what no real
federation may do — and is the accuracy limit a federated model should approach.
Both share the preprocessing a federated model uses, exposed here so a party can apply
exactly the same steps to its own columns:

* :func:`feature_specs` turns a member's published schema into feature specs;
* :func:`fit_preprocessor` learns, per feature and from training rows only, the
  transform (``log1p`` for heavy tails, ordinal codes, one-hot levels), the median for
  imputation, whether a missing-value indicator is needed, and mean/std for
  standardisation;
* :func:`transform` applies a fitted :class:`Preprocessor` to any rows (the same
  member's monitoring snapshot, its test rows …).

In a vertical federation each party fits its own preprocessor on its own columns of the
shared training rows; the centralized model concatenates those same per-member matrices,
so the two paths see identical inputs. The train/test split is a pure function of the
key (:func:`holdout_mask`), so every party derives it locally without exchanging indices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from scenarios.bank_credit.errors import PreprocessingError
from scenarios.bank_credit.generator import FederationData
from scenarios.bank_credit.metrics import auc, ks, woe_binning
from scenarios.bank_credit.report import ModelScores, Role
from scenarios.bank_credit.schema import BANKS, DEPARTMENTS, KEY, LABEL, TableSchema

CLIP_Z = 5.0  # standardised values are clipped to ±CLIP_Z (protects LR from outliers)


class FeatureSpec(BaseModel):
    """How one published column becomes model inputs."""

    name: str
    kind: Literal["numeric", "ordinal", "onehot"]
    transform: Literal["none", "log1p"] = "none"
    levels: list[str] | None = None


class FittedFeature(BaseModel):
    """Preprocessing parameters of one column, learnt from training rows."""

    name: str
    kind: Literal["numeric", "ordinal", "onehot"]
    transform: Literal["none", "log1p"] = "none"
    levels: list[str] | None = None
    median: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    missing_indicator: bool = False
    outputs: list[str]


class Preprocessor(BaseModel):
    """A fitted preprocessor for one member's columns (JSON-serialisable, so parties can publish it)."""

    member: str
    features: list[FittedFeature]

    @property
    def output_names(self) -> list[str]:
        """Names of the produced matrix columns, ``<member>.<column>[...]``."""
        return [o for f in self.features for o in f.outputs]


def feature_specs(schema: TableSchema, columns: Sequence[str] | None = None) -> list[FeatureSpec]:
    """Feature specs for ``columns`` of a member (default: every column whose role is ``feature``)."""
    names = list(columns) if columns is not None else schema.feature_columns
    specs = []
    for name in names:
        try:
            meta = schema.column(name)
        except KeyError as exc:
            raise PreprocessingError(f"{schema.member} publishes no column {name!r}") from exc
        if meta.role != "feature":
            raise PreprocessingError(f"{schema.member}.{name} has role {meta.role!r}, not a model feature")
        if meta.transform in ("ordinal", "onehot"):
            specs.append(FeatureSpec(name=name, kind=meta.transform, levels=meta.levels))
        elif meta.dtype == "string":
            raise PreprocessingError(f"{schema.member}.{name} is text without ordinal or one-hot levels")
        else:
            specs.append(FeatureSpec(name=name, kind="numeric", transform="log1p" if meta.transform == "log1p"
                                     else "none"))
    return specs


def _numeric(spec: FeatureSpec | FittedFeature, series: pd.Series, member: str) -> np.ndarray:
    if spec.kind == "ordinal":
        levels = spec.levels or []
        codes = series.map({lv: float(i) for i, lv in enumerate(levels)})
        unknown = series.notna() & codes.isna()
        if unknown.any():
            bad = sorted(set(series[unknown].astype(str)))[:5]
            raise PreprocessingError(f"{member}.{spec.name}: unknown levels {bad}; expected {levels}")
        return codes.to_numpy(dtype=np.float64)
    try:
        x = pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise PreprocessingError(f"{member}.{spec.name} is not numeric: {exc}") from exc
    if spec.transform == "log1p":
        x = np.log1p(np.clip(x, 0.0, None))
    return x


def fit_preprocessor(member: str, frame: pd.DataFrame, specs: Sequence[FeatureSpec]) -> Preprocessor:
    """Learn preprocessing for ``specs`` from the training rows in ``frame`` (one member's columns)."""
    if len(frame) == 0:
        raise PreprocessingError(f"{member}: no training rows to fit the preprocessing on")
    fitted = []
    for spec in specs:
        if spec.name not in frame.columns:
            raise PreprocessingError(f"{member}: column {spec.name!r} is not in the frame")
        series = frame[spec.name]
        missing = series.isna().to_numpy()
        indicator = bool(missing.any())
        if spec.kind == "onehot":
            levels = spec.levels or sorted(series.dropna().astype(str).unique())
            unknown = set(series.dropna().astype(str)) - set(levels)
            if unknown:
                raise PreprocessingError(f"{member}.{spec.name}: unknown levels {sorted(unknown)[:5]}")
            outputs = [f"{member}.{spec.name}={lv}" for lv in levels[1:]]
            fitted.append(FittedFeature(name=spec.name, kind="onehot", levels=list(levels),
                                        missing_indicator=indicator,
                                        outputs=outputs + ([f"{member}.{spec.name}__missing"] if indicator else [])))
            continue
        x = _numeric(spec, series, member)
        observed = x[~np.isnan(x)]
        median = float(np.median(observed)) if len(observed) else 0.0
        filled = np.where(np.isnan(x), median, x)
        std = float(filled.std())
        outputs = [f"{member}.{spec.name}"] + ([f"{member}.{spec.name}__missing"] if indicator else [])
        fitted.append(FittedFeature(name=spec.name, kind=spec.kind, transform=spec.transform, levels=spec.levels,
                                    median=median, mean=float(filled.mean()), std=std if std > 1e-12 else 1.0,
                                    missing_indicator=indicator, outputs=outputs))
    return Preprocessor(member=member, features=fitted)


def transform(pre: Preprocessor, frame: pd.DataFrame) -> np.ndarray:
    """Apply a fitted preprocessor: a float64 matrix with columns ``pre.output_names``."""
    blocks: list[np.ndarray] = []
    for f in pre.features:
        if f.name not in frame.columns:
            raise PreprocessingError(f"{pre.member}: column {f.name!r} is not in the frame")
        series = frame[f.name]
        missing = series.isna().to_numpy()
        if f.kind == "onehot":
            levels = f.levels or []
            values = series.astype(object).to_numpy()
            unknown = ~missing & ~np.isin(values, levels)
            if unknown.any():
                raise PreprocessingError(f"{pre.member}.{f.name}: unknown levels "
                                         f"{sorted(set(values[unknown].astype(str)))[:5]}; expected {levels}")
            blocks.extend((values == lv).astype(np.float64) for lv in levels[1:])
        else:
            x = _numeric(f, series, pre.member)
            z = (np.where(np.isnan(x), f.median, x) - f.mean) / f.std
            blocks.append(np.clip(z, -CLIP_Z, CLIP_Z))
        if f.missing_indicator:
            blocks.append(missing.astype(np.float64))
    if not blocks:
        return np.zeros((len(frame), 0))
    return np.column_stack(blocks)


def holdout_mask(keys: Sequence[str] | pd.Series | np.ndarray, test_fraction: float = 0.3, salt: str = "split"
              ) -> np.ndarray:
    """True for the rows that belong to the test set — a pure function of the key and ``salt``."""
    if not 0.0 < test_fraction < 1.0:
        raise PreprocessingError(f"test_fraction must be in (0, 1), got {test_fraction}")
    cut = int(test_fraction * 2**32)
    prefix = salt.encode() + b"\x00"
    return np.fromiter((int.from_bytes(hashlib.sha256(prefix + str(k).encode()).digest()[:4], "big") < cut
                        for k in keys), dtype=bool, count=len(keys))


def joined_frame(data: FederationData, bank: str = "bank_a", members: Sequence[str] = DEPARTMENTS,
                 how: Literal["inner", "left"] = "inner", snapshot: Literal["training", "monitoring"] = "training"
                 ) -> dict[str, pd.DataFrame]:
    """The bank's customers joined with ``members`` on ``uscc``, as one aligned frame per member.

    ``how="inner"`` keeps the customers every member knows (what PSI yields);
    ``how="left"`` keeps every customer, with the unknown members' columns empty.
    Rows are sorted by key so every frame is aligned.
    """
    if bank not in BANKS:
        raise PreprocessingError(f"unknown bank {bank!r}; expected one of {BANKS}")
    unknown = [m for m in members if m not in DEPARTMENTS + BANKS or m == bank]
    if unknown:
        raise PreprocessingError(f"cannot join members {unknown} to {bank}")
    keys = data.table(bank, snapshot)[KEY]
    if how == "inner":
        for m in members:
            keys = keys[keys.isin(data.table(m, snapshot)[KEY])]
    keys = pd.Index(np.sort(keys.to_numpy()), name=KEY)
    out = {}
    for m in (bank, *members):
        out[m] = data.table(m, snapshot).set_index(KEY).reindex(keys).reset_index()
    return out


def information_values(frames: dict[str, pd.DataFrame], schemas: dict[str, TableSchema], members: Sequence[str],
                       y: np.ndarray, rows: np.ndarray | None = None, n_bins: int = 5) -> list[FeatureIv]:
    """Information value of every feature of ``members`` against ``y`` (strongest first).

    Numeric and ordinal columns are cut into ``n_bins`` quantile bins (after the same
    ``log1p``/ordinal coding the preprocessing uses); one-hot columns get a bin per level;
    missing values get a bin of their own. ``rows`` (e.g. the training rows) restricts the rows used.
    """
    sel = np.ones(len(y), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    out = []
    for m in members:
        frame = frames[m][sel]
        for spec in feature_specs(schemas[m]):
            series = frame[spec.name]
            if spec.kind == "onehot":
                levels = spec.levels or []
                x = series.map({lv: float(i) for i, lv in enumerate(levels)}).to_numpy(dtype=np.float64)
                binning = woe_binning(x, y[sel], edges=np.arange(len(levels) - 1) + 0.5)
            else:
                binning = woe_binning(_numeric(spec, series, m), y[sel], n_bins=n_bins)
            out.append(FeatureIv(member=m, column=spec.name, iv=binning.iv, strength=binning.strength,
                                 missing_rate=float(series.isna().mean()), bins=len(binning.bins)))
    return sorted(out, key=lambda f: -f.iv)


class FeatureIv(BaseModel):
    """Information value of one feature."""

    member: str
    column: str
    iv: float
    strength: str
    missing_rate: float
    bins: int


class ModelRun(BaseModel):
    """A fitted plaintext model and its scores (PD: higher is riskier)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    bank: str
    members: list[str]
    feature_names: list[str]
    preprocessors: list[Preprocessor]
    coef: list[float]
    intercept: float
    n_train: int
    n_test: int
    auc_test: float
    ks_test: float
    y_train: np.ndarray = Field(repr=False)
    y_test: np.ndarray = Field(repr=False)
    score_train: np.ndarray = Field(repr=False)
    score_test: np.ndarray = Field(repr=False)
    score_monitoring: np.ndarray | None = Field(default=None, repr=False)

    def predict(self, frames: dict[str, pd.DataFrame]) -> np.ndarray:
        """PD for rows given as aligned per-member frames (the layout of :func:`joined_frame`)."""
        x = np.column_stack([transform(p, frames[p.member]) for p in self.preprocessors])
        return 1.0 / (1.0 + np.exp(-(x @ np.asarray(self.coef) + self.intercept)))

    def scores(self, role: Role) -> ModelScores:
        """This run's scores in the form the report takes."""
        return ModelScores(name=self.name, role=role, y_test=self.y_test, score_test=self.score_test,
                           score_train=self.score_train, score_monitoring=self.score_monitoring)


def design_matrix(frames: dict[str, pd.DataFrame], members: Sequence[str], schemas: dict[str, TableSchema],
                  train: np.ndarray) -> tuple[np.ndarray, list[Preprocessor]]:
    """Per-member preprocessing fitted on the ``train`` rows, concatenated in ``members`` order."""
    pres = [fit_preprocessor(m, frames[m][train], feature_specs(schemas[m])) for m in members]
    return np.column_stack([transform(p, frames[p.member]) for p in pres]), pres


def fit_lr(name: str, data: FederationData, bank: str = "bank_a", members: Sequence[str] = (),
           rows_from: Sequence[str] = DEPARTMENTS, how: Literal["inner", "left"] = "inner",
           test_fraction: float = 0.3, c: float = 1.0, monitoring: bool = True) -> ModelRun:
    """Plaintext logistic regression on ``bank``'s features plus ``members``' features.

    Rows are the bank's customers joined with ``rows_from`` (``how``), so models that
    use fewer members are still trained and tested on exactly the same rows.
    """
    from sklearn.linear_model import LogisticRegression

    frames = joined_frame(data, bank, rows_from, how)
    y = frames[bank][LABEL].to_numpy(dtype=np.int64)
    test = holdout_mask(frames[bank][KEY], test_fraction)
    train = ~test
    use = [bank, *members]
    x, pres = design_matrix(frames, use, data.schemas, train)
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x[train], y[train])
    score = model.predict_proba(x)[:, 1]
    run = ModelRun(name=name, bank=bank, members=list(members), feature_names=[o for p in pres for o in p.output_names],
                   preprocessors=pres, coef=model.coef_[0].tolist(), intercept=float(model.intercept_[0]),
                   n_train=int(train.sum()), n_test=int(test.sum()), auc_test=auc(y[test], score[test]),
                   ks_test=ks(y[test], score[test]).ks, y_train=y[train], y_test=y[test],
                   score_train=score[train], score_test=score[test])
    if monitoring:
        mframes = joined_frame(data, bank, rows_from, how, snapshot="monitoring")
        run.score_monitoring = run.predict(mframes)
    return run


class BaselineResults(BaseModel):
    """Bank-only and centralized models trained and tested on the same rows."""

    bank_only: ModelRun
    centralized: ModelRun

    @property
    def uplift(self) -> float:
        """Test AUC of the centralized model minus that of the bank-only model."""
        return self.centralized.auc_test - self.bank_only.auc_test


def run_baselines(data: FederationData, bank: str = "bank_a", members: Sequence[str] = DEPARTMENTS,
                  how: Literal["inner", "left"] = "inner", test_fraction: float = 0.3) -> BaselineResults:
    """Both comparison models for ``bank`` joined with ``members``."""
    return BaselineResults(
        bank_only=fit_lr("bank-only LR", data, bank, (), members, how, test_fraction),
        centralized=fit_lr("centralized LR", data, bank, members, members, how, test_fraction),
    )
