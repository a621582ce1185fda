"""The manifest: the canonical, hashed form of an accepted job spec — what departments approve.

* :func:`build_manifest` turns a validated spec plus directory facts (roles, dataset ids) into a
  plain JSON-able dict; :func:`manifest_sm3` is the SM3 hash of its canonical JSON (sorted keys, no
  whitespace, UTF-8), ``Terms.manifest_hash`` on chain. The identifiers and the slice check are
  shared with the nodes through :mod:`protocols.manifest`.
* :func:`node_request` is the slice one data owner receives in its approvals inbox (only its own
  inputs), in the node's ``ApprovalRequestIn`` shape, with the hash the node will recompute.
* :func:`terms_of` gives the on-chain authorization terms.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from coordinator.spec import JobSpec
from engines import registry
from engines.secretflow.coordinator import protocol_name
from protocols.crypto.approvals import job_key
from protocols.manifest import (
    ApprovalRequestIn,
    Manifest,
    as_manifest,
    dataset_chain_id,
    inputs_of,
    manifest_sm3,
    receivers_of,
    slice_matches,
    slice_of,
)

MANIFEST_VERSION = 1

__all__ = [
    "build_manifest",
    "dataset_chain_id",
    "manifest_sm3",
    "node_request",
    "protocol_name",
    "receivers_of",
    "slice_matches",
    "terms_of",
    "used_columns",
]


def used_columns(spec: JobSpec, member: str) -> list[str]:
    """Every column of ``member`` the computation touches, as the kind's engine says."""
    return registry.engine_for(spec.kind).used_columns(spec, member)


def build_manifest(
    spec: JobSpec, job_id: str, requester_role: str, *, expiry: datetime | None = None
) -> dict[str, Any]:
    """The manifest of ``spec`` as job ``job_id`` (:class:`protocols.manifest.Manifest`, in its wire
    form): the fields every kind has, and its engine's section."""
    engine = registry.engine_for(spec.kind)
    exp = (expiry or spec.expiry_at()).astimezone(timezone.utc).replace(microsecond=0)
    manifest = {
        "version": MANIFEST_VERSION,
        "job_id": job_id,
        "job_key": job_key(job_id).hex(),
        "kind": spec.kind,
        "requester": spec.requester,
        "requester_role": requester_role,
        "purpose": spec.purpose,
        "join_key": spec.join_key,
        "label": spec.label.model_dump() if spec.label else None,
        "inputs": [
            {
                "member": i.member,
                "dataset": i.dataset,
                "dataset_id": dataset_chain_id(i.member, i.dataset).hex(),
                "features": list(i.columns),
                "columns": engine.used_columns(spec, i.member),
            }
            for i in spec.inputs
        ],
        "engine": engine.manifest_section(spec, job_id),
        "outputs": [o.model_dump() for o in spec.outputs],
        "expiry": exp.isoformat(),
        "expiry_unix": int(exp.timestamp()),
        "max_runs": spec.max_runs,
        "timeout_s": spec.timeout_s,
    }
    if spec.model_from is not None:
        # the departments approve scoring with the model parts of exactly this training job
        manifest["model_from"] = spec.model_from
    return Manifest.model_validate(manifest).as_dict()  # typed and checked; the wire form is what is hashed


def node_request(manifest: Manifest | dict[str, Any], member: str) -> dict[str, Any]:
    """The approvals-inbox request for ``member`` (its own inputs only) with its SM3 hash.

    The hash is computed exactly as the node recomputes it (``protocols.manifest.slice_of``)."""
    m = as_manifest(manifest)
    body: dict[str, Any] = {
        "job_id": m.job_id,
        "kind": m.kind,
        "protocol": m.engine.protocol,
        "requester": m.requester,
        "requester_role": m.requester_role,
        "purpose": m.purpose,
        "inputs": inputs_of(m, member),
        "receivers": receivers_of(m),
        "expiry": m.expiry,
        "max_runs": m.max_runs,
    }
    if m.model_from:
        body["model_from"] = m.model_from
    if registry.engine_for(m.kind).slice_carries_engine:
        body["engine"] = m.as_dict()["engine"]  # the officers review it; the node runs only what it signed
    if m.request:  # the requester's signed job request: every node verifies it
        body["request"] = m.request
    req = ApprovalRequestIn.model_validate(body)
    body["manifest_hash"] = manifest_sm3(slice_of(req)).hex()
    return body


def terms_of(manifest: Manifest | dict[str, Any], requester_address: str) -> Any:
    """The on-chain terms (``contracts.models.Terms``) of ``manifest``."""
    from contracts.models import Terms

    m = as_manifest(manifest)
    return Terms(
        job_id=job_key(m.job_id),
        manifest_hash=manifest_sm3(manifest if isinstance(manifest, dict) else m.as_dict()),  # the form given
        dataset_ids=tuple(bytes.fromhex(i.dataset_id) for i in m.inputs),
        requester=requester_address,
        expiry=m.expiry_unix,
        max_runs=m.max_runs,
    )
