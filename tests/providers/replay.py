"""A loopback upstream that answers with a provider's published response, byte for byte: the
network edge of the tests that replay published examples through a running gateway (the
simulator makes up its own answers; these tests need the provider's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.simulator.app import lifespan

Message = MutableMapping[str, Any]


class Replay:
    """An ASGI app answering every request with ``status``, ``content_type`` and ``parts``
    (each sent as its own body chunk, so a stream arrives in pieces); the paths asked for are
    kept in ``paths``. A test sets them (``answer`` for one whole body) before each call."""

    def __init__(self) -> None:
        self.status = 200
        self.parts: list[bytes] = []
        self.content_type = b"application/json"
        self.paths: list[str] = []

    def answer(self, body: bytes, *, status: int = 200,
               content_type: bytes = b"application/json") -> None:
        """Answer the next requests with one whole ``body``."""
        self.status, self.parts, self.content_type = status, [body], content_type

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        more = True
        while more:  # the request body is read whole before answering, as a server does
            more = (await receive()).get("more_body", False)
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type)]})
        for part in self.parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
