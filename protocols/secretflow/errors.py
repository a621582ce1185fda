"""Named errors of the SecretFlow runner (all subclass :class:`DcpRunError`)."""

from __future__ import annotations


class DcpRunError(Exception):
    """Base class of every error a multi-party run reports."""


class JobSpecError(DcpRunError):
    """The job spec itself is invalid (unknown label party, duplicate names, …)."""


class PartyFailedError(DcpRunError):
    """A party process exited non-zero; the other parties were stopped."""

    def __init__(self, party: str, exit_code: int, stderr_tail: str, reason: str = "") -> None:
        self.party = party
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.reason = reason
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
        head = f"party {party!r} failed ({how})"
        if reason:
            head += f": {reason}"
        super().__init__(f"{head}\n--- stderr tail of {party} ---\n{stderr_tail}".rstrip())


class PartyInputError(PartyFailedError):
    """A party rejected its own input (missing file, missing column, duplicate keys …)."""


class EmptyIntersectionError(PartyFailedError):
    """PSI found no common key, so there is nothing to train on (reported by the label holder)."""


class SingleClassLabelError(PartyFailedError):
    """The training rows' labels are all one class: nothing to learn and AUC is undefined."""


class ModelInvalidError(PartyFailedError):
    """A stored model part is missing, was modified, or does not fit the job or the other parties' parts."""


class RunTimeoutError(DcpRunError):
    """The run did not finish within ``timeout_s``; every party was stopped."""

    def __init__(self, timeout_s: float, running: list[str]) -> None:
        self.timeout_s = timeout_s
        self.running = running
        super().__init__(f"run timed out after {timeout_s:g}s; still running: {', '.join(running) or '-'}")


class RunCancelledError(DcpRunError):
    """The runner received SIGTERM; every party was stopped."""
