"""A request answered before its whole body arrived (401 without a key, 413 by its
``Content-Length``, 408 when the body stops coming) does not keep its connection: through
`switchboard serve`, a client that keeps trickling the body nobody reads is closed by the server
(it held the connection forever, and enough such clients filled SWITCHBOARD_MAX_CONNECTIONS);
one that sends its body whole keeps its connection."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.api.conftest import MASTER_KEY
from tests.api.test_connection_limits import ask, closed_by_server, connect, read_reply, serve_cli


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`switchboard serve` (embedded config) with a master key, a 1 s header deadline and a
    2 s body deadline."""
    with serve_cli(tmp_path_factory.mktemp("answered"),
                   {"SWITCHBOARD_MASTER_KEY": MASTER_KEY, "SWITCHBOARD_HEADER_TIMEOUT_S": "1",
                    "SWITCHBOARD_BODY_TIMEOUT_S": "2"}) as url:
        yield url


def start_upload(sock: socket.socket, *, key: str | None, framing: str) -> None:
    """Headers of a chat call and the first byte of its body (chunked, or a Content-Length)."""
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" \
           "Content-Type: application/json\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    head += framing + "\r\n"
    first = b"1\r\n{\r\n" if framing.startswith("Transfer-Encoding") else b"{"
    sock.sendall(head.encode() + first)


CHUNKED = "Transfer-Encoding: chunked\r\n"
CASES = {
    "401-chunked": (None, CHUNKED, 401),
    "401-length": (None, "Content-Length: 100000\r\n", 401),
    "413-length": (MASTER_KEY, "Content-Length: 100000000000\r\n", 413),
    "408-chunked": (MASTER_KEY, CHUNKED, 408),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_trickled_body_after_the_answer_is_closed(gateway: str, case: str) -> None:
    """The answer comes, and the connection still trickling its body is then closed."""
    key, framing, status = CASES[case]
    trickle = b"1\r\n \r\n" if framing == CHUNKED else b" "
    with connect(gateway) as sock:
        start_upload(sock, key=key, framing=framing)
        reply = read_reply(sock)  # a 408 comes at the body deadline: nothing else arrives
        assert reply.status == status, reply.body
        assert closed_by_server(sock, trickle=trickle)


def test_a_body_sent_whole_after_an_early_answer_keeps_the_connection(gateway: str) -> None:
    """A 401 answered to a body that then arrives whole leaves the connection serving."""
    with connect(gateway) as sock:
        assert ask(sock, "POST", "/v1/chat/completions", {"model": "x"}).status == 401
        assert ask(sock).status == 200
