"""Connection limits (issue 8 item 11): a per-worker concurrency limit answered with 503 and
``Retry-After``, a body deadline answered with 408, a header deadline that closes the
connection, the keep-alive timeout that closes an idle one, and uvicorn's connection backstop
(``SWITCHBOARD_MAX_CONNECTIONS``) through ``switchboard serve``. Slow clients are played with
raw sockets, a slow upstream by the simulator."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import parse_config
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, ListSink, settings_in, sim_config
from tests.servers import free_port, serve, wait_ready
from tests.test_cli import SWITCHBOARD, clean_env

DEADLINE_S = 30.0
"""The most any wait here lasts before the test fails (never a measured duration)."""

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return error


def read_reply(sock: socket.socket) -> Reply:
    """One HTTP/1.1 response with a Content-Length body, read from ``sock``."""
    sock.settimeout(DEADLINE_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return Reply(int(lines[0].split()[1]), headers, body)


def slow_body(url: str, *, style: str, key: str | None = MASTER_KEY,
              path: str = "/v1/chat/completions") -> socket.socket:
    """A connection that sends a request's headers and only part of its body (or none)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    partial = b'{"model": "chat", "messages": ['
    if style == "chunked":
        sock.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n"
                     + f"{len(partial):x}\r\n".encode() + partial + b"\r\n")
    else:
        sock.sendall(head.encode() + b"Content-Length: 400\r\n\r\n"
                     + (partial if style == "partial" else b""))
    return sock


def wait_until_refused(client: httpx.Client) -> httpx.Response:
    """Probe until the gateway refuses for being full (the held requests are all in by then)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        response = client.get("/v1/models")
        if response.status_code == 503:
            return response
        assert response.status_code == 200, response.text
        assert time.monotonic() < deadline, "the gateway never became full"
        time.sleep(0.02)


def wait_until_admitted(client: httpx.Client) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while client.get("/v1/models").status_code != 200:
        assert time.monotonic() < deadline, "the gateway stayed full"
        time.sleep(0.02)


def assert_overloaded(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "overloaded" and error["type"] == "server_error"


@contextmanager
def limited_gateway(tmp_path: Path, simulator: str, **settings: Any) -> Iterator[
        tuple[str, ListSink]]:
    """An in-process gateway on the simulator with the given settings changed; ``slow`` is a
    model whose upstream takes 4 s to its first token."""
    raw = sim_config(simulator)
    raw["providers"]["slow"] = {"type": "openai", "base_url": simulator + "/v1",
                                "api_key": "sk-upstream-secret",
                                "headers": {"X-Sim-TTFT-Ms": "4000"}}
    raw["models"]["slow"] = {"targets": [{"provider": "slow", "model": "gpt-4o-mini"}]}
    sink = ListSink()
    app = create_app(settings_in(tmp_path).model_copy(update=settings),
                     config=parse_config(raw, {}), sink=sink, strict_telemetry=True)
    with serve(app) as url:
        yield url, sink


def master(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=DEADLINE_S,
                        headers={"Authorization": f"Bearer {MASTER_KEY}"})


# ---- the concurrency limit


@pytest.mark.parametrize("limit", [1, 3])
@pytest.mark.parametrize("style", ["none", "partial", "chunked"])
def test_past_the_limit_requests_get_503_with_retry_after(tmp_path: Path, simulator: str,
                                                          limit: int, style: str) -> None:
    """With ``limit`` slow bodies inside, the next request of any kind is a 503 with
    Retry-After in OpenAI's shape; a refused model call is recorded; the probes and /metrics
    still answer; once the slow clients leave, requests are served again."""
    with limited_gateway(tmp_path, simulator, max_concurrency=limit) as (url, sink), \
            master(url) as client, ExitStack() as held:
        for _ in range(limit):
            held.callback(slow_body(url, style=style).close)
        assert_overloaded(wait_until_refused(client))
        refused = client.post("/v1/chat/completions", json=CHAT,
                              headers={"x-request-id": "refused-1"})
        assert_overloaded(refused)
        record = sink.by_id("refused-1")
        assert record.id == refused.headers["x-switchboard-call-id"]
        assert (record.http_status, record.status, record.caller) == (503, "error", "master")
        stranger = httpx.post(url + "/v1/embeddings", json={"model": "embed", "input": "x"},
                              headers={"x-request-id": "refused-2"})
        assert stranger.status_code == 401
        assert sink.by_id("refused-2").caller == "unauthenticated"
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert client.get(probe).status_code == 200, probe
        held.close()
        wait_until_admitted(client)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_past_the_limit_messages_routes_answer_in_anthropics_shape(tmp_path: Path,
                                                                    simulator: str) -> None:
    """Past the limit, ``/v1/messages`` and ``/v1/messages/count_tokens`` are refused in
    Anthropic's error shape, type ``overloaded_error`` (its type for overload), status 503."""
    body = {"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with limited_gateway(tmp_path, simulator, max_concurrency=1) as (url, _), \
            master(url) as client, ExitStack() as held:
        held.callback(slow_body(url, style="none").close)
        wait_until_refused(client)
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            refused = client.post(path, json=body)
            assert refused.status_code == 503, path
            assert refused.headers["retry-after"] == "1"
            answer = refused.json()
            # a call's refusal names the call (Anthropic's request_id); count_tokens is none
            assert answer.pop("request_id", None) == refused.headers.get("request-id") == (
                refused.headers["x-switchboard-call-id"] if path == "/v1/messages" else None)
            assert answer == {"type": "error", "error": {
                "type": "overloaded_error", "message": "The gateway is serving its limit of 1 "
                                                       "requests; retry in 1 s."}}, path


@pytest.mark.parametrize("stream", [False, True])
def test_slow_upstream_calls_count_toward_the_limit(tmp_path: Path, simulator: str,
                                                    stream: bool) -> None:
    """Two calls waiting on a slow upstream fill a limit of 2; a third is refused with 503 and
    both slow calls still complete with 200."""
    results: list[int] = []

    def call() -> None:
        with master(url) as own:
            results.append(own.post("/v1/chat/completions",
                                     json={**CHAT, "model": "slow", "stream": stream}
                                     ).status_code)

    with limited_gateway(tmp_path, simulator, max_concurrency=2) as (url, _), \
            master(url) as client:
        threads = [threading.Thread(target=call) for _ in range(2)]
        for thread in threads:
            thread.start()
        assert_overloaded(wait_until_refused(client))
        assert_overloaded(client.post("/v1/chat/completions", json=CHAT))
        for thread in threads:
            thread.join(timeout=DEADLINE_S)
        assert results == [200, 200]
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


# ---- the body deadline


@pytest.mark.parametrize("style", ["none", "partial", "chunked"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
def test_a_body_that_does_not_arrive_gets_408_and_is_recorded(tmp_path: Path, simulator: str,
                                                              style: str, path: str) -> None:
    """A model call whose body stops arriving is answered 408 in OpenAI's shape, with its call
    id, and its record says 408; the gateway goes on serving."""
    with limited_gateway(tmp_path, simulator, body_timeout_s=1.0) as (url, sink), \
            master(url) as client:
        sock = slow_body(url, style=style, path=path)
        try:
            reply = read_reply(sock)
        finally:
            sock.close()
        assert reply.status == 408, reply.body
        assert reply.error()["code"] == "body_timeout"
        call_id = reply.headers["x-switchboard-call-id"]
        (record,) = [r for r in sink.records if r.id == call_id]
        assert (record.http_status, record.status, record.endpoint) == (408, "error", path)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


# ---- through `switchboard serve`: the header deadline, and the CLI's limit


@contextmanager
def serve_cli(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[str]:
    """`switchboard serve` (embedded config, run from ``tmp_path``) with ``env`` added to a
    clean environment; its URL once ready. Terminated on exit."""
    port = free_port()
    proc = subprocess.Popen([SWITCHBOARD, "serve", "--port", str(port), *args], cwd=tmp_path,
                            env={**clean_env(), **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_S)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`switchboard serve --max-concurrency 2` (embedded config) with a 1 s header deadline,
    one for the module: every test using it closes its connections and leaves it admitting."""
    with serve_cli(tmp_path_factory.mktemp("served"), {"SWITCHBOARD_HEADER_TIMEOUT_S": "1",
                              "SWITCHBOARD_BODY_TIMEOUT_S": "60"},
                   "--max-concurrency", "2") as url:
        yield url


def closed_by_server(sock: socket.socket, *, trickle: bytes | None = None) -> bool:
    """Whether the server closes ``sock`` (within DEADLINE_S); ``trickle`` is sent whenever
    nothing happened for a while, as a slowloris client sends a header line now and then."""
    deadline = time.monotonic() + DEADLINE_S
    sock.settimeout(0.25)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if trickle is not None:
                try:
                    sock.sendall(trickle)
                except OSError:  # reset: closed
                    return True
            continue
        except OSError:
            return True
        if not data:
            return True
    return False


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


@pytest.mark.parametrize("sent", [b"", b"G", b"POST /v1/chat/completions HTTP/1.1\r\n",
                                  b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n"])
def test_a_connection_without_complete_headers_is_closed(served: str, sent: bytes) -> None:
    """Nothing, a byte, a request line, or headers without their end: the server closes the
    connection, trickled header lines or not, and keeps serving others."""
    for trickle in (None, b"X-Slow: 1\r\n"):
        with connect(served) as sock:
            sock.sendall(sent)
            assert closed_by_server(sock, trickle=trickle if sent else None)
    assert httpx.get(served + "/healthz").status_code == 200


def test_a_kept_alive_connection_sending_half_a_request_is_closed(served: str) -> None:
    """After a complete request on a keep-alive connection, half of the next one is not kept."""
    with connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_reply(sock).status == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert closed_by_server(sock, trickle=b"X-Slow: 1\r\n")


def test_an_idle_kept_alive_connection_outlives_the_header_deadline(served: str) -> None:
    """Between requests a connection idles under the keep-alive timeout (75 s by default, above
    a load balancer's 60 s), not the 1 s header deadline: a balancer reuses it seconds later."""
    with connect(served) as sock:
        assert ask(sock).status == 200
        time.sleep(3.5)  # past the 1 s header deadline and its once-a-second sweeps
        chat = {"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}
        assert ask(sock, "POST", "/v1/chat/completions", chat).status == 200


def test_the_default_keep_alive_outlasts_a_load_balancers_idle_timeout() -> None:
    """60 s: AWS's ALB, ingress-nginx and nginx's upstream ``keepalive_timeout`` by default."""
    assert Settings.model_fields["keep_alive_s"].default > 60


def test_keep_alive_s_closes_an_idle_connection(tmp_path: Path) -> None:
    """SWITCHBOARD_KEEP_ALIVE_S=1: a connection is kept between requests, and closed by the
    server once left idle."""
    with serve_cli(tmp_path, {"SWITCHBOARD_KEEP_ALIVE_S": "1"}) as url, connect(url) as sock:
        assert ask(sock).status == 200
        assert ask(sock).status == 200  # kept alive
        assert closed_by_server(sock)


def test_serve_max_concurrency_refuses_past_the_limit(served: str) -> None:
    """`serve --max-concurrency 2`: two slow bodies fill it, the next request is a 503."""
    with master(served) as client, ExitStack() as held:
        for _ in range(2):
            held.callback(slow_body(served, style="partial", key=None).close)
        assert_overloaded(wait_until_refused(client))
        assert client.get("/healthz").status_code == 200
        held.close()
        wait_until_admitted(client)


def test_the_uvicorn_internals_the_header_deadline_relies_on() -> None:
    """app.serving subclasses uvicorn's httptools protocol: these must still exist."""
    for name in ("connection_made", "on_message_begin", "on_headers_complete"):
        assert callable(getattr(HttpToolsProtocol, name)), name
    assert isinstance(ServerState().connections, set)


# ---- through `switchboard serve`: uvicorn's connection backstop (SWITCHBOARD_MAX_CONNECTIONS)

MAX_CONNECTIONS = 3


def ask(sock: socket.socket, method: str = "GET", path: str = "/healthz",
        body: dict[str, Any] | None = None) -> Reply:
    """One request on ``sock`` (kept alive) and its reply."""
    data = b"" if body is None else json.dumps(body).encode()
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return read_reply(sock)


def served_connection(url: str) -> socket.socket:
    """A kept-alive connection that was served (200). A connection refused meanwhile is retried:
    a connection closed just before may still be counted until the server has seen it go."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        sock = connect(url)
        if ask(sock).status == 200:
            return sock
        sock.close()
        assert time.monotonic() < deadline, "no connection was served under the limit"
        time.sleep(0.05)


def assert_backstop_refusal(reply: Reply, sock: socket.socket) -> None:
    """uvicorn's own answer past ``limit_concurrency``: a plain-text 503, connection closed."""
    assert reply.status == 503, reply.body
    assert reply.headers["content-type"].startswith("text/plain")
    assert reply.body == b"Service Unavailable"
    assert reply.headers["connection"] == "close"
    assert closed_by_server(sock)


@pytest.fixture
def connection_capped(tmp_path: Path) -> Iterator[str]:
    """`switchboard serve` with SWITCHBOARD_MAX_CONNECTIONS=3 (the gateway's own concurrency
    limit far above) and deadlines long enough that held connections stay open."""
    with serve_cli(tmp_path, {"SWITCHBOARD_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
                              "SWITCHBOARD_MAX_CONCURRENCY": "100",
                              "SWITCHBOARD_HEADER_TIMEOUT_S": "120",
                              "SWITCHBOARD_KEEP_ALIVE_S": "120"}) as url:
        yield url


def test_serve_max_connections_refuses_at_the_limit(connection_capped: str) -> None:
    """With MAX_CONNECTIONS - 1 connections open, each is served (model calls included); a
    connection that brings the count to the limit gets uvicorn's plain-text 503 for any request
    and is closed; once one connection leaves, a new one is served again."""
    url = connection_capped
    chat = {"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}
    with ExitStack() as held:
        socks = [held.enter_context(served_connection(url)) for _ in range(MAX_CONNECTIONS - 1)]
        for sock in socks:
            assert ask(sock, "POST", "/v1/chat/completions", chat).status == 200
        for method, path, body in (("GET", "/healthz", None), ("GET", "/v1/models", None),
                                   ("POST", "/v1/chat/completions", chat)):
            with connect(url) as extra:
                assert_backstop_refusal(ask(extra, method, path, body), extra)
        socks.pop().close()
        with served_connection(url) as again:
            assert ask(again, "POST", "/v1/chat/completions", chat).status == 200
            assert ask(socks[0]).status == 200
