"""Server-sent events out: relayed chunk by chunk, keep-alives, cancellation on disconnect
(``app.api.watch``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app import errors
from app.api.watch import Watch
from app.gateway import StreamItem
from app.limits import Header

_KEEPALIVE = b": keep-alive\n\n"
_DONE = b"data: [DONE]\n\n"
_END: Any = object()


class Framer(Protocol):
    """How a dialect writes a stream: each item (``None``: a keep-alive), an error after the
    first byte, and its end."""

    def frame(self, item: StreamItem) -> bytes: ...

    def error(self, exc: errors.GatewayError) -> bytes:
        """The frames that end a stream with ``exc``."""
        ...

    def close(self) -> bytes: ...


class OpenAIFramer:
    """OpenAI's: ``data:`` lines, comments as keep-alives, an ``{"error": ...}`` frame, and
    ``[DONE]``."""

    def frame(self, item: StreamItem) -> bytes:
        return _KEEPALIVE if item is None else b"data: " + orjson.dumps(item) + b"\n\n"

    def error(self, exc: errors.GatewayError) -> bytes:
        # Past the first byte the status is sent; OpenAI's SDKs read this frame as an error.
        return b"data: " + orjson.dumps(exc.body()) + b"\n\n" + _DONE

    def close(self) -> bytes:
        return _DONE


OPENAI = OpenAIFramer()


class SSEResponse(Response):
    """An ASGI response relaying gateway stream items as they arrive.

    The first item is already in hand (so that errors before the first byte became ordinary JSON
    error responses). ``None`` items are sent as SSE comments. ``watch`` (armed when the first
    item was awaited) goes on watching for the client's disconnect until the last frame; when
    the client leaves, the relay stops and the item stream is closed, which cancels the upstream
    request.
    """

    def __init__(self, items: AsyncGenerator[StreamItem, None], *,
                 first: StreamItem, watch: Watch, headers: dict[str, str],
                 raw: Sequence[Header] = (), framer: Framer = OPENAI) -> None:
        """``raw``: headers already encoded (a call's ``ModelCall.headers``)."""
        # Deliberately not calling Response.__init__: this response has no body to render.
        self.status_code = 200
        self.background = None
        self._items = items
        self._first = first
        self._watch = watch
        self._framer = framer
        self._sse_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                         (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        self._sse_headers += [(k.encode("latin-1"), v.encode("latin-1"))
                              for k, v in headers.items()]
        self._sse_headers += raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Relayed from the task that served the call, the one the watch cancels: no task of its
        # own, and the first item goes out before any other task is scheduled (each hop through
        # the event loop adds to the client's time to first byte).
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self._sse_headers})
            await send({"type": "http.response.body", "body": self._framer.frame(self._first),
                        "more_body": True})
            await self._relay(send)
        except asyncio.CancelledError:
            if not self._watch.caught():
                raise  # cancelled by someone else (shutdown): not ours to swallow
        finally:
            self._watch.stop()
            await self._items.aclose()

    async def _relay(self, send: Send) -> None:
        """Everything after the first item, then the end (``[DONE]``, in OpenAI's dialect)."""
        framer = self._framer
        try:
            while (item := await anext(self._items, _END)) is not _END:
                frame = framer.frame(item)
                if frame:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
        except errors.GatewayError as exc:
            await send({"type": "http.response.body", "body": framer.error(exc),
                        "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.body", "body": framer.close(), "more_body": False})
