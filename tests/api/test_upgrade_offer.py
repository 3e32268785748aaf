"""A request offering a protocol upgrade (``Upgrade: h2c``, as ``curl --http2``, Java's HTTP
client and Ktor send on ``http://`` URLs) is served as the HTTP/1.1 request it also is, body
included (``app.serving.UpgradeIgnoringProtocol``), through ``switchboard serve`` with raw
sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.api.test_connection_limits import Reply, connect, read_reply, serve_cli

OFFER = (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
         b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n")
BODY = json.dumps({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}
                  ).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`switchboard serve` with the embedded config, one for the module."""
    with serve_cli(tmp_path_factory.mktemp("upgrade"), {}) as url:
        yield url


def head(framing: bytes, *, method: bytes = b"POST",
         path: bytes = b"/v1/chat/completions") -> bytes:
    return (method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n" + OFFER + framing + b"\r\n")


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def assert_answered(reply: Reply) -> None:
    assert reply.status == 200, reply.body
    answer = json.loads(reply.body)
    assert answer["choices"][0]["message"]["content"] == "Mock reply to: hi"


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("split", [False, True], ids=["with-headers", "after-headers"])
def test_a_post_offering_h2c_keeps_its_body(served: str, framing: str, split: bool) -> None:
    """A Content-Length or chunked body, sent with the headers or after them, reaches the
    request: the offer is ignored and the call answered over HTTP/1.1."""
    if framing == "length":
        first, body = head(b"Content-Length: %d\r\n" % len(BODY)), BODY
    else:
        first, body = head(b"Transfer-Encoding: chunked\r\n"), chunked(BODY)
    with connect(served) as sock:
        if split:
            sock.sendall(first)
            sock.sendall(body)
        else:
            sock.sendall(first + body)
        assert_answered(read_reply(sock))


def test_the_connection_serves_the_next_requests(served: str) -> None:
    """After a request offering h2c, the connection is kept: requests pipelined behind it,
    another offering h2c among them, are each answered as sent."""
    plain = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    offered = head(b"Content-Length: %d\r\n" % len(BODY)) + BODY
    bodyless = head(b"", method=b"GET", path=b"/healthz")
    with connect(served) as sock:
        sock.sendall(offered + bodyless + offered + plain)
        assert_answered(read_reply(sock))
        assert read_reply(sock).status == 200
        assert_answered(read_reply(sock))
        assert_answered(read_reply(sock))


def test_framing_errors_behind_an_offer_are_refused(served: str) -> None:
    """A request offering h2c with two different Content-Lengths is refused as the same request
    without the offer is (llhttp's framing rules apply to its body)."""
    bad = b"Content-Length: 5\r\nContent-Length: 7\r\n"
    for offer in (True, False):
        sent = head(bad) if offer else head(bad).replace(OFFER, b"")
        with connect(served) as sock:
            sock.sendall(sent + BODY)
            assert read_reply(sock).status == 400
