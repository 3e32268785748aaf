"""The simulator's Cohere dialect read by Cohere's official SDK (``cohere.ClientV2``): plain and
streamed chat, tools, embed and errors parse with the SDK's own types. A field the SDK rejects is
a simulator bug, so the raw bodies and events are also validated strictly against those types
(the SDK itself constructs leniently and only logs what it skips)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import cohere
import httpx
import orjson
import pydantic
import pytest
from cohere.core.api_error import ApiError
from cohere.v2.types.v2chat_response import V2ChatResponse
from cohere.v2.types.v2chat_stream_response import V2ChatStreamResponse

from app.simulator.cohere import PREAMBLE_TOKENS

MODEL = "command-a-03-2025"
TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
SDK_TOOL = cohere.ToolV2.model_validate(TOOL)


def user(text: str) -> list[cohere.ChatMessageV2]:
    return [cohere.UserChatMessageV2(content=text)]
STREAM_EVENTS = pydantic.TypeAdapter(V2ChatStreamResponse)


@pytest.fixture
def client(simulator: str) -> Iterator[cohere.ClientV2]:
    """The SDK's client on the simulator, over an HTTP client the test closes."""
    with httpx.Client(timeout=30) as http:
        yield cohere.ClientV2(api_key="co-test-key", base_url=simulator, httpx_client=http)


def raw_events(simulator: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) pairs of a raw streamed /v2/chat answer."""
    out: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("POST", simulator + "/v2/chat", json={**body, "stream": True},
                      headers={"Authorization": "Bearer k"}) as answer:
        name = ""
        for line in answer.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, orjson.loads(line[6:])))
    return out


def test_chat_parses_with_sdk_types(client: cohere.ClientV2, simulator: str) -> None:
    """A chat answer parses as V2ChatResponse, strictly too, with consistent usage."""
    reply = client.chat(model=MODEL, messages=user("Hello there"),
                        max_tokens=6, logprobs=True)
    assert reply.finish_reason == "MAX_TOKENS"
    assert reply.message.content is not None
    text = reply.message.content[0]
    assert text.type == "text" and text.text.startswith("Simulated reply")
    assert reply.usage is not None and reply.usage.billed_units is not None
    assert reply.usage.billed_units.output_tokens == 6
    assert reply.usage.tokens is not None and reply.usage.tokens.input_tokens == \
        (reply.usage.billed_units.input_tokens or 0) + PREAMBLE_TOKENS
    assert reply.logprobs is not None and len(reply.logprobs) == 6
    raw = httpx.post(simulator + "/v2/chat", headers={"Authorization": "Bearer k"},
                     json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    V2ChatResponse.model_validate(raw.json())


def test_tool_call_parses_with_sdk_types(client: cohere.ClientV2) -> None:
    """tool_choice REQUIRED answers a tool call with a plan and JSON arguments."""
    reply = client.chat(model=MODEL, messages=user("Paris?"),
                        tools=[SDK_TOOL], tool_choice="REQUIRED")
    assert reply.finish_reason == "TOOL_CALL"
    assert reply.message.tool_plan
    (call,) = reply.message.tool_calls or []
    assert call.function is not None and call.function.name == "get_weather"
    assert "city" in orjson.loads(call.function.arguments or "")


def test_chat_stream_every_event_parses(client: cohere.ClientV2, simulator: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Text and tool streams: every event is one of the SDK's typed events (none skipped),
    message-end carries the finish reason and usage, and each raw event validates strictly
    with its SSE event name equal to its type."""
    caplog.set_level(logging.WARNING)
    text_events = list(client.chat_stream(
        model=MODEL, messages=user("Hi"), logprobs=True))
    tool_events = list(client.chat_stream(
        model=MODEL, messages=user("Paris?"), tools=[SDK_TOOL], tool_choice="REQUIRED"))
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    kinds = [e.type for e in text_events]
    assert kinds[:2] == ["message-start", "content-start"]
    assert kinds[-2:] == ["content-end", "message-end"]
    assert kinds.count("content-delta") == 16
    end = text_events[-1]
    assert end.type == "message-end" and end.delta is not None
    assert end.delta.finish_reason == "COMPLETE"
    assert end.delta.usage is not None and end.delta.usage.billed_units is not None
    assert end.delta.usage.billed_units.output_tokens == 16
    assert {e.type for e in tool_events} == {"message-start", "tool-plan-delta",
                                             "tool-call-start", "tool-call-delta",
                                             "tool-call-end", "message-end"}
    for body in ({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                  "logprobs": True},
                 {"model": MODEL, "messages": [{"role": "user", "content": "Paris?"}],
                  "tools": [TOOL], "tool_choice": "REQUIRED"}):
        events = raw_events(simulator, body)
        assert events
        for name, data in events:
            assert name == data["type"]
            STREAM_EVENTS.validate_python(data)


def test_embed_parses_with_sdk_types(client: cohere.ClientV2) -> None:
    """Embed answers every requested type, one vector per text, with billed input tokens."""
    reply = client.embed(model="embed-v4.0", texts=["hello", "goodbye"],
                         input_type="classification",
                         embedding_types=["float", "int8", "uint8", "binary", "ubinary",
                                          "base64"], output_dimension=256)
    embeddings = reply.embeddings
    assert embeddings.float_ is not None and [len(v) for v in embeddings.float_] == [256, 256]
    assert embeddings.int8 is not None and all(-128 <= x <= 127 for x in embeddings.int8[0])
    assert embeddings.uint8 is not None and all(0 <= x <= 255 for x in embeddings.uint8[0])
    assert embeddings.binary is not None and len(embeddings.binary[0]) == 32
    assert embeddings.ubinary is not None and embeddings.base64 is not None
    assert reply.meta is not None and reply.meta.billed_units is not None
    assert reply.meta.billed_units.input_tokens == 3  # "hello" 1, "goodbye" 2 (estimate)
    assert reply.texts == ["hello", "goodbye"]


@pytest.mark.parametrize(("call", "status", "message"), [
    ({"temperature": 1.5}, 400, "temperature must be a number between 0 and 1"),
    ({"tool_choice": "REQUIRED"}, 400, "tool_choice REQUIRED needs tools"),
    ({"request_options": {"additional_headers": {"X-Return-Error": "429"}}}, 429,
     "Simulated upstream error: 429"),
    ({"request_options": {"additional_headers": {"X-Return-Error": "401"}}}, 401,
     "Simulated upstream error: 401"),
])
def test_errors_parse_with_sdk_errors(client: cohere.ClientV2, call: dict[str, Any],
                                      status: int, message: str) -> None:
    """Validation and injected errors raise the SDK's error for the status, with Cohere's
    {"id", "message"} body."""
    with pytest.raises(ApiError) as caught:
        client.chat(model=MODEL, messages=user("x"), **call)
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == {"id", "message"}
    assert message in body["message"]


def test_embed_over_96_texts_is_refused_as_cohere_does(client: cohere.ClientV2) -> None:
    """More than 96 texts in one call is Cohere's 400."""
    with pytest.raises(ApiError) as caught:
        client.embed(model="embed-v4.0", texts=["t"] * 97, input_type="search_query",
                     embedding_types=["float"])
    assert caught.value.status_code == 400
