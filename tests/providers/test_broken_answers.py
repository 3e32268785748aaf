"""How the transport names an upstream that broke before its answer was whole (a connection
failure: retried, then the next target) and one whose whole answer is unusable (a bad answer:
the next target only), from raw bytes on a loopback socket."""

from __future__ import annotations

import pytest

from app import errors
from app.providers.http import Upstream, new_session
from tests.hardening_upstreams import CHAT_BODY, canned

SHORT = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
         + CHAT_BODY[:10])
"""A 200 whose connection closes 10 bytes into a body of 500."""
UNDECODABLE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
               b"Content-Length: 10\r\nConnection: close\r\n\r\n0123456789")
"""A whole 200 whose gzip body does not decompress."""
NOT_JSON = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n"
            b"Connection: close\r\n\r\n<html>")
HEADERS_ONLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
"""A stream's 200 and headers, then the connection closed with not a byte of body."""
PING_ONLY = HEADERS_ONLY + b": ping\n\n"
"""A stream (ended by the connection's close) that sent a keep-alive comment, then closed."""
FIRST_LINE_CUT = HEADERS_ONLY + b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk"'
"""A stream (ended by the connection's close) cut in the middle of its first ``data:`` line."""
CHUNKED_PING = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n8\r\n: ping\n\n\r\n0\r\n\r\n")
"""A whole chunked stream holding a keep-alive comment and no event."""
CHUNKED_CUT = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
"""A chunked stream's headers, then the connection closed before its last chunk."""


async def _post(answer: bytes, *, stream: bool) -> errors.GatewayError:
    with canned(answer) as upstream:
        async with new_session() as session:
            client = Upstream(session, base_url=f"http://127.0.0.1:{upstream.port}/v1",
                              headers={}, timeout_s=5, connect_timeout_s=5)
            with pytest.raises(errors.GatewayError) as caught:
                if stream:
                    async for _ in client.stream_sse("/chat/completions", {}):
                        pass
                else:
                    await client.post_json("/chat/completions", {})
    return caught.value


@pytest.mark.parametrize(("answer", "stream", "kind", "says"), [
    (SHORT, False, errors.UpstreamConnectError, "cut the response short"),
    (HEADERS_ONLY, True, errors.UpstreamConnectError, "closed the stream before its first"),
    (PING_ONLY, True, errors.UpstreamConnectError, "closed the stream before its first"),
    (FIRST_LINE_CUT, True, errors.UpstreamConnectError, "closed the stream before its first"),
    (CHUNKED_PING, True, errors.UpstreamConnectError, "closed the stream before its first"),
    (CHUNKED_CUT, True, errors.UpstreamConnectError, "cut the response short"),
    (UNDECODABLE, False, errors.BadUpstreamResponse, "does not decode"),
    (NOT_JSON, False, errors.BadUpstreamResponse, "invalid JSON"),
])
async def test_a_broken_connection_and_an_unusable_answer_are_told_apart(
        answer: bytes, stream: bool, kind: type[errors.GatewayError], says: str) -> None:
    """A body cut short of its length, or a stream closed or cut before its first whole event
    (comments or part of a line are not one, whatever the framing), is a broken connection;
    a whole body that does not decode or is not JSON is an unusable answer. Both let the next
    target be tried (nothing reached the client)."""
    error = await _post(answer, stream=stream)
    assert type(error) is kind and says in error.message
    assert error.status_code == 502 and error.retryable
