"""Errors an engine raises or catches, named by what went wrong, not by who noticed.

The ports (the coordinator's node client, its stores) raise their own errors; the ones an engine
must tell apart derive from the markers here, so an engine catches them without importing the
coordinator."""

from __future__ import annotations


class PortError(Exception):
    """An error a port raised. ``name`` (the error's name) and ``detail`` (what happened)."""

    name: str
    detail: str


class PartyRefused(PortError):
    """A party's node answered with a named refusal: ``member``, ``error`` (its name), ``node_detail``."""

    member: str
    error: str
    node_detail: str


class PartyUnavailable(PortError):
    """A party's node did not answer (``detail`` says how)."""


class SpecRefused(Exception):
    """A spec breaks a rule of the engine; reported under ``error`` (e.g. ``TooFewDepartments``)."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


class StepRefused(Exception):
    """A node engine's step refuses by name (``error``, e.g. ``SandboxOutputRefused``): the node fails
    the task and answers the caller with that name and ``detail``."""

    def __init__(self, error: str, detail: str, status_code: int = 409) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.status_code = status_code
