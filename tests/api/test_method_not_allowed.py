"""A path served, asked with a method it does not take: 405 with ``Allow`` naming every method
the path takes (RFC 9110), code ``method_not_allowed``, a message that names them too."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import MASTER_KEY, RunningGateway

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/admin/config/reload", "POST"),
    ("DELETE", "/v1/models", "GET, HEAD"),
    ("OPTIONS", "/v1/chat/completions", "POST"),
    ("GET", "/v1/embeddings", "POST"),
    ("PUT", "/v1/feedback", "POST"),
    ("DELETE", "/admin/keys", "GET, HEAD, POST"),  # two routes: both named, not the first's
    ("POST", "/admin/keys/key_x", "GET, HEAD, PATCH, DELETE"),
    ("DELETE", "/admin/prompts/p/versions/1", "GET, HEAD"),
])
def test_405_names_the_methods_the_path_takes(gateway: RunningGateway, method: str, path: str,
                                              allowed: str) -> None:
    """With or without a key: status 405, ``Allow``, OpenAI's shape with a precise code."""
    for headers in (MASTER, {}):
        response = httpx.request(method, gateway.url + path, headers=headers)
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == allowed
        assert response.json() == {"error": {
            "message": f"{method} is not allowed on {path}; it allows {allowed}.",
            "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}}


def test_a_head_405_has_allow_and_no_body(gateway: RunningGateway) -> None:
    """``HEAD /v1/chat/completions``: 405 with ``Allow: POST`` (a HEAD answer has no body)."""
    response = httpx.head(gateway.url + "/v1/chat/completions")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.content == b""


def test_a_messages_405_is_in_anthropics_shape(gateway: RunningGateway) -> None:
    """Under ``/v1/messages`` the 405 is in Anthropic's error shape, as its 404s are."""
    response = httpx.get(gateway.url + "/v1/messages", headers={"x-api-key": MASTER_KEY})
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.json() == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "GET is not allowed on /v1/messages; it allows POST."}}
