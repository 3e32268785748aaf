"""A body over ``limits.max_body_bytes`` is a 413 with code ``request_too_large`` on every route
that reads one (by its ``Content-Length`` or as a chunked body arrives); under
``/v1/messages`` Anthropic's shape says it with its type ``request_too_large``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app import errors
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway, sim_config

LIMIT = 2048
MASTER = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
PADDING = "x" * (2 * LIMIT)
BODIES = {
    "/v1/chat/completions": {"model": "chat", "messages": [{"role": "user", "content": PADDING}]},
    "/v1/embeddings": {"model": "embed", "input": PADDING},
    "/v1/feedback": {"request_id": "r", "comment": PADDING},
    "/admin/teams": {"name": PADDING},
    "/v1/messages": {"model": "chat", "max_tokens": 5,
                     "messages": [{"role": "user", "content": PADDING}]},
}


@pytest.fixture
def small(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    """A gateway on the simulator whose body limit is ``LIMIT`` bytes."""
    with run_gateway({**sim_config(simulator), "limits": {"max_body_bytes": LIMIT}}) as gw:
        yield gw


def _chunked(body: bytes) -> Iterator[bytes]:
    """``body`` sent in pieces, with no ``Content-Length``."""
    for start in range(0, len(body), 512):
        yield body[start:start + 512]


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("sent", ["length", "chunked"])
def test_a_body_over_the_limit_is_request_too_large(small: RunningGateway, path: str,
                                                    sent: str) -> None:
    """413, ``type: invalid_request_error``, ``code: request_too_large`` (Anthropic's
    ``request_too_large`` type under ``/v1/messages``), announced or counted."""
    raw = httpx.Request("POST", "/", json=BODIES[path]).content
    content: Any = raw if sent == "length" else _chunked(raw)
    response = httpx.post(small.url + path, content=content, headers=MASTER, timeout=30)
    assert response.status_code == 413, response.text
    if path == "/v1/messages":
        assert response.json()["error"]["type"] == "request_too_large"
        return
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    assert error["message"] == f"Request body is larger than the limit of {LIMIT} bytes."


def test_the_code_is_the_default_and_a_template_keeps_its_own() -> None:
    """``BodyTooLarge`` says ``request_too_large`` unless it is given a code (a rendered
    template's ``prompt_too_large``)."""
    assert errors.BodyTooLarge("big").body()["error"]["code"] == "request_too_large"
    assert errors.BodyTooLarge("big", code="prompt_too_large").code == "prompt_too_large"
