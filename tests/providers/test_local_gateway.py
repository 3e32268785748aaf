"""The ``local`` provider's request bound behind a running gateway."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
)


def test_a_request_past_max_request_chars_is_a_400_naming_input(
        run_gateway: GatewayFactory) -> None:
    """A client sending more characters than ``max_request_chars`` gets OpenAI's 400 shape
    naming ``input``, before any model work (this one never loads the model)."""
    raw = {"providers": {"minilm": {"type": "local", "device": "cpu", "max_request_chars": 50}},
           "models": {"mini": {"targets": [{"provider": "minilm",
                                            "model": "all-MiniLM-L6-v2"}]}}}
    with run_gateway(raw) as gateway:
        answer = gateway.http().post("/v1/embeddings",
                                     json={"model": "mini", "input": ["a" * 30, "b" * 21]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "input"
    assert error["type"] == "invalid_request_error"
    assert "at most 50 characters" in error["message"]
