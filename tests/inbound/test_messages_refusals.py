# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""What ``/v1/messages`` and ``/v1/messages/count_tokens`` refuse, and how the refusal reads to
an Anthropic client: the same 400 from both (a count of a call the gateway refuses misleads),
naming ``/v1/messages`` and the client's own fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    RunningGateway,
    run_gateway,
)

HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = {
        "providers": {
            "oai": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-s"},
            "claude": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-s"},
            "tei": {"type": "huggingface", "api": "tei", "base_url": simulator + "/tei",
                    "api_key": "hf_gateway_secret_0123456789"},
        },
        "models": {
            "gpt": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]},
            "claude": {"targets": [{"provider": "claude",
                                    "model": "claude-sonnet-4-20250514"}]},
            "tei": {"targets": [{"provider": "tei", "model": "BAAI/bge-small-en-v1.5"}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }
    with run_gateway(raw) as running:
        yield running


def both(gw: RunningGateway, body: dict[str, Any]) -> tuple[Any, Any]:
    """The answers of ``/v1/messages`` and of ``count_tokens`` to ``body``."""
    http = gw.http()
    sent = http.post("/v1/messages", json={"max_tokens": 5, **body},
                     headers={"x-request-id": "refused"})
    counted = http.post("/v1/messages/count_tokens", json=body)
    return sent, counted


def same_refusal(sent: Any, counted: Any) -> None:
    """The same 400 body, but the call's ``request_id`` (count_tokens is no call)."""
    assert sent.status_code == counted.status_code == 400, (sent.text, counted.text)
    assert sent.json().pop("request_id") and "request_id" not in counted.json()
    assert {**sent.json(), "request_id": None} == {**counted.json(), "request_id": None}


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_with_no_chat_target_is_refused_naming_messages(gw: RunningGateway,
                                                                 stream: bool) -> None:
    """A model none of whose targets serves chat (an embeddings-only TEI) is a 400
    ``unsupported_endpoint`` naming ``/v1/messages`` (what the client called), from
    ``/v1/messages`` (streamed or not) and from ``count_tokens`` alike; the call record keeps
    the model and the same message."""
    sent, counted = both(gw, {"model": "tei", "messages": HI, "stream": stream})
    same_refusal(sent, counted)
    error = sent.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "/v1/messages" in error["message"] and "/v1/chat/completions" not in error["message"]
    record = gw.sink.by_id("refused")
    assert record.public_model == "tei" and record.error_message == error["message"]


@pytest.mark.parametrize("body", [
    {"tools": [{"type": "web_search_20250305", "name": "web_search"}], "messages": HI},
    {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}}]}]},
    {"container": "abc", "messages": HI},
], ids=["server-tool", "url-document", "container"])
def test_native_only_parts_on_a_translated_model_are_refused_by_count_tokens(
        gw: RunningGateway, body: dict[str, Any]) -> None:
    """What only a native target can serve, asked of a model with none, is the same 400 from
    ``count_tokens`` as from ``/v1/messages`` (no count of a call that is refused); a model
    with a native target counts it."""
    sent, counted = both(gw, {"model": "gpt", **body})
    same_refusal(sent, counted)
    assert "natively" in sent.json()["error"]["message"]
    native = gw.http().post("/v1/messages/count_tokens", json={"model": "claude", **body})
    assert native.status_code == 200 and native.json()["input_tokens"] > 0
