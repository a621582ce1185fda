"""Manifest identifiers and checks shared by the coordinator and the nodes.

The coordinator builds a job's manifest (``coordinator/manifest.py``); each node checks, without
trusting the coordinator, that the manifest says about its data exactly what it approved
(``nodes/services/chain.py``). Both sides must derive the same identifiers, so they live here, and
neither side imports the other:

* dataset id on chain: ``SM3(utf8("dcp.dataset.v1:" + member + "/" + dataset))``;
* manifest hash (``Terms.manifest_hash``): SM3 of the canonical JSON (sorted keys, no whitespace,
  UTF-8) of the whole job manifest — :func:`protocols.crypto.approvals.manifest_hash`;
* job key on chain: ``sha256(utf8(job_id))`` — :func:`protocols.crypto.approvals.job_key`;
* the slice of one member (:class:`ApprovalRequestIn`, canonical form :func:`slice_of`): its inputs (``[{"dataset", "columns"}]`` in manifest order), the purpose,
  requester, kind, receivers (output name -> members), expiry and maximum runs.

How the departments' approvals become an authorization on chain is the federation's
:data:`AuthorizationMode` (see ``coordinator/settings.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
)

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


def receivers_of(manifest: Manifest | Mapping[str, Any]) -> dict[str, list[str]]:
    """Output name -> members that receive it, from a job manifest's ``outputs``."""
    out: dict[str, list[str]] = {}
    for o in as_manifest(manifest).outputs:
        out.setdefault(o.name, []).append(o.receiver)
    return out


def inputs_of(manifest: Manifest | Mapping[str, Any], member: str) -> list[dict[str, Any]]:
    """``member``'s inputs in a job manifest, as its slice names them: ``[{"dataset", "columns"}]``."""
    return [{"dataset": i.dataset, "columns": i.columns} for i in as_manifest(manifest).inputs if i.member == member]


def slice_matches(manifest: Manifest | Mapping[str, Any], member: str, node_manifest: Mapping[str, Any]) -> bool:
    """Whether the slice a node signed says exactly what the job manifest says about ``member``.

    False (never an exception) for a malformed manifest or slice."""
    try:
        m = as_manifest(manifest)
        got_expiry = datetime.fromisoformat(node_manifest["expiry"]).astimezone(timezone.utc)
        return (
            node_manifest.get("job_id") == m.job_id
            and node_manifest.get("purpose") == m.purpose
            and node_manifest.get("requester") == m.requester
            and node_manifest.get("kind") == m.kind
            and node_manifest.get("inputs") == inputs_of(m, member)
            and node_manifest.get("receivers") == receivers_of(m)
            and int(got_expiry.timestamp()) == m.expiry_unix
            and node_manifest.get("max_runs") == m.max_runs
            and node_manifest.get("request") == m.request  # the requester's signed request
            and ("engine" not in node_manifest  # when the slice carries the engine section
                 or node_manifest["engine"] == m.as_dict()["engine"])
        )
    except (KeyError, TypeError, ValueError, AttributeError):  # pydantic's ValidationError is a ValueError
        return False


class JobColumns(BaseModel):
    """Columns of one dataset."""

    dataset: str
    columns: list[str]


class ApprovalRequestIn(BaseModel):
    """A member's slice of a job manifest: what the coordinator sends its node, what the node signs."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=200)
    kind: str
    protocol: str
    requester: str
    requester_role: str
    purpose: str = Field(min_length=1)
    inputs: list[JobColumns] = Field(min_length=1)
    receivers: dict[str, list[str]] = Field(min_length=1)
    """Output name -> members that receive it."""
    expiry: datetime
    max_runs: int = Field(default=1, ge=1)
    aggregate_group_size: int | None = None
    manifest_hash: str | None = None
    """The coordinator's SM3 of the manifest; when given, the node checks it against its own."""
    job_manifest_hash: str | None = Field(default=None, pattern=r"^(0x)?[0-9a-fA-F]{64}$")
    """SM3 of the whole job manifest (``Terms.manifest_hash``). When given it is part of the signed
    slice, and the node approves on chain only terms carrying exactly this hash."""
    model_from: str | None = Field(default=None, min_length=1, max_length=200)
    """vertical_predict: the training job whose stored model part this node would use (signed with the
    slice; absent from the canonical form of every other kind, so their hashes are unchanged)."""
    request: dict[str, Any] | None = None
    """The requester's signed job request (``protocols.signed_request.SignedRequest``): part of the
    signed slice; the node verifies it against the requester's Registry key before filing."""
    engine: dict[str, Any] | None = None
    """The manifest's engine section, for an engine whose node runs exactly what its officers reviewed
    (``engines.base.Engine.slice_carries_engine``, e.g. code); absent from every other kind's slice."""

    @model_serializer(mode="wrap")
    def _omit_no_model(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        for optional in ("model_from", "request", "engine"):
            if isinstance(data, dict) and data.get(optional) is None:
                data.pop(optional, None)
        return data


def slice_of(req: ApprovalRequestIn) -> dict[str, Any]:
    """The canonical slice a node signs (everything but the coordinator's hash claim); its SM3 is the
    request's hash on both sides."""
    exclude = {"manifest_hash"} | ({"job_manifest_hash"} if req.job_manifest_hash is None else set())
    m = req.model_dump(mode="json", exclude=exclude)
    if req.job_manifest_hash is not None:
        m["job_manifest_hash"] = req.job_manifest_hash.lower().removeprefix("0x")
    expiry = req.expiry if req.expiry.tzinfo else req.expiry.replace(tzinfo=timezone.utc)
    m["expiry"] = expiry.astimezone(timezone.utc).isoformat()
    return m


# ---------------------------------------------------------------- the manifest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ManifestInput(_Strict):
    """One member's dataset in a job: its on-chain id, the features, every column the job touches."""

    member: str
    dataset: str
    dataset_id: str
    features: list[str]
    columns: list[str]


class ManifestLabel(_Strict):
    """Where the label lives (its holder receives the scores)."""

    member: str
    dataset: str
    column: str | None = None


class ManifestOutput(_Strict):
    """One output and the member it is sealed to."""

    name: str
    receiver: str


class SecretFlowSection(_Strict):
    """The SecretFlow engine's section: the PSI protocol, the algorithm and its approved parameters."""

    name: Literal["secretflow"]
    protocol: str
    psi_protocol: str
    algorithm: str | None
    params: dict[str, Any]


class CkksSection(_Strict):
    """The CKKS engine's section: the whole protocol spec, the aligning job and the model commitment."""

    name: Literal["tenseal-ckks"]
    protocol: str
    he: dict[str, Any]
    aligned_by: str | None
    model: str | None
    model_commitment: str | None


class OtherEngineSection(BaseModel):
    """The section of an engine this module does not know by name (a plug-in): kept as it came."""

    model_config = ConfigDict(extra="allow")

    name: str
    protocol: str


def _engine_tag(v: Any) -> str:
    name = v.get("name") if isinstance(v, dict) else getattr(v, "name", None)
    return name if name in ("secretflow", "tenseal-ckks") else "other"


EngineSection = Annotated[
    Annotated[SecretFlowSection, Tag("secretflow")] | Annotated[CkksSection, Tag("tenseal-ckks")]
    | Annotated[OtherEngineSection, Tag("other")],
    Discriminator(_engine_tag),
]


class Manifest(_Strict):
    """A job's manifest: what every department approves and ``Terms.manifest_hash`` hashes.

    Its wire form (:meth:`as_dict`, the JSON the coordinator stores and serves) is what is hashed,
    exactly as before the model existed: ``model_from`` is left out unless it is set."""

    version: int
    job_id: str
    job_key: str
    kind: str
    requester: str
    requester_role: str
    purpose: str
    join_key: str | None
    label: ManifestLabel | None
    inputs: list[ManifestInput]
    engine: EngineSection
    outputs: list[ManifestOutput]
    expiry: str
    expiry_unix: int
    max_runs: int
    timeout_s: float
    model_from: str | None = None
    request: dict[str, Any] | None = None
    """The requester's signed job request (``protocols.signed_request``), inside the hash the owners approve."""

    def as_dict(self) -> dict[str, Any]:
        """The wire form (JSON types)."""
        data = self.model_dump(mode="json")
        for optional in ("model_from", "request"):
            if data.get(optional) is None:
                data.pop(optional, None)
        return data

    def sm3(self) -> bytes:
        """``Terms.manifest_hash``: SM3 of the canonical JSON of the wire form."""
        return manifest_hash(self.as_dict())

    def input_of(self, member: str) -> ManifestInput:
        """``member``'s input (KeyError if it brings none)."""
        for i in self.inputs:
            if i.member == member:
                return i
        raise KeyError(member)


def as_manifest(manifest: Manifest | Mapping[str, Any]) -> Manifest:
    """``manifest`` typed: a stored or served wire form is validated (pydantic's ValidationError if malformed)."""
    return manifest if isinstance(manifest, Manifest) else Manifest.model_validate(manifest)


__all__ = [
    "AUTHORIZATION_MODES",
    "CkksSection",
    "EngineSection",
    "Manifest",
    "as_manifest",
    "ManifestInput",
    "ManifestLabel",
    "ManifestOutput",
    "OtherEngineSection",
    "SecretFlowSection",
    "ApprovalRequestIn",
    "JobColumns",
    "slice_of",
    "DATASET_ID_DOMAIN",
    "AuthorizationMode",
    "dataset_chain_id",
    "inputs_of",
    "manifest_sm3",
    "receivers_of",
    "slice_matches",
]
