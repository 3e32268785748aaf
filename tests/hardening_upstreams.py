"""Misbehaving upstreams on loopback for the stream and upstream-error hardening tests: a
black-holed port (accepts, never answers), a raw HTTP server that answers canned bytes, and one
that answers each request in turn from a script (some of them never)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def _read_request(conn: socket.socket) -> bytes:
    """One HTTP request's bytes (head and Content-Length body); b"" if the peer left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return b""
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


@dataclass
class Listener:
    """A listening socket served by a thread; ``url`` is its base URL."""

    port: int
    accepted: int = 0
    closed_by_peer: int = 0
    requests: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_closed(self, n: int = 1, timeout_s: float = 10.0) -> bool:
        """Whether ``n`` connections were closed by the peer within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.closed_by_peer >= n:
                return True
            time.sleep(0.02)
        return False


@contextmanager
def _listening() -> Iterator[tuple[socket.socket, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock, sock.getsockname()[1]
    finally:
        sock.close()


def _serve(sock: socket.socket, state: Listener,
           answers: Callable[[int], bytes | None]) -> None:
    """Serve each connection's request with ``answers(n)`` (``n``: how many requests came
    before it), or never (``None``)."""
    def one(conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            answer = None
            if request:
                answer = answers(len(state.requests))
                state.requests.append(request)
            if answer is not None and request:
                conn.sendall(answer)
                return
            while True:  # a black hole: read and never answer, until the peer leaves
                try:
                    if not conn.recv(65536):
                        break
                except OSError:
                    break
            state.closed_by_peer += 1

    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        state.accepted += 1
        threading.Thread(target=one, args=(conn,), daemon=True).start()


@contextmanager
def black_hole() -> Iterator[Listener]:
    """A port that accepts connections and reads requests but never answers; it counts the
    connections their peer closed (a cancelled upstream request closes its connection)."""
    with _listening() as (sock, port):
        state = Listener(port)
        threading.Thread(target=_serve, args=(sock, state, lambda _n: None),
                         daemon=True).start()
        yield state


@contextmanager
def canned(answer: bytes) -> Iterator[Listener]:
    """A port answering every request with the raw bytes ``answer``, then closing the
    connection (whether or not ``answer`` was a complete HTTP response)."""
    with _listening() as (sock, port):
        state = Listener(port)
        threading.Thread(target=_serve, args=(sock, state, lambda _n: answer),
                         daemon=True).start()
        yield state


@contextmanager
def scripted(*answers: bytes | None) -> Iterator[Listener]:
    """A port answering its ``n``th request with ``answers[n]`` (the last one past the end):
    raw bytes as ``canned`` does, or ``None`` to never answer, as ``black_hole`` does."""
    with _listening() as (sock, port):
        state = Listener(port)
        threading.Thread(target=_serve, args=(
            sock, state, lambda n: answers[min(n, len(answers) - 1)]), daemon=True).start()
        yield state


CHAT_BODY = (b'{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m",'
             b'"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
             b'"finish_reason":"stop"}],'
             b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')
"""A valid non-streamed chat completion body."""


def json_answer(body: bytes, status: int = 200) -> bytes:
    """A complete HTTP response carrying the JSON ``body``."""
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def sse_answer(*data: bytes) -> bytes:
    """A complete ``text/event-stream`` HTTP response: one ``data:`` event per item of ``data``
    (the body ends when the connection closes)."""
    events = b"".join(b"data: " + item + b"\n\n" for item in data)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            + events)


def chat_answer() -> bytes:
    """A complete, valid non-streamed chat completion response."""
    return json_answer(CHAT_BODY)


def redirect_answer(status: int, location: str) -> bytes:
    return (f"HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n").encode()
