"""The OpenAI-compatible provider against the simulator: forwarding, streams, errors, secrets."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from app import errors
from app.providers import openai
from app.providers.base import Json, Target
from app.providers.openai import OpenAIProvider
from tests.providers.calls import chat, completion, embedding, header, received
from tests.servers import free_port

KEY = "sk-test-0123456789abcdefSECRET"
TARGET = Target(provider="openai", model="gpt-4o-mini")
HELLO: Json = {"model": "chat", "messages": [{"role": "user", "content": "Say hello"}]}


def make(base_url: str, session: aiohttp.ClientSession, **fields: Any) -> openai.OpenAICompatible:
    """The provider as production builds it from a config entry."""
    config = OpenAIProvider.model_validate(
        {"type": "openai", "base_url": base_url, "api_key": KEY, **fields})
    return openai.build(config, session)


def assert_no_key(exc: errors.GatewayError) -> None:
    """The provider's API key appears nowhere in what the client could see of the error."""
    assert KEY not in str(exc)
    assert KEY not in exc.message
    assert KEY not in repr(exc.body())


async def drain(stream: Any) -> list[Json]:
    return [chunk async for chunk in stream]


def content_chunks(chunks: list[Json]) -> list[Json]:
    """The chunks that carry generated text (not the role-only head or the usage tail)."""
    return [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]


# --- success paths ---------------------------------------------------------------------------


async def test_chat_returns_completion_and_usage(simulator: str,
                                                 session: aiohttp.ClientSession) -> None:
    """A chat call returns the upstream's chat.completion and reads its usage."""
    provider = make(simulator + "/v1", session)
    result = await provider.chat(chat(HELLO), target=TARGET)
    assert result.body["object"] == "chat.completion"
    assert result.body["choices"][0]["message"]["role"] == "assistant"
    assert result.usage is not None and result.usage.prompt_tokens > 0
    [record] = await received(session, simulator)
    assert record["path"] == "/v1/chat/completions"
    assert record["body"]["model"] == "gpt-4o-mini"
    assert header(record, "authorization") == f"Bearer {KEY}"


async def test_stream_yields_chunks_then_usage(simulator: str,
                                               session: aiohttp.ClientSession) -> None:
    """A stream yields chat.completion.chunk dicts and asks for (and ends with) usage."""
    provider = make(simulator + "/v1", session)
    chunks = await drain(provider.stream_chat(chat({**HELLO, "stream": True}), target=TARGET))
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    [record] = await received(session, simulator)
    assert record["body"]["stream"] is True
    assert record["body"]["stream_options"] == {"include_usage": True}


async def test_completions_and_their_stream(simulator: str,
                                            session: aiohttp.ClientSession) -> None:
    """Legacy completions go to /completions, plain and streamed."""
    provider = make(simulator + "/v1", session)
    body: Json = {"model": "text", "prompt": "Once upon a time", "max_tokens": 5}
    result = await provider.complete(completion(body), target=TARGET)
    assert result.body["object"] == "text_completion"
    assert isinstance(result.body["choices"][0]["text"], str)
    chunks = await drain(provider.stream_complete(completion({**body, "stream": True}),
                                                  target=TARGET))
    assert chunks and chunks[-1]["usage"] is not None
    [record] = await received(session, simulator)
    assert record["path"] == "/v1/completions"
    assert record["body"]["max_tokens"] == 5


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_pass_through_their_encoding(
    simulator: str, session: aiohttp.ClientSession, encoding: str
) -> None:
    """Embeddings are forwarded with the client's encoding_format and returned untouched."""
    provider = make(simulator + "/v1", session)
    body: Json = {"model": "embed", "input": ["a", "b"], "encoding_format": encoding}
    result = await provider.embed(embedding(body), target=TARGET)
    vectors = [item["embedding"] for item in result.body["data"]]
    assert len(vectors) == 2
    if encoding == "base64":
        assert all(isinstance(v, str) for v in vectors)
    else:
        assert all(isinstance(v, list) and isinstance(v[0], float) for v in vectors)
    [record] = await received(session, simulator)
    assert record["path"] == "/v1/embeddings"
    assert record["body"]["encoding_format"] == encoding


async def test_organization_project_and_custom_headers_are_sent(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """organization, project and the config's headers reach the upstream."""
    provider = make(simulator + "/v1", session, organization="org-1", project="proj-2",
                    headers={"X-Team": "search"})
    await provider.chat(chat(HELLO), target=TARGET)
    [record] = await received(session, simulator)
    assert header(record, "openai-organization") == "org-1"
    assert header(record, "openai-project") == "proj-2"
    assert header(record, "x-team") == "search"


async def test_target_params_and_unknown_client_fields_are_forwarded(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """The target's params go under the client's fields; unknown client fields pass through."""
    provider = make(simulator + "/v1", session)
    target = Target(provider="openai", model="gpt-4o-mini",
                    params={"temperature": 0.1, "top_k": 4, "seed": 7})
    body: Json = {**HELLO, "temperature": 0.9, "min_p": 0.05, "custom": {"nested": [1, 2]}}
    await provider.chat(chat(body), target=target)
    [record] = await received(session, simulator)
    sent = record["body"]
    assert sent["temperature"] == 0.9
    assert (sent["top_k"], sent["seed"]) == (4, 7)
    assert sent["min_p"] == 0.05 and sent["custom"] == {"nested": [1, 2]}
    assert sent["model"] == "gpt-4o-mini"


async def test_claude_thinking_fields_are_not_sent(simulator: str,
                                                   session: aiohttp.ClientSession) -> None:
    """A conversation with Claude's extended thinking (fallen back here) reaches an OpenAI-format
    server without the top-level thinking or the assistant's thinking_blocks and
    reasoning_content, plain and streamed; a thinking set by the target's params is kept."""
    provider = make(simulator + "/v1", session)
    assistant: Json = {"role": "assistant", "content": None, "reasoning_content": "Hmm.",
                       "thinking_blocks": [{"type": "thinking", "thinking": "Hmm.",
                                            "signature": "c2ln"}],
                       "tool_calls": [{"id": "call_1", "type": "function", "function": {
                           "name": "get_weather", "arguments": "{}"}}]}
    body: Json = {**HELLO, "thinking": {"type": "enabled", "budget_tokens": 1024},
                  "messages": [*HELLO["messages"], assistant,
                               {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}]}
    await provider.chat(chat(body), target=TARGET)
    await drain(provider.stream_chat(chat(body), target=TARGET))
    for record in await received(session, simulator):
        sent = record["body"]
        assert "thinking" not in sent
        assert sent["messages"][1] == {"role": "assistant", "content": None,
                                       "tool_calls": assistant["tool_calls"]}
    assert "thinking_blocks" in body["messages"][1] and "thinking" in body
    glm = Target(provider="openai", model="glm", params={"thinking": {"type": "enabled"}})
    await provider.chat(chat(body), target=glm)
    [record] = await received(session, simulator)
    assert record["body"]["thinking"] == body["thinking"]


async def test_the_default_limit_goes_in_max_completion_tokens_on_chat(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A chat call that gives no limit is sent the target's default as
    ``max_completion_tokens`` (OpenAI's reasoning models refuse ``max_tokens``), streamed or
    not, never both fields; completions keep ``max_tokens``; a client's own limit goes as sent;
    ``chat_limit_field: max_tokens`` is for servers that know only that one."""
    provider = make(simulator + "/v1", session)
    target = Target(provider="openai", model="gpt-4o-mini", max_tokens_default=5)
    await provider.chat(chat(HELLO), target=target)
    [record] = await received(session, simulator)
    assert record["body"]["max_completion_tokens"] == 5 and "max_tokens" not in record["body"]
    await drain(provider.stream_chat(chat({**HELLO, "stream": True}), target=target))
    [record] = await received(session, simulator)
    assert record["body"]["max_completion_tokens"] == 5 and "max_tokens" not in record["body"]
    await provider.chat(chat({**HELLO, "max_tokens": 3}), target=target)
    [record] = await received(session, simulator)
    assert record["body"]["max_tokens"] == 3 and "max_completion_tokens" not in record["body"]
    await provider.complete(completion({"model": "text", "prompt": "Hi"}), target=target)
    [record] = await received(session, simulator)
    assert record["body"]["max_tokens"] == 5 and "max_completion_tokens" not in record["body"]
    older = make(simulator + "/v1", session, chat_limit_field="max_tokens")
    await older.chat(chat(HELLO), target=target)
    [record] = await received(session, simulator)
    assert record["body"]["max_tokens"] == 5 and "max_completion_tokens" not in record["body"]


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "client_status"),
    [
        (400, errors.UpstreamRejected, 400),
        (401, errors.UpstreamAuthFailed, 502),
        (404, errors.UpstreamRejected, 404),
        (429, errors.UpstreamRateLimited, 429),
        (500, errors.UpstreamUnavailable, 502),
        (503, errors.UpstreamUnavailable, 503),
    ],
)
async def test_upstream_statuses_map_to_gateway_errors(
    simulator: str, session: aiohttp.ClientSession, status: int,
    error_class: type[errors.GatewayError], client_status: int,
) -> None:
    """Each upstream error status becomes its gateway error class and client status."""
    provider = make(simulator + "/v1", session, headers={"X-Return-Error": str(status)})
    with pytest.raises(errors.GatewayError) as caught:
        await provider.chat(chat(HELLO), target=TARGET)
    assert type(caught.value) is error_class
    assert caught.value.status_code == client_status
    assert caught.value.message
    assert_no_key(caught.value)
    with pytest.raises(error_class):
        await drain(provider.stream_chat(chat(HELLO), target=TARGET))


async def test_refused_credentials_are_not_the_clients_auth_failure(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """An upstream 401 is the gateway's problem (502), never reported as the client's 401."""
    provider = make(simulator + "/v1", session, headers={"X-Return-Error": "401"})
    with pytest.raises(errors.UpstreamError) as caught:
        await provider.chat(chat(HELLO), target=TARGET)
    assert not isinstance(caught.value, errors.AuthenticationFailed)
    assert caught.value.status_code == 502
    assert "credentials" in caught.value.message
    assert_no_key(caught.value)


async def test_upstream_message_quoting_the_key_is_redacted(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """An upstream error message that echoes the key reaches the client with it redacted."""
    # The simulator quotes a malformed knob header's value in its 400 message.
    provider = make(simulator + "/v1", session, headers={"X-Sim-TTFT-Ms": KEY})
    with pytest.raises(errors.UpstreamRejected) as caught:
        await provider.chat(chat(HELLO), target=TARGET)
    assert "[redacted]" in caught.value.message
    assert_no_key(caught.value)
    with pytest.raises(errors.UpstreamRejected) as streamed:
        await drain(provider.stream_chat(chat(HELLO), target=TARGET))
    assert_no_key(streamed.value)


async def test_closed_port_is_a_connect_error(session: aiohttp.ClientSession) -> None:
    """Nothing listening: UpstreamConnectError (retryable), for calls and streams alike."""
    provider = make(f"http://127.0.0.1:{free_port()}/v1", session, connect_timeout_s=2)
    with pytest.raises(errors.UpstreamConnectError) as caught:
        await provider.chat(chat(HELLO), target=TARGET)
    assert caught.value.retryable
    assert_no_key(caught.value)
    with pytest.raises(errors.UpstreamConnectError):
        await drain(provider.stream_chat(chat(HELLO), target=TARGET))


async def test_hanging_upstream_times_out(simulator: str, session: aiohttp.ClientSession) -> None:
    """An upstream that never answers is an UpstreamTimeout (504) after timeout_s."""
    provider = make(simulator + "/v1", session, timeout_s=0.3, headers={"X-Sim-Hang": "1"})
    with pytest.raises(errors.UpstreamTimeout) as caught:
        await provider.chat(chat(HELLO), target=TARGET)
    assert caught.value.status_code == 504
    assert_no_key(caught.value)
    with pytest.raises(errors.UpstreamTimeout):
        await drain(provider.stream_chat(chat(HELLO), target=TARGET))


async def test_mid_stream_error_frame_raises(simulator: str,
                                             session: aiohttp.ClientSession) -> None:
    """An error frame after some chunks raises an UpstreamError once those chunks are out."""
    provider = make(simulator + "/v1", session, headers={"X-Sim-Error-After": "2"})
    seen: list[Json] = []
    with pytest.raises(errors.UpstreamError) as caught:
        async for chunk in provider.stream_chat(chat(HELLO), target=TARGET):
            seen.append(chunk)
    assert len(content_chunks(seen)) == 2
    assert "mid-stream" in caught.value.message
    assert_no_key(caught.value)


async def test_cut_stream_raises(simulator: str, session: aiohttp.ClientSession) -> None:
    """A connection dropped mid-stream is an error, never a silently short answer."""
    provider = make(simulator + "/v1", session, headers={"X-Sim-Cut-After": "2"})
    seen: list[Json] = []
    with pytest.raises(errors.UpstreamError) as caught:
        async for chunk in provider.stream_chat(chat(HELLO), target=TARGET):
            seen.append(chunk)
    assert len(content_chunks(seen)) == 2
    assert isinstance(caught.value, errors.UpstreamConnectError)  # a broken connection
    assert_no_key(caught.value)


async def streams_cancelled(session: aiohttp.ClientSession, sim: str) -> int:
    async with session.get(f"{sim}/_sim/stats") as response:
        stats: Json = await response.json()
    count: int = stats["streams_cancelled"]
    return count


async def test_closing_a_stream_cancels_the_upstream(simulator: str,
                                                     session: aiohttp.ClientSession) -> None:
    """aclose() on a half-read stream drops the upstream connection, which cancels generation."""
    provider = make(simulator + "/v1", session,
                    headers={"X-Sim-TPOT-Ms": "20", "X-Sim-Completion-Tokens": "500"})
    before = await streams_cancelled(session, simulator)
    stream = provider.stream_chat(chat(HELLO), target=TARGET)
    await anext(stream)
    await stream.aclose()
    for _ in range(200):
        if await streams_cancelled(session, simulator) > before:
            break
        await asyncio.sleep(0.01)
    assert await streams_cancelled(session, simulator) == before + 1
