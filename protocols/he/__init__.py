"""Homomorphic protocols on TenSEAL (CKKS): model-protected scoring and secure statistics.

Every party's step is a pure function over bytes, so a node or the coordinator can run it
in its own process:

- context: :func:`make_context` (requester), :func:`load_public_context` (everyone else)
- ``he_score``: :func:`encrypt_weights` → :func:`partial_scores` / :func:`own_partial`
  → :func:`sum_partials` → :func:`decrypt_scores`
- ``secure_stats``: :class:`StatsQuery` → :func:`department_contribution`
  → :func:`sum_contributions` → :func:`decrypt_stats`; ε ledger :class:`PrivacyLedger`

What each party can and cannot learn: ``protocols/he/README.md``.
"""

from protocols.he.budget import PrivacyLedger
from protocols.he.context import (
    CkksParams,
    ContextPair,
    load_public_context,
    make_context,
    params_for_precision,
)
from protocols.he.masks import MaskGroup, mask_keypair
from protocols.he.score import decrypt_scores, encrypt_weights, own_partial, partial_scores, sum_partials
from protocols.he.stats import (
    StatsQuery,
    StatsResult,
    decrypt_stats,
    department_contribution,
    sum_contributions,
)

__all__ = [
    "CkksParams",
    "ContextPair",
    "MaskGroup",
    "PrivacyLedger",
    "StatsQuery",
    "StatsResult",
    "decrypt_scores",
    "decrypt_stats",
    "department_contribution",
    "encrypt_weights",
    "load_public_context",
    "make_context",
    "mask_keypair",
    "own_partial",
    "params_for_precision",
    "partial_scores",
    "sum_contributions",
    "sum_partials",
]
