"""A request-body cap as plain ASGI middleware (no framework imports): bodies over ``cap`` bytes are
refused with 413 ``{"error": "BodyTooLarge", …}`` before the application parses a byte of them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """Read a request body up to ``cap()`` bytes (a lying or absent Content-Length does not help) and
    replay it to ``app``; over the cap answer 413. Paths in ``exempt`` stream under their own cap; a path
    under a prefix of ``prefix_caps`` (``(prefix, cap)`` pairs, first match) gets that cap instead.
    ``on_refusal(scope, detail)`` (awaitable) records the refusal (e.g. in an audit log)."""

    def __init__(self, app: Any, cap: Callable[[], int], exempt: Iterable[str] = (),
                 on_refusal: Callable[[Scope, str], Awaitable[None]] | None = None,
                 prefix_caps: Iterable[tuple[str, Callable[[], int]]] = ()) -> None:
        self.app = app
        self.cap = cap
        self.exempt = frozenset(exempt)
        self.on_refusal = on_refusal
        self.prefix_caps = tuple(prefix_caps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        cap = next((c() for prefix, c in self.prefix_caps if scope["path"].startswith(prefix)), None)
        cap = self.cap() if cap is None else cap
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        too_big = not declared.isdigit() or int(declared) > cap
        chunks: list[bytes] = []
        size, more = 0, not too_big
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                too_big = True
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if too_big:
            detail = f"the request body is larger than this service accepts ({cap} bytes)"
            if self.on_refusal is not None:
                await self.on_refusal(scope, detail)
            body = json.dumps({"error": "BodyTooLarge", "detail": detail}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
