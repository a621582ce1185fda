"""Checks of a spec against the member directory, the global catalog and the owners' policies.

Pure functions over plain data, so they are easy to test; the node re-checks all of it anyway."""

from __future__ import annotations

from typing import Any

from coordinator.errors import InvalidJobSpec, PolicyForbidden, UnknownColumn, UnknownDataset, UnknownMember
from coordinator.spec import PUBLISHED, JobSpec, parse_spec


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
        label = spec.label
        if label is not None and label.column and (label.member, label.dataset) == (inp.member, inp.dataset):
            wanted.append(label.column)
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


class UnknownTrainingJob(InvalidJobSpec):
    """A vertical_predict job's ``model_from`` is not a succeeded vertical_train job of its requester."""


class PredictColumnsMismatch(InvalidJobSpec):
    """A vertical_predict job's members or columns differ from those of the training job it relies on."""


def check_model_from(spec: JobSpec, training: dict[str, Any] | None) -> None:
    """Check a vertical_predict spec against the training job it names (``model_from``).

    ``training``: None when no such job exists, else ``{"kind", "state", "spec"}`` with ``spec`` the
    training job's validated :class:`JobSpec`. The predict job must be the same requester's, over the
    same members with exactly the same columns per member (the stored model parts expect them), the
    same label holder, and the same algorithm; each node re-checks its own part before it runs."""
    if spec.kind != "vertical_predict":
        return
    ref = spec.model_from
    if training is None:
        raise UnknownTrainingJob(f"model_from: there is no job {ref!r}")
    if training["kind"] != "vertical_train":
        raise UnknownTrainingJob(f"model_from: job {ref!r} is a {training['kind']} job, not vertical_train")
    if training["state"] != "SUCCEEDED":
        raise UnknownTrainingJob(f"model_from: job {ref!r} is {training['state']}; only a succeeded training has a model")
    tspec: JobSpec = training["spec"]
    if tspec.requester != spec.requester:
        raise UnknownTrainingJob(f"model_from: job {ref!r} was requested by {tspec.requester!r}, not {spec.requester!r}")
    if sorted(tspec.members) != sorted(spec.members):
        raise PredictColumnsMismatch(
            f"model_from: the model of {ref!r} has parts at {sorted(tspec.members)}, the job names {sorted(spec.members)}"
        )
    for inp in spec.inputs:
        want = tspec.input_of(inp.member).columns
        if list(inp.columns) != list(want):
            raise PredictColumnsMismatch(
                f"inputs: {inp.member}'s columns {inp.columns} differ from the training job's {want} (model_from {ref!r})"
            )
    assert spec.label is not None and tspec.label is not None
    if spec.label.member != tspec.label.member:
        raise PredictColumnsMismatch(
            f"label: the model of {ref!r} reveals scores to {tspec.label.member!r}, not {spec.label.member!r}"
        )
    if spec.model.algorithm != tspec.model.algorithm:
        raise PredictColumnsMismatch(
            f"model.algorithm: the model of {ref!r} is {tspec.model.algorithm}, not {spec.model.algorithm}"
        )


def resolve_published(
    spec: JobSpec,
    catalog: dict[tuple[str, str], dict[str, dict[str, Any]]],
    policies: dict[str, dict[str, Any]],
) -> JobSpec:
    """``inputs[].columns: published`` → every column the member publishes for that dataset in the catalog
    (in the catalog's order) but the join key, the label, and the columns the member's policy keeps from
    a job of this kind (above its grade limit, or in a negative-list category); the result is validated
    again as a spec (the engine's checks included). A spec without ``published`` is returned as it is."""
    if not spec.uses_published:
        return spec
    raw = spec.model_dump(mode="json", exclude_unset=True)
    for inp in raw["inputs"]:
        if inp.get("columns") != PUBLISHED:
            continue
        cols = catalog.get((inp["member"], inp["dataset"]))
        if cols is None:
            raise UnknownDataset(f"inputs: {inp['member']} has no dataset {inp['dataset']!r} in the catalog")
        skip = {spec.join_key}
        if spec.label is not None and (spec.label.member, spec.label.dataset) == (inp["member"], inp["dataset"]):
            skip.add(spec.label.column)
        policy = policies.get(inp["member"]) or {}
        limit = int((policy.get("max_grade") or {}).get(spec.kind, policy.get("default_max_grade", 4)))
        negative = set(policy.get("negative_list") or [])
        inp["columns"] = [c for c, m in cols.items() if c not in skip and int(m.get("grade", 0)) <= limit
                          and not (m.get("category") and m["category"] in negative)]
    return parse_spec(raw)
