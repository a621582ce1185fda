"""Named errors of the node. Each maps to an HTTP status and a JSON body
``{"error": "<ClassName>", "detail": "..."}``. Details never carry cell values."""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error a user of the node can cause."""

    status_code: int = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def name(self) -> str:
        """The error's name as it appears in JSON bodies."""
        return type(self).__name__


class ConfigError(NodeError):
    """The node's configuration (file or values) is unusable."""


class Unauthorized(NodeError):
    """A state-changing request came without the node's admin token."""

    status_code = 401


class DatasetNotFound(NodeError):
    status_code = 404


class DatasetExists(NodeError):
    status_code = 409


class InvalidDatasetName(NodeError):
    status_code = 422


class UploadTooLarge(NodeError):
    """The upload exceeded ``max_upload_bytes``; it was refused while streaming."""

    status_code = 413


class BadUpload(NodeError):
    """The request is not a well-formed multipart upload."""

    status_code = 400


class UnsupportedFormat(NodeError):
    status_code = 415


class BadEncoding(NodeError):
    """A text file is not in the declared encoding."""

    status_code = 422


class EmptyDataFile(NodeError):
    status_code = 422


class BadDataFile(NodeError):
    """The file cannot be parsed as the declared format."""

    status_code = 422


class MissingKeyColumn(NodeError):
    status_code = 422


class SourceError(NodeError):
    """A SQL source (URL, table or query) cannot be read."""

    status_code = 422


class InvalidSchemaEdit(NodeError):
    status_code = 422


class InvalidPolicy(NodeError):
    status_code = 422


class PolicyViolation(NodeError):
    """A request or job is refused by the node's own policy."""

    status_code = 403


class AuditIntegrityError(NodeError):
    """The audit log failed verification."""

    status_code = 409


class DiskFull(NodeError):
    """The node's disk filled up while it wrote (an upload, a dataset, an extract); nothing of it was kept."""

    status_code = 507


class RetentionTooShort(NodeError):
    """A prune asked to keep fewer days of audit log than the floor (180)."""

    status_code = 422


class AnchorError(NodeError):
    """The audit head could not be anchored."""

    status_code = 502


class ApprovalNotFound(NodeError):
    status_code = 404


class ApprovalExists(NodeError):
    status_code = 409


class ApprovalNotPending(NodeError):
    """The request was already approved, rejected or has expired."""

    status_code = 409


class RequestExpired(NodeError):
    status_code = 410


class ManifestMismatch(NodeError):
    """The manifest hash the coordinator sent is not the hash of the manifest it sent."""

    status_code = 422


class KeysUnavailable(NodeError):
    """The node has no usable keystore (not configured, wrong passphrase, damaged)."""

    status_code = 503


# ---------------------------------------------------------------- chain, coordinator and tasks


class ChainUnavailable(NodeError):
    """The chain did not answer, or is not wired on this node."""

    status_code = 503


class ChainRefused(NodeError):
    """The chain reverted a transaction of this node (the contract's error name is in the detail)."""

    status_code = 409


class CoordinatorUnavailable(NodeError):
    """The coordinator did not answer (needed to fetch a job's manifest and terms)."""

    status_code = 502


class ApprovalTermsMismatch(NodeError):
    """The coordinator's job manifest or chain terms disagree with what the department approved."""

    status_code = 409


class NotAuthorized(NodeError):
    """No live authorization on chain for this job and this node's data (missing, expired, revoked,
    not covering the dataset, another manifest, or no runs left), or this node never approved it."""

    status_code = 403


class ColumnNotApproved(NodeError):
    """A task asks for a column beyond this node's approved slice of the manifest."""

    status_code = 422


class TaskMismatch(NodeError):
    """A task request contradicts the approved manifest or the ports this node allocated."""

    status_code = 422


class TaskExists(NodeError):
    status_code = 409


class TaskNotFound(NodeError):
    status_code = 404


class OutputNotFound(NodeError):
    """The task has no such output here (not in the receivers, not produced, or not finished)."""

    status_code = 404


class EngineStartFailed(NodeError):
    """The engine party process could not be started."""

    status_code = 500
