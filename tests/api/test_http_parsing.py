"""How ``switchboard serve`` reads HTTP/1.1 (``app.serving.UpgradeIgnoringProtocol``), with raw
sockets: a request offering a protocol upgrade (``Upgrade: h2c``, as ``curl --http2``, Java's
HTTP client and Ktor send on ``http://`` URLs) is served as the HTTP/1.1 request it also is,
body included; bytes llhttp refuses (an unknown method...) get a 400 in OpenAI's error
shape."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr

from app.main import create_app
from app.serving import SERVED_METHODS
from app.settings import Settings
from tests.api.conftest import MASTER_KEY
from tests.api.test_connection_limits import (
    Reply,
    closed_by_server,
    connect,
    read_reply,
    serve_cli,
)

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


def pipelined_replies(sock: socket.socket, count: int) -> list[Reply]:
    """``count`` responses with Content-Length bodies, read one after another from ``sock``
    (one read may hold the end of one and the start of the next)."""
    sock.settimeout(30)
    data, replies = b"", list[Reply]()
    while len(replies) < count:
        head, found, rest = data.partition(b"\r\n\r\n")
        if found:
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(rest) >= length:
                replies.append(Reply(int(lines[0].split()[1]), headers, rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(replies)} replies"
        data += chunk
    return replies


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
        replies = pipelined_replies(sock, 4)
        assert [reply.status for reply in replies] == [200] * 4
        for reply in (replies[0], replies[2], replies[3]):
            assert_answered(reply)


def test_framing_errors_behind_an_offer_are_refused(served: str) -> None:
    """A request offering h2c with two different Content-Lengths is refused as the same request
    without the offer is (llhttp's framing rules apply to its body)."""
    bad = b"Content-Length: 5\r\nContent-Length: 7\r\n"
    for offer in (True, False):
        sent = head(bad) if offer else head(bad).replace(OFFER, b"")
        with connect(served) as sock:
            sock.sendall(sent + BODY)
            assert read_reply(sock).status == 400


@pytest.mark.parametrize("sent", [
    b"FOO /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x01b\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: +7\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\n"
    b"Content-Length: 8\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
], ids=["unknown-method", "control-byte", "signed-length", "two-lengths", "http2-preface"])
def test_an_unparsable_request_is_a_json_400(served: str, sent: bytes) -> None:
    """Bytes llhttp refuses get a 400 in OpenAI's error shape (code ``invalid_http_request``,
    saying why; an unknown method names the methods served), not uvicorn's plain text; the
    connection is closed, its framing lost."""
    with connect(served) as sock:
        sock.sendall(sent)
        reply = read_reply(sock)
        assert reply.status == 400
        assert reply.headers["content-type"] == "application/json"
        error = reply.error()
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http_request")
        assert error["message"].startswith("Invalid HTTP request: ")
        if sent.startswith(b"FOO"):
            assert "GET, HEAD, POST, PUT, PATCH, DELETE" in error["message"]
        if sent.startswith(b"PRI"):  # not llhttp's words ("Pause on PRI/Upgrade")
            assert "not HTTP/2 with prior knowledge" in error["message"]
        assert closed_by_server(sock)


def test_the_methods_served_are_the_routes_methods() -> None:
    """``SERVED_METHODS``, which the unknown method's 400 lists, are those the app's routes
    take."""
    app = create_app(Settings(master_key=SecretStr(MASTER_KEY), call_log=False)).app
    methods = {method for context in iter_route_contexts(app.router.routes)
               if isinstance(route := context.original_route, APIRoute)
               for method in route.methods or ()}
    assert methods | {"HEAD"} == set(SERVED_METHODS)
