"""Named errors of the coordinator; each maps to an HTTP status and a JSON body
``{"error": <class name>, "detail": <message>}``."""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base class: ``status_code`` is what the API answers."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def name(self) -> str:
        """The error's name as the API reports it."""
        return type(self).__name__


class InvalidJobSpec(CoordinatorError):
    """The job spec does not parse or does not validate."""

    status_code = 422


class UnknownJobKind(InvalidJobSpec):
    """The spec names a kind that does not exist."""


class UnknownMember(InvalidJobSpec):
    """The spec names a member that is not in the directory."""


class UnknownDataset(InvalidJobSpec):
    """The spec names a dataset that is not in the catalog."""


class UnknownColumn(InvalidJobSpec):
    """The spec names a column the dataset does not have."""


class PolicyForbidden(InvalidJobSpec):
    """A data owner's policy forbids a column (grade, negative list, role)."""

    status_code = 403


class OutputNotToRequester(InvalidJobSpec):
    """An output is sent to someone other than the requester."""

    status_code = 403


class EngineUnsupported(InvalidJobSpec):
    """The kind/model is valid but no engine in this build can run it."""


class JobNotFound(CoordinatorError):
    status_code = 404


class IllegalTransition(CoordinatorError):
    """A lifecycle transition not in the table (e.g. SUCCEEDED -> RUNNING)."""

    status_code = 409


class NotAllowed(CoordinatorError):
    """The caller may not do this to the job (e.g. someone else's results)."""

    status_code = 403


class ResultNotReady(CoordinatorError):
    status_code = 409


class NodeUnavailable(CoordinatorError):
    """A node did not answer (or answered with an error) when the coordinator called it."""

    status_code = 502


class ChainUnavailable(CoordinatorError):
    """The chain is not configured or did not answer."""

    status_code = 503


class FederationError(CoordinatorError):
    """``dcp up`` / ``dcp down`` could not bring the federation up or down."""


class InvalidFederationConfig(FederationError):
    status_code = 422


class NodeRefused(CoordinatorError):
    """A node answered a coordinator call with a named error (policy, expiry, conflict ...)."""

    status_code = 409

    def __init__(self, member: str, status: int, error: str, detail: str) -> None:
        super().__init__(f"{member} refused: {error}: {detail}")
        self.member = member
        self.status = status
        self.error = error
        self.node_detail = detail
