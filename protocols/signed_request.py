"""Signed job requests: the requester signs its job spec with its SM2 identity key.

The signed request travels with the job: the coordinator verifies it before accepting the job, the
manifest carries it as its ``request`` section (so it is inside the SM3 hash the owners approve and
the chain records), and every data owner's node verifies it again before the request reaches its
inbox, against the requester's key in the chain's Registry. No coordinator can therefore make a job
in a member's name. A withdrawal (revoke) is signed the same way.

What is signed (SM2 with the default user id, over the canonical JSON — sorted keys, no spaces,
UTF-8 — of the object below, prefixed with a domain tag)::

    b"dcp/job-request/v1\n" + canonical_json({"action": "submit", "requester": …, "spec": {…},
                                              "nonce": 32 hex, "signed_at": unix seconds})

``nonce`` makes every request unique (a replayed request is refused by the coordinator and by each
node, which remember the nonces they accepted); ``signed_at`` bounds how old a request may be.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.crypto import sm2
from protocols.crypto.approvals import canonical_json
from protocols.crypto.sm3 import sm3_digest

DOMAIN = b"dcp/job-request/v1\n"
MAX_AGE_S = 900
"""A signed request older than this (or more than a minute in the future) is refused."""


class RequestRefused(Exception):
    """The signed request is missing, forged, tampered with, stale or replayed (the message says which)."""


class SignedRequest(BaseModel):
    """The ``request`` section of a manifest: who asked for the job, and their signature."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["submit", "revoke"] = "submit"
    requester: str = Field(min_length=1, max_length=64)
    spec: dict[str, Any] = Field(default_factory=dict)
    """The job spec as the requester signed it (``submit``); ``{"job_id", "reason"}`` for ``revoke``."""
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    signed_at: int = Field(ge=0)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def message(self) -> bytes:
        """The bytes the signature is over."""
        return DOMAIN + canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    def spec_sm3(self) -> str:
        return sm3_digest(canonical_json(self.spec)).hex()


def sign_request(sm2_private_key: bytes, requester: str, spec: dict[str, Any], *,
                 action: Literal["submit", "revoke"] = "submit", now: int | None = None) -> SignedRequest:
    """Sign ``spec`` (a JSON-able job spec, or ``{"job_id", "reason"}`` for a revoke) as ``requester``."""
    unsigned = SignedRequest(action=action, requester=requester, spec=spec, nonce=secrets.token_hex(16),
                             signed_at=int(time.time() if now is None else now), signature="0" * 128)
    sig = sm2.sign(sm2_private_key, unsigned.message())
    return unsigned.model_copy(update={"signature": sig.hex()})


def verify_request(req: SignedRequest | dict[str, Any], public_key: bytes | None, *,
                   action: Literal["submit", "revoke"] = "submit", max_age_s: float = MAX_AGE_S,
                   now: float | None = None) -> SignedRequest:
    """Check the signature under ``public_key`` (the requester's Registry key), the action and the age.

    Raises RequestRefused; replay (a nonce seen before) is the caller's to check."""
    try:
        r = req if isinstance(req, SignedRequest) else SignedRequest.model_validate(req)
    except Exception:  # noqa: BLE001 - pydantic ValidationError
        raise RequestRefused("the signed request is malformed") from None
    if r.action != action:
        raise RequestRefused(f"the signed request is a {r.action}, not a {action}")
    if public_key is None:
        raise RequestRefused(f"{r.requester!r} is not an active member with an SM2 key in the Registry")
    if not sm2.verify(public_key, r.message(), bytes.fromhex(r.signature)):
        raise RequestRefused(f"the signature is not {r.requester}'s over this request (forged or tampered with)")
    t = time.time() if now is None else now
    if r.signed_at < t - max_age_s or r.signed_at > t + 60:
        raise RequestRefused(f"the signed request is from {int(t - r.signed_at)} s ago; at most {int(max_age_s)} s")
    return r
