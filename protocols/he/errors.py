"""Named errors of the homomorphic (CKKS / TenSEAL) protocols; all subclass :class:`HeError`.

Every error is raised *before* anything is released: a party that raises one returns
no ciphertext and no plaintext, and a ledger that raises one has charged nothing.
"""

from __future__ import annotations


class HeError(Exception):
    """Base class of every error the HE protocols report."""


class ParametersBelowSecurity(HeError):
    """The CKKS parameters give less than the required security level (HE standard table)."""


class InvalidParameters(HeError):
    """The CKKS parameters are inconsistent or cannot deliver the stated precision."""


class MalformedContext(HeError):
    """Bytes that should hold a serialized TenSEAL CKKS context do not."""


class SecretKeyMissing(HeError):
    """A step that must decrypt was given a context without the secret key."""


class SecretKeyPresent(HeError):
    """A context that should be public carries the secret key; refused so it goes no further."""


class MalformedCiphertext(HeError):
    """Bytes that should hold a dcp ciphertext envelope or a CKKS ciphertext do not."""


class CiphertextSizeMismatch(HeError):
    """A ciphertext (or envelope) has the wrong number of slots, batches, rows or features."""


class ContextMismatch(HeError):
    """A ciphertext envelope was made under a different public context than the one in use."""


class WrongEnvelopeKind(HeError):
    """An envelope of one kind (weights, partial scores, stats) was passed where another is expected."""


class InvalidInput(HeError):
    """A party's plaintext input is unusable (wrong shape, NaN/inf, wrong dtype …)."""


class InvalidQuery(HeError):
    """A secure-statistics query is inconsistent (bin edges, clip bounds, statistics, epsilon)."""


class MinimumGroupSizeViolation(HeError):
    """A released cell would aggregate fewer rows than the policy's minimum group size."""

    def __init__(self, message: str, cells: list[str] | None = None) -> None:
        self.cells = cells or []
        super().__init__(message)


class PrivacyBudgetExceeded(HeError):
    """Charging this query's epsilon would take a dataset past its privacy budget."""

    def __init__(self, dataset_id: str, budget: float, spent: float, requested: float) -> None:
        self.dataset_id = dataset_id
        self.budget = budget
        self.spent = spent
        self.requested = requested
        super().__init__(
            f"dataset {dataset_id!r}: privacy budget exceeded — budget ε={budget:g}, "
            f"spent ε={spent:g}, this query ε={requested:g} (remaining ε={max(budget - spent, 0.0):g})"
        )


class NoPrivacyBudget(HeError):
    """A differentially private query named a dataset that has no privacy budget set."""


class BudgetChargeConflict(HeError):
    """A charge id was reused for a different dataset or a different epsilon."""


class MaskError(HeError):
    """Pairwise masking keys are inconsistent (own key missing, duplicate or malformed peer keys)."""


class DuplicateContribution(HeError):
    """The same party's contribution appears twice in a sum (it would be counted twice)."""


class QueryMismatch(HeError):
    """Statistics contributions answer different queries and cannot be summed."""


class TooFewDepartments(HeError):
    """A job would reveal one department's contribution by itself (fewer departments than the policy needs)."""


class MissingContribution(HeError):
    """A total lacks (or has extra) contributors compared with the job spec; not released."""
