"""The manifest: the canonical, hashed form of an accepted job spec — what departments approve.

* :func:`build_manifest` turns a validated spec plus directory facts (roles, dataset ids) into a
  plain JSON-able dict; :func:`canonical_bytes` is its canonical JSON (sorted keys, no whitespace,
  UTF-8) and :func:`manifest_sm3` its SM3 hash (``Terms.manifest_hash`` on chain).
* :func:`node_request` is the slice one data owner receives in its approvals inbox (only its own
  inputs), in the node's ``ApprovalRequestIn`` shape, with the hash the node will recompute.
* :func:`terms_of` gives the on-chain authorization terms.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from coordinator.spec import JobSpec
from protocols.crypto.approvals import canonical_json, job_key
from protocols.crypto.sm3 import sm3_digest

MANIFEST_VERSION = 1
DATASET_ID_DOMAIN = "dcp.dataset.v1:"


def dataset_chain_id(member: str, dataset: str) -> bytes:
    """The 32-byte on-chain id of ``member``'s dataset: SM3("dcp.dataset.v1:" member "/" dataset)."""
    return sm3_digest(f"{DATASET_ID_DOMAIN}{member}/{dataset}".encode())


def canonical_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8."""
    return canonical_json(manifest)


def manifest_sm3(manifest: dict[str, Any]) -> bytes:
    """SM3 of the canonical JSON of ``manifest``."""
    return sm3_digest(canonical_bytes(manifest))


def used_columns(spec: JobSpec, member: str) -> list[str]:
    """Every column of ``member`` the computation touches: join key, features, label."""
    inp = spec.input_of(member)
    cols = [spec.join_key, *inp.columns]
    if spec.label is not None and spec.label.member == member:
        cols.append(spec.label.column)
    return cols


def protocol_name(spec: JobSpec) -> str:
    """A short engine/protocol label (shown to approvers)."""
    if spec.kind == "psi":
        return f"secretflow/psi-{spec.psi_protocol}"
    return f"secretflow/psi-{spec.psi_protocol}+{spec.model.algorithm}"


def build_manifest(
    spec: JobSpec, job_id: str, requester_role: str, *, expiry: datetime | None = None
) -> dict[str, Any]:
    """The manifest of ``spec`` as job ``job_id``."""
    exp = (expiry or spec.expiry_at()).astimezone(timezone.utc).replace(microsecond=0)
    return {
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
                "columns": used_columns(spec, i.member),
            }
            for i in spec.inputs
        ],
        "engine": {
            "name": "secretflow",
            "protocol": protocol_name(spec),
            "psi_protocol": spec.psi_protocol,
            "algorithm": spec.model.algorithm if spec.kind != "psi" else None,
            "params": spec.model.params if spec.kind != "psi" else {},
        },
        "outputs": [o.model_dump() for o in spec.outputs],
        "expiry": exp.isoformat(),
        "expiry_unix": int(exp.timestamp()),
        "max_runs": spec.max_runs,
        "timeout_s": spec.timeout_s,
    }


def receivers_of(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Output name -> members that receive it."""
    out: dict[str, list[str]] = {}
    for o in manifest["outputs"]:
        out.setdefault(o["name"], []).append(o["receiver"])
    return out


def node_request(manifest: dict[str, Any], member: str) -> dict[str, Any]:
    """The approvals-inbox request for ``member`` (its own inputs only) with its SM3 hash.

    The hash is computed exactly as the node recomputes it (``nodes.services.approvals.manifest_of``)."""
    from nodes.models import ApprovalRequestIn
    from nodes.services.approvals import manifest_of

    body = {
        "job_id": manifest["job_id"],
        "kind": manifest["kind"],
        "protocol": manifest["engine"]["protocol"],
        "requester": manifest["requester"],
        "requester_role": manifest["requester_role"],
        "purpose": manifest["purpose"],
        "inputs": [
            {"dataset": i["dataset"], "columns": i["columns"]} for i in manifest["inputs"] if i["member"] == member
        ],
        "receivers": receivers_of(manifest),
        "expiry": manifest["expiry"],
        "max_runs": manifest["max_runs"],
    }
    req = ApprovalRequestIn.model_validate(body)
    body["manifest_hash"] = manifest_sm3(manifest_of(req)).hex()
    return body


def slice_matches(manifest: dict[str, Any], member: str, node_manifest: dict[str, Any]) -> bool:
    """Whether a node's signed slice says exactly what the job manifest says about ``member``."""
    mine = [
        {"dataset": i["dataset"], "columns": i["columns"]} for i in manifest["inputs"] if i["member"] == member
    ]
    got_expiry = datetime.fromisoformat(node_manifest["expiry"]).astimezone(timezone.utc)
    return (
        node_manifest.get("job_id") == manifest["job_id"]
        and node_manifest.get("purpose") == manifest["purpose"]
        and node_manifest.get("requester") == manifest["requester"]
        and node_manifest.get("kind") == manifest["kind"]
        and node_manifest.get("inputs") == mine
        and node_manifest.get("receivers") == receivers_of(manifest)
        and int(got_expiry.timestamp()) == manifest["expiry_unix"]
        and node_manifest.get("max_runs") == manifest["max_runs"]
    )


def terms_of(manifest: dict[str, Any], requester_address: str) -> Any:
    """The on-chain terms (``contracts.models.Terms``) of ``manifest``."""
    from contracts.models import Terms

    return Terms(
        job_id=job_key(manifest["job_id"]),
        manifest_hash=manifest_sm3(manifest),
        dataset_ids=tuple(bytes.fromhex(i["dataset_id"]) for i in manifest["inputs"]),
        requester=requester_address,
        expiry=manifest["expiry_unix"],
        max_runs=manifest["max_runs"],
    )
