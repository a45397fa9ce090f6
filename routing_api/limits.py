"""Request body size limit: oversized bodies are refused with 413 before the app reads them.

A pure ASGI middleware (no body parsing of its own):

* a request whose ``Content-Length`` exceeds the limit is answered 413 at once, its body
  never read (the server's HTTP framing holds a body to its announced length);
* a request without ``Content-Length`` (chunked) is read up to the limit, counting the
  bytes as they stream in: past it, 413 without reading the rest; under it, the body is
  handed to the app as it came.

The answer is the API's error shape: ``{"detail": [{"kind": "body_too_large", "msg": ...,
"loc": ["body"]}]}``. The limit is ``ROUTING_MAX_BODY_BYTES``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413 (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 on_reject: Callable[[], None] | None = None) -> None:  # fmt: skip
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(send, f"of {declared} bytes")
                return
            await self.app(scope, receive, send)
            return
        # No length announced (chunked): read up to the limit, counting; hand what came to the app afterwards.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees the disconnect
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send, f"of more than {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: str) -> None:
        if self.on_reject is not None:
            self.on_reject()
        body = orjson.dumps({"detail": [{
            "kind": "body_too_large", "loc": ["body"],
            "msg": f"request body {size}: the limit is {self.max_bytes} bytes (ROUTING_MAX_BODY_BYTES)",
        }]})  # fmt: skip
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None
