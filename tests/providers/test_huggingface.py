"""The Hugging Face provider: config, translation (TGI generate, TGI chat, TEI), errors, real
examples from HF's docs, and each api against the simulator."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr, ValidationError

from app import errors
from app.config import ConfigError, parse_config
from app.providers import PROVIDER_TYPES, huggingface, serves
from app.providers.base import ChatCall, CompletionCall, EmbeddingCall, Json, Target
from app.providers.huggingface import HuggingFaceProvider, routed_model
from app.providers.huggingface_tei import embed_options
from app.providers.huggingface_tgi import (
    FinishReasons,
    GenerateStream,
    error_from_event,
    generate_request,
    map_error,
    normalize_finish,
    tgi_chat_payload,
    to_text_completion,
)
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

FIXTURES = Path(__file__).parent / "fixtures" / "huggingface"
TARGET = Target(provider="hf", model="meta-llama/Llama-3.1-8B-Instruct")
TOKEN = "hf_secret_token_0123456789"


def fixture(name: str) -> Json:
    data: Json = orjson.loads((FIXTURES / name).read_bytes())
    return data


def completion_call(**body: Any) -> CompletionCall:
    body.setdefault("model", "tgi")
    body.setdefault("prompt", "Tell me about switchboards")
    return CompletionCall(request=CompletionRequest.model_validate(body), body=body)


def chat_call(**body: Any) -> ChatCall:
    body.setdefault("model", "chat")
    body.setdefault("messages", [{"role": "user", "content": "Tell me about switchboards"}])
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def embedding_call(**body: Any) -> EmbeddingCall:
    body.setdefault("model", "embed")
    return EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("api", "offered"), [
    ("router", {"chat", "stream_chat"}),
    ("tgi", {"chat", "stream_chat", "complete", "stream_complete"}),
    ("tei", {"embed"}),
])
def test_what_a_configuration_serves_follows_its_api(api: str, offered: set[str]) -> None:
    """The class implements all five capabilities; each api offers only its own."""
    assert PROVIDER_TYPES["huggingface"].serves == {"chat", "stream_chat", "complete",
                                                     "stream_complete", "embed"}
    base = {} if api == "router" else {"base_url": "https://e.endpoints.huggingface.cloud"}
    config = HuggingFaceProvider(type="huggingface", api=api, **base)  # type: ignore[arg-type]
    assert serves(config) == offered


def test_endpoint_apis_need_a_base_url_and_settings_fit_the_api() -> None:
    """tgi and tei have no default URL; a setting of another api is a config error."""
    with pytest.raises(ValidationError, match="needs the endpoint's base_url"):
        HuggingFaceProvider(type="huggingface", api="tei")
    with pytest.raises(ValidationError, match="normalize applies to api tei only"):
        HuggingFaceProvider(type="huggingface", normalize=True)
    with pytest.raises(ValidationError, match="provider"):
        HuggingFaceProvider(type="huggingface", provider="Not A Provider")


def test_a_model_on_a_router_and_a_tei_target_is_a_config_error() -> None:
    """A public model whose targets share no endpoint (router chat, TEI embeddings) fails to
    load, naming both targets and what each serves."""
    raw = {"providers": {
        "router": {"type": "huggingface", "api_key": TOKEN},
        "tei": {"type": "huggingface", "api": "tei", "base_url": "http://tei.local"}},
        "models": {"mixed": {"targets": [{"provider": "router", "model": "m"},
                                         {"provider": "tei", "model": "e"}]}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    message = str(caught.value)
    assert "models.mixed.targets: no endpoint is served by every target" in message
    assert "(provider 'tei', type huggingface) serves embeddings" in message


@pytest.mark.parametrize("choice", ["not a provider!", "SambaNova", 7])
def test_a_router_target_with_an_invalid_params_provider_is_a_config_error(choice: Any) -> None:
    """A router target's params.provider that is no provider or policy name fails to load,
    one line naming the param (not a 500 on every call)."""
    target = {"provider": "router", "model": "a/b", "params": {"provider": choice}}
    raw: dict[str, Any] = {"providers": {"router": {"type": "huggingface", "api_key": TOKEN}},
                           "models": {"m": {"targets": [target]}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    (line,) = str(caught.value).splitlines()[-1:]
    assert line.strip().startswith("models.m.targets.0.params.provider: ")
    target["params"] = {"provider": "sambanova"}
    parse_config(raw, {})


# --- router ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "choice", "expected"), [
    ("m/x", None, "m/x"),
    ("m/x", "sambanova", "m/x:sambanova"),
    ("m/x", "cheapest", "m/x:cheapest"),
    ("m/x:groq", "sambanova", "m/x:groq"),
])
def test_router_model_carries_the_provider_suffix(model: str, choice: str | None,
                                                  expected: str) -> None:
    """A suffix on the target's model wins; else the chosen provider or policy is appended."""
    assert routed_model(model, choice) == expected


def test_router_refuses_a_malformed_provider_param() -> None:
    """A target's params.provider that is not a provider name is a config bug, said as one."""
    with pytest.raises(errors.GatewayError, match="fix the config"):
        routed_model("m/x", "two words")


# --- TGI generate: request -----------------------------------------------------------------


def test_generate_request_translates_openai_fields() -> None:
    """max_tokens, stop, seed, temperature and top_p become TGI parameters; details are asked
    for, and the prompt's tokens (prefill) for a complete answer only."""
    call = completion_call(max_tokens=12, stop="\n", seed=7, temperature=0.5, top_p=0.9,
                           frequency_penalty=0.3, top_k=40, unknown_field=1)
    payload = generate_request(call, target=TARGET, stream=False, prefill=True)
    assert payload == {"inputs": "Tell me about switchboards", "parameters": {
        "do_sample": True, "temperature": 0.5, "top_p": 0.9, "max_new_tokens": 12,
        "stop": ["\n"], "seed": 7, "frequency_penalty": 0.3, "top_k": 40, "details": True,
        "decoder_input_details": True}}
    streamed = generate_request(call, target=TARGET, stream=True, prefill=True)
    assert "decoder_input_details" not in streamed["parameters"]


@pytest.mark.parametrize(("body", "expected"), [
    ({"temperature": 0}, {"do_sample": False}),
    ({"top_p": 0}, {"do_sample": False}),
    ({"top_p": 1}, {"do_sample": True}),
    ({}, {"do_sample": True}),
])
def test_greedy_and_default_sampling(body: Json, expected: Json) -> None:
    """temperature 0 is greedy; top_p 1 filters nothing and is not sent (TGI refuses it)."""
    parameters = generate_request(completion_call(**body), target=TARGET, stream=False,
                                  prefill=False)["parameters"]
    assert {k: v for k, v in parameters.items() if k not in ("details",)} == expected


def test_target_params_lie_under_the_request() -> None:
    """The target's params and default limit are used when the client sets none."""
    target = Target(provider="hf", model="m", params={"top_k": 5, "repetition_penalty": 1.2},
                    max_tokens_default=33)
    parameters = generate_request(completion_call(top_k=9), target=target, stream=False,
                                  prefill=False)["parameters"]
    assert (parameters["top_k"], parameters["repetition_penalty"]) == (9, 1.2)
    assert parameters["max_new_tokens"] == 33


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"n": 2}, "n"),
    ({"logprobs": 2}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"suffix": "end"}, "suffix"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"seed": -1}, "seed"),
    ({"max_tokens": 0, "echo": True}, "max_tokens"),
])
def test_what_tgi_cannot_honour_is_refused(body: Json, param: str) -> None:
    """A 400 naming the field, rather than an answer that silently differs."""
    with pytest.raises(errors.InvalidRequest) as caught:
        generate_request(completion_call(**body), target=TARGET, stream=False, prefill=False)
    assert caught.value.param == param


# --- TGI generate: answers ---------------------------------------------------------------------


def test_answer_with_details_counts_prefill_and_generated_tokens() -> None:
    """Prompt tokens are the prefill's length, completion tokens TGI's count (EOS included);
    eos_token finishes as stop; echo prepends the prompt."""
    answer = {"generated_text": " yes", "details": {
        "finish_reason": "eos_token", "generated_tokens": 2, "seed": None,
        "prefill": [{"id": 1, "text": "<s>", "logprob": None},
                    {"id": 9, "text": "Hi", "logprob": -1.0}],
        "tokens": [{"id": 5, "text": " yes", "logprob": -0.1, "special": False},
                   {"id": 2, "text": "</s>", "logprob": -0.1, "special": True}]}}
    body, usage = to_text_completion(answer, completion_id="cmpl-1", model="m", created=1,
                                     prompt="Hi", echo=True)
    assert body["choices"] == [{"text": "Hi yes", "index": 0, "logprobs": None,
                                "finish_reason": "stop"}]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (2, 2, False)
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


def test_real_generate_answer_without_details_is_estimated() -> None:
    """TGI's quicktour answer (no details): the text comes through and usage is an estimate,
    marked as one."""
    example = fixture("tgi_generate_quicktour.json")
    body, usage = to_text_completion(example["response"], completion_id="cmpl-1", model="m",
                                     created=1, prompt=example["request"]["inputs"], echo=False)
    assert body["choices"][0]["text"] == example["response"]["generated_text"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert usage.estimated and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_compat_route_list_answer_is_read() -> None:
    """TGI's ``/`` route wraps the answer in a one-element list."""
    body, _ = to_text_completion([{"generated_text": "x"}], completion_id="c", model="m",
                                 created=1, prompt="p", echo=False)
    assert body["choices"][0]["text"] == "x"
    with pytest.raises(errors.BadUpstreamResponse):
        to_text_completion({"text": "x"}, completion_id="c", model="m", created=1, prompt="p",
                           echo=False)


def _event(text: str, *, special: bool = False, last: Json | None = None) -> Json:
    event: Json = {"index": 1, "token": {"id": 3, "text": text, "logprob": -0.1,
                                         "special": special},
                   "generated_text": None, "details": None}
    if last is not None:
        event.update(last)
    return event


def test_stream_becomes_text_chunks_finish_and_usage() -> None:
    """Token events become chunks (special tokens add no text); the last event's details give
    the finish reason and exact usage (input_length, generated_tokens)."""
    translator = GenerateStream(completion_id="cmpl-1", model="m", created=1, prompt="Hi",
                                echo=False)
    chunks = translator.feed(_event("Hel")) + translator.feed(_event("lo"))
    chunks += translator.feed(_event("</s>", special=True, last={
        "generated_text": "Hello", "details": {"finish_reason": "eos_token",
                                               "generated_tokens": 3, "seed": None,
                                               "input_length": 4}}))
    assert [c["choices"][0]["text"] for c in chunks if c["choices"]] == ["Hel", "lo", ""]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 3,
                                   "total_tokens": 7}
    assert translator.done
    translator.finish()


def test_real_last_stream_event_without_details() -> None:
    """TGI's documented last event (details null): its token's text, a stop finish, and usage
    estimated for the prompt."""
    event = fixture("tgi_generate_stream_last_event.json")["event"]
    translator = GenerateStream(completion_id="c", model="m", created=1, prompt="What is this?",
                                echo=True)
    chunks = translator.feed(event)
    assert [c["choices"][0]["text"] for c in chunks if c["choices"]] == ["What is this?", ".", ""]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 1


def test_stream_error_event_and_truncated_stream() -> None:
    """An error event raises its mapped error; a stream without its last event is truncated."""
    translator = GenerateStream(completion_id="c", model="m", created=1, prompt="p", echo=False)
    translator.feed(_event("a"))
    with pytest.raises(errors.UpstreamRateLimited):
        translator.feed({"error": "Model is overloaded", "error_type": "overloaded"})
    with pytest.raises(errors.BadUpstreamResponse, match="truncated"):
        translator.finish()


# --- TGI chat ----------------------------------------------------------------------------------


def test_tgi_chat_response_format_becomes_tgi_grammar() -> None:
    """json_schema and json_object become TGI's {"type": "json", "value": schema}; text is
    dropped; a string stop becomes a list."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    payload = tgi_chat_payload({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": schema}}, "stop": "END"})
    assert payload == {"response_format": {"type": "json", "value": schema}, "stop": ["END"]}
    assert tgi_chat_payload({"response_format": {"type": "json_object"}})["response_format"] == \
        {"type": "json", "value": {"type": "object"}}
    assert "response_format" not in tgi_chat_payload({"response_format": {"type": "text"}})


def test_tgi_chat_sends_developer_messages_as_system() -> None:
    """A developer message reaches TGI as a system one (TGI gives roles to the chat template
    unchanged); the client's own message objects are left as they were."""
    developer = {"role": "developer", "content": "Be brief"}
    user = {"role": "user", "content": "hi"}
    payload = tgi_chat_payload({"messages": [developer, user]})
    assert payload["messages"] == [{"role": "system", "content": "Be brief"}, user]
    assert developer["role"] == "developer"


@pytest.mark.parametrize(("payload", "sent"), [
    ({"max_tokens": 5, "max_completion_tokens": 7}, 5),
    ({"max_tokens": 9, "max_completion_tokens": 7}, 7),
    ({"max_completion_tokens": 7}, 7),
    ({"max_tokens": 5}, 5),
])
def test_tgi_chat_sends_one_token_limit(payload: Json, sent: int) -> None:
    """One limit, as max_tokens (the smaller when both came): TGI reads max_completion_tokens
    as an alias of max_tokens and refuses a body with both."""
    out = tgi_chat_payload(payload)
    assert out == {"max_tokens": sent}


@pytest.mark.parametrize(("payload", "sent"), [
    ({"top_p": 1}, {}),
    ({"top_p": 1.0, "temperature": 0.5}, {"temperature": 0.5}),
    ({"top_p": 0}, {"temperature": 0}),
    ({"top_p": 0.0, "temperature": 0.7}, {"temperature": 0}),
    ({"top_p": 0.9}, {"top_p": 0.9}),
])
def test_tgi_chat_sends_top_p_as_tgi_takes_it(payload: Json, sent: Json) -> None:
    """TGI chat: top_p >= 1 is left out and top_p 0 is greedy (temperature 0): TGI takes only
    0 < top_p < 1."""
    assert tgi_chat_payload(payload) == sent


@pytest.mark.parametrize(("payload", "param"), [
    ({"n": 2}, "n"),
    ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"response_format": {"type": "json_object"}, "tools": [{"type": "function"}]},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema"),
])
def test_tgi_chat_refuses_what_it_cannot_do(payload: Json, param: str) -> None:
    """400 naming the field for what TGI's Messages API would refuse or misread."""
    with pytest.raises(errors.InvalidRequest) as caught:
        tgi_chat_payload(payload)
    assert caught.value.param == param


def test_old_tgi_finish_reasons_read_as_stop() -> None:
    """TGI before 2.1 said eos_token; OpenAI clients expect stop."""
    body = normalize_finish({"choices": [{"finish_reason": "eos_token"},
                                         {"finish_reason": "length"}]})
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]


def test_a_choice_that_called_tools_finishes_with_tool_calls() -> None:
    """TGI finishes a tool call with stop: read as tool_calls, in an answer and in a stream
    (where the calls and the finish come in different chunks); other choices keep stop."""
    call = [{"index": 0, "id": "0", "type": "function",
             "function": {"name": "f", "arguments": "{}"}}]
    body = normalize_finish({"choices": [
        {"index": 0, "message": {"tool_calls": call}, "finish_reason": "stop"},
        {"index": 1, "message": {"content": "x"}, "finish_reason": "stop"}]})
    assert [c["finish_reason"] for c in body["choices"]] == ["tool_calls", "stop"]
    finish = FinishReasons()
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": call}, "finish_reason": None}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    assert [finish(c)["choices"][0]["finish_reason"] for c in chunks] == [None, "tool_calls"]
    assert FinishReasons()({"choices": [{"index": 0, "delta": {},
                                         "finish_reason": "stop"}]}) \
        == {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


# --- TEI ---------------------------------------------------------------------------------------


def test_tei_options_layer_provider_target_and_client() -> None:
    """Provider defaults < target params < client fields; a bad client value is a 400."""
    target = Target(provider="tei", model="e", params={"truncate": True, "prompt_name": "doc"})
    options = embed_options({"normalize": False, "prompt_name": "x"}, target,
                            {"prompt_name": "query"})
    assert options == {"normalize": False, "truncate": True, "prompt_name": "query"}
    with pytest.raises(errors.InvalidRequest) as caught:
        embed_options({}, target, {"truncation_direction": "middle"})
    assert caught.value.param == "truncation_direction"


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status", "error_class", "client_status", "retryable"), [
    ("tgi", "422", errors.UpstreamRejected, 400, False),
    ("tgi", "424", errors.UpstreamUnavailable, 502, True),
    ("tgi", "429", errors.UpstreamRateLimited, 429, True),
    ("tei", "413", errors.UpstreamRejected, 413, False),
    ("tei", "424", errors.UpstreamUnavailable, 502, True),
])
def test_documented_error_bodies_map_onto_the_gateway_tree(
        kind: str, status: str, error_class: type[errors.GatewayError], client_status: int,
        retryable: bool) -> None:
    """TGI's and TEI's documented error examples keep their message and type."""
    payload = fixture("error_examples.json")[kind][status]
    error = map_error(int(status), payload, "")
    assert type(error) is error_class
    assert (error.status_code, error.retryable) == (client_status, retryable)
    assert error.message == payload["error"] and error.code == payload["error_type"]


def test_router_flat_error_and_stream_error_status() -> None:
    """The router's {"error": "..."} is read; a stream event's error_type sets its status."""
    error = map_error(401, {"error": "Invalid credentials in Authorization header"}, "")
    assert error.status_code == 502 and "Invalid credentials" in error.message
    assert error_from_event({"error": "bad", "error_type": "validation"}).status_code == 400


# --- against the simulator ---------------------------------------------------------------------


def provider(simulator: str, session: aiohttp.ClientSession, api: str, **fields: Any
             ) -> huggingface.HuggingFace:
    base = {"router": "/hf-router/v1", "tgi": "/tgi", "tei": "/tei"}[api]
    fields.setdefault("api_key", SecretStr(TOKEN))
    config = HuggingFaceProvider(type="huggingface", api=api,  # type: ignore[arg-type]
                                 base_url=simulator + base, **fields)
    return huggingface.build(config, session)


async def last_received(simulator: str, session: aiohttp.ClientSession, count: int = 1
                        ) -> list[Json]:
    async with session.get(f"{simulator}/_sim/requests?limit={count}") as response:
        received: list[Json] = await response.json()
    return received


async def collect(stream: AsyncIterator[Json]) -> list[Json]:
    return [chunk async for chunk in stream]


async def test_router_sends_the_suffixed_model_with_the_token(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """The router gets the target's model with the configured provider, the token as Bearer."""
    hf = provider(simulator, session, "router", provider="sambanova")
    result = await hf.chat(chat_call(max_tokens=5), target=TARGET)
    assert result.body["model"] == "meta-llama/Llama-3.1-8B-Instruct:sambanova"
    (received,) = await last_received(simulator, session)
    assert received["path"] == "/hf-router/v1/chat/completions"
    assert received["body"]["model"] == "meta-llama/Llama-3.1-8B-Instruct:sambanova"
    assert received["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert result.usage is not None and result.usage.completion_tokens == 5


async def test_tgi_completion_plain_and_streamed(simulator: str,
                                                 session: aiohttp.ClientSession) -> None:
    """/generate answers with exact usage from prefill; /generate_stream's chunks join to the
    same text and end with exact usage."""
    hf = provider(simulator, session, "tgi")
    result = await hf.complete(completion_call(max_tokens=6), target=TARGET)
    (received,) = await last_received(simulator, session)
    assert received["path"] == "/tgi/generate"
    assert received["body"]["parameters"]["decoder_input_details"] is True
    text = result.body["choices"][0]["text"]
    assert result.usage is not None and not result.usage.estimated
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (6, 6)
    assert result.body["choices"][0]["finish_reason"] == "length"
    chunks = await collect(hf.stream_complete(completion_call(max_tokens=6, stream=True),
                                              target=TARGET))
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == text
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 6,
                                   "total_tokens": 12}


async def test_tgi_chat_structured_output_reaches_tgi_as_grammar(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """An OpenAI json_schema request is answered with the schema's instance by the simulator's
    TGI, which refuses OpenAI's own form."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}
    hf = provider(simulator, session, "tgi")
    result = await hf.chat(chat_call(response_format={"type": "json_schema", "json_schema": {
        "name": "c", "schema": schema}}), target=TARGET)
    assert set(orjson.loads(result.body["choices"][0]["message"]["content"])) == {"city"}
    (received,) = await last_received(simulator, session)
    assert received["body"]["response_format"] == {"type": "json", "value": schema}


async def test_tei_embeddings_split_into_batches_and_rejoin_in_order(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """70 inputs go as batches of 32, 32 and 6 and come back in input order, as base64 when
    asked (little-endian float32), with estimated usage."""
    hf = provider(simulator, session, "tei", prompt_name="query")
    texts = [f"text number {i}" for i in range(70)]
    plain = await hf.embed(embedding_call(input=texts), target=TARGET)
    received = await last_received(simulator, session, 3)
    assert sorted(len(r["body"]["inputs"]) for r in received) == [6, 32, 32]
    assert all(r["body"]["prompt_name"] == "query" for r in received)
    alone = await hf.embed(embedding_call(input=texts[41]), target=TARGET)
    assert plain.body["data"][41]["embedding"] == alone.body["data"][0]["embedding"]
    assert [d["index"] for d in plain.body["data"]] == list(range(70))
    assert plain.usage is not None and plain.usage.estimated and plain.usage.prompt_tokens > 0
    encoded = await hf.embed(embedding_call(input=texts[41], encoding_format="base64"),
                             target=TARGET)
    raw = base64.b64decode(encoded.body["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert vector == pytest.approx(alone.body["data"][0]["embedding"], rel=1e-6)


@pytest.mark.parametrize(("api", "status", "error_class"), [
    ("router", 429, errors.UpstreamRateLimited),
    ("tgi", 424, errors.UpstreamUnavailable),
    ("tei", 503, errors.UpstreamUnavailable),
])
async def test_simulated_errors_map_with_retry_after(
        simulator: str, session: aiohttp.ClientSession, api: str, status: int,
        error_class: type[errors.UpstreamError]) -> None:
    """Each api's error shape maps to the tree; 429 keeps Retry-After."""
    hf = provider(simulator, session, api, headers={"X-Return-Error": str(status)})
    with pytest.raises(error_class) as caught:
        if api == "tei":
            await hf.embed(embedding_call(input="x"), target=TARGET)
        elif api == "tgi":
            await hf.complete(completion_call(), target=TARGET)
        else:
            await hf.chat(chat_call(), target=TARGET)
    assert caught.value.retry_after_s == (1.0 if status == 429 else None)


async def test_refused_token_is_not_echoed(simulator: str,
                                           session: aiohttp.ClientSession) -> None:
    """A 401 that echoes the token comes back scrubbed."""
    hf = provider(simulator, session, "tgi", headers={"X-Return-Error": "401",
                                                      "X-Sim-Echo-Key": "1"})
    with pytest.raises(errors.UpstreamError) as caught:
        await hf.complete(completion_call(), target=TARGET)
    assert TOKEN not in caught.value.message and TOKEN not in str(caught.value.code)
    missing = provider(simulator, session, "tei", api_key=None)
    with pytest.raises(errors.UpstreamError, match="Invalid credentials"):
        await missing.embed(embedding_call(input="x"), target=TARGET)


async def test_tgi_stream_cut_and_mid_stream_error(simulator: str,
                                                   session: aiohttp.ClientSession) -> None:
    """A cut /generate_stream is a broken connection; an error event after content raises."""
    cut = provider(simulator, session, "tgi", headers={"X-Sim-Cut-After": "2"})
    with pytest.raises(errors.UpstreamConnectError):
        await collect(cut.stream_complete(completion_call(stream=True), target=TARGET))
    failing = provider(simulator, session, "tgi", headers={"X-Sim-Error-After": "2"})
    received: list[Json] = []
    with pytest.raises(errors.UpstreamUnavailable):
        async for chunk in failing.stream_complete(completion_call(stream=True), target=TARGET):
            received.append(chunk)
    assert len(received) == 2
