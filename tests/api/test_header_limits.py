"""A request's headers are bounded (``app.serving.UpgradeIgnoringProtocol``): past
``SWITCHBOARD_MAX_HEADER_BYTES`` (64 KiB by default) of request line and header lines, or past
100 header fields, a request gets a 431 in OpenAI's error shape and its connection is closed,
however the headers arrive (trickled, one endless line, all at once, on a kept-alive
connection); requests under the limits, big bodies and pipelined requests included, are served.
Through `switchboard serve`, with raw sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from app.serving import MAX_HEADER_FIELDS
from tests.api.test_connection_limits import (
    DEADLINE_S,
    Reply,
    closed_by_server,
    connect,
    read_reply,
    serve_cli,
)
from tests.api.test_http_parsing import pipelined_replies

DEFAULT_LIMIT = 64 * 1024
REQUEST_LINE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`switchboard serve` with the embedded config and the default limits, one for the
    module (header deadline long enough for a trickle to pass the limit first)."""
    with serve_cli(tmp_path_factory.mktemp("headers"),
                   {"SWITCHBOARD_HEADER_TIMEOUT_S": "60"}) as url:
        yield url


def assert_refused(reply: Reply, sock: socket.socket, *, limit: int = DEFAULT_LIMIT) -> None:
    """A 431 in OpenAI's error shape naming the limits, and the connection closed."""
    assert reply.status == 431, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    error = reply.error()
    assert (error["type"], error["code"]) == ("invalid_request_error",
                                              "request_header_fields_too_large")
    assert f"at most {limit} bytes" in error["message"]
    assert f"at most {MAX_HEADER_FIELDS} header fields" in error["message"]
    assert closed_by_server(sock)


def send_until_answered(sock: socket.socket, pieces: Iterator[bytes]) -> Reply:
    """Send ``pieces`` one by one until the server answers (or stops taking them); the
    answer."""
    sock.settimeout(DEADLINE_S)
    for piece in pieces:
        try:
            sock.sendall(piece)
        except OSError:  # the server answered and closed while this was sent
            break
    return read_reply(sock)


def header_lines(size: int) -> Iterator[bytes]:
    """Header lines of ``size`` bytes each, without end."""
    number = 0
    while True:
        number += 1
        name = b"X-Pad-%d: " % number
        yield name + b"a" * (size - len(name) - 2) + b"\r\n"


def test_trickled_header_lines_past_the_limit_are_refused(served: str) -> None:
    """Header lines sent one by one (the slow client of the report: 190 MB buffered in 8 s)
    get a 431 once past 64 KiB, before the headers end; the gateway serves others."""
    with connect(served) as sock:
        sock.sendall(REQUEST_LINE)
        reply = send_until_answered(sock, header_lines(2000))
        assert_refused(reply, sock)
    assert httpx.get(served + "/healthz").status_code == 200


def test_one_endless_header_line_is_refused(served: str) -> None:
    """One header value that never ends (no callback sees it until it does) is refused too."""
    with connect(served) as sock:
        sock.sendall(REQUEST_LINE + b"X-Endless: ")
        reply = send_until_answered(sock, iter(lambda: b"a" * 4096, None))
        assert_refused(reply, sock)


def test_a_long_url_is_counted(served: str) -> None:
    """The request line counts: a URL of 100 KiB is refused."""
    with connect(served) as sock:
        sock.sendall(b"GET /healthz?q=" + b"a" * 100 * 1024 + b" HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\n\r\n")
        assert_refused(read_reply(sock), sock)


def test_headers_past_the_limit_sent_at_once_are_refused(served: str) -> None:
    """A complete header block over the limit sent in one piece (one read may hold it whole),
    on a new connection and on a kept-alive one after a served request."""
    big = REQUEST_LINE + b"X-Big: " + b"a" * (DEFAULT_LIMIT + 100) + b"\r\n\r\n"
    with connect(served) as sock:
        sock.sendall(big)
        assert_refused(read_reply(sock), sock)
    with connect(served) as sock:
        sock.sendall(REQUEST_LINE + b"\r\n")
        assert read_reply(sock).status == 200
        sock.sendall(big)
        assert_refused(read_reply(sock), sock)


def test_too_many_header_fields_are_refused(served: str) -> None:
    """101 one-letter header fields are refused (each costs uvicorn a tuple of two bytes
    objects), 100 are served."""
    for count, status in ((MAX_HEADER_FIELDS, 200), (MAX_HEADER_FIELDS + 1, 431)):
        fields = b"".join(b"X-%d: a\r\n" % n for n in range(count - 1))  # Host is one
        with connect(served) as sock:
            sock.sendall(REQUEST_LINE + fields + b"\r\n")
            reply = read_reply(sock)
            if status == 431:
                assert_refused(reply, sock)
            else:
                assert reply.status == 200, reply.body


def chat(content: str, *, extra: bytes = b"") -> bytes:
    body = json.dumps({"model": "mock-chat",
                       "max_tokens": 5,
                       "messages": [{"role": "user", "content": content}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_requests_under_the_limits_are_served(served: str) -> None:
    """Headers just under 64 KiB, a body of 1 MiB sent with its headers (one read holds both),
    and pipelined requests behind such a body, some of their headers sent later, are each
    served: a body never counts as headers, neither its own request's nor the next's."""
    near = b"X-Near: " + b"a" * (DEFAULT_LIMIT - 1024) + b"\r\n"
    with connect(served) as sock:
        sock.sendall(chat("hi", extra=near))
        assert read_reply(sock).status == 200
        big = chat("x" * 1024 * 1024)
        sock.sendall(big)
        reply = read_reply(sock)
        assert reply.status == 200, reply.body
        # A 200 KiB request and the next one's first bytes (one read may hold both: it counts
        # more than 64 KiB for the next request, whose lines parsed are far less), the rest of
        # its headers sent later.
        second = chat("hi", extra=near)
        cut = second.index(b"X-Near")
        sock.sendall(chat("x" * 200 * 1024) + second[:cut + 100])
        time.sleep(0.2)  # the rest in later reads (if not, the same outcome)
        sock.sendall(second[cut + 100:])
        replies = pipelined_replies(sock, 2)
        assert [r.status for r in replies] == [200, 200], [r.body for r in replies]


def test_the_limit_is_a_setting(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SWITCHBOARD_MAX_HEADER_BYTES=2048: headers of 3,000 bytes are refused, naming 2048."""
    with serve_cli(tmp_path_factory.mktemp("small"), {"SWITCHBOARD_MAX_HEADER_BYTES": "2048"}
                   ) as url, connect(url) as sock:
        sock.sendall(REQUEST_LINE + b"X-A: " + b"a" * 3000 + b"\r\n\r\n")
        assert_refused(read_reply(sock), sock, limit=2048)
