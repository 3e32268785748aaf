"""The Gemini provider against the simulator, and the simulator against google-genai's own
types (its pydantic models forbid unknown fields, so a field Google does not send fails)."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import types
from pydantic import SecretStr

from app import errors
from app.providers import gemini
from app.providers.base import EmbeddingCall, Json, Target
from app.providers.gemini import GeminiProvider
from app.schemas import EmbeddingRequest
from app.simulator.gemini import API_KEY
from app.simulator.gemini_request import DECLARATION_FIELDS
from tests.providers.test_gemini_translation import WEATHER, chat_call

TARGET = Target(provider="gemini", model="gemini-2.5-flash")


def provider(simulator: str, session: aiohttp.ClientSession, *, key: str = API_KEY,
             headers: dict[str, str] | None = None) -> gemini.GeminiAPI:
    config = GeminiProvider(type="gemini", api_key=SecretStr(key),
                            base_url=f"{simulator}/gemini/v1beta", headers=headers or {})
    return gemini.build(config, session)


async def last_received(simulator: str, session: aiohttp.ClientSession) -> Json:
    async with session.get(f"{simulator}/_sim/requests?limit=1") as response:
        received: list[Json] = await response.json()
    return received[-1]


async def collect(stream: AsyncIterator[Json]) -> list[Json]:
    return [chunk async for chunk in stream]


async def raw(simulator: str, session: aiohttp.ClientSession, method: str, body: Json,
              *, model: str = "gemini-2.5-flash", query: str = "") -> tuple[int, bytes]:
    async with session.post(f"{simulator}/gemini/v1beta/models/{model}:{method}{query}",
                            json=body, headers={"x-goog-api-key": API_KEY}) as response:
        return response.status, await response.read()


# --- the provider against the simulator ----------------------------------------------------


async def test_chat_reaches_generate_content_with_key_header(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A chat posts generateContent with the key in x-goog-api-key (not the URL) and reads
    back text and usage."""
    result = await provider(simulator, session).chat(chat_call(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me about the ocean."}]), target=TARGET)
    sent = await last_received(simulator, session)
    assert sent["path"] == "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["query"] == "" and sent["headers"]["x-goog-api-key"] == API_KEY
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    choice = result.body["choices"][0]
    assert choice["message"]["content"].startswith("Simulated reply to: Tell me about")
    assert choice["finish_reason"] == "stop"
    assert result.usage is not None and result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens == 16


async def test_stream_yields_text_then_usage(simulator: str,
                                             session: aiohttp.ClientSession) -> None:
    """A stream asks for alt=sse, yields one delta per piece, the finish, then usage."""
    chunks = await collect(provider(simulator, session).stream_chat(
        chat_call(max_tokens=5), target=TARGET))
    sent = await last_received(simulator, session)
    assert sent["path"].endswith(":streamGenerateContent") and sent["query"] == "alt=sse"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])
    assert text == "Simulated reply to:"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


async def test_forced_tool_and_structured_output(simulator: str,
                                                 session: aiohttp.ClientSession) -> None:
    """tool_choice required yields a tool call with JSON arguments; a JSON schema yields an
    instance of it."""
    api = provider(simulator, session)
    result = await api.chat(chat_call(tools=[WEATHER], tool_choice="required"), target=TARGET)
    (call,) = result.body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert set(orjson.loads(call["function"]["arguments"])) == {"city"}
    assert result.body["choices"][0]["finish_reason"] == "tool_calls"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    result = await api.chat(chat_call(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}), target=TARGET)
    assert set(orjson.loads(result.body["choices"][0]["message"]["content"])) == {"n"}


async def test_thinking_counts_as_completion(simulator: str,
                                             session: aiohttp.ClientSession) -> None:
    """Thoughts come back as reasoning_content and are billed as completion tokens."""
    result = await provider(simulator, session).chat(chat_call(
        generationConfig={"thinkingConfig": {"includeThoughts": True}}), target=TARGET)
    message = result.body["choices"][0]["message"]
    assert message["reasoning_content"].startswith("Considering how to answer")
    assert result.usage is not None and result.usage.reasoning_tokens > 0
    assert result.usage.completion_tokens == 16 + result.usage.reasoning_tokens


async def test_embeddings_in_order_with_base64(simulator: str,
                                               session: aiohttp.ClientSession) -> None:
    """Embeddings keep the input order, honour dimensions and encode base64 as floats32."""
    api = provider(simulator, session)
    target = Target(provider="g", model="gemini-embedding-001",
                    params={"taskType": "SEMANTIC_SIMILARITY"})
    body = {"model": "e", "input": ["one", "two"], "dimensions": 8}
    result = await api.embed(EmbeddingCall(request=EmbeddingRequest.model_validate(body),
                                           body=body), target=target)
    sent = await last_received(simulator, session)
    assert sent["body"]["requests"][1]["taskType"] == "SEMANTIC_SIMILARITY"
    floats = [d["embedding"] for d in result.body["data"]]
    assert [len(v) for v in floats] == [8, 8] and floats[0] != floats[1]
    assert result.usage is not None and result.usage.estimated
    body64 = {**body, "encoding_format": "base64"}
    encoded = await api.embed(EmbeddingCall(request=EmbeddingRequest.model_validate(body64),
                                            body=body64), target=target)
    decoded = struct.unpack("<8f", base64.b64decode(encoded.body["data"][1]["embedding"]))
    assert decoded == pytest.approx(floats[1], rel=1e-6)


async def test_refused_key_is_502_without_the_key(simulator: str,
                                                  session: aiohttp.ClientSession) -> None:
    """Google's API_KEY_INVALID is a 502 naming the Gemini API, the key nowhere in it."""
    secret = "not-a-google-key-4242"
    with pytest.raises(errors.UpstreamError) as caught:
        await provider(simulator, session, key=secret).chat(chat_call(), target=TARGET)
    assert caught.value.status_code == 502
    assert "Gemini API" in caught.value.message and secret not in str(caught.value.body())


async def test_429_keeps_retry_after(simulator: str, session: aiohttp.ClientSession) -> None:
    """An upstream RESOURCE_EXHAUSTED is a 429 with its retry-after."""
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await provider(simulator, session, headers={"X-Return-Error": "429"}).chat(
            chat_call(), target=TARGET)
    assert caught.value.retry_after_s == 1.0


async def test_error_frame_mid_stream_is_raised(simulator: str,
                                                session: aiohttp.ClientSession) -> None:
    """An error frame after two pieces raises the mapped error after those pieces."""
    got: list[Json] = []
    with pytest.raises(errors.UpstreamUnavailable):
        async for chunk in provider(simulator, session,
                                    headers={"X-Sim-Error-After": "2"}).stream_chat(
                chat_call(), target=TARGET):
            got.append(chunk)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in got) == "Simulated"


async def test_stream_cut_short_is_bad_upstream(simulator: str,
                                                session: aiohttp.ClientSession) -> None:
    """A stream ended before its finishReason is a BadUpstreamResponse."""
    with pytest.raises(errors.BadUpstreamResponse):
        await collect(provider(simulator, session, headers={"X-Sim-End-After": "2"})
                      .stream_chat(chat_call(), target=TARGET))


# --- the simulator against google-genai's types --------------------------------------------


async def test_generate_content_validates_as_sdk_type(simulator: str,
                                                      session: aiohttp.ClientSession) -> None:
    """generateContent answers (text, thoughts, n=2, tool call, safety stop) parse as
    GenerateContentResponse."""
    bodies: list[Any] = [
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
         "generationConfig": {"candidateCount": 2,
                              "thinkingConfig": {"includeThoughts": True}}},
        {"contents": [{"parts": [{"text": "hi"}]}],
         "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {
             "type": "object", "properties": {"a": {"type": "string"}}}}]}],
         "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
    ]
    for body in bodies:
        status, data = await raw(simulator, session, "generateContent", body)
        assert status == 200
        parsed = types.GenerateContentResponse.model_validate(orjson.loads(data))
        assert parsed.candidates and parsed.usage_metadata is not None
    status, data = await raw(simulator, session, "generateContent", bodies[1])
    parsed = types.GenerateContentResponse.model_validate(orjson.loads(data))
    assert parsed.function_calls is not None and parsed.function_calls[0].name == "f"


async def test_stream_chunks_validate_as_sdk_type(simulator: str,
                                                  session: aiohttp.ClientSession) -> None:
    """Every streamed data frame parses as a GenerateContentResponse."""
    status, data = await raw(simulator, session, "streamGenerateContent",
                             {"contents": [{"parts": [{"text": "hi"}]}]}, query="?alt=sse")
    assert status == 200
    frames = [line[6:] for line in data.decode().split("\r\n") if line.startswith("data: ")]
    chunks = [types.GenerateContentResponse.model_validate(orjson.loads(f)) for f in frames]
    assert len(chunks) == 17
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == "STOP"


def test_batch_embed_validates_and_sdk_client_works(simulator: str) -> None:
    """The genai client itself embeds, generates and streams against the simulator (its
    synchronous client: the async one subclasses aiohttp's session, which warns)."""
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(
        base_url=f"{simulator}/gemini", api_version="v1beta"))
    embedded = client.models.embed_content(
        model="gemini-embedding-001", contents=["a", "b"],
        config=types.EmbedContentConfig(output_dimensionality=4))
    assert embedded.embeddings and [len(e.values or []) for e in embedded.embeddings] == [4, 4]
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="Hello there")
    assert answer.text is not None and answer.text.startswith("Simulated reply to: Hello there")
    pieces = [c.text for c in client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hello there")]
    assert "".join(p or "" for p in pieces) == answer.text


async def test_simulator_takes_function_declaration_fields_only(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """A function declaration holds FunctionDeclaration's fields (google-genai's type) and no
    others: a strict flag is Google's 400 naming the unknown field."""
    fields = types.FunctionDeclaration.model_fields
    assert {field.alias or name for name, field in fields.items()} == DECLARATION_FIELDS
    status, data = await raw(simulator, session, "generateContent", {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": [{"name": "f", "strict": True}]}]})
    assert status == 400
    error = orjson.loads(data)["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == ("Invalid JSON payload received. Unknown name \"strict\" at "
                                "'tools[0].function_declarations[0]': Cannot find field.")


async def test_simulator_validates_like_google(simulator: str,
                                               session: aiohttp.ClientSession) -> None:
    """Unknown fields, bad roles and oversized batches get Google's 400 INVALID_ARGUMENT."""
    cases: list[tuple[str, Json]] = [
        ("generateContent", {"contents": [{"parts": [{"text": "x"}]}], "bogus": 1}),
        ("generateContent", {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
        ("generateContent", {"contents": [{"parts": [{"text": "x"}]}],
                             "generationConfig": {"max_tokens": 3}}),
        ("batchEmbedContents", {"requests": [
            {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "x"}]}}] * 101}),
    ]
    for method, body in cases:
        status, data = await raw(simulator, session, method, body)
        assert status == 400, body
        assert orjson.loads(data)["error"]["status"] == "INVALID_ARGUMENT"
