"""SS-LR on WOE-binned features, and its points scorecard (``ModelParams.woe_bins``).

How a WOE scorecard is trained (every step runs in every party's driver, production mode)
-------------------------------------------------------------------------------------------
1. **Binning, each party on its own features.** SecretFlow 1.14's
   ``secretflow.preprocessing.binning.vert_woe_binning.VertWoeBinning`` does the vertical WOE
   binning: each party's ``VertWoeBinningPyuWorker`` (a PYU actor inside that party's own
   process — it works with ``ray_mode=False``) cuts its own columns by ``woe_method``
   (``quantile`` = equal frequency, ``eq_range``, ``chimerge``). A column with at most
   ``woe_bins`` distinct values (grades, counts, 0/1 flags) is handed to SecretFlow as a
   *categorical* column, one bin per value — SecretFlow's quantile cut would otherwise drop the
   duplicate edges and leave a 0/1 flag with a single bin.
2. **Counting positives per bin without showing the label.** The label holder puts its label
   vector on the secure device: with ``woe_device="spu"`` as secret shares (each feature holder
   secret-shares its 0/1 row-to-bin selection matrix, the SPU multiplies), with ``"heu"`` as HEU
   ciphertexts under the label holder's key (each feature holder adds up the ciphertexts of its
   bins' rows). Only the per-bin sums are revealed, to the label holder.
3. **WOE.** The label holder computes every bin's WOE (``ln((pos_b/P)/(neg_b/N))``, +0.5 smoothing
   for a pure bin) and sends each feature holder the WOE values of its own bins.
4. **Substitution.** Each party replaces its own feature values by their bin's WOE locally
   (:func:`substitute`; left-open, right-closed cuts as SecretFlow's ``VertBinSubstitution``;
   an unseen category of a categorical column gets WOE 0, "no evidence"), and SS-LR trains on
   the WOE columns (not z-scored).

Who learns what
---------------
* **Label holder (the bank):** for every other party's feature, the number of rows and of
  positives in each bin, hence each bin's WOE and IV (it keeps the IVs in ``woe_iv.json`` in
  its own model part) — but *not* the cut points nor which rows fall in which bin. It learns
  whether a feature holder's column was cut as categorical (SecretFlow sends that flag).
* **Feature holder (a department):** the WOE and — SecretFlow's report includes it — the
  positive rate of each of *its own* bins, over the training rows. Together with its bin counts
  this is the label distribution per bin of its own columns (not per row). This is inherent in
  vertical WOE binning: the department must know the WOE of its bins to substitute them.
* Everything is computed on the training rows only (the hold-out never enters the binning).
  The bin rules (cuts or categories and WOE) are written into each party's own model part
  (``woe_rules.json``) so that a later ``predict`` job substitutes new rows in the same way.

The scorecard
-------------
The SS-LR weights stay secret-shared. With ``sig_type="real"`` (the exact logistic link, offered
for at most 3 parties: the SPU's ``exp`` gives garbage with 5, see
:data:`protocols.secretflow.spec.MAX_PARTIES_REAL_SIGMOID`) prediction reveals to the label
holder only the linear predictor ``eta = b + sum_j w_j * woe_j`` of each scored row —
equivalent to the PD it would learn anyway, ``PD = 1 / (1 + exp(-eta))`` — and the label holder
writes ``score = PD`` and ``points = offset - factor * eta``
(:class:`protocols.secretflow.spec.Scorecard`); the points are then a sum over the bins. With an
approximate link (``"sr"``, the default, which trains well with 5 parties) the label holder
receives the model's PD as for plain SS-LR and writes ``points = offset - factor * ln(PD/(1-PD))``
— the same scaling, monotone in the PD, but no longer a sum of per-bin points.

With ``points_tables=True`` (``sig_type="real"`` only) the SPU additionally reveals to every party the weights of *its
own* features (and to the label holder the intercept), so that each party keeps the points
table of its own bins in its own model part (``points_table.json``: per bin the cut, WOE and
``-factor * w_j * woe_jb``; the label holder's table also carries the base points
``offset - factor * b``). A row's points are the base points plus the points of its bins.
Revealing a department its own weights tells it how much its data moves the bank's score, and,
from the bins' points, nothing about any other party's data; it is off by default because it
is a disclosure of part of the bank's model, which the job's manifest must then say. The
intercept goes to the label holder alone, so no department learns the bank's base rate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from protocols.secretflow.spec import Scorecard, sslr_schedule

WOE_RULES = "woe_rules.json"
WOE_IV = "woe_iv.json"
POINTS_TABLE = "points_table.json"
_LABEL = "__dcp_label__"


class WoeRulesError(ValueError):
    """Stored WOE bin rules are unreadable or do not fit the features they are applied to."""


def category(value: float) -> str:
    """The category name of a value of a low-cardinality column (the same at training and prediction)."""
    return repr(float(value))


class _Partition:
    """What ``VertWoeBinning`` reads from one party's partition: the data object and its column names."""

    def __init__(self, data: Any, columns: list[str]) -> None:
        self.data = data
        self.columns = columns


class _VData:
    """A minimal stand-in for SecretFlow's ``CompVDataFrame``.

    ``CompVDataFrame.columns`` would reveal every party's column names to every party; the
    binning only needs to know which partition holds the label, which all parties know.
    """

    def __init__(self, partitions: dict[Any, _Partition], num_rows: int) -> None:
        self.partitions = partitions
        self.num_rows = num_rows


def _table(x: np.ndarray, feats: list[str], bins: int, y: np.ndarray | None) -> Any:
    import pyarrow as pa

    cols: dict[str, Any] = {}
    for j, f in enumerate(feats):
        col = x[:, j].astype(np.float64)
        if len(np.unique(col)) <= bins:
            cols[f] = pa.array([category(v) for v in col], type=pa.string())
        else:
            cols[f] = pa.array(col, type=pa.float64())
    if y is not None:
        cols[_LABEL] = pa.array(y.astype(np.float64).reshape(-1), type=pa.float64())
    return pa.table(cols)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.integer):
        return int(v)
    return v


def _dump(path: str, report: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(_plain(report)))


def compact_rules(report: dict[str, Any], feats: list[str]) -> dict[str, Any]:
    """This party's substitution rules from SecretFlow's binning report, in ``feats`` order."""
    by_name = {v["name"]: v for v in report.get("variables", [])}
    missing = [f for f in feats if f not in by_name]
    if missing:
        raise WoeRulesError(f"the binning report has no rules for {missing}")
    out = []
    for f in feats:
        v = by_name[f]
        rule: dict[str, Any] = {"name": f, "type": v["type"], "woe": [float(w) for w in v["filling_values"]]}
        if v["type"] == "string":
            rule["categories"] = [str(c) for c in v["categories"]]
        else:
            rule["split_points"] = [float(c) for c in v["split_points"]]
        rule["counts"] = [int(c) for c in v["total_counts"]]
        out.append(rule)
    return {"features": out}


def check_rules(rules: dict[str, Any], feats: list[str]) -> None:
    """Raise :class:`WoeRulesError` unless ``rules`` holds a usable rule for each of ``feats``, in order."""
    try:
        names = [r["name"] for r in rules["features"]]
        for r in rules["features"]:
            n_bins = len(r["categories"]) if r["type"] == "string" else len(r["split_points"]) + 1
            if len(r["woe"]) != n_bins or not all(math.isfinite(w) for w in r["woe"]):
                raise WoeRulesError(f"rule of {r['name']!r}: {len(r['woe'])} WOE values for {n_bins} bins")
            if r["type"] == "numeric" and list(r["split_points"]) != sorted(r["split_points"]):
                raise WoeRulesError(f"rule of {r['name']!r}: split points are not sorted")
    except (KeyError, TypeError) as exc:
        raise WoeRulesError(f"malformed WOE rules: {exc!r}") from exc
    if names != list(feats):
        raise WoeRulesError(f"the WOE rules cover {names}, the features are {list(feats)}")


def load_rules(path: Path, feats: list[str]) -> dict[str, Any]:
    """Read and check stored bin rules."""
    try:
        rules = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WoeRulesError(f"cannot read WOE rules {path}: {exc}") from exc
    check_rules(rules, feats)
    return rules


def bin_index(rule: dict[str, Any], col: np.ndarray) -> np.ndarray:
    """The bin of every value of one column (-1: a category not seen in training)."""
    if rule["type"] == "string":
        pos = {c: i for i, c in enumerate(rule["categories"])}
        return np.array([pos.get(category(v), -1) for v in col], dtype=np.int64)
    # left-open, right-closed: the first cut >= value; past the last cut is the last bin
    return np.searchsorted(np.asarray(rule["split_points"], dtype=np.float64), col, side="left")


def substitute(rules: dict[str, Any], x: np.ndarray, feats: list[str]) -> np.ndarray:
    """Replace every value of this party's own features by its bin's WOE (unseen category: 0)."""
    check_rules(rules, feats)
    out = np.empty(x.shape, dtype=np.float64)
    for j, rule in enumerate(rules["features"]):
        idx = bin_index(rule, x[:, j])
        woe = np.append(np.asarray(rule["woe"], dtype=np.float64), 0.0)  # index -1 -> 0.0
        out[:, j] = woe[idx]
    return out


def secure_device(s: Any) -> Any:
    """The SPU of the job, or an HEU whose secret key the label holder keeps."""
    if s.params.woe_device == "spu":
        return s.spu
    from protocols.secretflow.learners import make_heu

    if s.heu is None:
        s.heu = make_heu(s)
    return s.heu


def fit_woe(
    s: Any, x: np.ndarray, y: np.ndarray | None, feats: list[str], work: Path
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Vertical WOE binning of the training rows; returns this party's own rules (and, at the
    label holder, SecretFlow's IV report over every party's features).

    ``x`` is this party's own training rows, ``y`` the labels (label holder only). Every party
    must call this at the same point of the job.
    """
    from secretflow.preprocessing.binning.vert_woe_binning import VertWoeBinning

    p = s.params
    assert p.woe_bins is not None
    mine = _table(x, feats, p.woe_bins, y if s.me == s.label else None)
    vdata = _VData(
        {
            # the party's own table as a plain value: the worker actor is created, and runs, in this
            # process only for this party (the fed layer does not resolve an object in an actor's
            # constructor); the other parties' entries are never evaluated here
            s.pyu[n]: _Partition(mine if n == s.me else None, [_LABEL] if n == s.label else [])
            for n in s.names
        },
        num_rows=len(x),
    )
    reports = VertWoeBinning(secure_device(s)).binning(
        vdata,
        binning_method=p.woe_method,
        bin_num=p.woe_bins,
        bin_names={s.pyu[n]: (list(feats) if n == s.me else []) for n in s.names},
        label_name=_LABEL,
        positive_label="1",
        chimerge_init_bins=100,
        chimerge_target_bins=p.woe_bins,
        chimerge_target_pvalue=0.1,
    )
    # each party writes its own report inside its own PYU (sf.reveal would broadcast it)
    path = work / "woe_report.json"
    s.sf.wait([s.pyu[n](_dump)(str(path) if n == s.me else "", reports[s.pyu[n]]) for n in s.names])
    report = json.loads(path.read_text())
    path.unlink()
    iv = {"features": report["feature_iv_info"]} if s.me == s.label else None
    return compact_rules(report, feats), iv


def predict_logit(s: Any, model: Any, x: Any, n_rows: int) -> Any:
    """The linear predictor ``b + x @ w`` of every row, revealed to the label holder only."""
    from secretflow.ml.linear.linear_model import LinearModel, RegType
    from secretflow.ml.linear.ss_sgd import SSRegression

    linear = SSRegression(s.spu)
    linear.load_model(LinearModel(model.spu_w, RegType.Linear, model.sig_type))
    return linear.predict(x, batch_size=sslr_schedule(n_rows, 1, s.params.batch_size)[1], to_pyu=s.pyu[s.label])


def points_table(
    rules: dict[str, Any], weights: np.ndarray, scorecard: Scorecard, bias: float | None
) -> dict[str, Any]:
    """The points of each of this party's bins; with ``bias`` (label holder) also the base points."""
    feats = []
    for rule, w in zip(rules["features"], weights, strict=True):
        bins = []
        for b, woe in enumerate(rule["woe"]):
            entry: dict[str, Any] = {"woe": woe, "points": -scorecard.factor * float(w) * woe}
            if rule["type"] == "string":
                entry["category"] = rule["categories"][b]
            else:
                cuts = rule["split_points"]
                entry["lower"] = cuts[b - 1] if b > 0 else None  # None: unbounded
                entry["upper"] = cuts[b] if b < len(cuts) else None
            bins.append(entry)
        feats.append({"name": rule["name"], "weight": float(w), "bins": bins})
    table: dict[str, Any] = {"scorecard": scorecard.model_dump(), "features": feats}
    if bias is not None:
        table["base_points"] = scorecard.offset - scorecard.factor * bias
    return table


def row_points(table: dict[str, Any], rules: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The points a party's own table gives each of its rows (base points included if the table has them)."""
    total = np.full(len(x), float(table.get("base_points", 0.0)))
    for j, (rule, feat) in enumerate(zip(rules["features"], table["features"], strict=True)):
        pts = np.append(np.array([b["points"] for b in feat["bins"]], dtype=np.float64), 0.0)
        total += pts[bin_index(rule, x[:, j])]
    return total


def write_points_tables(
    s: Any, model: Any, rules: dict[str, Any], scorecard: Scorecard, n_feats: int, out: Path
) -> None:
    """Reveal each party its own weights (the label holder also the intercept); each writes its own table."""
    counts = s.sf.reveal(
        [s.pyu[n]((lambda k=n_feats: k) if n == s.me else (lambda: None))() for n in s.names]
    )
    starts = np.cumsum([0, *counts]).tolist()
    total = starts[-1]
    done = []
    for i, n in enumerate(s.names):
        a, b = int(starts[i]), int(starts[i + 1])
        with_bias = n == s.label

        def own_weights(w: Any, a: int = a, b: int = b, with_bias: bool = with_bias) -> Any:
            import jax.numpy as jnp

            mine = w[a:b, 0]
            return jnp.concatenate([mine, w[total:, 0]]) if with_bias else mine

        revealed = s.spu(own_weights)(model.spu_w).to(s.pyu[n])

        def write(w: Any, with_bias: bool = with_bias) -> None:
            w = np.asarray(w, dtype=np.float64).reshape(-1)
            bias = float(w[-1]) if with_bias else None
            table = points_table(rules, w[: len(rules["features"])], scorecard, bias)
            (out / POINTS_TABLE).write_text(json.dumps(table, indent=1))

        done.append(s.pyu[n](write if n == s.me else _ignore)(revealed))
    s.sf.wait(done)


def _ignore(_: Any) -> None:
    return None
