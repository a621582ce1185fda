"""Checks of a spec against the member directory, the global catalog and the owners' policies.

Pure functions over plain data, so they are easy to test; the node re-checks all of it anyway."""

from __future__ import annotations

from typing import Any

from coordinator.errors import PolicyForbidden, UnknownColumn, UnknownDataset, UnknownMember
from coordinator.spec import JobSpec


def check_against_catalog(
    spec: JobSpec,
    members: dict[str, dict[str, Any]],
    catalog: dict[tuple[str, str], dict[str, dict[str, Any]]],
    policies: dict[str, dict[str, Any]],
) -> None:
    """Raise the first named error found.

    ``members``: name -> {"role", "active", "node_url"}; ``catalog``: (member, dataset) -> column name ->
    column metadata ({"grade", "category", ...}); ``policies``: member -> node policy JSON."""
    req = members.get(spec.requester)
    if req is None or not req.get("active", True):
        raise UnknownMember(f"requester: {spec.requester!r} is not an active member of the federation")
    role = req["role"]
    for inp in spec.inputs:
        m = members.get(inp.member)
        if m is None or not m.get("active", True):
            raise UnknownMember(f"inputs: {inp.member!r} is not an active member of the federation")
        if not m.get("node_url"):
            raise UnknownMember(f"inputs: member {inp.member!r} has no node to run on")
        cols = catalog.get((inp.member, inp.dataset))
        if cols is None:
            raise UnknownDataset(f"inputs: {inp.member} has no dataset {inp.dataset!r} in the catalog")
        wanted = [*([spec.join_key] if spec.join_key else []), *inp.columns]  # secure_stats has no join key
        if spec.label is not None and spec.label.member == inp.member and spec.label.dataset == inp.dataset:
            wanted.append(spec.label.column)
        for c in wanted:
            if c not in cols:
                what = "join key" if c == spec.join_key else ("label" if spec.label and c == spec.label.column else "column")
                raise UnknownColumn(f"inputs: {inp.member}/{inp.dataset} has no {what} {c!r}")
        _check_policy(spec, role, inp.member, inp.dataset, wanted, cols, policies.get(inp.member))


def _check_policy(
    spec: JobSpec,
    role: str,
    member: str,
    dataset: str,
    columns: list[str],
    meta: dict[str, dict[str, Any]],
    policy: dict[str, Any] | None,
) -> None:
    if policy is None:
        return  # not pulled yet: the node checks on filing
    allowed_requesters = policy.get("allowed_requesters") or []
    if allowed_requesters and spec.requester not in allowed_requesters:
        raise PolicyForbidden(f"{member}'s policy does not accept requests from {spec.requester!r}")
    if role not in policy.get("allowed_roles", [role]):
        raise PolicyForbidden(f"{member}'s policy does not accept requests from role {role!r}")
    limit = (policy.get("max_grade") or {}).get(spec.kind, policy.get("default_max_grade", 4))
    negative = set(policy.get("negative_list") or [])
    for c in columns:
        m = meta[c]
        if m.get("category") and m["category"] in negative:
            raise PolicyForbidden(f"{member}/{dataset}.{c} is in {member}'s negative-list category {m['category']!r}")
        if int(m.get("grade", 0)) > int(limit):
            raise PolicyForbidden(
                f"{member}/{dataset}.{c} has grade {m['grade']}; {member}'s policy allows at most {limit} for {spec.kind}"
            )
