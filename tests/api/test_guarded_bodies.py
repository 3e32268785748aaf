"""The bodies of the routes FastAPI serves (``/v1/feedback``, the admin API) are read as a model
call's are (``app.api.guard``): the caller is checked before a byte of the body is read, a body
over ``limits.max_body_bytes`` is a 413, one that does not arrive a 408, and its slot is freed.
Slow and oversized clients are played with raw sockets."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr

from app.api.guard import GuardedRoute
from app.config import parse_config
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, settings_in, sim_config
from tests.api.test_connection_limits import CHAT, Reply
from tests.servers import free_port, serve, wait_ready
from tests.test_cli import SWITCHBOARD, clean_env

LIMIT = 4096
"""``limits.max_body_bytes`` of the gateways here."""
REPLY_S = 10.0
"""The longest a refusal may take to come (it comes at once; without the guard, never)."""

# Each route FastAPI reads a body for, with a body it would take.
BODY_ROUTES = [
    ("POST", "/v1/feedback", {"request_id": "nope", "score": 1}),
    ("POST", "/admin/keys", {"name": "k"}),
    ("PATCH", "/admin/keys/key_nope", {"rpm": 5}),
    ("POST", "/admin/teams", {"name": "t"}),
    ("PATCH", "/admin/teams/team_nope", {"rpm": 5}),
    ("POST", "/admin/prompts", {"id": "p", "version": {"messages": [
        {"role": "user", "content": "hi"}]}}),
    ("POST", "/admin/prompts/p/versions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("PUT", "/admin/prompts/p/labels/prod", {"version": 1}),
    ("POST", "/admin/prompts/p/labels/prod/rollback", {}),
]
ADMIN_ROUTES = [r for r in BODY_ROUTES if r[1].startswith("/admin/")]


@contextmanager
def guarded_gateway(tmp_path: Path, simulator: str, **settings: Any) -> Iterator[str]:
    """An in-process gateway on the simulator, master key on, a body limit of ``LIMIT``."""
    raw = {**sim_config(simulator), "limits": {"max_body_bytes": LIMIT}}
    app = create_app(settings_in(tmp_path).model_copy(update=settings),
                     config=parse_config(raw, {}), strict_telemetry=True)
    with serve(app) as url:
        yield url


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


def send_head(url: str, method: str, path: str, *, key: str | None, length: int | None,
              first: bytes = b"{") -> socket.socket:
    """A connection that has sent a request's headers (``Content-Length: length``, or chunked
    when ``None``) and ``first``, the start of its body (a chunk of its own when chunked)."""
    sock = connect(url)
    head = f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    if length is None:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunk = f"{len(first):x}\r\n".encode() + first + b"\r\n" if first else b""
        sock.sendall(head.encode() + chunk)  # (an empty chunk would end the body)
    else:
        sock.sendall(head.encode() + f"Content-Length: {length}\r\n\r\n".encode() + first)
    return sock


def reply_to(sock: socket.socket) -> Reply:
    """The reply on ``sock``, which must come within ``REPLY_S`` (as ``read_reply`` reads it)."""
    sock.settimeout(REPLY_S)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response: {data!r}"
            data += chunk
    except TimeoutError:
        pytest.fail(f"no reply within {REPLY_S:.0f} s: the gateway is waiting for the body")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return Reply(int(lines[0].split()[1]), headers, body)


def master(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30,
                        headers={"Authorization": f"Bearer {MASTER_KEY}"})


# ---- every route FastAPI reads a body for is guarded


def test_every_route_that_takes_a_body_is_guarded() -> None:
    """Every route of the app that FastAPI reads a body for is a ``GuardedRoute``, and the
    list above names each of them (a new one gets the guard and a place in these tests)."""
    app = create_app(Settings(master_key=SecretStr(MASTER_KEY), call_log=False)).app
    with_body = [route for context in iter_route_contexts(app.router.routes)
                 if isinstance(route := context.original_route, APIRoute)
                 and route.body_field is not None]
    assert with_body  # FastAPI's route listing still finds them
    for route in with_body:
        assert isinstance(route, GuardedRoute), route.path
    served = {(method, path) for method, path, _ in BODY_ROUTES
              if any(method in (route.methods or ()) and route.path_regex.match(path)
                     for route in with_body)}
    assert served == {(method, path) for method, path, _ in BODY_ROUTES}
    assert len(with_body) == len(BODY_ROUTES), [route.path for route in with_body]


# ---- the caller first


@pytest.mark.parametrize(("method", "path", "_"), BODY_ROUTES)
@pytest.mark.parametrize("length", [300 * 1024 * 1024, None], ids=["length", "chunked"])
def test_no_key_is_a_401_before_the_body(tmp_path: Path, simulator: str, method: str,
                                         path: str, _: Any, length: int | None) -> None:
    """A request with no key, announcing 300 MB (or chunked) and sending one byte, is
    answered 401 ``missing_api_key`` at once: the gateway does not wait for, or read, its
    body."""
    with guarded_gateway(tmp_path, simulator) as url, \
            send_head(url, method, path, key=None, length=length) as sock:
        reply = reply_to(sock)
    assert reply.status == 401, reply.body
    assert reply.error()["code"] == "missing_api_key"


@pytest.mark.parametrize(("method", "path", "_"), BODY_ROUTES)
def test_a_wrong_key_is_a_401_whatever_the_body(tmp_path: Path, simulator: str, method: str,
                                                path: str, _: Any) -> None:
    """A wrong key with a body that would not validate is a 401, not the body's 400."""
    with guarded_gateway(tmp_path, simulator) as url:
        response = httpx.request(method, url + path, content=b'{"name": [1, 2}',
                                 headers={"Authorization": "Bearer sk-sb-wrong",
                                          "Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_key_that_is_not_admin_is_a_403_before_the_body(tmp_path: Path,
                                                          simulator: str) -> None:
    """On the admin API a virtual key that is not an admin's is refused 403 ``admin_only``
    before its body arrives; on ``/v1/feedback`` the same key is let in to send its body."""
    with guarded_gateway(tmp_path, simulator) as url, master(url) as client:
        key = client.post("/admin/keys", json={"name": "plain"}).json()["key"]
        for method, path, _ in ADMIN_ROUTES:
            with send_head(url, method, path, key=key, length=300 * 1024 * 1024) as sock:
                reply = reply_to(sock)
            assert reply.status == 403, (path, reply.body)
            assert reply.error()["code"] == "admin_only"
        feedback = httpx.post(url + "/v1/feedback", json={"request_id": "nope", "score": 1},
                              headers={"Authorization": f"Bearer {key}"})
        assert feedback.status_code == 404, feedback.text


# ---- the size limit


@pytest.mark.parametrize(("method", "path", "body"), BODY_ROUTES)
def test_a_body_over_the_limit_is_a_413(tmp_path: Path, simulator: str, method: str,
                                        path: str, body: dict[str, Any]) -> None:
    """With the master key, a body over ``limits.max_body_bytes`` is a 413: announced by its
    ``Content-Length`` before it is sent, or counted as a chunked one arrives; a body under
    the limit is served as before (no 413, no 408)."""
    with guarded_gateway(tmp_path, simulator) as url:
        with send_head(url, method, path, key=MASTER_KEY, length=300 * 1024 * 1024) as sock:
            reply = reply_to(sock)
        assert reply.status == 413, reply.body
        with send_head(url, method, path, key=MASTER_KEY, length=None,
                       first=b"[" + b" " * LIMIT) as sock:
            reply = reply_to(sock)
        assert reply.status == 413, reply.body
        padded = json.dumps(body).encode() + b" " * (LIMIT // 2)
        response = httpx.request(method, url + path, content=padded,
                                 headers={"Authorization": f"Bearer {MASTER_KEY}",
                                          "Content-Type": "application/json"})
        assert response.status_code not in (408, 413), response.text
        assert response.status_code < 500, response.text


def test_a_body_that_is_not_utf8_says_where(tmp_path: Path, simulator: str) -> None:
    """A body that is not UTF-8 is a 400 naming the byte where it stops being UTF-8, as a
    model call's is, on every route that takes a body (not FastAPI's "error parsing the
    body")."""
    with guarded_gateway(tmp_path, simulator) as url:
        for method, path, body in [*BODY_ROUTES, ("POST", "/v1/chat/completions", CHAT)]:
            raw = json.dumps(body).encode()
            bad = raw[:1] + b' "\xff\xfe": 1,' + raw[1:]
            response = httpx.request(method, url + path, content=bad,
                                     headers={"Authorization": f"Bearer {MASTER_KEY}",
                                              "Content-Type": "application/json"})
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error["message"] == ("The request body is not valid UTF-8 (at byte 3); "
                                        "JSON must be sent as UTF-8."), path


def nested(depth: int) -> str:
    """A JSON value ``depth`` levels deep (lists in lists)."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(("depth", "where"), [(600, True), (1100, False)])
def test_a_body_nested_too_deep_says_so(tmp_path: Path, simulator: str, depth: int,
                                        where: bool) -> None:
    """A body nesting past 512 levels is a 400 ``nesting_too_deep``, worded as a model call's
    (naming the path, or past the parser's 1,024 levels no path), on every route that takes a
    body (not FastAPI's "There was an error parsing the body", past ~990 levels)."""
    with guarded_gateway(tmp_path, simulator) as url:
        for method, path, body in BODY_ROUTES:
            raw = json.dumps(body)
            deep = '{"deep": ' + nested(depth) + ", " + raw[1:] if raw != "{}" else \
                '{"deep": ' + nested(depth) + "}"
            response = httpx.request(method, url + path, content=deep.encode(),
                                     headers={"Authorization": f"Bearer {MASTER_KEY}"})
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "nesting_too_deep", path
            assert error["message"].startswith(
                "The request body nests deeper than 512 levels"), path
            assert (error["param"] or "").startswith("deep[0][0]") is where, path


def test_a_key_with_a_lone_surrogate_is_named(tmp_path: Path, simulator: str) -> None:
    """A key holding a lone surrogate (a ``\\ud800`` escape), at the top or nested, is a 400
    saying so and naming the object that holds it (not "Invalid request: Input should be a
    valid string..." naming no field, nor the key as three replacement characters)."""
    with guarded_gateway(tmp_path, simulator) as url:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        for method, path, body in BODY_ROUTES:
            raw = json.dumps(body)
            sent = '{"\\ud800": 1' + (", " + raw[1:] if raw != "{}" else "}")
            response = httpx.request(method, url + path, content=sent.encode(), headers=headers)
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error["message"] == ('Invalid key "\\ud800" in the request body: it holds a '
                                        "lone surrogate (\\ud800-\\udfff), which is not a "
                                        "character."), path
            assert error["param"] is None
        response = httpx.post(url + "/admin/keys", headers=headers,
                              content=b'{"name": "k", "metadata": {"\\udfff": "v"}}')
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "metadata"
        assert error["message"].startswith('Invalid key "\\udfff" in \'metadata\': it holds')


# ---- the body deadline and the concurrency slots


@pytest.mark.parametrize("length", [1000, None], ids=["length", "chunked"])
def test_slow_bodies_do_not_hold_the_slots(tmp_path: Path, simulator: str,
                                           length: int | None) -> None:
    """With ``max_concurrency`` 4 and a 1 s body deadline: four clients with no key sending
    only ``{`` are refused 401 at once, four with the master key get 408 ``body_timeout``,
    and each time a model call afterwards is served (200), not refused for a full gateway."""
    with guarded_gateway(tmp_path, simulator, max_concurrency=4, body_timeout_s=1.0) as url, \
            master(url) as client:
        for key, status, code in ((None, 401, "missing_api_key"),
                                  (MASTER_KEY, 408, "body_timeout")):
            with ExitStack() as held:
                socks = [held.enter_context(send_head(url, method, path, key=key,
                                                      length=length))
                         for method, path, _ in BODY_ROUTES[:4]]
                for sock in socks:
                    reply = reply_to(sock)
                    assert reply.status == status, reply.body
                    assert reply.error()["code"] == code
                chat = client.post("/v1/chat/completions", json=CHAT)
                assert chat.status_code == 200, chat.text


# ---- the memory of a gateway of its own (`switchboard serve`)


@contextmanager
def serve_process(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`switchboard serve` (embedded config, master key on): its URL and pid once ready."""
    port = free_port()
    proc = subprocess.Popen([SWITCHBOARD, "serve", "--port", str(port)], cwd=tmp_path,
                            env={**clean_env(), "SWITCHBOARD_MASTER_KEY": MASTER_KEY},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def send_rest(sock: socket.socket, total: int, *, chunked: bool) -> None:
    """Send ``total`` bytes of body on ``sock`` in 1 MB pieces (chunked: as chunks, and the
    last chunk), stopping early only if the gateway closes the connection."""
    piece = b"a" * (1024 * 1024)
    if chunked:
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sock.settimeout(30)
    try:
        for _ in range(total // (1024 * 1024)):
            sock.sendall(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # reset: the gateway stopped taking it
        return


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_300_mb_without_a_key_do_not_grow_the_gateway(tmp_path: Path) -> None:
    """`switchboard serve`: 300 MB sent whole with no key to ``/v1/feedback`` (Content-Length)
    and to ``/admin/keys`` (chunked) grow the process's resident memory by a few MB, not by
    the bodies (600 MB and more before, kept after the answer), and are answered 401."""
    total = 300 * 1024 * 1024
    statuses = []
    with serve_process(tmp_path) as (url, pid):
        before = rss_mb(pid)
        for path, length in (("/v1/feedback", total), ("/admin/keys", None)):
            with send_head(url, "POST", path, key=None, length=length, first=b"") as sock:
                send_rest(sock, total, chunked=length is None)
                statuses.append(reply_to(sock).status)
        grown = rss_mb(pid) - before
    assert grown < 50, f"the gateway grew by {grown:.0f} MB"
    assert statuses == [401, 401]
