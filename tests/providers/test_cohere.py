"""The Cohere provider: request, answer, stream and embed translation, errors, real examples from
Cohere's API reference, and the provider against the simulator."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from app import errors
from app.config import ConfigError, parse_config
from app.providers import PROVIDER_TYPES, cohere
from app.providers.base import ChatCall, EmbeddingCall, Json, Target
from app.providers.cohere import CohereProvider
from app.providers.cohere_embed import batch_payloads, read_batch
from app.providers.cohere_request import translate_request
from app.providers.cohere_response import map_error, to_chat_completion
from app.providers.cohere_stream import StreamTranslator
from app.schemas import ChatRequest, EmbeddingRequest

FIXTURES = Path(__file__).parent / "fixtures" / "cohere"
TARGET = Target(provider="co", model="command-a-03-2025")
EMBED_TARGET = Target(provider="co", model="embed-v4.0")
WEATHER_TOOL: Json = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def fixture(name: str) -> Json:
    loaded: Json = orjson.loads((FIXTURES / name).read_bytes())
    return loaded


def chat_call(**body: Any) -> ChatCall:
    body.setdefault("model", "co")
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def payload(target: Target = TARGET, *, stream: bool = False, **body: Any) -> Json:
    return translate_request(chat_call(**body), target=target, stream=stream)


def embed_call(**body: Any) -> EmbeddingCall:
    body.setdefault("model", "e")
    return EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)


# --- request translation -------------------------------------------------------------------


def test_minimal_request() -> None:
    """A bare request names the target's model and sends no max_tokens of its own."""
    assert payload() == {"model": TARGET.model, "stream": False,
                         "messages": [{"role": "user", "content": "Hello"}]}


def test_max_tokens_is_the_smaller_limit_else_the_targets_default() -> None:
    """max_tokens: the smaller client limit, else the target's default."""
    target = Target(provider="co", model="m", max_tokens_default=256)
    assert payload(target)["max_tokens"] == 256
    assert payload(target, max_tokens=99, max_completion_tokens=77)["max_tokens"] == 77


def test_roles_parts_and_tool_history() -> None:
    """System/developer stay in place, images become image_url parts, tool calls keep ids and
    their text becomes tool_plan, tool results keep tool_call_id, empty turns are left out."""
    out = payload(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                "detail": "low"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "developer", "content": [{"type": "text", "text": "French."}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "Il fait 18C."},
    ])
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                "detail": "low"}}]},
        {"role": "assistant", "tool_plan": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "system", "content": "French."},
        {"role": "assistant", "content": "Il fait 18C."},
    ]


@pytest.mark.parametrize(("choice", "expected", "names"), [
    (None, None, ["get_weather", "now"]),
    ("auto", None, ["get_weather", "now"]),
    ("required", "REQUIRED", ["get_weather", "now"]),
    ("none", "NONE", ["get_weather", "now"]),
    ({"type": "function", "function": {"name": "now"}}, "REQUIRED", ["now"]),
])
def test_tools_and_tool_choice(choice: Any, expected: str | None, names: list[str]) -> None:
    """Tools keep name/description/parameters (an empty schema when none); tool_choice maps to
    REQUIRED/NONE, and naming one function sends it alone, REQUIRED."""
    body: Json = {"tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}]}
    if choice is not None:
        body["tool_choice"] = choice
    out = payload(**body)
    assert out.get("tool_choice") == expected
    assert [t["function"]["name"] for t in out["tools"]] == names
    if "now" in names:
        assert out["tools"][-1]["function"]["parameters"] == {"type": "object",
                                                              "properties": {}}
    if "get_weather" in names:
        assert out["tools"][0] == WEATHER_TOOL


def test_strict_tool_sets_strict_tools() -> None:
    """A strict function sets Cohere's request-wide strict_tools."""
    strict = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    assert payload(tools=[strict])["strict_tools"] is True
    assert "strict_tools" not in payload(tools=[WEATHER_TOOL])


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
     {"type": "json_object", "json_schema": {"type": "object"}}),
])
def test_response_format(fmt: Json, expected: Json | None) -> None:
    """json_object and json_schema become Cohere's json_object (with the schema)."""
    assert payload(response_format=fmt).get("response_format") == expected


def test_sampling_fields() -> None:
    """temperature, seed, penalties, stop and logprobs carry over; top_p is clamped into p."""
    out = payload(temperature=0.3, top_p=1.0, stop="END", seed=7, frequency_penalty=0.2,
                  presence_penalty=0.4, logprobs=True, user="u", metadata={"a": "b"})
    assert (out["temperature"], out["p"], out["stop_sequences"], out["seed"]) == \
        (0.3, 0.99, ["END"], 7)
    assert (out["frequency_penalty"], out["presence_penalty"], out["logprobs"]) == \
        (0.2, 0.4, True)
    assert "user" not in out and "metadata" not in out
    assert payload(top_p=0.0)["p"] == 0.01
    assert payload(top_p=0.5)["p"] == 0.5


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"),
    ({"temperature": 1.5}, "temperature"),
    ({"frequency_penalty": -0.5}, "frequency_penalty"),
    ({"presence_penalty": 1.5}, "presence_penalty"),
    ({"seed": -1}, "seed"),
    ({"logprobs": True, "top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"1": 2.0}}, "logit_bias"),
    ({"tools": [WEATHER_TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"tools": [WEATHER_TOOL], "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "r"}}},
     "response_format.json_schema.schema"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]},
     "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
     "messages[0].content[0]"),
])
def test_requests_cohere_cannot_honour_are_refused(body: Json, param: str) -> None:
    """What Cohere can't do is a 400 naming the param, never silently ignored."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(**body)
    assert caught.value.param == param


def test_params_and_native_fields_layering() -> None:
    """Target params lie underneath (embed-only ones left out); client-native fields and
    translated ones win."""
    target = Target(provider="co", model="m", params={
        "k": 5, "temperature": 0.9, "safety_mode": "STRICT", "input_type": "search_query"})
    out = payload(target, temperature=0.2, k=40, stream=True)
    assert (out["k"], out["temperature"], out["safety_mode"], out["stream"]) == \
        (40, 0.2, "STRICT", True)
    assert "input_type" not in out


# --- answer translation --------------------------------------------------------------------


def test_reference_chat_answer_translates() -> None:
    """The API reference's /v2/chat answer becomes a chat.completion with billed usage."""
    answer = fixture("chat.json")["response"]
    body, usage = to_chat_completion(answer, model="command-a", created=1)
    choice = body["choices"][0]
    assert body["id"] == "c14c80c3-18eb-4519-9460-6c92edd8cfb4"
    assert body["model"] == "command-a"
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith("LLMs stand for Large Language Models")
    assert choice["message"]["content"] == answer["message"]["content"][0]["text"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 418)
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 418, "total_tokens": 423}


def test_reference_tool_answer_translates() -> None:
    """The reference's tool answer: two tool_calls with ids, thinking as reasoning_content."""
    body, usage = to_chat_completion(fixture("chat_tools.json")["response"], model="m",
                                     created=1)
    message = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    assert message["reasoning_content"].startswith("I will first find the sales summary")
    assert [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
            for c in message["tool_calls"]] == [
        ("query_daily_sales_report_hgxxmkby3wta", "query_daily_sales_report",
         {"day": "2023-09-29"}),
        ("query_product_catalog_rpg0z5h8yyz2", "query_product_catalog",
         {"category": "Electronics"})]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (127, 69)


@pytest.mark.parametrize(("reason", "finish"), [
    ("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"),
    ("TOOL_CALL", "tool_calls"), ("TIMEOUT", "length"),
    ("SOMETHING_NEW", "stop"),
])
def test_finish_reasons(reason: str, finish: str) -> None:
    """Each Cohere finish_reason has its OpenAI one."""
    body, _ = to_chat_completion({"id": "x", "finish_reason": reason, "message": {
        "role": "assistant", "content": [{"type": "text", "text": "hi"}]}}, model="m", created=0)
    assert body["choices"][0]["finish_reason"] == finish


def test_a_failed_generation_is_a_retryable_upstream_error() -> None:
    """ERROR has no OpenAI finish reason: the call failed upstream (a retryable 502, so the
    next target may serve it), and says why."""
    with pytest.raises(errors.UpstreamError) as caught:
        to_chat_completion({"id": "x", "finish_reason": "ERROR", "error": "overloaded",
                            "message": {"role": "assistant", "content": []}},
                           model="m", created=0)
    assert caught.value.code == "generation_failed" and "overloaded" in caught.value.message
    assert caught.value.retryable and caught.value.status_code == 502


def test_tool_plan_is_content_and_tokens_fall_back() -> None:
    """A tool_plan beside tool calls is the content; without billed units, tokens count;
    cached tokens carry over; logprobs become entries with summed logprobs."""
    body, usage = to_chat_completion({
        "id": "x", "finish_reason": "TOOL_CALL", "logprobs": [
            {"text": "Hi", "token_ids": [1, 2], "logprobs": [-0.5, -0.25]}],
        "message": {"role": "assistant", "tool_plan": "I will look.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        "usage": {"tokens": {"input_tokens": 30.0, "output_tokens": 4.0},
                  "cached_tokens": 10}}, model="m", created=0)
    assert body["choices"][0]["message"]["content"] == "I will look."
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (30, 4, 10)
    assert body["choices"][0]["logprobs"] == {"content": [
        {"token": "Hi", "logprob": -0.75, "bytes": [72, 105], "top_logprobs": []}]}


def test_answer_that_is_not_a_chat_response_is_a_bad_upstream_response() -> None:
    """Bodies that aren't v2 chat answers are a 502, not a crash."""
    with pytest.raises(errors.BadUpstreamResponse):
        to_chat_completion({"text": "v1 style"}, model="m", created=0)
    with pytest.raises(errors.BadUpstreamResponse):
        to_chat_completion({"id": "x", "finish_reason": "COMPLETE", "message": "hi"},
                           model="m", created=0)


# --- stream translation --------------------------------------------------------------------


def feed(events: list[Json]) -> tuple[StreamTranslator, list[Json]]:
    translator = StreamTranslator(model="command-a", created=5)
    chunks = [c for e in events for c in translator.feed(e["data"], event=e["event"])]
    return translator, chunks


def test_reference_text_stream_translates() -> None:
    """The reference's text stream: a role chunk, one chunk per delta, stop, then usage."""
    events = fixture("chat_stream.json")["events"]
    translator, chunks = feed(events)
    deltas = [e["data"]["delta"]["message"]["content"]["text"] for e in events
              if e["event"] == "content-delta"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]] == deltas
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 26,
                                   "total_tokens": 31}
    assert {c["id"] for c in chunks} == {"29f14a5a-11de-4cae-9800-25e4747408ea"}
    assert all(c["model"] == "command-a" and c["object"] == "chat.completion.chunk"
               for c in chunks)
    assert translator.done
    translator.finish()


def test_the_role_chunk_waits_for_the_first_token() -> None:
    """``message-start`` comes at once, before the model has produced anything: its role
    chunk goes out with the first token's, so the gateway's first chunk (first-chunk timeout,
    deadline, TTFT) is the first token."""
    translator = StreamTranslator(model="command-a", created=1)
    assert translator.feed({"type": "message-start", "id": "m1",
                            "delta": {"message": {"role": "assistant"}}}) == []
    first = translator.feed({"type": "content-delta", "index": 0,
                             "delta": {"message": {"content": {"text": "Hi"}}}})
    assert [c["choices"][0]["delta"] for c in first] == [
        {"role": "assistant", "content": ""}, {"content": "Hi"}]
    later = translator.feed({"type": "content-delta", "index": 0,
                             "delta": {"message": {"content": {"text": "!"}}}})
    assert [c["choices"][0]["delta"] for c in later] == [{"content": "!"}]


def test_reference_tool_stream_translates() -> None:
    """The reference's tool stream: plan text as content, two tool calls whose argument deltas
    join into the JSON the events carry, finish tool_calls."""
    events = fixture("chat_stream_tools.json")["events"]
    _, chunks = feed(events)
    plan = "".join(e["data"]["delta"]["message"]["tool_plan"] for e in events
                   if e["event"] == "tool-plan-delta")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plan and plan
    calls: dict[int, Json] = {}
    for c in chunks:
        for call in c["choices"][0]["delta"].get("tool_calls", ()) if c["choices"] else ():
            entry = calls.setdefault(call["index"], {"id": call.get("id"), "arguments": ""})
            if "name" in call.get("function", {}):
                entry["name"] = call["function"]["name"]
            entry["arguments"] += call["function"]["arguments"]
    assert [(calls[i]["id"], calls[i]["name"]) for i in sorted(calls)] == [
        ("query_daily_sales_report_j3f0adww9pmr", "query_daily_sales_report"),
        ("query_product_catalog_c66nf11r6s8g", "query_product_catalog")]
    assert all(isinstance(orjson.loads(calls[i]["arguments"]), dict) for i in calls)
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 126


def test_stream_cut_before_message_end_is_a_bad_upstream_response() -> None:
    """A stream that ends before message-end is reported, not passed off as complete."""
    translator, _ = feed(fixture("chat_stream.json")["events"][:5])
    with pytest.raises(errors.BadUpstreamResponse):
        translator.finish()


def test_stream_thinking_and_logprobs() -> None:
    """Thinking deltas become reasoning_content; a delta's logprobs ride on its chunk."""
    translator = StreamTranslator(model="m", created=0)
    (thinking,) = translator.feed({"type": "content-delta", "index": 0, "delta": {
        "message": {"content": {"thinking": "hmm"}}}})
    (text,) = translator.feed({"type": "content-delta", "index": 1, "delta": {
        "message": {"content": {"text": "ok"}}},
        "logprobs": {"text": "ok", "token_ids": [3], "logprobs": [-0.1]}})
    assert thinking["choices"][0]["delta"] == {"reasoning_content": "hmm"}
    assert text["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.1


# --- embeddings ----------------------------------------------------------------------------


def test_embed_batches_of_96_in_order_with_input_type_precedence() -> None:
    """200 texts are 3 batches (96, 96, 8) in order; input_type: request, params, default."""
    texts = [f"t{i}" for i in range(200)]
    batches = batch_payloads(embed_call(input=texts, dimensions=512), target=EMBED_TARGET,
                             input_type="search_document")
    assert [len(b["texts"]) for b in batches] == [96, 96, 8]
    assert [t for b in batches for t in b["texts"]] == texts
    assert batches[0] == {"model": "embed-v4.0", "input_type": "search_document",
                          "embedding_types": ["float"], "output_dimension": 512,
                          "texts": texts[:96]}
    with_params = Target(provider="co", model="e", params={"input_type": "clustering",
                                                           "truncate": "START"})
    (batch,) = batch_payloads(embed_call(input="x"), target=with_params,
                              input_type="search_document")
    assert (batch["input_type"], batch["truncate"]) == ("clustering", "START")
    (batch,) = batch_payloads(embed_call(input="x", input_type="search_query"),
                              target=with_params, input_type="search_document")
    assert batch["input_type"] == "search_query"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [1, 2, 3]}, "input"),
    ({"input": [[1, 2], [3]]}, "input"),
    ({"input": "x", "input_type": "image"}, "input_type"),
    ({"input": "x", "truncate": "MIDDLE"}, "truncate"),
])
def test_embed_refusals(body: Json, param: str) -> None:
    """Token-id inputs and values Cohere does not take are a 400 naming the param."""
    with pytest.raises(errors.InvalidRequest) as caught:
        batch_payloads(embed_call(**body), target=EMBED_TARGET, input_type="search_document")
    assert caught.value.param == param


@pytest.mark.parametrize("model", ["embed-english-v3.0", "embed-multilingual-light-v3.0",
                                   "embed-english-v2.0"])
def test_embed_dimensions_are_refused_for_fixed_size_models(model: str) -> None:
    """dimensions to an Embed v3 (or older) model, which does not take output_dimension, is a
    400 naming dimensions before sending; embed-v4.0 and unknown names send it."""
    with pytest.raises(errors.InvalidRequest) as caught:
        batch_payloads(embed_call(input="x", dimensions=256),
                       target=Target(provider="co", model=model), input_type="search_document")
    assert caught.value.param == "dimensions"
    for served in ("embed-v4.0", "embed-v5.0", "my-finetuned-embed"):
        (batch,) = batch_payloads(embed_call(input="x", dimensions=256),
                                  target=Target(provider="co", model=served),
                                  input_type="search_document")
        assert batch["output_dimension"] == 256


@pytest.mark.parametrize(("model", "params", "param"), [
    ("embed-v4.0", {"input_type": "query"}, "input_type"),
    ("embed-v4.0", {"truncate": "end"}, "truncate"),
    ("embed-english-v3.0", {"output_dimension": 256}, "output_dimension"),
    ("embed-v4.0", {"output_dimension": 300}, "output_dimension"),
])
def test_target_embed_params_cohere_refuses_are_config_errors(model: str, params: Json,
                                                              param: str) -> None:
    """A target's params that Cohere's embed would refuse on every call fail to load, one line
    naming the param (not a 400 blaming the client for a field it never sent)."""
    targets = [{"provider": "co", "model": model, "params": params}]
    raw: dict[str, Any] = {"providers": {"co": {"type": "cohere", "api_key": "co-key-0123456789"}},
                           "models": {"e": {"targets": targets}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    (line,) = [line.strip() for line in str(caught.value).splitlines() if "targets" in line]
    assert line.startswith(f"models.e.targets.0.params.{param}: ")
    targets[0] = {"provider": "co", "model": "embed-v4.0", "params": {
        "input_type": "search_query", "truncate": "END", "output_dimension": 256}}
    parse_config(raw, {})


def test_reference_embed_answer_translates() -> None:
    """The reference's /v2/embed answer gives its two float vectors and billed input tokens."""
    answer = fixture("embed.json")["response"]
    vectors, usage = read_batch(answer, expected=2)
    assert vectors == answer["embeddings"]["float"]
    assert vectors[0][:2] == [0.016296387, -0.008354187]
    assert usage is not None and usage.prompt_tokens == 2
    with pytest.raises(errors.BadUpstreamResponse):
        read_batch(answer, expected=3)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error_class", "client_status"), [
    (400, errors.UpstreamRejected, 400),
    (401, errors.UpstreamAuthFailed, 502),
    (422, errors.UpstreamRejected, 422),
    (429, errors.UpstreamRateLimited, 429),
    (498, errors.UpstreamRejected, 400),
    (499, errors.UpstreamUnavailable, 503),
    (500, errors.UpstreamUnavailable, 502),
    (503, errors.UpstreamUnavailable, 503),
])
def test_error_bodies_map_onto_the_gateway_tree(
    status: int, error_class: type[errors.GatewayError], client_status: int
) -> None:
    """Cohere's {"id", "message"} errors keep their message and get the right status."""
    error = map_error(status, {"id": "abc", "message": "went wrong"}, "")
    assert type(error) is error_class
    assert error.status_code == client_status
    assert "went wrong" in error.message


# --- against the simulator -----------------------------------------------------------------


def provider(simulator: str, session: aiohttp.ClientSession, *, key: str | None = "co-key",
             headers: dict[str, str] | None = None, **fields: Any) -> cohere.CohereV2:
    fields.setdefault("base_url", simulator)
    config = CohereProvider(type="cohere", api_key=SecretStr(key) if key else None,
                            headers=headers or {}, **fields)
    return cohere.build(config, session)


async def last_received(simulator: str, session: aiohttp.ClientSession, n: int = 1
                        ) -> list[Json]:
    async with session.get(f"{simulator}/_sim/requests?limit={n}") as response:
        received: list[Json] = await response.json()
    return received


async def collect(stream: AsyncIterator[Json]) -> list[Json]:
    return [chunk async for chunk in stream]


async def test_simulator_chat(simulator: str, session: aiohttp.ClientSession) -> None:
    """A chat reaches /v2/chat with the bearer key and reads back with billed usage."""
    result = await provider(simulator, session).chat(chat_call(max_tokens=5, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me about the ocean"}]), target=TARGET)
    (sent,) = await last_received(simulator, session)
    assert sent["path"] == "/v2/chat"
    assert sent["headers"]["authorization"] == "Bearer co-key"
    assert sent["body"]["max_tokens"] == 5
    body = result.body
    assert body["choices"][0]["message"]["content"].startswith("Simulated reply")
    assert body["choices"][0]["finish_reason"] == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5
    # The simulator's ``tokens`` carry 64 unbilled preamble tokens: billed units were read.
    assert result.usage.prompt_tokens == 14


async def test_simulator_stream_and_tool_stream(simulator: str,
                                                session: aiohttp.ClientSession) -> None:
    """Text and tool-call streams end with their finish chunk and a usage chunk."""
    upstream = provider(simulator, session, base_url=simulator + "/v2/")
    chunks = await collect(upstream.stream_chat(chat_call(stream=True), target=TARGET))
    assert "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c["choices"]).startswith("Simulated reply")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 16
    chunks = await collect(upstream.stream_chat(chat_call(
        stream=True, tools=[WEATHER_TOOL], tool_choice="required"), target=TARGET))
    calls = [call for c in chunks if c["choices"]
             for call in c["choices"][0]["delta"].get("tool_calls", ())]
    assert calls[0]["function"]["name"] == "get_weather"
    assert "city" in orjson.loads("".join(c["function"]["arguments"] for c in calls))
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_simulator_embed_batches(simulator: str, session: aiohttp.ClientSession) -> None:
    """200 inputs go out as 96/96/8 in order; vectors come back in input order, usage summed,
    base64 as little-endian float32."""
    texts = [f"text number {i}" for i in range(200)]
    upstream = provider(simulator, session)
    result = await upstream.embed(embed_call(input=texts), target=EMBED_TARGET)
    sent = await last_received(simulator, session, 3)
    assert [len(s["body"]["texts"]) for s in sent] == [96, 96, 8]
    assert {s["body"]["input_type"] for s in sent} == {"search_document"}
    single = await upstream.embed(embed_call(input=texts[150], encoding_format="base64"),
                                  target=EMBED_TARGET)
    data = result.body["data"]
    assert [d["index"] for d in data] == list(range(200))
    raw = base64.b64decode(single.body["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(data[150]["embedding"], abs=1e-6)
    assert result.usage is not None and result.usage.prompt_tokens == 600


@pytest.mark.parametrize(("status", "error_class", "client_status"), [
    (400, errors.UpstreamRejected, 400),
    (429, errors.UpstreamRateLimited, 429),
    (503, errors.UpstreamUnavailable, 503),
])
async def test_simulator_error_statuses(simulator: str, session: aiohttp.ClientSession,
                                        status: int, error_class: type[errors.GatewayError],
                                        client_status: int) -> None:
    """Injected statuses become the right gateway errors in calls, streams and embeddings;
    429 keeps its Retry-After."""
    upstream = provider(simulator, session, headers={"X-Return-Error": str(status)})
    with pytest.raises(error_class) as caught:
        await upstream.chat(chat_call(), target=TARGET)
    assert caught.value.status_code == client_status
    if status == 429:
        assert isinstance(caught.value, errors.UpstreamError)
        assert caught.value.retry_after_s == 1
    with pytest.raises(error_class):
        await anext(aiter(upstream.stream_chat(chat_call(stream=True), target=TARGET)))
    with pytest.raises(error_class):
        await upstream.embed(embed_call(input="x"), target=EMBED_TARGET)


async def test_simulator_refused_key_never_leaks(simulator: str,
                                                 session: aiohttp.ClientSession) -> None:
    """A 401 echoing the key is a 502 whose message does not carry the key."""
    upstream = provider(simulator, session, key="co-secret-key-123",
                        headers={"X-Return-Error": "401", "X-Sim-Echo-Key": "1"})
    with pytest.raises(errors.UpstreamError) as caught:
        await upstream.chat(chat_call(), target=TARGET)
    assert caught.value.status_code == 502
    assert "co-secret-key-123" not in str(caught.value.body())
    with pytest.raises(errors.UpstreamError) as caught:
        await provider(simulator, session, key=None).chat(chat_call(), target=TARGET)
    assert "no api key supplied" in caught.value.message


async def test_simulator_faulted_streams(simulator: str, session: aiohttp.ClientSession) -> None:
    """A cut stream raises UpstreamConnectError (a broken connection); a failed generation
    raises UpstreamError after the chunks that came before it."""
    cut = provider(simulator, session, headers={"X-Sim-Cut-After": "2"})
    with pytest.raises(errors.UpstreamConnectError):
        await collect(cut.stream_chat(chat_call(stream=True), target=TARGET))
    failed = provider(simulator, session, headers={"X-Sim-Error-After": "2"})
    seen: list[Json] = []
    with pytest.raises(errors.UpstreamError, match="generation failed"):
        async for chunk in failed.stream_chat(chat_call(stream=True), target=TARGET):
            seen.append(chunk)
    assert len([c for c in seen if c["choices"][0]["delta"].get("content")]) == 2


async def test_simulator_rejects_what_cohere_rejects(simulator: str,
                                                     session: aiohttp.ClientSession) -> None:
    """The simulator validates like Cohere: a params p outside 0.01..0.99 is a 400 in Cohere's
    shape, relayed with its message."""
    bad = Target(provider="co", model="m", params={"p": 1.5})
    with pytest.raises(errors.UpstreamRejected) as caught:
        await provider(simulator, session).chat(chat_call(), target=bad)
    assert "p must be a number between 0.01 and 0.99" in caught.value.message


def test_serves_chat_and_embeddings() -> None:
    """Cohere v2 has chat and embed, no text completions."""
    assert PROVIDER_TYPES["cohere"].serves == {"chat", "stream_chat", "embed"}
