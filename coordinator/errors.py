"""Named errors of the coordinator; each maps to an HTTP status and a JSON body
``{"error": <class name>, "detail": <message>}``."""

from __future__ import annotations

from engines.errors import PartyRefused, PartyUnavailable, PortError


class CoordinatorError(PortError):
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


class NodeUnavailable(CoordinatorError, PartyUnavailable):
    """A node did not answer (or answered with an error) when the coordinator called it."""

    status_code = 502


class ChainUnavailable(CoordinatorError):
    """The chain is not configured or did not answer."""

    status_code = 503


class FederationError(CoordinatorError):
    """``dcp up`` / ``dcp down`` could not bring the federation up or down."""


class InvalidFederationConfig(FederationError):
    status_code = 422


class NodeRefused(CoordinatorError, PartyRefused):
    """A node answered a coordinator call with a named error (policy, expiry, conflict ...)."""

    status_code = 409

    def __init__(self, member: str, status: int, error: str, detail: str) -> None:
        super().__init__(f"{member} refused: {error}: {detail}")
        self.member = member
        self.status = status
        self.error = error
        self.node_detail = detail


class EngineSpecRefused(InvalidJobSpec):
    """A spec breaks a rule of its engine; reported under the engine's error name (``TooFewDepartments``,
    ``AlignmentUnavailable`` …)."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error

    @property
    def name(self) -> str:
        """The engine's error name."""
        return self.error


def spec_refused(error: str, detail: str) -> InvalidJobSpec:
    """The coordinator's error for an engine's ``SpecRefused``: its own class when it has one of that name."""
    cls = globals().get(error)
    if isinstance(cls, type) and issubclass(cls, InvalidJobSpec) and cls is not EngineSpecRefused:
        return cls(detail)
    return EngineSpecRefused(error, detail)
