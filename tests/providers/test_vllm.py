"""The vLLM provider: limits, dropped fields, structured-output dialects, probing, errors."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from app import errors
from app.providers import PROVIDER_TYPES, vllm
from app.providers.base import Json, Target
from app.providers.vllm import VllmProvider
from app.simulator import SimOptions, create_app
from tests.providers.calls import chat, completion, embedding, received
from tests.servers import free_port, serve

TARGET = Target(provider="gpu", model="m")
HELLO: Json = {"model": "chat", "messages": [{"role": "user", "content": "Say hello"}]}
SCHEMA: Json = {"type": "object", "properties": {"answer": {"type": "string"}},
                "required": ["answer"]}


def make(base_url: str, session: aiohttp.ClientSession, *, probe_retry_s: float = 30.0,
         **fields: Any) -> vllm.VllmServer:
    """The provider as production builds it from a config entry."""
    config = VllmProvider.model_validate({"type": "vllm", "base_url": base_url, **fields})
    return vllm.build(config, session, probe_retry_s=probe_retry_s)


async def version_probes(session: aiohttp.ClientSession, sim: str) -> int:
    """How many GET /version the simulator has answered so far."""
    async with session.get(f"{sim}/_sim/stats") as response:
        stats: Json = await response.json()
    count: int = stats["requests"].get("/version", 0)
    return count


async def sent_body(session: aiohttp.ClientSession, sim: str) -> Json:
    """The body of the newest request the simulator received."""
    [record] = await received(session, sim)
    body: Json = record["body"]
    return body

# --- what reaches the server -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "fields", "target_default", "expected"),
    [
        ({}, {}, None, 1024),
        ({}, {"max_tokens_default": 77}, None, 77),
        ({}, {"max_tokens_default": 77}, 33, 33),
        ({"max_tokens": 9}, {}, 33, 9),
        ({"max_completion_tokens": 12}, {}, 33, 12),
        ({"max_tokens": 40, "max_completion_tokens": 12}, {}, None, 12),
    ],
)
async def test_max_tokens_is_always_sent(
    simulator: str, session: aiohttp.ClientSession, client: Json, fields: Json,
    target_default: int | None, expected: int,
) -> None:
    """max_tokens goes out as the client's limit, else the target's, else the provider's."""
    provider = make(simulator + "/v1", session, structured_output="structured_outputs", **fields)
    target = Target(provider="gpu", model="m", max_tokens_default=target_default)
    await provider.chat(chat({**HELLO, **client}), target=target)
    body = await sent_body(session, simulator)
    assert body["max_tokens"] == expected
    assert "max_completion_tokens" not in body


async def test_completions_always_send_max_tokens(simulator: str,
                                                  session: aiohttp.ClientSession) -> None:
    """Legacy completions without a limit get the target's default, else 16 (OpenAI's and
    vLLM's own completions default), not the provider's chat default, streamed or not."""
    provider = make(simulator + "/v1", session, max_tokens_default=21)
    call = completion({"model": "text", "prompt": "Once"})
    result = await provider.complete(call, target=TARGET)
    assert result.body["object"] == "text_completion"
    assert (await sent_body(session, simulator))["max_tokens"] == vllm.COMPLETION_DEFAULT == 16
    chunks = [c async for c in provider.stream_complete(call, target=TARGET)]
    assert chunks[-1]["usage"] is not None
    body = await sent_body(session, simulator)
    assert body["max_tokens"] == 16 and body["stream_options"] == {"include_usage": True}
    target = Target(provider="gpu", model="m", max_tokens_default=33)
    await provider.complete(call, target=target)
    assert (await sent_body(session, simulator))["max_tokens"] == 33


async def test_completion_max_tokens_0_is_sent_as_0(simulator: str,
                                                    session: aiohttp.ClientSession) -> None:
    """max_tokens 0 is the client's limit, not a missing one: with echo vLLM answers the prompt
    alone; without echo vLLM's own 400 comes back."""
    provider = make(simulator + "/v1", session)
    target = Target(provider="gpu", model="m", max_tokens_default=33)
    result = await provider.complete(completion(
        {"model": "text", "prompt": "The cat sat", "max_tokens": 0, "echo": True}),
        target=target)
    assert (await sent_body(session, simulator))["max_tokens"] == 0
    [choice] = result.body["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("The cat sat", "length")
    with pytest.raises(errors.UpstreamRejected) as caught:
        await provider.complete(completion({"model": "text", "prompt": "x", "max_tokens": 0}),
                                target=target)
    assert "max_tokens must be at least 1, got 0" in caught.value.message


async def test_best_of_is_never_forwarded(simulator: str, session: aiohttp.ClientSession) -> None:
    """best_of from the client or the target's params is dropped, so vLLM doesn't 400."""
    provider = make(simulator + "/v1", session)
    target = Target(provider="gpu", model="m", params={"best_of": 4})
    result = await provider.chat(chat({**HELLO, "best_of": 2}), target=target)
    assert result.body["object"] == "chat.completion"
    assert "best_of" not in await sent_body(session, simulator)


async def test_sampling_vllm_refuses_is_translated_or_refused_here(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """vLLM refuses top_p 0, n > 1 with greedy sampling and an empty stop string, which
    OpenAI's API takes (the simulated vLLM refuses each too): top_p 0 is sent as temperature 0
    (greedy, what it means); the other two are the gateway's 400 naming the field, before any
    upstream call."""
    provider = make(simulator + "/v1", session)
    await provider.chat(chat({**HELLO, "top_p": 0, "temperature": 0.7}), target=TARGET)
    body = await sent_body(session, simulator)
    assert "top_p" not in body and body["temperature"] == 0
    await provider.complete(completion({"model": "text", "prompt": "x", "top_p": 0.0}),
                            target=TARGET)
    body = await sent_body(session, simulator)
    assert "top_p" not in body and body["temperature"] == 0
    for extra, param in (({"n": 2, "temperature": 0}, "n"), ({"n": 2, "top_p": 0}, "n"),
                         ({"stop": [""]}, "stop"), ({"stop": ""}, "stop")):
        with pytest.raises(errors.InvalidRequest) as caught:
            await provider.chat(chat({**HELLO, **extra, "user": param}), target=TARGET)
        assert caught.value.param == param
        assert (await sent_body(session, simulator)).get("user") is None
    url = f"{simulator}/v1/chat/completions"
    for extra, words in (({"top_p": 0, "temperature": 0}, "top_p must be in (0, 1]"),
                         ({"n": 2, "temperature": 0}, "n must be 1 when using greedy"),
                         ({"stop": ["", "x"]}, "stop cannot contain an empty string")):
        async with session.post(url, json={**HELLO, **extra}) as refused:
            assert refused.status == 400 and words in await refused.text()


async def test_dimensions_on_a_model_without_matryoshka_is_vllms_400(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """vLLM refuses dimensions for a model without Matryoshka training (the simulated vLLM
    too, for BAAI/bge-*): the client gets vLLM's 400 with its reason; without dimensions the
    model serves."""
    provider = make(simulator + "/v1", session)
    target = Target(provider="gpu", model="BAAI/bge-small-en-v1.5")
    body: Json = {"model": "vle", "input": "hi"}
    result = await provider.embed(embedding(body), target=target)
    assert len(result.body["data"][0]["embedding"]) == 384
    with pytest.raises(errors.UpstreamRejected) as caught:
        await provider.embed(embedding({**body, "dimensions": 256}), target=target)
    assert caught.value.status_code == 400 and "matryoshka" in caught.value.message


async def test_developer_messages_reach_vllm_as_system(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """vLLM hands roles to the model's chat template, which knows system, not developer: a
    developer message is sent as a system one, the rest unchanged."""
    provider = make(simulator + "/v1", session)
    messages = [{"role": "system", "content": "sys"}, {"role": "developer", "content": "dev"},
                *HELLO["messages"]]
    await provider.chat(chat({**HELLO, "messages": messages}), target=TARGET)
    body = await sent_body(session, simulator)
    assert body["messages"] == [{"role": "system", "content": "sys"},
                                {"role": "system", "content": "dev"}, *HELLO["messages"]]


async def test_extras_and_target_params_are_carried(simulator: str,
                                                    session: aiohttp.ClientSession) -> None:
    """vLLM sampling extras from the client and the target's params reach the server."""
    provider = make(simulator + "/v1", session)
    target = Target(provider="gpu", model="meta/llama", params={"top_k": 50, "min_p": 0.1})
    await provider.chat(chat({**HELLO, "top_k": 5, "repetition_penalty": 1.1}), target=target)
    body = await sent_body(session, simulator)
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (5, 0.1, 1.1)
    assert body["model"] == "meta/llama"


async def test_streams_ask_for_usage(simulator: str, session: aiohttp.ClientSession) -> None:
    """A stream requests include_usage and ends with a choices-less usage chunk."""
    provider = make(simulator + "/v1", session)
    call = chat({**HELLO, "stream": True, "stream_options": {"include_usage": False}})
    chunks = [c async for c in provider.stream_chat(call, target=TARGET)]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert (await sent_body(session, simulator))["stream_options"] == {"include_usage": True}


async def test_stream_options_are_dropped_when_not_streaming(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """vLLM refuses stream_options without stream, so a plain call never sends them (a
    client's body with them and no stream is refused before: ``app.schemas``)."""
    provider = make(simulator + "/v1", session)
    call = chat(dict(HELLO))
    call.body["stream_options"] = {"include_usage": True}
    await provider.chat(call, target=TARGET)
    assert "stream_options" not in await sent_body(session, simulator)


# --- structured output ----------------------------------------------------------------------


def content_json(result_body: Json) -> Any:
    """The assistant content parsed as JSON (fails the test if it is not JSON)."""
    return json.loads(result_body["choices"][0]["message"]["content"])


async def test_guided_request_reaches_new_vllm_as_structured_outputs(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """guided_json sent to vLLM 0.12 is rewritten to structured_outputs.json and honoured."""
    provider = make(simulator + "/v1", session)
    result = await provider.chat(chat({**HELLO, "guided_json": SCHEMA}), target=TARGET)
    assert isinstance(content_json(result.body), dict)
    body = await sent_body(session, simulator)
    assert body["structured_outputs"] == {"json": SCHEMA}
    assert "guided_json" not in body


async def test_structured_request_reaches_old_vllm_as_guided(
    old_vllm_simulator: str, session: aiohttp.ClientSession
) -> None:
    """structured_outputs sent to vLLM 0.10 is rewritten to guided_json and honoured."""
    provider = make(old_vllm_simulator + "/v1", session)
    call = chat({**HELLO, "structured_outputs": {"json": SCHEMA}})
    result = await provider.chat(call, target=TARGET)
    assert isinstance(content_json(result.body), dict)
    body = await sent_body(session, old_vllm_simulator)
    assert body["guided_json"] == SCHEMA
    assert "structured_outputs" not in body


async def test_native_dialect_and_response_format_are_left_alone(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A request already in the server's dialect, or using response_format, goes as sent."""
    provider = make(simulator + "/v1", session)
    fmt: Json = {"type": "json_object"}
    result = await provider.chat(chat({**HELLO, "structured_outputs": {"choice": ["yes", "no"]},
                                       "response_format": fmt}), target=TARGET)
    assert result.body["choices"][0]["message"]["content"] in {"yes", "no", '"yes"', '"no"'}
    body = await sent_body(session, simulator)
    assert body["structured_outputs"] == {"choice": ["yes", "no"]}
    assert body["response_format"] == fmt


async def test_configured_dialect_needs_no_probe(old_vllm_simulator: str,
                                                 session: aiohttp.ClientSession) -> None:
    """structured_output: guided translates without asking the server for its version."""
    provider = make(old_vllm_simulator + "/v1", session, structured_output="guided")
    await provider.chat(chat({**HELLO, "structured_outputs": {"regex": "[ab]+"}}), target=TARGET)
    records = await received(session, old_vllm_simulator, limit=1)
    assert records[0]["path"] == "/v1/chat/completions"
    assert records[0]["body"]["guided_regex"] == "[ab]+"


async def test_translation_errors_are_refused_before_sending(
    old_vllm_simulator: str, session: aiohttp.ClientSession
) -> None:
    """An option old vLLM cannot express is a 400 from the gateway, not a silent drop."""
    provider = make(old_vllm_simulator + "/v1", session, structured_output="guided")
    call = chat({**HELLO, "structured_outputs": {"json": SCHEMA, "disable_fallback": True}})
    with pytest.raises(errors.InvalidRequest) as caught:
        await provider.chat(call, target=TARGET)
    assert caught.value.param == "structured_outputs.disable_fallback"


async def test_completions_translate_the_dialect_too(old_vllm_simulator: str,
                                                     session: aiohttp.ClientSession) -> None:
    """Legacy completions get the same structured-output translation as chat."""
    provider = make(old_vllm_simulator + "/v1", session)
    call = completion({"model": "text", "prompt": "JSON:", "structured_outputs": {"json": SCHEMA}})
    result = await provider.complete(call, target=TARGET)
    assert isinstance(json.loads(result.body["choices"][0]["text"]), dict)
    assert (await sent_body(session, old_vllm_simulator))["guided_json"] == SCHEMA


async def test_first_stream_probes_and_translates(simulator: str,
                                                  session: aiohttp.ClientSession) -> None:
    """A stream as a fresh provider's first request still probes and speaks the new dialect."""
    provider = make(simulator + "/v1", session)
    before = await version_probes(session, simulator)
    call = chat({**HELLO, "stream": True, "guided_choice": ["left", "right"]})
    chunks = [c async for c in provider.stream_chat(call, target=TARGET)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "left"
    assert await version_probes(session, simulator) == before + 1
    assert (await sent_body(session, simulator))["structured_outputs"] == {
        "choice": ["left", "right"]}


async def test_concurrent_first_requests_probe_once(simulator: str,
                                                    session: aiohttp.ClientSession) -> None:
    """Many first requests at once share one /version probe, and later ones reuse its answer."""
    provider = make(simulator + "/v1", session)
    before = await version_probes(session, simulator)
    call = chat({**HELLO, "guided_regex": "[ab]{3}"})
    results = await asyncio.gather(*(provider.chat(call, target=TARGET) for _ in range(8)))
    await provider.chat(call, target=TARGET)
    assert await version_probes(session, simulator) == before + 1
    for result in results:
        assert re.fullmatch("[ab]{3}", result.body["choices"][0]["message"]["content"])


async def test_failed_probe_leaves_fields_and_is_retried_later(
    session: aiohttp.ClientSession,
) -> None:
    """A failed probe isn't cached for good: fields go as sent until a later probe succeeds."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    patient = make(base_url, session, probe_retry_s=0.0)
    stubborn = make(base_url, session, probe_retry_s=3600.0)
    call = chat({**HELLO, "guided_regex": "[ab]{3}"})
    for provider in (patient, stubborn):
        with pytest.raises(errors.UpstreamConnectError):
            await provider.chat(call, target=TARGET)
    with serve(create_app(SimOptions(vllm_version="0.12.0")), port=port) as sim:
        await stubborn.chat(call, target=TARGET)
        body = await sent_body(session, sim)
        assert body["guided_regex"] == "[ab]{3}" and "structured_outputs" not in body
        await patient.chat(call, target=TARGET)
        body = await sent_body(session, sim)
        assert body["structured_outputs"] == {"regex": "[ab]{3}"} and "guided_regex" not in body


# --- errors -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["0.10.0", "0.12.0"])
def strict_vllm(request: pytest.FixtureRequest) -> Iterator[str]:
    """A vLLM serving only model "m" with a 256-token context, in flat and nested error shapes."""
    options = SimOptions(vllm_version=request.param, models=("m",), max_model_len=256)
    with serve(create_app(options)) as url:
        yield url


async def upstream_error(session: aiohttp.ClientSession, sim: str, body: Json) -> tuple[int, str]:
    """The status and message vLLM itself answers ``body`` with (flat or nested shape)."""
    async with session.post(f"{sim}/v1/chat/completions", json=body) as response:
        payload: Json = await response.json()
    error: Json = payload.get("error", payload)
    return response.status, error["message"]


async def test_unknown_model_is_404_with_vllms_message(strict_vllm: str,
                                                       session: aiohttp.ClientSession) -> None:
    """vLLM's 404 for an unknown model keeps its status and message, in both error shapes."""
    provider = make(strict_vllm + "/v1", session)
    status, message = await upstream_error(session, strict_vllm,
                                           {**HELLO, "model": "nope", "max_tokens": 5})
    target = Target(provider="gpu", model="nope")
    with pytest.raises(errors.UpstreamRejected) as caught:
        await provider.chat(chat(HELLO), target=target)
    assert (status, caught.value.status_code) == (404, 404)
    assert caught.value.message == message and "nope" in message
    with pytest.raises(errors.UpstreamRejected):
        [c async for c in provider.stream_chat(chat(HELLO), target=target)]


async def test_context_too_long_is_400_with_vllms_message(strict_vllm: str,
                                                          session: aiohttp.ClientSession) -> None:
    """vLLM's 400 for an over-long request stays a 400 carrying vLLM's own message."""
    provider = make(strict_vllm + "/v1", session)
    status, message = await upstream_error(session, strict_vllm,
                                           {**HELLO, "model": "m", "max_tokens": 1000})
    with pytest.raises(errors.UpstreamRejected) as caught:
        await provider.chat(chat({**HELLO, "max_tokens": 1000}), target=TARGET)
    assert (status, caught.value.status_code) == (400, 400)
    assert caught.value.message == message and "maximum context length" in message
    assert not caught.value.retryable


async def test_mid_stream_error_frame_is_a_gateway_error(strict_vllm: str,
                                                         session: aiohttp.ClientSession) -> None:
    """An error frame after the first chunks ends the stream with an UpstreamError."""
    provider = make(strict_vllm + "/v1", session, max_tokens_default=16,
                    headers={"X-Sim-Error-After": "2"})
    seen: list[Json] = []
    with pytest.raises(errors.UpstreamError) as caught:
        async for chunk in provider.stream_chat(chat(HELLO), target=TARGET):
            seen.append(chunk)
    assert seen
    assert "Simulated upstream failure" in caught.value.message


def test_registry_builds_vllm() -> None:
    """type: vllm in a config builds this provider."""
    assert PROVIDER_TYPES["vllm"].build is vllm.build


async def test_closing_a_stream_cancels_the_upstream(simulator: str,
                                                     session: aiohttp.ClientSession) -> None:
    """aclose() on a half-read vLLM stream drops the connection, so vLLM stops generating."""
    provider = make(simulator + "/v1", session,
                    headers={"X-Sim-TPOT-Ms": "20", "X-Sim-Completion-Tokens": "500"})

    async def cancelled() -> int:
        async with session.get(f"{simulator}/_sim/stats") as response:
            stats: Json = await response.json()
        count: int = stats["streams_cancelled"]
        return count

    before = await cancelled()
    stream = provider.stream_chat(chat(HELLO), target=TARGET)
    await anext(stream)
    await stream.aclose()
    for _ in range(200):
        if await cancelled() > before:
            break
        await asyncio.sleep(0.01)
    assert await cancelled() == before + 1


async def test_api_key_is_sent_and_never_shown(simulator: str,
                                               session: aiohttp.ClientSession) -> None:
    """A vLLM --api-key goes as a bearer token and is redacted from upstream error messages."""
    key = "vllm-key-0123456789SECRET"
    provider = make(simulator + "/v1", session, api_key=key)
    await provider.chat(chat(HELLO), target=TARGET)
    [record] = await received(session, simulator)
    assert record["headers"]["authorization"] == f"Bearer {key}"
    # The simulator quotes a malformed knob header's value in its 400 message.
    echoing = make(simulator + "/v1", session, api_key=key, headers={"X-Sim-TPOT-Ms": key})
    with pytest.raises(errors.UpstreamRejected) as caught:
        await echoing.chat(chat(HELLO), target=TARGET)
    assert key not in str(caught.value) and key not in repr(caught.value.body())
