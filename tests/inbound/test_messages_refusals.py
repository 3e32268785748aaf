# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""What ``/v1/messages`` and ``/v1/messages/count_tokens`` refuse, and how the refusal reads to
an Anthropic client: the same 400 from both (a count of a call the gateway refuses misleads),
naming ``/v1/messages`` and the client's own fields."""

from __future__ import annotations

import base64
import json
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


LONG = "a" * 100
CUSTOM: Any = {"name": LONG, "input_schema": {"type": "object"}}


@pytest.mark.parametrize(("model", "tools", "field"), [
    ("gpt", [CUSTOM], "tools[0].name"),
    ("claude", [CUSTOM], "tools[0].name"),
    ("claude", [{"type": "web_search_20250305", "name": "web_search"}, CUSTOM], "tools[1].name"),
], ids=["translated", "native", "after-a-server-tool"])
def test_a_tool_refused_by_validation_is_named_in_the_clients_terms(
        gw: RunningGateway, model: str, tools: Any, field: str) -> None:
    """A tool name over 64 characters (Anthropic's limit too) is a 400 naming the client's
    ``tools[i].name`` (its own index, server tools counted), not the translation's
    ``tools[j].function.name``, from ``/v1/messages`` and ``count_tokens``."""
    sent, counted = both(gw, {"model": model, "tools": tools, "messages": HI})
    same_refusal(sent, counted)
    message = sent.json()["error"]["message"]
    assert f"'{field}'" in message and "function" not in message, message


@pytest.mark.parametrize(("model", "turns", "field"), [
    ("gpt", [{"role": "user", "content": []}], "messages[0].content"),
    ("claude", [{"role": "user", "content": []}], "messages[0].content"),
    ("gpt", [*HI, {"role": "user", "content": []}], "messages[1].content"),
    ("gpt", [*HI, {"role": "assistant", "content": ""}, *HI], "messages[1].content"),
], ids=["only-turn", "native", "last-user-turn", "assistant-in-between"])
def test_an_empty_turn_is_refused_naming_it(gw: RunningGateway, model: str, turns: Any,
                                            field: str) -> None:
    """A turn with empty content is Anthropic's 400 naming ``messages[i].content``, for a
    translated target as for a native one (it was dropped from the translation, or refused as
    an empty message list)."""
    sent, counted = both(gw, {"model": model, "messages": turns})
    same_refusal(sent, counted)
    message = sent.json()["error"]["message"]
    assert message.startswith(f"{field}: all messages must have non-empty content"), message


def test_a_final_empty_assistant_turn_is_still_taken(gw: RunningGateway) -> None:
    """Only a final assistant turn (a prefill) may be empty, as Anthropic takes it."""
    sent, counted = both(gw, {"model": "gpt",
                              "messages": [*HI, {"role": "assistant", "content": []}]})
    assert sent.status_code == counted.status_code == 200, (sent.text, counted.text)


def test_a_pdf_document_counts_in_the_estimate(gw: RunningGateway) -> None:
    """A base64 PDF ``document`` counts 1,500 tokens a 100 KB page in ``count_tokens`` and in
    a translated stream's ``message_start`` (it counted none)."""
    data = base64.b64encode(b"%" * 300_000).decode()
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": data}}
    http = gw.http()
    counts = []
    for content in ([{"type": "text", "text": "hi"}], [pdf, {"type": "text", "text": "hi"}]):
        body = {"model": "gpt", "messages": [{"role": "user", "content": content}]}
        counted = http.post("/v1/messages/count_tokens", json=body).json()["input_tokens"]
        streamed = http.post("/v1/messages", json={**body, "max_tokens": 5, "stream": True})
        start = next(json.loads(line[5:]) for line in streamed.text.splitlines()
                     if line.startswith("data:") and '"message_start"' in line)
        assert start["message"]["usage"]["input_tokens"] == counted
        counts.append(counted)
    assert counts[1] == counts[0] + 3 * 1500
