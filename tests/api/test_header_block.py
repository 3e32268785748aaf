"""``app.serving.HeaderBlockCycle`` writes a response's status line and headers as uvicorn's
own ``RequestResponseCycle`` does, byte for byte, leaves the same state behind (content length,
chunking, keep-alive), refuses the same headers with the same error, and is the cycle
``switchboard serve``'s protocol runs.

These lean on uvicorn's internals (the cycle's constructor, ``send``, its state attributes, and
``HttpToolsProtocol.on_headers_complete`` making the cycle) and say so: they fail loudly when a
uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from app.serving import HeaderBlockCycle, HeaderDeadlineProtocol

Headers = list[tuple[bytes, bytes]]
DEFAULT: Headers = [(b"date", b"Sun, 06 Dec 2026 05:00:00 GMT"), (b"server", b"uvicorn")]
JSON: Headers = [(b"content-type", b"application/json"), (b"content-length", b"27"),
                 (b"X-Request-ID", b"req-1"), (b"x-ratelimit-reset-requests", b"6m0s")]


class Transport:
    """What the cycle writes to, and nothing else."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def cycle(kind: type[RequestResponseCycle], *, method: str, keep_alive: bool,
          default: Headers) -> tuple[RequestResponseCycle, Transport]:
    transport = Transport()
    made = kind(scope={"type": "http", "method": method, "http_version": "1.1"},  # type: ignore[typeddict-item]
                transport=transport, flow=FlowControl(transport),  # type: ignore[arg-type]
                logger=logging.getLogger("test"), access_logger=logging.getLogger("test"),
                access_log=False, default_headers=default, message_event=asyncio.Event(),
                expect_100_continue=False, keep_alive=keep_alive, on_response=lambda: None)
    return made, transport


async def outcome(kind: type[RequestResponseCycle], message: dict[str, Any], *,
                  method: str = "POST", keep_alive: bool = True,
                  default: Headers = DEFAULT) -> tuple[Any, ...]:
    """What sending ``message`` did: the bytes written and the state after, or the error."""
    made, transport = cycle(kind, method=method, keep_alive=keep_alive, default=default)
    try:
        await made.send(message)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return ("raised", type(exc), str(exc))
    return (bytes(transport.written), made.response_started, made.chunked_encoding,
            made.expected_content_length, made.keep_alive, made.waiting_for_100_continue)


def start(status: int, headers: Headers) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "json": (start(200, JSON), {}),
    "stream, no length": (start(200, [(b"content-type", b"text/event-stream")]), {}),
    "head": (start(200, [(b"content-type", b"text/plain")]), {"method": "HEAD"}),
    "no content": (start(204, []), {}),
    "not modified": (start(304, [(b"etag", b"x")]), {}),
    "no defaults, no headers": (start(200, []), {"default": []}),
    "closing": (start(200, JSON), {"keep_alive": False}),
    "two lengths": (start(200, [*JSON, (b"Content-Length", b"5")]), {}),
    "chunked asked": (start(200, [(b"Transfer-Encoding", b"chunked")]), {}),
    "connection close asked": (start(200, [*JSON, (b"connection", b"close")]), {}),
    "tab and latin-1 in a value": (start(200, [(b"x-a", b"a\tb \xe9")]), {}),
    "status 418": (start(418, JSON), {}),
    "space in a name": (start(200, [(b"x a", b"1")]), {}),
    "colon in a name": (start(200, [(b"x:a", b"1")]), {}),
    "newline in a name": (start(200, [(b"x-a\nx-b", b"1")]), {}),
    "empty name": (start(200, [(b"", b"1")]), {}),
    "CRLF in a value": (start(200, [(b"x-a", b"1\r\nx-b: 2")]), {}),
    "NUL in a value": (start(200, [(b"x-a", b"\x00")]), {}),
    "DEL in a value": (start(200, [(b"x-a", b"\x7f")]), {}),
    "bad length": (start(200, [(b"content-length", b"many")]), {}),
    "status 600": (start(600, JSON), {}),
    "a text name": (start(200, [("x-a", b"1")]), {}),  # type: ignore[list-item]
    "a text value": (start(200, [(b"x-a", "1")]), {}),  # type: ignore[list-item]
    "three items": (start(200, [(b"x-a", b"1", b"2")]), {}),  # type: ignore[list-item]
    "lists, not tuples": (start(200, [[b"x-a", b"1"], [b"content-length", b"0"]]), {}),  # type: ignore[list-item]
    "a body first": ({"type": "http.response.body", "body": b""}, {}),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_header_block_is_what_uvicorn_writes(case: str) -> None:
    message, options = CASES[case]
    assert await outcome(HeaderBlockCycle, message, **options) == \
        await outcome(RequestResponseCycle, message, **options)


def test_uvicorns_header_checks_look_at_one_byte_at_a_time() -> None:
    """The block checks bytes one by one (``bytes.translate``): right only while each of
    uvicorn's expressions matches a string exactly when it matches one of its bytes. Every
    pair of bytes, for both."""
    for pattern in (HEADER_RE, HEADER_VALUE_RE):
        single = [pattern.search(bytes([byte])) is not None for byte in range(256)]
        for first in range(256):
            for second in range(256):
                found = pattern.search(bytes([first, second])) is not None
                assert found == (single[first] or single[second]), (pattern, first, second)


async def test_every_byte_is_refused_or_taken_as_uvicorn_does() -> None:
    """Each of the 256 bytes, in a name and in a value."""
    for byte in range(256):
        char = bytes([byte])
        for headers in ([(b"x-" + char, b"1")], [(b"x-a", b"v" + char)]):
            assert await outcome(HeaderBlockCycle, start(200, headers)) == \
                await outcome(RequestResponseCycle, start(200, headers)), (byte, headers)


async def test_the_body_after_the_header_block_is_uvicorns() -> None:
    """After the headers, the body goes through uvicorn's own send (chunked here)."""
    made, transport = cycle(HeaderBlockCycle, method="POST", keep_alive=True, default=[])
    await made.send(start(200, []))  # type: ignore[arg-type]
    await made.send({"type": "http.response.body", "body": b"hi", "more_body": True})
    assert bytes(transport.written).endswith(b"\r\n\r\n2\r\nhi\r\n")


async def app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that answers nothing (the test only looks at the cycle made for it)."""


async def test_switchboard_serves_its_connections_with_the_header_block() -> None:
    """``switchboard serve``'s protocol turns the cycle uvicorn makes for each request into a
    ``HeaderBlockCycle`` before the app runs."""
    config = uvicorn.Config(app=app, http=HeaderDeadlineProtocol, loop="asyncio")
    config.load()
    protocol = HeaderDeadlineProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    transport.get_extra_info = lambda *a, **k: None  # type: ignore[attr-defined]
    transport.set_protocol = lambda *a: None  # type: ignore[attr-defined]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert type(protocol.cycle) is HeaderBlockCycle
    for task in protocol.tasks:
        task.cancel()
