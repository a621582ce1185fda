"""The learners a party can train, store and load: SS-LR, SS-XGB and SGB (SecureBoost on HEU).

Every function here runs in *every* party's driver (production mode: each party executes
only the device calls that belong to it and skips the rest), so the call sequence must be
the same everywhere; a party passes real paths for itself and ``""`` for the others.

What a stored model part holds, per party, and who can read what
------------------------------------------------------------------
* ``ss_lr`` — this party's **secret share** of the whole weight vector (SPU ``dump`` of the
  job SPU's share, ``weights.share``) plus the mean/std it used to z-score its own features.
  No party, the label holder included, ever sees a weight; the shares only mean something
  when every party loads its own into an SPU of the same parties, protocol and field.
* ``ss_xgb`` — this party's split nodes (feature index and threshold) for its own features
  in every tree (``model.json``), and its secret share of every tree's leaf weights
  (``tree<i>.share``). Nobody sees another party's thresholds or any leaf weight.
* ``sgb`` — SecretFlow's own SGB files: each party its own split trees; the label holder
  additionally holds the leaf weights **in plaintext** (SecureBoost's design: the HEU
  secret key and the gradients stay with the label holder).

Prediction with a stored model reveals only the final score, and only to the receiver.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocols.secretflow.spec import ModelParams, sslr_schedule

SHARE_SUFFIX = ".share"


@dataclass
class Session:
    """One party's handles on the running job: devices, names, own identity."""

    sf: Any
    spu: Any
    pyu: dict[str, Any]
    me: str
    names: list[str]
    label: str
    params: ModelParams
    heu: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def share_paths(self, path: Path) -> list[str]:
        """``spu.dump``/``spu.load`` paths: this party's own file, nothing for the others."""
        return [str(path) if party == self.me else "" for party in self.spu.actors]

    def own(self, name: str, value: Any) -> Any:
        """A PYU object of party ``name`` holding ``value`` (only evaluated where ``name`` is me)."""
        if name == self.me:
            return self.pyu[name](_const(value))()
        return self.pyu[name](_nothing)()


def _const(value: Any) -> Any:
    def get() -> Any:
        return value

    return get


def _nothing() -> None:
    return None


# ---------------------------------------------------------------- SS-LR


def train_ss_lr(s: Session, x: Any, y: Any, n_rows: int) -> Any:
    """Fit SSRegression (logistic) on the SPU; the weights stay secret-shared."""
    from secretflow.ml.linear.ss_sgd import SSRegression

    p = s.params
    epochs, batch_size = sslr_schedule(n_rows, p.epochs, p.batch_size)
    model = SSRegression(s.spu)
    model.fit(
        x,
        y,
        epochs=epochs,
        learning_rate=p.learning_rate,
        batch_size=batch_size,
        sig_type=p.sig_type,
        reg_type="logistic",
        penalty=p.penalty,
        l2_norm=p.l2_norm,
    )
    s.sf.wait(model.spu_w)
    return model


def save_ss_lr(s: Session, model: Any, out: Path) -> dict[str, Any]:
    """Dump this party's share of the weights into ``out``; return the model-part fields."""
    s.spu.dump(model.spu_w, s.share_paths(out / ("weights" + SHARE_SUFFIX)))
    return {"share_files": ["weights" + SHARE_SUFFIX], "sig_type": model.sig_type.value}


def load_ss_lr(s: Session, part: dict[str, Any], src: Path) -> Any:
    """An SSRegression whose weights are the shares loaded by every party from its own dir."""
    from secretflow.ml.linear.linear_model import LinearModel, RegType, SigType
    from secretflow.ml.linear.ss_sgd import SSRegression

    weights = s.spu.load(s.share_paths(src / ("weights" + SHARE_SUFFIX)))
    model = SSRegression(s.spu)
    model.load_model(LinearModel(weights, RegType.Logistic, SigType(part["sig_type"])))
    return model


def predict_ss_lr(s: Session, model: Any, x: Any, n_rows: int) -> Any:
    """Scores revealed to the label holder only (a FedNdarray with one partition)."""
    return model.predict(x, batch_size=sslr_schedule(n_rows, 1, s.params.batch_size)[1], to_pyu=s.pyu[s.label])


# ---------------------------------------------------------------- SS-XGB


def _tree_params(p: ModelParams) -> dict[str, Any]:
    return {
        "num_boost_round": p.num_boost_round,
        "max_depth": p.max_depth,
        "learning_rate": p.learning_rate,
        "objective": "logistic",
        "reg_lambda": p.reg_lambda,
        "subsample": p.subsample,
        "colsample_by_tree": p.colsample_by_tree,
        "sketch_eps": p.sketch_eps,
        "base_score": p.base_score,
        "seed": p.seed,
    }


def train_ss_xgb(s: Session, x: Any, y: Any, n_rows: int) -> Any:
    """Fit SS-XGB (secretflow.ml.boost.ss_xgb_v.Xgb): split search and leaf weights on the SPU."""
    from secretflow.ml.boost.ss_xgb_v import Xgb

    model = Xgb(s.spu).train(_tree_params(s.params), x, y)
    s.sf.wait(model.weights)
    return model


def _write_trees(path: str, *trees: Any) -> None:
    data = [{"f": [int(v) for v in t.split_features], "v": [float(v) for v in t.split_values]} for t in trees]
    Path(path).write_text(json.dumps(data))


def _tree(d: dict[str, Any]) -> Any:
    from secretflow.ml.boost.ss_xgb_v.core.xgb_tree import XgbTree

    t = XgbTree()
    t.split_features = [int(v) for v in d["f"]]
    t.split_values = [float(v) for v in d["v"]]
    return t


def save_ss_xgb(s: Session, model: Any, out: Path) -> dict[str, Any]:
    """Dump this party's share of every tree's leaf weights and its own split nodes (``trees.json``)."""
    files = []
    for i, w in enumerate(model.weights):
        name = f"tree{i}{SHARE_SUFFIX}"
        s.spu.dump(w, s.share_paths(out / name))
        files.append(name)
    # each party writes only its own split nodes, inside its own PYU (sf.reveal would broadcast them)
    path = out / "trees.json"
    s.sf.wait(
        [
            s.pyu[n](_write_trees)(str(path) if n == s.me else "", *[t[s.pyu[n]] for t in model.trees])
            for n in s.names
        ]
    )
    return {"share_files": files, "objective": model.objective.value, "base": float(model.base)}


def load_ss_xgb(s: Session, part: dict[str, Any], src: Path) -> Any:
    """An XgbModel from every party's own split nodes and leaf-weight shares."""
    from secretflow.ml.boost.ss_xgb_v.core.node_split import RegType
    from secretflow.ml.boost.ss_xgb_v.model import XgbModel

    n_trees = len(part["share_files"])
    mine = json.loads((src / "trees.json").read_text())
    if len(mine) != n_trees:
        raise ValueError(f"trees.json holds {len(mine)} trees, the model {n_trees}")
    model = XgbModel(s.spu, RegType(part["objective"]), part["base"])
    model.trees = [
        {s.pyu[n]: s.own(n, _tree(mine[i]) if n == s.me else None) for n in s.names} for i in range(n_trees)
    ]
    model.weights = [s.spu.load(s.share_paths(src / f)) for f in part["share_files"]]
    return model


def predict_trees(s: Session, model: Any, x: Any, n_rows: int) -> Any:
    """Scores of a tree model revealed to the label holder only."""
    return model.predict(x, to_pyu=s.pyu[s.label])


# ---------------------------------------------------------------- SGB (SecureBoost on HEU)


def make_heu(s: Session, key_bits: int = 2048) -> Any:
    """The job's HEU: the label holder keeps the secret key, every other party evaluates."""
    heu_config = {
        "sk_keeper": {"party": s.label},
        "evaluators": [{"party": n} for n in s.names if n != s.label],
        "mode": "PHEU",
        "he_parameters": {"schema": "ou", "key_pair": {"generate": {"bit_size": key_bits}}},
    }
    return s.sf.HEU(heu_config, s.spu.cluster_def["runtime_config"]["field"])


def train_sgb(s: Session, x: Any, y: Any, n_rows: int) -> Any:
    """Fit SGB (secretflow.ml.boost.sgb_v.Sgb): encrypted gradients, plaintext leaves at the label holder."""
    from secretflow.ml.boost.sgb_v import Sgb

    if s.heu is None:
        s.heu = make_heu(s)
    p = _tree_params(s.params)
    p["rowsample_by_tree"] = p.pop("subsample")
    model = Sgb(s.heu).train(p, x, y)
    return model


def save_sgb(s: Session, model: Any, out: Path) -> dict[str, Any]:
    """SecretFlow's own per-party SGB files under ``out/sgb``."""
    model.save_model({s.pyu[n]: (str(out / "sgb") if n == s.me else "") for n in s.names})
    return {"share_files": [], "objective": model.objective.value, "base": float(model.base)}


def load_sgb(s: Session, part: dict[str, Any], src: Path) -> Any:
    """The SGB model from every party's own files."""
    from secretflow.ml.boost.sgb_v.model import load_model

    return load_model({s.pyu[n]: (str(src / "sgb") if n == s.me else "") for n in s.names}, s.pyu[s.label])


LEARNERS: dict[str, dict[str, Any]] = {
    "ss_lr": {"train": train_ss_lr, "save": save_ss_lr, "load": load_ss_lr, "predict": predict_ss_lr},
    "ss_xgb": {"train": train_ss_xgb, "save": save_ss_xgb, "load": load_ss_xgb, "predict": predict_trees},
    "sgb": {"train": train_sgb, "save": save_sgb, "load": load_sgb, "predict": predict_trees},
}


def standardize_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and (non-zero) standard deviations of ``x``."""
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 0, std, 1.0)
