"""The deterministic train/test split and the label holder's score metrics.

:func:`holdout_mask` is a pure function of the join key, so every party derives the
same split locally without exchanging row indices. It is bit-identical to
``scenarios.bank_credit.baselines.holdout_mask``::

    test  <=>  int.from_bytes(sha256(salt.encode() + b"\\x00" + key.encode()).digest()[:4], "big")
               < int(test_fraction * 2**32)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def holdout_mask(keys: Sequence[str] | np.ndarray, test_fraction: float, salt: str = "split") -> np.ndarray:
    """True for the rows that belong to the test set (see the module docstring)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    cut = int(test_fraction * 2**32)
    prefix = salt.encode() + b"\x00"
    return np.fromiter(
        (int.from_bytes(hashlib.sha256(prefix + str(k).encode()).digest()[:4], "big") < cut for k in keys),
        dtype=bool,
        count=len(keys),
    )


def two_classes(y: np.ndarray) -> bool:
    """Whether ``y`` holds both a 0 and a 1 (so AUC and KS are defined)."""
    values = np.unique(np.asarray(y))
    return len(values) == 2


def auc_ks(y: np.ndarray, score: np.ndarray) -> tuple[float, float] | None:
    """ROC AUC and the KS statistic (max TPR − FPR) of ``score`` for labels ``y``; None if one class."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y).reshape(-1)
    score = np.asarray(score, dtype=float).reshape(-1)
    if not two_classes(y):
        return None
    fpr, tpr, _ = roc_curve(y, score)
    return float(roc_auc_score(y, score)), float(np.max(tpr - fpr))
