"""``HEAD`` wherever ``GET`` is served (RFC 9110): the probes, the model list, the metrics and
the admin API's ``GET`` routes answer it with the status and headers of the ``GET`` and no body,
the key checked as for the ``GET`` (``app.api.head``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.head import serve_head
from tests.api.conftest import MASTER_KEY, RunningGateway
from tests.servers import serve

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
SAME = ("content-type", "content-length", "allow", "www-authenticate")
"""The headers a ``HEAD`` answer must share with its ``GET`` (where the ``GET`` has them)."""


@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/healthz", {}, 200),
    ("/readyz", {}, 200),
    ("/v1/models", MASTER, 200),
    ("/v1/models/chat", MASTER, 200),
    ("/v1/models", {}, 401),  # the key is checked as for the GET
    ("/v1/models/no-such-model", MASTER, 404),
    ("/admin/keys", MASTER, 200),
    ("/admin/keys", {}, 401),
    ("/admin/teams", MASTER, 200),
    ("/admin/calls", MASTER, 200),
    ("/admin/calls/no-such-call", MASTER, 404),
    ("/admin/config", MASTER, 200),
], ids=lambda value: None if isinstance(value, str | int) else ("key" if value else "nokey"))
def test_head_answers_as_get_without_a_body(gateway: RunningGateway, path: str,
                                            headers: dict[str, str], status: int) -> None:
    """``HEAD`` has the ``GET``'s status and headers (``Content-Length`` included), no body."""
    got = httpx.get(gateway.url + path, headers=headers)
    head = httpx.head(gateway.url + path, headers=headers)
    assert (got.status_code, head.status_code) == (status, status), head.headers
    assert head.content == b""
    assert {k: head.headers.get(k) for k in SAME} == {k: got.headers.get(k) for k in SAME}


def test_head_on_metrics(gateway: RunningGateway) -> None:
    """``HEAD /metrics`` is a 200 in Prometheus' text format with the master key, a 401
    without, as ``GET`` (its length changes from one scrape to the next)."""
    head = httpx.head(gateway.url + "/metrics", headers=MASTER)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/plain")
    assert int(head.headers["content-length"]) > 0
    assert httpx.head(gateway.url + "/metrics").status_code == 401


@pytest.mark.parametrize(("path", "allowed"), [
    ("/healthz", "GET, HEAD"),
    ("/v1/models", "GET, HEAD"),
    ("/admin/keys", "GET, HEAD, POST"),
    ("/admin/keys/key_x", "GET, HEAD, PATCH, DELETE"),
])
def test_a_405_allows_head_where_it_allows_get(gateway: RunningGateway, path: str,
                                              allowed: str) -> None:
    """``Allow`` (and the message) name ``HEAD`` wherever they name ``GET``."""
    response = httpx.put(gateway.url + path, headers=MASTER)
    assert (response.status_code, response.headers["allow"]) == (405, allowed)
    assert response.json()["error"]["message"].endswith(f"it allows {allowed}.")


def test_head_is_not_get_where_get_is_not_served(gateway: RunningGateway) -> None:
    """A path with no ``GET`` still answers ``HEAD`` 405 (``Allow: POST``) or 404."""
    refused = httpx.head(gateway.url + "/v1/chat/completions", headers=MASTER)
    assert (refused.status_code, refused.headers["allow"]) == (405, "POST")
    assert httpx.head(gateway.url + "/v1/nothing-here", headers=MASTER).status_code == 404


def test_head_on_a_streamed_get_ends_after_the_headers() -> None:
    """A ``GET`` that streams without end answers ``HEAD`` with its headers, and the stream
    is stopped (the request does not hang)."""
    app = FastAPI()

    @app.get("/forever")
    async def forever() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                yield b"data\n"
                await asyncio.sleep(0.01)
        return StreamingResponse(chunks(), media_type="text/plain")

    async def heads(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            await serve_head(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    with serve(heads) as url:
        head = httpx.head(url + "/forever", timeout=10)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"].startswith("text/plain")
