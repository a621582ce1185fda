"""The gateway's boundary types: where a peer's gateway is, what a link request says, what was refused."""

from __future__ import annotations

import json
import struct
import time
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

#: Largest control frame (link request or answer) a gateway reads; anything longer is refused.
MAX_FRAME = 4096


def sm2_key(value: Any) -> bytes:
    """A 64-byte SM2 public key from bytes or hex (ValueError otherwise)."""
    if isinstance(value, str):
        value = bytes.fromhex(value.removeprefix("0x"))
    if not isinstance(value, bytes | bytearray) or len(value) != 64:
        raise ValueError("an SM2 public key is 64 bytes x || y (or 128 hex digits)")
    return bytes(value)


#: A 64-byte SM2 public key in a model: bytes or hex in, hex out.
SM2Key = Annotated[bytes, BeforeValidator(sm2_key), PlainSerializer(lambda k: k.hex(), return_type=str)]


class PeerRoute(BaseModel):
    """How this node reaches one peer of a job: its gateway's address and its registered SM2 key.

    Both come from the node's own configuration or the chain Registry — never from a request body.
    ``links``: the peer's engine links this node's engine dials (default: the job's own link names).
    """

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(gt=0, lt=65536)
    key: SM2Key
    links: tuple[str, ...] | None = None


class LinkRequest(BaseModel):
    """The first frame on a gateway-to-gateway connection, after the handshake: which job's link it is for.

    ``sender`` must be the member whose key the TLS handshake proved; ``target`` the member this
    gateway serves; ``link`` one of the job's local engine links at the target.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    job: str = Field(min_length=1, max_length=200)
    sender: str = Field(alias="from", min_length=1, max_length=200)
    target: str = Field(alias="to", min_length=1, max_length=200)
    link: str = Field(min_length=1, max_length=200)


class LinkAnswer(BaseModel):
    """The inbound gateway's answer: admitted (then raw bytes follow both ways) or refused, and why."""

    ok: bool
    reason: str = ""


class Refusal(BaseModel):
    """One refused connection, as the gateway logged it."""

    at: float = Field(default_factory=time.time)
    side: str  # "inbound" (a peer's gateway asked) or "outbound" (the peer's gateway refused us)
    peer: str  # address of the other end
    member_key: str = ""  # hex of the proven SM2 key, if the handshake got that far
    job: str = ""
    link: str = ""
    reason: str


def encode_frame(model: BaseModel) -> bytes:
    """A control frame: 4-byte big-endian length, then the model's JSON (by alias)."""
    body = model.model_dump_json(by_alias=True).encode()
    if len(body) > MAX_FRAME:
        raise ValueError("control frame too long")
    return struct.pack(">I", len(body)) + body


def frame_length(head: bytes) -> int:
    """The body length a 4-byte frame head announces (ValueError above :data:`MAX_FRAME`)."""
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise ValueError(f"control frame of {n} bytes (at most {MAX_FRAME})")
    return n


def decode(model: type[BaseModel], body: bytes) -> Any:
    """Parse a frame body as ``model`` (ValueError if it is not one)."""
    return model.model_validate(json.loads(body.decode("utf-8")))
