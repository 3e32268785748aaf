# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""Hugging Face targets end to end: the openai SDK against a running gateway whose providers are
the simulator's router, TGI and TEI endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.embeddings import decode_vector
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    run_gateway,
)

TOKEN = "hf_gateway_secret_0123456789"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about switchboards"}]
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def config(simulator: str, *, headers: dict[str, str] | None = None) -> dict[str, Any]:
    extra = {"headers": headers} if headers else {}
    return {
        "providers": {
            "router": {"type": "huggingface", "base_url": simulator + "/hf-router/v1",
                       "api_key": TOKEN, "provider": "cheapest", **extra},
            "tgi": {"type": "huggingface", "api": "tgi", "base_url": simulator + "/tgi",
                    "api_key": TOKEN, **extra},
            "tei": {"type": "huggingface", "api": "tei", "base_url": simulator + "/tei",
                    "api_key": TOKEN, **extra},
        },
        "models": {
            "llama": {"targets": [{"provider": "router", "model": LLAMA,
                                   "params": {"provider": "sambanova"}}]},
            "llama-cheap": {"targets": [{"provider": "router", "model": LLAMA}]},
            "tgi": {"targets": [{"provider": "tgi", "model": "tgi"}]},
            "bge": {"targets": [{"provider": "tei", "model": "BAAI/bge-small-en-v1.5"}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


def received(simulator: str, count: int = 1) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{simulator}/_sim/requests?limit={count}").json()
    return found


def test_router_chat_and_stream_carry_the_provider_suffix(run_gateway: GatewayFactory,
                                                          simulator: str) -> None:
    """Chat and streamed chat (with usage) through the router; the simulator sees the target's
    provider (params) or the provider's policy as the model suffix, and the HF token."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="llama", messages=USER, max_tokens=8)
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens == 8
        (sent,) = received(simulator)
        assert sent["body"]["model"] == f"{LLAMA}:sambanova"
        assert sent["headers"]["authorization"] == f"Bearer {TOKEN}"
        chunks = list(client.chat.completions.create(
            model="llama-cheap", messages=USER, max_tokens=8, stream=True,
            stream_options={"include_usage": True}))
        assert received(simulator)[0]["body"]["model"] == f"{LLAMA}:cheapest"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_router_tools_and_structured_output(run_gateway: GatewayFactory, simulator: str) -> None:
    """Tools and json_schema pass through the router as OpenAI sends them."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(
            model="llama", messages=USER, tool_choice="required",
            tools=[{"type": "function", "function": {
                "name": "lookup", "parameters": {"type": "object", "properties": {
                    "q": {"type": "string"}}, "required": ["q"]}}}])
        calls = reply.choices[0].message.tool_calls
        assert reply.choices[0].finish_reason == "tool_calls"
        assert calls and calls[0].type == "function" and calls[0].function.name == "lookup"
        structured = client.chat.completions.create(
            model="llama", messages=USER, response_format={"type": "json_schema", "json_schema": {
                "name": "n", "schema": {"type": "object", "properties": {
                    "n": {"type": "integer"}}, "required": ["n"]}}})
        assert structured.choices[0].message.content == '{"n":0}'


def test_tgi_chat_structured_output_and_completions(run_gateway: GatewayFactory,
                                                    simulator: str) -> None:
    """TGI: chat with json_schema (sent as TGI's grammar), text completions plain and streamed
    from the native routes, with usage in both."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        structured = client.chat.completions.create(
            model="tgi", messages=USER, response_format={"type": "json_schema", "json_schema": {
                "name": "n", "schema": {"type": "object", "properties": {
                    "n": {"type": "integer"}}, "required": ["n"]}}})
        assert structured.choices[0].message.content == '{"n":0}'
        assert received(simulator)[0]["body"]["response_format"]["type"] == "json"
        completion = client.completions.create(model="tgi", prompt="Once upon a time",
                                               max_tokens=7)
        assert received(simulator)[0]["path"] == "/tgi/generate"
        assert completion.object == "text_completion"
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 7)
        chunks = list(client.completions.create(model="tgi", prompt="Once upon a time",
                                                max_tokens=7, stream=True,
                                                stream_options={"include_usage": True}))
        assert received(simulator)[0]["path"] == "/tgi/generate_stream"
        assert "".join(c.choices[0].text for c in chunks if c.choices) == \
            completion.choices[0].text
        assert chunks[-1].usage is not None
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 7)


def test_tgi_chat_roles_and_token_limit_reach_tgi_as_it_reads_them(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """TGI chat: a developer message arrives as system, and max_tokens with
    max_completion_tokens as one limit (the simulated TGI refuses the pair, as TGI's parser
    does)."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(
            model="tgi", max_tokens=5, max_completion_tokens=7,
            messages=[{"role": "developer", "content": "Be brief"}, *USER])
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        (sent,) = received(simulator)
        assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]
        assert sent["body"]["max_tokens"] == 5 and "max_completion_tokens" not in sent["body"]
    refused = httpx.post(f"{simulator}/tgi/v1/chat/completions",
                         headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"messages": USER, "max_tokens": 5, "max_completion_tokens": 7})
    assert refused.status_code == 422 and "duplicate field" in refused.json()["error"]


def test_tgi_chat_top_p_one_and_zero_are_served(run_gateway: GatewayFactory,
                                                simulator: str) -> None:
    """TGI chat: top_p 1 (OpenAI's default, sent by some clients) and top_p 0 are served: the
    first is left out, the second sent as temperature 0 (the simulated TGI refuses both, as
    TGI's validation does)."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        for top_p in (1.0, 0.0):
            reply = client.chat.completions.create(model="tgi", messages=USER, max_tokens=3,
                                                   top_p=top_p, temperature=0.5)
            assert reply.choices[0].message.content
            (sent,) = received(simulator)
            assert "top_p" not in sent["body"]
            assert sent["body"]["temperature"] == (0.5 if top_p else 0)
    for top_p in (1.0, 0.0):
        refused = httpx.post(f"{simulator}/tgi/v1/chat/completions",
                             headers={"Authorization": f"Bearer {TOKEN}"},
                             json={"messages": USER, "max_tokens": 3, "top_p": top_p})
        assert refused.status_code == 422 and "top_p" in refused.json()["error"]


def test_tei_embeddings_beyond_the_batch_limit_in_order(run_gateway: GatewayFactory,
                                                        simulator: str) -> None:
    """40 inputs (TEI takes 32 at a time) come back in order, equal to each embedded alone;
    base64 decodes to the same floats."""
    texts = [f"document {i} about switchboards" for i in range(40)]
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        batch = client.embeddings.create(model="bge", input=texts)
        sizes = sorted(len(r["body"]["inputs"]) for r in received(simulator, 2))
        assert sizes == [8, 32]
        assert [d.index for d in batch.data] == list(range(40))
        for i in (0, 31, 32, 39):
            alone = client.embeddings.create(model="bge", input=texts[i])
            assert batch.data[i].embedding == alone.data[0].embedding
        encoded = gw.http().post("/v1/embeddings", json={
            "model": "bge", "input": texts[5], "encoding_format": "base64"}).json()
        assert decode_vector(encoded["data"][0]["embedding"]) == pytest.approx(
            batch.data[5].embedding, rel=1e-6)
        assert batch.usage.prompt_tokens > 0


def test_tei_dimensions_above_the_models_size_are_a_400_naming_dimensions(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """TEI truncates a Matryoshka vector and cannot lengthen it: a dimensions above the
    model's size is TEI's 422 (the simulated TEI's too, its model 384 long), the client's 400
    naming dimensions; a smaller one is served."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        assert len(client.embeddings.create(model="bge", input="hi", dimensions=128)
                   .data[0].embedding) == 128
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="bge", input="hi", dimensions=5000)
        body: Any = refused.value.body
        assert body["param"] == "dimensions" and "maximum embedding dimension" in body["message"]


def test_upstream_429_stays_429_with_retry_after(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    """TGI's 429 (overloaded) reaches the client as a 429 with Retry-After."""
    with run_gateway(config(simulator, headers={"X-Return-Error": "429"})) as gw:
        with pytest.raises(openai.RateLimitError) as caught:
            gw.client().completions.create(model="tgi", prompt="hi")
        assert caught.value.response.headers.get("retry-after") == "1"
        with pytest.raises(openai.RateLimitError):
            gw.client().embeddings.create(model="bge", input="hi")


def test_upstream_401_never_leaks_the_token(run_gateway: GatewayFactory, simulator: str) -> None:
    """An upstream 401 that echoes the HF token: the client's error has no token in it."""
    headers = {"X-Return-Error": "401", "X-Sim-Echo-Key": "1"}
    with run_gateway(config(simulator, headers=headers)) as gw:
        for model in ("llama", "tgi"):
            answer = gw.http().post("/v1/chat/completions",
                                    json={"model": model, "messages": USER})
            assert answer.status_code == 502
            assert TOKEN not in answer.text
            assert "credentials" in answer.json()["error"]["message"]


def test_cancelled_tgi_stream_closes_the_upstream(run_gateway: GatewayFactory,
                                                  simulator: str) -> None:
    """A client that leaves a streamed completion mid-way: the simulator's /generate_stream is
    cancelled and the call is recorded cancelled."""
    slow = {"X-Sim-TPOT-Ms": "50", "X-Sim-Completion-Tokens": "200"}
    with run_gateway(config(simulator, headers=slow)) as gw:
        assert gw.leave_a_stream(simulator, request_id="hf-gone", path="/v1/completions", body={
            "model": "tgi", "prompt": "hi", "stream": True, "max_tokens": 200}) == 1
        assert gw.sink.by_id("hf-gone").status == "cancelled"


WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}}
CALL: Any = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def test_tgi_chat_assistant_tool_calls_reach_tgi_without_content(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """An assistant turn with tool calls and a content (even "") reaches TGI with its calls:
    TGI reads a message holding both as its content alone (the simulated TGI too, whose prompt
    then counts no arguments), so an empty content is left out and a text goes in an assistant
    message of its own before the calls."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        for content, expected in (("", []), ("Checking", ["Checking"])):
            messages: Any = [{"role": "user", "content": "Weather in Paris?"},
                             {"role": "assistant", "content": content, "tool_calls": [CALL]},
                             {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
            reply = client.chat.completions.create(model="tgi", messages=messages,
                                                   tools=[WEATHER_TOOL], max_tokens=5)
            assert reply.choices[0].message.content
            (sent,) = received(simulator)
            assistants = [m for m in sent["body"]["messages"] if m["role"] == "assistant"]
            assert [m["content"] for m in assistants if "content" in m] == expected
            assert [m["tool_calls"] for m in assistants if "tool_calls" in m] == [[CALL]]
            assert all("content" not in m for m in assistants if "tool_calls" in m)
    # The simulated TGI drops the calls of a message that has a content, as TGI does.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    prompts = [httpx.post(f"{simulator}/tgi/v1/chat/completions", headers=headers, json={
        "messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", **turn},
                     {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "max_tokens": 3}).json()["usage"]["prompt_tokens"]
        for turn in ({"tool_calls": [CALL]}, {"content": "", "tool_calls": [CALL]},
                     {"content": ""})]
    assert prompts[0] > prompts[1] == prompts[2]


def test_tgi_chat_function_tool_without_parameters_takes_none(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A function tool without parameters (optional in OpenAI's API) reaches TGI with an empty
    object schema: TGI requires the field (the simulated TGI too)."""
    with run_gateway(config(simulator)) as gw:
        reply = gw.client().chat.completions.create(
            model="tgi", messages=[{"role": "user", "content": "what time is it now"}],
            tools=[{"type": "function", "function": {"name": "now"}}])
        calls = reply.choices[0].message.tool_calls
        assert calls and calls[0].type == "function" and calls[0].function.name == "now"
        (sent,) = received(simulator)
        assert sent["body"]["tools"][0]["function"]["parameters"] == {
            "type": "object", "properties": {}}
    refused = httpx.post(f"{simulator}/tgi/v1/chat/completions",
                         headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"messages": USER, "tools": [
                             {"type": "function", "function": {"name": "now"}}]})
    assert refused.status_code == 422 and "missing field `arguments`" in refused.json()["error"]


def test_tgi_chat_presence_penalty_zero_left_out_other_refused(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """TGI's chat applies presence_penalty + 2 as a repetition_penalty: 0 (OpenAI's "off") is
    left out, any other value refused naming presence_penalty, before any upstream call."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        client.chat.completions.create(model="tgi", messages=USER, max_tokens=3,
                                       presence_penalty=0)
        (sent,) = received(simulator)
        assert "presence_penalty" not in sent["body"]
        for value in (0.5, -2.0):
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(model="tgi", messages=USER, max_tokens=3,
                                               presence_penalty=value)
            assert refused.value.body["param"] == "presence_penalty"  # type: ignore[index]
            assert received(simulator)[0]["body"].get("presence_penalty") is None
    below = httpx.post(f"{simulator}/tgi/v1/chat/completions",
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"messages": USER, "presence_penalty": -2})
    assert below.status_code == 422 and "repetition_penalty" in below.json()["error"]


def test_tgi_chat_ids_are_openai_ids(run_gateway: GatewayFactory, simulator: str) -> None:
    """TGI answers an empty id and tool-call id "0" (the simulated TGI too); the client gets a
    chatcmpl- id (one per stream) and distinct call_ ids, without TGI's description: null."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        ids = set()
        for _ in range(2):
            reply = client.chat.completions.create(model="tgi", messages=USER,
                                                   tools=[WEATHER_TOOL], tool_choice="required")
            assert reply.id.startswith("chatcmpl-")
            calls = reply.choices[0].message.tool_calls
            assert calls and calls[0].id.startswith("call_") and calls[0].type == "function"
            ids.add(calls[0].id)
            assert "description" not in calls[0].function.model_dump(exclude_unset=True)
        assert len(ids) == 2
        # Streamed, TGI numbers the call after the conversation's highest numeric id ("4").
        earlier: Any = [*USER, {"role": "assistant", "tool_calls": [{**CALL, "id": "3"}]},
                        {"role": "tool", "tool_call_id": "3", "content": "sunny"}, *USER]
        chunks = list(client.chat.completions.create(
            model="tgi", messages=earlier, tools=[WEATHER_TOOL], tool_choice="required",
            stream=True, stream_options={"include_usage": True}))
        assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
        streamed = {t.id for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()
                    if t.id is not None}
        assert len(streamed) == 1 and streamed.pop().startswith("call_")
    raw = httpx.post(f"{simulator}/tgi/v1/chat/completions",
                     headers={"Authorization": f"Bearer {TOKEN}"},
                     json={"messages": USER, "tools": [WEATHER_TOOL],
                           "tool_choice": "required"}).json()
    assert raw["id"] == "" and raw["choices"][0]["message"]["tool_calls"][0]["id"] == "0"
    assert "refusal" not in raw["choices"][0]["message"]
    assert raw["system_fingerprint"].endswith("-native")
