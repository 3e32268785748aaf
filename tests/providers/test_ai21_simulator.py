"""AI21's simulator dialect checked by AI21's own SDK, and the AI21 provider against it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import ai21
import aiohttp
import httpx
import pytest
from ai21.models.chat import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessageParam,
    FunctionToolDefinition,
    ToolDefinition,
    ToolParameters,
    UserMessage,
)
from pydantic import SecretStr

from app import errors
from app.providers import ai21 as ai21_provider
from app.providers.ai21 import AI21Provider
from app.providers.base import Json, Target
from tests.providers.calls import chat, header, received

KEY = "ai21-test-key-0123456789"
WEATHER = ToolDefinition(type="function", function=FunctionToolDefinition(
    name="get_weather", description="Current weather in a city",
    parameters=ToolParameters(type="object", properties={"city": {"type": "string"}},
                              required=["city"])))
HELLO: list[ChatMessageParam] = [UserMessage(role="user", content="Tell me about switchboards")]
SDK_WARNING = pytest.mark.filterwarnings(
    # ai21 4.3 posts its JSON with httpx's data=<bytes>, which httpx deprecates, and parses
    # stream chunks with its own deprecated from_dict: the SDK's warnings, not ours.
    "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning",
    "ignore:The 'from_dict' method is deprecated:DeprecationWarning")


@contextmanager
def sdk(simulator: str, **headers: str) -> Iterator[ai21.AI21Client]:
    """The SDK pointed at the simulator, on an httpx client closed afterwards."""
    with httpx.Client() as http:
        yield ai21.AI21Client(api_key=KEY, api_host=simulator + "/studio/v1", headers=headers,
                              http_client=http)


def undeclared(model: Any) -> set[str]:
    """Fields the simulator sent that the SDK's model does not declare."""
    return set(model.model_extra or {})


# --- the simulator, read by the ai21 SDK -------------------------------------------------------


@SDK_WARNING
def test_sdk_parses_a_plain_answer(simulator: str) -> None:
    """A plain answer parses into the SDK's ChatCompletionResponse with nothing undeclared but
    AI21's ``meta``."""
    with sdk(simulator) as client:
        answer = client.chat.completions.create(model="jamba-mini", messages=HELLO,
                                                max_tokens=8)
    assert isinstance(answer, ChatCompletionResponse)
    assert answer.id.startswith("chat-")
    choice = answer.choices[0]
    assert choice.message.content and choice.message.content.startswith("Simulated reply")
    assert choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8
    assert undeclared(answer) == {"meta"}
    assert undeclared(choice) == set() and undeclared(choice.message) == set()


@SDK_WARNING
def test_sdk_parses_a_stream(simulator: str) -> None:
    """A stream parses chunk by chunk (data lines only); usage comes on the last chunk."""
    with sdk(simulator) as client:
        chunks = list(client.chat.completions.create(model="jamba-mini", messages=HELLO,
                                                     stream=True))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("Simulated reply to: Tell me about switchboards")
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == len(chunks) - 2
    assert {c.id for c in chunks} == {chunks[0].id}


@SDK_WARNING
def test_sdk_parses_tool_calls_plain_and_streamed(simulator: str) -> None:
    """Tool calls parse in AI21's shape, complete and as streamed deltas."""
    ask: list[ChatMessageParam] = [UserMessage(role="user", content="Weather in Paris?")]
    with sdk(simulator) as client:
        answer = client.chat.completions.create(model="jamba-large", messages=ask,
                                                tools=[WEATHER])
        chunks = list(client.chat.completions.create(model="jamba-large", messages=ask,
                                                     tools=[WEATHER], stream=True))
    calls = answer.choices[0].message.tool_calls
    assert calls is not None
    call = calls[0]
    assert (call.type, call.function.name) == ("function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": ""}
    assert answer.choices[0].finish_reason == "tool_calls"
    # The SDK's ChoiceDelta declares role and content only: tool calls arrive as extra fields.
    deltas = [(c.choices[0].delta.model_extra or {}).get("tool_calls") for c in chunks]
    assert deltas[0] is None and deltas[1] is not None
    start = deltas[1][0]
    assert start["function"] == {"name": "get_weather"} and start["id"].startswith("call_")
    arguments = "".join(d[0]["function"]["arguments"] for d in deltas[2:] if d)
    assert json.loads(arguments) == {"city": ""}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@SDK_WARNING
def test_sdk_sees_validation_errors_as_422(simulator: str) -> None:
    """Out-of-range fields are FastAPI 422s, which the SDK raises as UnprocessableEntity."""
    with sdk(simulator) as client, pytest.raises(ai21.errors.UnprocessableEntity) as raised:
        client.chat.completions.create(model="jamba-mini", messages=HELLO, n=17)
    detail = json.loads(raised.value.details or "")["detail"]
    assert detail == [{"loc": ["body", "n"], "type": "value_error.number.not_le",
                       "msg": "ensure this value is less than or equal to 16"}]


@SDK_WARNING
def test_sdk_sees_injected_errors_in_ai21_shape(simulator: str) -> None:
    """X-Return-Error answers in AI21's ``{"detail": ...}`` shape."""
    with sdk(simulator, **{"X-Return-Error": "400"}) as client, \
            pytest.raises(ai21.errors.BadRequest) as raised:
        client.chat.completions.create(model="jamba-mini", messages=HELLO)
    assert json.loads(raised.value.details or "") == {
        "detail": "Simulated upstream error: 400 Bad Request."}


@pytest.mark.parametrize(("body", "loc"), [
    ({"messages": [{"role": "user"}]}, ["body", "messages", 0, "content"]),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
     ["body", "messages", 0, "content"]),
    ({"messages": [{"role": "developer", "content": "x"}]}, ["body", "messages", 0, "role"]),
    ({"stream": True, "n": 2}, ["body", "n"]),
    ({"top_p": 0}, ["body", "top_p"]),
    ({"max_tokens": 4097}, ["body", "max_tokens"]),
    ({"response_format": {"type": "json_schema"}}, ["body", "response_format", "type"]),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
     ["body", "tools", 0, "function", "parameters", "properties"]),
])
def test_simulator_refuses_what_ai21_refuses(simulator: str, body: Json, loc: list[Any]
                                             ) -> None:
    """OpenAI shapes AI21 does not take are 422s naming the field; unknown fields pass."""
    request = {"model": "jamba-mini", "messages": [{"role": "user", "content": "hi"}], **body}
    answer = httpx.post(simulator + "/studio/v1/chat/completions", json=request,
                        headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == loc
    fine = httpx.post(simulator + "/studio/v1/chat/completions",
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={**request | {"n": 1}, "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 5, "top_p": 1, "response_format": None, "tools": None,
                            "stream": False, "logit_bias": {"1": 5}, "seed": 3})
    assert fine.status_code == 200, fine.text


def test_simulator_wants_a_bearer_key(simulator: str) -> None:
    """No Authorization header: 401 in AI21's shape."""
    answer = httpx.post(simulator + "/studio/v1/chat/completions",
                        json={"model": "jamba-mini", "messages": []})
    assert answer.status_code == 401 and isinstance(answer.json()["detail"], str)


# --- the provider, against the simulator -------------------------------------------------------


def provider(simulator: str, session: aiohttp.ClientSession, **headers: str
             ) -> ai21_provider.AI21Chat:
    config = AI21Provider(type="ai21", api_key=SecretStr(KEY), headers=headers,
                          base_url=simulator + "/studio/v1")
    return ai21_provider.build(config, session)


TARGET = Target(provider="ai21", model="jamba-mini")


async def collect(stream: AsyncIterator[Json]) -> list[Json]:
    return [chunk async for chunk in stream]


async def test_provider_chat_sends_ai21_request_and_returns_completion(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """The provider posts AI21's payload with the bearer key and returns an OpenAI answer."""
    call = chat({"model": "m", "max_completion_tokens": 6, "seed": 1, "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]})
    result = await provider(simulator, session).chat(call, target=TARGET)
    assert result.body["object"] == "chat.completion" and result.body["model"] == "jamba-mini"
    assert result.body["choices"][0]["finish_reason"] == "length"
    assert result.usage is not None and result.usage.completion_tokens == 6
    (record,) = await received(session, simulator)
    assert record["path"] == "/studio/v1/chat/completions"
    assert header(record, "authorization") == f"Bearer {KEY}"
    assert record["body"] == {
        "model": "jamba-mini", "max_tokens": 6, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"}]}


async def test_provider_stream_ends_with_a_usage_chunk(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """Streamed: role, content, finish, then a choices-less usage chunk."""
    call = chat({"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    chunks = await collect(provider(simulator, session).stream_chat(call, target=TARGET))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert all("usage" not in c for c in chunks[:-1])


async def test_provider_streamed_tool_call_reassembles(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """A streamed tool call reassembles into OpenAI tool_call deltas."""
    call = chat({"model": "m", "stream": True, "tools": [WEATHER],
                 "messages": [{"role": "user", "content": "weather in Oslo"}]})
    chunks = await collect(provider(simulator, session).stream_chat(call, target=TARGET))
    calls = [d for c in chunks if c["choices"]
             for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["type"] == "function" and calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(d["function"]["arguments"] for d in calls)) == {"city": ""}


async def test_provider_maps_upstream_validation_errors(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """A 422 AI21 raises (here from a bad target param) keeps its status and names the field."""
    target = Target(provider="ai21", model="jamba-mini", params={"temperature": 3})
    with pytest.raises(errors.UpstreamRejected) as raised:
        await provider(simulator, session).chat(chat({"model": "m", "messages": [
            {"role": "user", "content": "hi"}]}), target=target)
    assert (raised.value.status_code, raised.value.param) == (422, "temperature")


@pytest.mark.parametrize(("fault", "kind"), [
    ({"X-Sim-End-After": "2"}, errors.BadUpstreamResponse),
    ({"X-Sim-Error-After": "2"}, errors.UpstreamError),
    ({"X-Sim-Cut-After": "2"}, errors.UpstreamConnectError),
])
async def test_provider_stream_failures_are_errors(
        simulator: str, session: aiohttp.ClientSession, fault: dict[str, str],
        kind: type[errors.GatewayError]) -> None:
    """A truncated, failed or cut stream raises after the chunks that did arrive."""
    call = chat({"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    seen: list[Json] = []
    with pytest.raises(kind):
        async for chunk in provider(simulator, session, **fault).stream_chat(call,
                                                                          target=TARGET):
            seen.append(chunk)
    assert len(seen) == 3  # the role chunk and two content chunks


async def test_provider_scrubs_an_echoed_key(simulator: str,
                                             session: aiohttp.ClientSession) -> None:
    """An upstream 401 that echoes the key: the gateway's error never carries it."""
    broken = provider(simulator, session, **{"X-Return-Error": "401", "X-Sim-Echo-Key": "1"})
    with pytest.raises(errors.UpstreamError) as raised:
        await broken.chat(chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
                          target=TARGET)
    assert raised.value.status_code == 502
    assert KEY not in raised.value.message and "upstream refused" in raised.value.message
