"""Job specs of the two HE job kinds, for the coordinator and the nodes to validate and route.

``he_score`` and ``secure_stats`` become job kinds like any other: the coordinator validates
the spec (which also goes into the manifest the departments sign), routes each step to its
owner, and before it hands a total to the requester calls :func:`check_total` so a total with
a missing or unexpected contributor is never released.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.he.context import CkksParams
from protocols.he.errors import InvalidQuery, MissingContribution, TooFewDepartments
from protocols.he.stats import StatsQuery
from protocols.he.wire import EnvelopeKind, unpack

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    requester: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    params: CkksParams = Field(default_factory=CkksParams)
    masked: bool = Field(default=True, description="pairwise zero-sum masks among the departments")
    min_departments: int = Field(default=2, ge=1, description="1 reveals that department's contribution")


class HeScoreJobSpec(_Spec):
    """Model-protected scoring: which department's columns (in weight order) take part."""

    departments: dict[str, list[str]] = Field(description="department -> feature columns in weight order")
    requester_features: list[str] = Field(default_factory=list)
    n_rows: int = Field(ge=1, description="rows aligned by the preceding PSI")

    @model_validator(mode="after")
    def _check(self) -> HeScoreJobSpec:
        if self.requester in self.departments:
            raise InvalidQuery("the requester cannot also be one of the departments")
        for d, cols in self.departments.items():
            if not _NAME.match(d) or not cols or len(set(cols)) != len(cols):
                raise InvalidQuery(
                    f"department {d!r}: needs a valid name and distinct, non-empty feature columns"
                )
        if len(self.departments) < self.min_departments:
            raise TooFewDepartments(
                f"{len(self.departments)} department(s) but the policy needs {self.min_departments}: "
                "with one department the bank would learn that department's weighted score per row"
            )
        return self

    @property
    def contributors(self) -> list[str]:
        """Who must appear in the total: every department and the requester's own partial."""
        return sorted([*self.departments, self.requester])


class SecureStatsJobSpec(_Spec):
    """Secure statistics: which department contributes which dataset, and the query."""

    departments: dict[str, str] = Field(description="department -> dataset id")
    query: StatsQuery

    @model_validator(mode="after")
    def _check(self) -> SecureStatsJobSpec:
        if self.query.job_id != self.job_id:
            raise InvalidQuery("the query's job_id must be the job's")
        if len(self.departments) < self.min_departments:
            raise TooFewDepartments(
                f"{len(self.departments)} department(s); the policy needs {self.min_departments}"
            )
        return self

    @property
    def contributors(self) -> list[str]:
        """Who must appear in the total."""
        return sorted(self.departments)


def parse_job(kind: str, spec: object) -> HeScoreJobSpec | SecureStatsJobSpec:
    """Validate a job spec of kind ``he_score`` or ``secure_stats``; named errors only."""
    model = {"he_score": HeScoreJobSpec, "secure_stats": SecureStatsJobSpec}.get(kind)
    if model is None:
        raise InvalidQuery(f"unknown HE job kind {kind!r}")
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        raise InvalidQuery(f"invalid {kind} spec: {exc}") from exc


def check_total(spec: HeScoreJobSpec | SecureStatsJobSpec, total: bytes) -> None:
    """Before release: the total holds exactly the spec's contributors (and the right rows / query)."""
    kind: EnvelopeKind = "partial_scores" if isinstance(spec, HeScoreJobSpec) else "stats"
    header = unpack(total, kind=kind).header
    if header.contributors != spec.contributors:
        raise MissingContribution(
            f"total has contributors {header.contributors}, the job needs {spec.contributors}"
        )
    if isinstance(spec, HeScoreJobSpec) and header.n_values != spec.n_rows:
        raise MissingContribution(f"total holds {header.n_values} rows, the job scores {spec.n_rows}")
    if isinstance(spec, SecureStatsJobSpec) and header.query != spec.query.fingerprint:
        raise MissingContribution("total answers a different query than the job's")
