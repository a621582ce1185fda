"""Named errors of the bank-credit scenario (bad input a user can cause)."""

from __future__ import annotations


class BankCreditError(ValueError):
    """Base class of every bank-credit scenario error."""


class GeneratorConfigError(BankCreditError):
    """The generator was asked for something it cannot produce (size, seed, output directory)."""


class FederationDataError(BankCreditError):
    """A federation data directory is missing files or does not match its schemas."""


class MetricInputError(BankCreditError):
    """Metric inputs are unusable: length mismatch, non-binary labels, a single class, NaN scores."""


class PreprocessingError(BankCreditError):
    """A feature cannot be prepared: unknown column, unknown level, nothing to fit on."""


class ReportInputError(BankCreditError):
    """The report was given inconsistent model results."""
