"""The bare ASGI layer: one request, its replies, the simulated error, disconnect watching.

The simulator is a plain ASGI callable rather than a framework app because it sits on a shared core
in benchmarks: each request costs one dict lookup for routing, one ``orjson`` parse and one dump.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class SimError(Exception):
    """A simulated failure, rendered in the dialect of the route that raised it.

    ``kind`` overrides the dialect's default error type for ``status`` (Anthropic's
    ``invalid_request_error``, vLLM's ``BadRequestError``...); ``headers`` are added to the reply.
    """

    def __init__(self, status: int, message: str, *, kind: str | None = None,
                 param: str | None = None, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.headers = headers or []


class Request:
    """One HTTP request: routing facts and the raw headers and body, decoded on first use."""

    __slots__ = ("_data", "_headers", "body", "method", "path", "query", "raw_headers",
                 "receive", "send", "started")

    def __init__(self, *, method: str, path: str, query: str,
                 raw_headers: list[tuple[bytes, bytes]], body: bytes, receive: Receive,
                 send: Send, started: float) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.raw_headers = raw_headers
        self.body = body
        self.receive = receive
        self.send = send
        self.started = started
        self._headers: dict[str, str] | None = None
        self._data: dict[str, Any] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Headers by lower-cased name (the last duplicate wins)."""
        if self._headers is None:
            self._headers = decode_headers(self.raw_headers)
        return self._headers

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; a 400 ``SimError`` for invalid JSON or anything else."""
        if self._data is None:
            try:
                data = orjson.loads(self.body) if self.body else None
            except orjson.JSONDecodeError as exc:
                raise SimError(400, f"The request body is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise SimError(400, "The request body must be a JSON object.")
            self._data = data
        return self._data

    def query_param(self, name: str) -> str | None:
        """The first value of query parameter ``name`` (undecoded; names here are plain ASCII)."""
        for pair in self.query.split("&"):
            key, _, value = pair.partition("=")
            if key == name:
                return value
        return None


def has_knobs(raw: list[tuple[bytes, bytes]]) -> bool:
    """Whether any ``X-Sim-*`` or ``X-Return-Error`` header is present (checked on raw bytes)."""
    for name, _ in raw:  # noqa: SIM110 - a plain loop beats any() on this hot path
        if name.startswith(b"x-sim-") or name == b"x-return-error":
            return True
    return False


def decode_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI header pairs as a dict (names arrive lower-cased; the last duplicate wins)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}


async def read_body(receive: Receive) -> bytes:
    """The whole request body, however many ``http.request`` messages carry it."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """A complete response with a known length."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: bytes, headers: Headers | None = None) -> None:
    """A JSON response; ``body`` is already serialized."""
    await send_bytes(send, status, body, [JSON_TYPE, *headers] if headers else [JSON_TYPE])


class Watcher:
    """Listens for ``http.disconnect`` while a response is being produced.

    Once the body is read, uvicorn's ``receive()`` only returns when the client goes away (or
    when the response completes, so ``close()`` it before the final send's result matters).
    """

    __slots__ = ("_task",)

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(receive))

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    @property
    def gone(self) -> bool:
        """Whether the client has disconnected."""
        return self._task.done()

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (no wait at all when <= 0); False as soon as the client is gone."""
        if seconds > 0 and not self._task.done():
            await asyncio.wait((self._task,), timeout=seconds)
        return not self._task.done()

    async def until_gone(self) -> None:
        """Wait for the client to disconnect, however long that takes."""
        await asyncio.wait((self._task,))

    def close(self) -> None:
        """Stop listening (always call, so no task outlives the request)."""
        self._task.cancel()
