"""The bank-credit scenario through the real federation: member data → nodes → jobs → report.

What a member does before ingest (its own data, on its own side)
-----------------------------------------------------------------
The SecretFlow party trains on the raw numeric columns it is given (it only z-scores them);
the scenario's plaintext baselines log-transform, code ordinals, one-hot encode, impute and
clip. So that the federated model and the plaintext comparators see the same inputs, every
member runs the scenario's documented preprocessing on **its own columns** before it ingests
them into its node (:func:`prepare_members`):

* the rows it fits on are its own training rows — ``~holdout_mask(own keys)``: the split is
  a pure function of the key, so no indices are exchanged; the member cannot know the PSI
  intersection before the job, so it fits on all of its own training-split rows (the
  baselines in :mod:`~scenarios.bank_credit.baselines` fit on the intersection instead —
  a small difference in medians and means, nothing else);
* ``fit_preprocessor`` / ``transform`` (log1p, ordinal codes, one-hot, median imputation
  plus missing indicators, standardisation, clip ±5) produce a float matrix whose columns
  are published with the source column's grade and category.

The plaintext comparators (:func:`plaintext_comparators`) are fitted on exactly these
published matrices, joined on the key (= the PSI intersection), with the same split — so
federated, centralized and bank-only compare like with like.

Train/test split
----------------
If the engine offers a key-hash split (``ModelParams.test_fraction``, see
``/work/notes/requests_from_bankcredit.md``) the job trains on the training rows and the
report evaluates on the held-out rows. Until then the engine trains on every intersection
row: the report then says ``evaluation="in-sample"`` and the comparators are fitted on every
row too, so the comparison stays like with like (all three are scored in-sample on the
holdout rows).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from scenarios.bank_credit.baselines import (
    Preprocessor,
    feature_specs,
    fit_preprocessor,
    holdout_mask,
    transform,
)
from scenarios.bank_credit.errors import BankCreditError
from scenarios.bank_credit.generator import FederationData
from scenarios.bank_credit.metrics import auc, ks
from scenarios.bank_credit.report import ModelScores
from scenarios.bank_credit.schema import BANKS, DEPARTMENTS, KEY, LABEL, TableSchema

TEST_FRACTION = 0.3
DEFAULT_DEPARTMENTS: tuple[str, ...] = ("tax", "social", "power", "court")
Evaluation = Literal["holdout", "in-sample"]


class ScenarioRunError(BankCreditError):
    """The scenario could not run through the federation (a job failed, an output is unusable …)."""


class ResultMismatchError(ScenarioRunError):
    """The federation's outputs do not match the rows the scenario expects (keys, labels, row counts)."""


def dataset_name(member: str, snapshot: str = "training") -> str:
    """The name a member gives its prepared dataset on its node."""
    return f"{member}_2024" if snapshot == "training" else f"{member}_2025_monitoring"


def _column_name(output_name: str) -> str:
    """``tax.vat_paid_12m`` → ``tax_vat_paid_12m``; ``market.industry_code=C`` → ``market_industry_code_eq_c``."""
    name = output_name.replace("=", "_eq_").replace(".", "_").lower()
    return re.sub(r"[^a-z0-9_]", "_", name)


class PreparedMember(BaseModel):
    """One member's preprocessed dataset, ready to ingest into its node."""

    member: str
    dataset: str
    csv_path: Path
    features: list[str]
    """Published feature columns (the key, and at a bank the label, come on top)."""
    has_label: bool
    rows: int
    columns: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Column hints for the node's ingest: dtype, grade, category, description."""
    preprocessor: Preprocessor
    description: str


class PreparedFederation(BaseModel):
    """Every member's prepared dataset."""

    bank: str
    departments: list[str]
    test_fraction: float
    members: dict[str, PreparedMember]

    @property
    def parties(self) -> list[str]:
        """Bank first, then the departments."""
        return [self.bank, *self.departments]


def prepare_member(data: FederationData, member: str, out_dir: Path, test_fraction: float = TEST_FRACTION,
                   snapshot: Literal["training", "monitoring"] = "training",
                   preprocessor: Preprocessor | None = None) -> PreparedMember:
    """Preprocess ``member``'s own columns (fitted on its own training-split rows) into a CSV for its node.

    For the monitoring snapshot pass the training ``preprocessor`` so the same transform is applied.
    """
    schemas = data.schemas if snapshot == "training" else data.monitoring_schemas
    schema: TableSchema = schemas[member]
    table = data.table(member, snapshot)
    if preprocessor is None:
        own_train = ~holdout_mask(table[KEY], test_fraction)
        preprocessor = fit_preprocessor(member, table[own_train], feature_specs(schema))
    x = transform(preprocessor, table)
    names = [_column_name(o) for o in preprocessor.output_names]
    if len(set(names)) != len(names):
        raise ScenarioRunError(f"{member}: prepared column names collide: {names}")
    frame = pd.DataFrame(np.round(x, 6), columns=names)
    frame.insert(0, KEY, table[KEY].to_numpy())
    hints: dict[str, dict[str, Any]] = {
        KEY: {"dtype": "uscc", "grade": 1, "category": "identifier",
              "description": schema.column(KEY).description},
    }
    for f, out_names in ((f, [_column_name(o) for o in f.outputs]) for f in preprocessor.features):
        meta = schema.column(f.name)
        for n in out_names:
            how = "missing indicator of" if n.endswith("__missing") else (
                "one-hot level of" if "_eq_" in n else ("standardised log1p of" if f.transform == "log1p"
                                                         else "standardised"))
            hints[n] = {"dtype": "float", "grade": meta.sensitivity, "category": meta.category,
                        "description": f"{how} {f.name}: {meta.description}"}
    has_label = member in BANKS and snapshot == "training"
    if has_label:
        frame[LABEL] = table[LABEL].to_numpy(dtype=np.int64)
        lm = schema.column(LABEL)
        hints[LABEL] = {"dtype": "int", "grade": lm.sensitivity, "category": lm.category,
                        "description": lm.description}
    out_dir.mkdir(parents=True, exist_ok=True)
    name = dataset_name(member, snapshot)
    path = out_dir / f"{name}.csv"
    frame.to_csv(path, index=False)
    return PreparedMember(member=member, dataset=name, csv_path=path, features=names, has_label=has_label,
                          rows=len(frame), columns=hints, preprocessor=preprocessor,
                          description=f"{schema.title} — preprocessed by {member} for joint modelling")


def prepare_members(data: FederationData, out_dir: Path, bank: str = "bank_a",
                    departments: Sequence[str] = DEFAULT_DEPARTMENTS,
                    test_fraction: float = TEST_FRACTION) -> PreparedFederation:
    """Every member of the job prepares its own dataset (see the module docstring)."""
    if bank not in BANKS:
        raise ScenarioRunError(f"unknown bank {bank!r}; expected one of {BANKS}")
    bad = [d for d in departments if d not in DEPARTMENTS]
    if bad or not departments:
        raise ScenarioRunError(f"departments must be a non-empty subset of {DEPARTMENTS}, got {list(departments)}")
    members = {m: prepare_member(data, m, out_dir, test_fraction) for m in (bank, *departments)}
    return PreparedFederation(bank=bank, departments=list(departments), test_fraction=test_fraction,
                              members=members)


# ---------------------------------------------------------------- job specs

def training_job_spec(prep: PreparedFederation, algorithm: str = "ss_lr", params: dict[str, Any] | None = None,
                      purpose: str | None = None, expires_in_s: int = 3600,
                      timeout_s: float = 1800.0) -> dict[str, Any]:
    """The pre-loan training job the bank submits: PSI on the USCC, then a joint model on every published column."""
    bank = prep.bank
    return {
        "kind": "vertical_train",
        "requester": bank,
        "purpose": purpose or (
            f"Pre-loan credit model for small-enterprise loans of {bank}: joint model with "
            f"{', '.join(prep.departments)} data; scores go to {bank} only"),
        "join_key": KEY,
        "label": {"member": bank, "dataset": prep.members[bank].dataset, "column": LABEL},
        "inputs": [{"member": m, "dataset": prep.members[m].dataset, "columns": prep.members[m].features}
                   for m in prep.parties],
        "psi_protocol": "RR22",
        "model": {"algorithm": algorithm, "params": dict(params or {})},
        "outputs": [{"name": "metrics", "receiver": bank}, {"name": "predictions", "receiver": bank}],
        "expires_in_s": expires_in_s,
        "max_runs": 1,
        "timeout_s": timeout_s,
    }


def engine_split_param() -> str | None:
    """The name of the engine's train/test-split parameter, if this build's SecretFlow party has one."""
    from protocols.secretflow.spec import ModelParams

    return "test_fraction" if "test_fraction" in ModelParams.model_fields else None


def sslr_params(n_rows: int, test_fraction: float = TEST_FRACTION) -> dict[str, Any]:
    """SS-LR parameters that reach the plaintext LR's AUC on the scenario (measured; see the README)."""
    params: dict[str, Any] = {"epochs": 10, "learning_rate": 0.3, "batch_size": 512 if n_rows < 20_000 else 1024}
    if engine_split_param():
        params["test_fraction"] = test_fraction
    return params


def tree_params(n_rows: int, test_fraction: float = TEST_FRACTION) -> dict[str, Any]:
    """SGB / SS-XGB parameters for the scenario: shallow trees, a few rounds (2 cores; see the README)."""
    params: dict[str, Any] = {"num_boost_round": 10, "max_depth": 3, "learning_rate": 0.3, "sketch_eps": 0.1}
    if engine_split_param():
        params["test_fraction"] = test_fraction
    return params


def auto_params(algorithm: str, n_rows: int, test_fraction: float = TEST_FRACTION) -> dict[str, Any]:
    """``params: auto`` in a job template: :func:`sslr_params` or :func:`tree_params`."""
    return sslr_params(n_rows, test_fraction) if algorithm == "ss_lr" else tree_params(n_rows, test_fraction)


# ---------------------------------------------------------------- comparators and report inputs

class JoinedRows(BaseModel):
    """The intersection rows as the plaintext comparators see them (same files the nodes ingested)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    keys: np.ndarray
    y: np.ndarray
    test: np.ndarray
    blocks: dict[str, np.ndarray]
    """member → its published feature matrix on these rows."""


def joined_rows(prep: PreparedFederation) -> JoinedRows:
    """Inner join of every party's prepared CSV on the key (what PSI yields), sorted by key."""
    frames = {m: pd.read_csv(p.csv_path, dtype={KEY: str}) for m, p in prep.members.items()}
    keys = frames[prep.bank][KEY]
    for m in prep.departments:
        keys = keys[keys.isin(frames[m][KEY])]
    keys = np.sort(keys.to_numpy())
    blocks = {}
    for m, p in prep.members.items():
        f = frames[m].set_index(KEY).loc[keys]
        blocks[m] = f[p.features].to_numpy(dtype=np.float64)
    y = frames[prep.bank].set_index(KEY).loc[keys, LABEL].to_numpy(dtype=np.int64)
    return JoinedRows(keys=keys, y=y, test=holdout_mask(keys, prep.test_fraction), blocks=blocks)


class Comparator(BaseModel):
    """A plaintext logistic regression on published matrices."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    members: list[str]
    coef: list[float]
    intercept: float
    auc_test: float
    ks_test: float
    score: np.ndarray = Field(repr=False)

    def predict(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """PD for rows given as per-member published matrices."""
        x = np.column_stack([blocks[m] for m in self.members])
        return 1.0 / (1.0 + np.exp(-(x @ np.asarray(self.coef) + self.intercept)))

    def scores(self, rows: JoinedRows, role: Literal["bank_only", "centralized"],
               monitoring: dict[str, np.ndarray] | None = None) -> ModelScores:
        """Report input: test scores on ``rows``; with ``monitoring`` blocks also training vs monitoring (PSI)."""
        return ModelScores(name=self.name, role=role, y_test=rows.y[rows.test], score_test=self.score[rows.test],
                           score_train=None if monitoring is None else self.score[~rows.test],
                           score_monitoring=None if monitoring is None else self.predict(monitoring))


def fit_comparator(name: str, rows: JoinedRows, members: Sequence[str], evaluation: Evaluation,
                   c: float = 1.0) -> Comparator:
    """Plaintext LR on ``members``' published columns: fitted on the training rows (``holdout``) or on
    every row (``in-sample``, matching an engine that trains on the whole intersection)."""
    from sklearn.linear_model import LogisticRegression

    x = np.column_stack([rows.blocks[m] for m in members])
    fit_rows = ~rows.test if evaluation == "holdout" else np.ones(len(rows.y), dtype=bool)
    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(x[fit_rows], rows.y[fit_rows])
    score = model.predict_proba(x)[:, 1]
    return Comparator(name=name, members=list(members), coef=model.coef_[0].tolist(),
                      intercept=float(model.intercept_[0]), auc_test=auc(rows.y[rows.test], score[rows.test]),
                      ks_test=ks(rows.y[rows.test], score[rows.test]).ks, score=score)


def plaintext_comparators(prep: PreparedFederation, rows: JoinedRows, evaluation: Evaluation
                          ) -> tuple[Comparator, Comparator]:
    """(bank-only LR, centralized LR) on the same rows and split as the federated model."""
    return (fit_comparator("bank-only LR", rows, [prep.bank], evaluation),
            fit_comparator("centralized LR", rows, prep.parties, evaluation))


def monitoring_blocks(prep: PreparedFederation, data: FederationData, keys: np.ndarray) -> dict[str, np.ndarray]:
    """The monitoring snapshot (a year later) of ``keys``, through each member's *training* preprocessor."""
    out = {}
    for m, p in prep.members.items():
        table = data.table(m, "monitoring").set_index(KEY).reindex(keys).reset_index()
        out[m] = transform(p.preprocessor, table)
    return out


class FederatedScores(BaseModel):
    """The bank's decrypted predictions, aligned to the joined rows."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    evaluation: Evaluation
    score: np.ndarray = Field(repr=False)
    """Calibrated PD (see :func:`calibrate`); ranks exactly as ``raw_score``."""
    raw_score: np.ndarray = Field(repr=False)
    auc_test: float
    ks_test: float
    engine_metrics: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration

    def scores(self, rows: JoinedRows, monitoring: ScoredPopulation | None = None,
               role: Literal["federated", "other"] = "federated") -> ModelScores:
        """Report input; with the post-loan re-scoring also training vs monitoring (PSI)."""
        return ModelScores(name=self.name, role=role, y_test=rows.y[rows.test], score_test=self.score[rows.test],
                           score_train=None if monitoring is None else self.score[~rows.test],
                           score_monitoring=None if monitoring is None else monitoring.pd)


class Calibration(BaseModel):
    """The bank's Platt map from the joint model's raw score to a PD: ``sigmoid(a + b·logit(raw))``."""

    a: float
    b: float

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated PDs of raw engine scores (monotone in ``raw``)."""
        eps = 1e-6
        r = np.clip(np.asarray(raw, dtype=np.float64), eps, 1 - eps)
        return 1.0 / (1.0 + np.exp(-(self.a + self.b * np.log(r / (1 - r)))))


def fit_calibration(score: np.ndarray, y: np.ndarray, fit_rows: np.ndarray) -> Calibration:
    """Fit the Platt map on ``fit_rows`` (see :func:`calibrate`)."""
    from sklearn.linear_model import LogisticRegression

    eps = 1e-6
    z = np.log(np.clip(score, eps, 1 - eps) / np.clip(1 - score, eps, 1 - eps)).reshape(-1, 1)
    if len(np.unique(y[fit_rows])) < 2:
        raise ResultMismatchError("cannot calibrate: the rows hold only one class")
    model = LogisticRegression(C=1e6, max_iter=1000).fit(z[fit_rows], y[fit_rows])
    if model.coef_[0][0] <= 0:  # a model that ranks backwards is not something to rescale silently
        raise ResultMismatchError("the joint model's scores rank defaults backwards; refusing to calibrate")
    return Calibration(a=float(model.intercept_[0]), b=float(model.coef_[0][0]))


def calibrate(score: np.ndarray, y: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """Platt-calibrate PDs on ``fit_rows``: the bank maps the joint model's scores to its own default rates.

    SS-LR after a few epochs ranks well but its PDs are compressed towards 0.5 (the intercept is
    still moving); a one-feature logistic fit on ``logit(score)`` — done by the bank, on its own labels
    and scores — fixes the scale. Monotone, so AUC and KS are unchanged. The same map is applied to
    later scores of the model (:func:`scored_population`).
    """
    return fit_calibration(score, y, fit_rows).apply(score)


def read_predictions(predictions_csv: bytes | str, expected_keys: np.ndarray, what: str) -> pd.DataFrame:
    """A ``predictions`` output as a frame indexed by key in the order of ``expected_keys``: it must be a
    CSV with the key and a ``score`` column, cover exactly ``expected_keys``, and hold probabilities."""
    import io

    text = predictions_csv.decode() if isinstance(predictions_csv, bytes) else predictions_csv
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={KEY: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultMismatchError(f"the {what} output is not a CSV: {exc}") from None
    for col in (KEY, "score"):
        if col not in frame.columns:
            raise ResultMismatchError(f"the {what} output has no {col!r} column (columns: {list(frame.columns)})")
    if len(frame) != len(expected_keys) or set(frame[KEY]) != set(expected_keys):
        raise ResultMismatchError(
            f"the {what} cover {len(frame)} keys, the expected intersection has {len(expected_keys)} "
            f"({len(set(frame[KEY]) ^ set(expected_keys))} keys differ)")
    frame = frame.set_index(KEY).loc[expected_keys]
    raw = frame["score"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(raw)) or (raw < 0).any() or (raw > 1).any():
        raise ResultMismatchError(f"the {what} contain scores that are not probabilities")
    return frame


def federated_scores(predictions_csv: bytes | str, rows: JoinedRows, engine_metrics: dict[str, Any] | None = None,
                     name: str = "federated SS-LR") -> FederatedScores:
    """Parse the bank's ``predictions`` output and align it with ``rows`` (named error on any mismatch)."""
    frame = read_predictions(predictions_csv, rows.keys, "predictions")
    if LABEL in frame.columns and not np.array_equal(frame[LABEL].to_numpy(dtype=np.int64), rows.y):
        raise ResultMismatchError("the labels in the predictions differ from the bank's own labels")
    evaluation: Evaluation = "in-sample"
    if "split" in frame.columns:
        engine_test = (frame["split"].astype(str) == "test").to_numpy()
        if not np.array_equal(engine_test, rows.test):
            raise ResultMismatchError("the engine's train/test split differs from holdout_mask(keys)")
        evaluation = "holdout"
    raw = frame["score"].to_numpy(dtype=np.float64)
    cal = fit_calibration(raw, rows.y, ~rows.test if evaluation == "holdout" else np.ones(len(raw), dtype=bool))
    score = cal.apply(raw)
    return FederatedScores(name=name, evaluation=evaluation, score=score, raw_score=raw,
                           auc_test=auc(rows.y[rows.test], score[rows.test]),
                           ks_test=ks(rows.y[rows.test], score[rows.test]).ks, engine_metrics=engine_metrics or {},
                           calibration=cal)


def white_list(rows: JoinedRows, score: np.ndarray, max_pd: float) -> pd.DataFrame:
    """Pre-loan white list: the bank's applicants whose federated PD is at most ``max_pd`` (lowest first)."""
    keep = score <= max_pd
    out = pd.DataFrame({KEY: rows.keys[keep], "pd": score[keep]}).sort_values("pd", kind="stable")
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- in-loan scoring and post-loan monitoring

def prepare_monitoring(data: FederationData, prep: PreparedFederation, out_dir: Path) -> PreparedFederation:
    """A year later: every member applies its *training* preprocessor to its monitoring snapshot (the bank's
    current borrowers, no outcome yet) and publishes the result as a new dataset (``<member>_2025_monitoring``)."""
    members = {m: prepare_member(data, m, out_dir, prep.test_fraction, snapshot="monitoring",
                                 preprocessor=p.preprocessor) for m, p in prep.members.items()}
    for m, p in members.items():
        if p.features != prep.members[m].features:
            raise ScenarioRunError(f"{m}: the monitoring snapshot's columns differ from the training columns")
    return PreparedFederation(bank=prep.bank, departments=prep.departments, test_fraction=prep.test_fraction,
                              members=members)


def inner_keys(prep: PreparedFederation) -> np.ndarray:
    """The keys every member of ``prep`` knows (what PSI yields), sorted."""
    keys: pd.Index | None = None
    for p in prep.members.values():
        own = pd.Index(pd.read_csv(p.csv_path, usecols=[KEY], dtype={KEY: str})[KEY])
        keys = own if keys is None else keys.intersection(own)
    assert keys is not None
    return np.sort(keys.to_numpy())


def predict_job_spec(training_spec: dict[str, Any], training_job: str, mon: PreparedFederation,
                     purpose: str, expires_in_s: int = 3600, timeout_s: float = 1800.0) -> dict[str, Any]:
    """The in-loan scoring job: ``vertical_predict`` with the training job's stored model parts over the
    members' monitoring datasets — the same members and columns the model was trained on, no label column."""
    bank = mon.bank
    inputs = []
    for inp in training_spec["inputs"]:
        m = inp["member"]
        if m not in mon.members:
            raise ScenarioRunError(f"{m} took part in training {training_job} but has no monitoring dataset")
        inputs.append({"member": m, "dataset": mon.members[m].dataset, "columns": list(inp["columns"])})
    return {
        "kind": "vertical_predict",
        "requester": training_spec["requester"],
        "purpose": purpose,
        "join_key": training_spec["join_key"],
        "label": {"member": bank, "dataset": mon.members[bank].dataset},
        "inputs": inputs,
        "psi_protocol": training_spec.get("psi_protocol", "RR22"),
        "model": {"algorithm": training_spec["model"]["algorithm"]},
        "model_from": training_job,
        "outputs": [{"name": "predictions", "receiver": training_spec["requester"]}],
        "expires_in_s": expires_in_s,
        "max_runs": 1,
        "timeout_s": timeout_s,
    }


class ScoredPopulation(BaseModel):
    """The bank's decrypted in-loan scores of its current borrowers (the monitoring population)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    keys: np.ndarray
    raw: np.ndarray = Field(repr=False)
    pd: np.ndarray = Field(repr=False)
    """Through the training job's calibration (:class:`Calibration`)."""


def scored_population(predictions_csv: bytes | str, calibration: Calibration,
                      expected_keys: np.ndarray) -> ScoredPopulation:
    """Parse a ``vertical_predict`` job's ``predictions`` and check that it covers exactly ``expected_keys``."""
    frame = read_predictions(predictions_csv, expected_keys, "in-loan predictions")
    raw = frame["score"].to_numpy(dtype=np.float64)
    return ScoredPopulation(keys=np.asarray(expected_keys), raw=raw, pd=calibration.apply(raw))


class PostLoanSummary(BaseModel):
    """Post-loan monitoring of the bank's current borrowers, from the in-loan re-scoring."""

    scored: int
    min_pd: float
    high_risk: int
    deteriorated: int
    """Borrowers whose PD at least doubled since origination and is above the portfolio's default rate."""
    mean_pd_origination: float | None
    mean_pd_now: float
    outcome_auc: float | None = None
    """Evaluation only (the generator's hidden outcomes a year on): AUC of the re-scored PDs."""
    default_rate_high_risk: float | None = None
    default_rate_rest: float | None = None


def post_loan_watch_list(pop: ScoredPopulation, origination: pd.Series, min_pd: float) -> pd.DataFrame:
    """Borrowers the bank should review: PD now ≥ ``min_pd``, or PD at least doubled since origination and
    above the portfolio's mean PD — highest PD first. ``origination``: key → PD when the loan was granted."""
    now = pd.Series(pop.pd, index=pop.keys)
    then = origination.reindex(pop.keys)
    ratio = now / then
    flag = (now >= min_pd) | ((ratio >= 2.0) & (now >= float(now.mean())))
    out = pd.DataFrame({KEY: pop.keys, "pd_now": now.to_numpy(), "pd_origination": then.to_numpy(),
                        "reason": np.where(now >= min_pd, "pd_above_limit", "pd_doubled")})[flag.to_numpy()]
    return out.sort_values("pd_now", ascending=False, kind="stable").reset_index(drop=True)


def post_loan_summary(pop: ScoredPopulation, watch: pd.DataFrame, origination: pd.Series, min_pd: float,
                      outcomes: pd.Series | None = None) -> PostLoanSummary:
    """Numbers of the post-loan monitoring; ``outcomes`` (key → defaulted in the following 12 months) only
    for evaluation — the bank does not know them yet."""
    then = origination.reindex(pop.keys).dropna()
    out = PostLoanSummary(scored=len(pop.keys), min_pd=min_pd, high_risk=len(watch),
                          deteriorated=int((watch["reason"] == "pd_doubled").sum()),
                          mean_pd_origination=float(then.mean()) if len(then) else None,
                          mean_pd_now=float(pop.pd.mean()))
    if outcomes is not None:
        y = outcomes.reindex(pop.keys)
        if y.isna().any():
            raise ResultMismatchError(f"{int(y.isna().sum())} re-scored borrowers have no recorded outcome")
        y = y.to_numpy(dtype=np.int64)
        # hashed, not np.isin: on object (string) keys np.isin compares every key with every listed one,
        # which took 6 minutes at N = 1M (315k borrowers x 55k on the watch list)
        flagged = pd.Index(pop.keys).isin(watch[KEY]).astype(bool)
        if 0 < y.sum() < len(y):
            out.outcome_auc = auc(y, pop.pd)
        out.default_rate_high_risk = float(y[flagged].mean()) if flagged.any() else None
        out.default_rate_rest = float(y[~flagged].mean()) if (~flagged).any() else None
    return out
