"""Named errors of the chain layer.

Every Solidity custom error of the contracts has a Python class of the same name here (a
subclass of :class:`ContractRevert`); :func:`decode_revert` maps revert data (by 4-byte selector)
to an instance carrying the decoded arguments. A test checks that every error in the ABIs has
its class, so a new Solidity error cannot go unnamed in Python.
"""

from __future__ import annotations

from typing import Any


class ChainError(Exception):
    """Base class of every error raised by :mod:`contracts`."""


class CompilerUnavailable(ChainError):
    """node / the npm solc package is missing, or the sources do not compile."""


class ArtifactMissing(ChainError):
    """A compiled artifact is not where it should be."""


class ArtifactDrift(ChainError):
    """The committed artifacts differ from a fresh compile of the sources."""


class AnvilError(ChainError):
    """The anvil node could not be started or did not answer."""


class DeploymentError(ChainError):
    """A deployment file is missing or malformed, or no contract lives at an address."""


class InvalidInput(ChainError):
    """A value passed to the client is malformed (wrong length, bad hex, wrong type)."""


class TransactionFailed(ChainError):
    """A transaction was mined but reverted, and no custom error could be recovered."""


class ContractRevert(ChainError):
    """A contract call reverted with a custom error; ``error_name`` and ``error_args`` say which."""

    error_name: str = ""

    def __init__(self, error_args: dict[str, Any] | None = None, message: str | None = None) -> None:
        self.error_args: dict[str, Any] = dict(error_args or {})
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.error_args.items())
        super().__init__(message or f"{self.error_name or type(self).__name__}({shown}): {self.__doc__}")


class UnknownRevert(ContractRevert):
    """The call reverted with data no known error matches (a panic, a plain revert, or no data)."""


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


class AlreadyApproved(ContractRevert):
    """This governor already approved this proposal."""

    error_name = "AlreadyApproved"


class AlreadyBound(ContractRevert):
    """The registry's contracts are already bound."""

    error_name = "AlreadyBound"


class AlreadyRevoked(ContractRevert):
    """The authorization is already revoked."""

    error_name = "AlreadyRevoked"


class AnchorNotAdvancing(ContractRevert):
    """An audit anchor must cover more entries than the node's previous one."""

    error_name = "AnchorNotAdvancing"


class ApprovalMissing(ContractRevert):
    """A dataset's owner has not approved these exact terms."""

    error_name = "ApprovalMissing"


class AuthorizationExists(ContractRevert):
    """This job already has an authorization."""

    error_name = "AuthorizationExists"


class AuthorizationExpired(ContractRevert):
    """The authorization has expired."""

    error_name = "AuthorizationExpired"


class AuthorizationRevoked(ContractRevert):
    """The authorization was revoked."""

    error_name = "AuthorizationRevoked"


class DatasetExists(ContractRevert):
    """The dataset id is already registered."""

    error_name = "DatasetExists"


class DatasetNotAuthorized(ContractRevert):
    """The dataset is not covered by the job's authorization."""

    error_name = "DatasetNotAuthorized"


class DatasetNotInTerms(ContractRevert):
    """The approved dataset is not part of the terms."""

    error_name = "DatasetNotInTerms"


class DuplicateDataset(ContractRevert):
    """A dataset appears twice in the terms."""

    error_name = "DuplicateDataset"


class EmptyName(ContractRevert):
    """A member needs a name."""

    error_name = "EmptyName"


class GovernorExists(ContractRevert):
    """The address is already a governor."""

    error_name = "GovernorExists"


class InactiveOwner(ContractRevert):
    """A dataset's owner was removed from the federation."""

    error_name = "InactiveOwner"


class InvalidAggregateSignature(ContractRevert):
    """The aggregated BLS signature does not verify for the owners' keys and terms."""

    error_name = "InvalidAggregateSignature"


class InvalidBlsKey(ContractRevert):
    """The BLS public key is malformed, not in G1's subgroup, or its compressed form differs."""

    error_name = "InvalidBlsKey"


class InvalidDatasetCount(ContractRevert):
    """Terms must name between 1 and 64 datasets."""

    error_name = "InvalidDatasetCount"


class InvalidDatasetId(ContractRevert):
    """A dataset id must be non-zero."""

    error_name = "InvalidDatasetId"


class InvalidExpiry(ContractRevert):
    """The expiry must lie in the future."""

    error_name = "InvalidExpiry"


class InvalidGrade(ContractRevert):
    """Sensitivity grades run from 1 to 4."""

    error_name = "InvalidGrade"


class InvalidJobId(ContractRevert):
    """A job id must be non-zero."""

    error_name = "InvalidJobId"


class InvalidMaxRuns(ContractRevert):
    """At least one run must be allowed."""

    error_name = "InvalidMaxRuns"


class InvalidProofOfPossession(ContractRevert):
    """The BLS proof of possession does not verify."""

    error_name = "InvalidProofOfPossession"


class InvalidRole(ContractRevert):
    """Role NONE cannot be admitted."""

    error_name = "InvalidRole"


class InvalidSm2Key(ContractRevert):
    """An SM2 public key is 64 bytes (x || y)."""

    error_name = "InvalidSm2Key"


class InvalidThreshold(ContractRevert):
    """A threshold must lie in [1, number of governors]."""

    error_name = "InvalidThreshold"


class InvalidTimes(ContractRevert):
    """A run must not finish before it started (startedAt <= finishedAt)."""

    error_name = "InvalidTimes"


class FinishedInFuture(ContractRevert):
    """The run claims to finish after the recording block's time plus the contract's tolerance."""

    error_name = "FinishedInFuture"


class StartedBeforeAuthorization(ContractRevert):
    """The run claims to start before its authorization was written (less the contract's tolerance)."""

    error_name = "StartedBeforeAuthorization"


class EmptyBatch(ContractRevert):
    """A batch of receipts must hold at least one receipt."""

    error_name = "EmptyBatch"


class BatchItemRefused(ContractRevert):
    """One receipt of a batch was refused, so nothing of the batch was recorded.

    ``error_args["index"]`` is the receipt's position in the batch and :attr:`item_error` the named
    error that receipt alone would have raised (decoded from ``error_args["reason"]``)."""

    error_name = "BatchItemRefused"
    item_error: ContractRevert | None = None


class MaxRunsReached(ContractRevert):
    """The dataset was already used the maximum number of times under this authorization."""

    error_name = "MaxRunsReached"


class MemberExists(ContractRevert):
    """The account is already an active member."""

    error_name = "MemberExists"


class MissingBlsKey(ContractRevert):
    """A dataset's owner has no BLS key, so it cannot take part in an aggregate."""

    error_name = "MissingBlsKey"


class NotAllowedToRevoke(ContractRevert):
    """Only an approver of the authorization or a governor may revoke it."""

    error_name = "NotAllowedToRevoke"


class NotCoordinator(ContractRevert):
    """Only an active COORDINATOR writes authorizations."""

    error_name = "NotCoordinator"


class NotDataHolder(ContractRevert):
    """Only DEPARTMENT and BANK members register datasets."""

    error_name = "NotDataHolder"


class NotDatasetOwner(ContractRevert):
    """The caller does not own the dataset."""

    error_name = "NotDatasetOwner"


class NotDeployer(ContractRevert):
    """Only the deployer binds the registry's contracts."""

    error_name = "NotDeployer"


class NotGovernor(ContractRevert):
    """The caller is not a governor."""

    error_name = "NotGovernor"


class NotMember(ContractRevert):
    """The caller is not an active member."""

    error_name = "NotMember"


class ProposalAlreadyExecuted(ContractRevert):
    """The proposal has already been executed."""

    error_name = "ProposalAlreadyExecuted"


class RequesterNotMember(ContractRevert):
    """The requester is not an active member."""

    error_name = "RequesterNotMember"


class UnknownAuthorization(ContractRevert):
    """No authorization exists for this job."""

    error_name = "UnknownAuthorization"


class UnknownDataset(ContractRevert):
    """The dataset is not registered."""

    error_name = "UnknownDataset"


class UnknownGovernor(ContractRevert):
    """The address is not a governor."""

    error_name = "UnknownGovernor"


class UnknownMember(ContractRevert):
    """The account is not an active member."""

    error_name = "UnknownMember"


class UnknownProposal(ContractRevert):
    """No proposal has this id."""

    error_name = "UnknownProposal"


class ZeroAddress(ContractRevert):
    """The zero address is not allowed here."""

    error_name = "ZeroAddress"


#: Python class of every Solidity custom error, by name.
REVERT_CLASSES: dict[str, type[ContractRevert]] = {
    cls.error_name: cls for cls in ContractRevert.__subclasses__() if cls.error_name
}
