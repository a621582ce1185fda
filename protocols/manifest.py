"""Manifest identifiers and checks shared by the coordinator and the nodes.

The coordinator builds a job's manifest (``coordinator/manifest.py``); each node checks, without
trusting the coordinator, that the manifest says about its data exactly what it approved
(``nodes/services/chain.py``). Both sides must derive the same identifiers, so they live here, and
neither side imports the other:

* dataset id on chain: ``SM3(utf8("dcp.dataset.v1:" + member + "/" + dataset))``;
* manifest hash (``Terms.manifest_hash``): SM3 of the canonical JSON (sorted keys, no whitespace,
  UTF-8) of the whole job manifest — :func:`protocols.crypto.approvals.manifest_hash`;
* job key on chain: ``sha256(utf8(job_id))`` — :func:`protocols.crypto.approvals.job_key`;
* the slice of one member: its inputs (``[{"dataset", "columns"}]`` in manifest order), the purpose,
  requester, kind, receivers (output name -> members), expiry and maximum runs.

How the departments' approvals become an authorization on chain is the federation's
:data:`AuthorizationMode` (see ``coordinator/settings.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from protocols.crypto.approvals import manifest_hash
from protocols.crypto.sm3 import sm3_digest

DATASET_ID_DOMAIN = "dcp.dataset.v1:"

#: ``per_owner``: every dataset owner approves the terms on chain from its own account and the
#: coordinator then writes the authorization (``Authorizations.authorize``: one transaction per owner
#: plus one). ``bls_aggregate``: owners only sign; the coordinator aggregates their BLS signatures over
#: the approval digest and submits one ``authorizeWithBls`` transaction, verified on chain (EIP-2537).
AuthorizationMode = Literal["per_owner", "bls_aggregate"]
AUTHORIZATION_MODES: tuple[str, ...] = ("per_owner", "bls_aggregate")


def dataset_chain_id(member: str, dataset: str) -> bytes:
    """The 32-byte on-chain id of ``member``'s dataset: ``SM3("dcp.dataset.v1:" member "/" dataset)``."""
    return sm3_digest(f"{DATASET_ID_DOMAIN}{member}/{dataset}".encode())


def manifest_sm3(manifest: Mapping[str, Any]) -> bytes:
    """SM3 of the canonical JSON of a whole job manifest (``Terms.manifest_hash``)."""
    return manifest_hash(manifest)


def receivers_of(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Output name -> members that receive it, from a job manifest's ``outputs``."""
    out: dict[str, list[str]] = {}
    for o in manifest.get("outputs") or []:
        out.setdefault(o["name"], []).append(o["receiver"])
    return out


def inputs_of(manifest: Mapping[str, Any], member: str) -> list[dict[str, Any]]:
    """``member``'s inputs in a job manifest, as its slice names them: ``[{"dataset", "columns"}]``."""
    return [{"dataset": i["dataset"], "columns": i["columns"]} for i in manifest["inputs"] if i["member"] == member]


def slice_matches(manifest: Mapping[str, Any], member: str, node_manifest: Mapping[str, Any]) -> bool:
    """Whether the slice a node signed says exactly what the job manifest says about ``member``.

    False (never an exception) for a malformed manifest or slice."""
    try:
        got_expiry = datetime.fromisoformat(node_manifest["expiry"]).astimezone(timezone.utc)
        return (
            node_manifest.get("job_id") == manifest["job_id"]
            and node_manifest.get("purpose") == manifest["purpose"]
            and node_manifest.get("requester") == manifest["requester"]
            and node_manifest.get("kind") == manifest["kind"]
            and node_manifest.get("inputs") == inputs_of(manifest, member)
            and node_manifest.get("receivers") == receivers_of(manifest)
            and int(got_expiry.timestamp()) == int(manifest["expiry_unix"])
            and node_manifest.get("max_runs") == manifest["max_runs"]
            and node_manifest.get("request") == manifest.get("request")  # the requester's signed request
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


__all__ = [
    "AUTHORIZATION_MODES",
    "DATASET_ID_DOMAIN",
    "AuthorizationMode",
    "dataset_chain_id",
    "inputs_of",
    "manifest_sm3",
    "receivers_of",
    "slice_matches",
]
