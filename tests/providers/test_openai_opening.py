"""An OpenAI-type stream's opening chunks (nothing generated in them) wait for its first chunk
with content (``openai.opening_kind``, ``base.OpeningHold``)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from app import errors
from app.providers import openai
from app.providers.base import Json, Target
from app.providers.openai import OpenAIProvider
from tests.hardening_upstreams import canned, sse_answer
from tests.providers.calls import chat

TARGET = Target(provider="openai", model="gpt-4o-mini")
HELLO: Json = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _chunk(delta: Json | None = None, *, finish: str | None = None, **choice: Any) -> Json:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta if delta is not None else {},
                         "logprobs": None, "finish_reason": finish, **choice}]}


ROLE = _chunk({"role": "assistant", "content": "", "refusal": None})
FILTER: Json = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}

OPENING: dict[str, Json] = {
    "role_and_empty_content": _chunk({"role": "assistant", "content": ""}),
    "role_refusal_null": ROLE,
    "role_content_null": _chunk({"role": "assistant", "content": None, "tool_calls": None}),
    "empty_reasoning": _chunk({"role": "assistant", "reasoning_content": ""}),
    "empty_logprobs": _chunk({"role": "assistant", "content": ""},
                             logprobs={"content": [], "refusal": None}),
    "empty_filter_results": _chunk({"role": "assistant", "content": ""},
                                   content_filter_results={}),
    "azure_prompt_filter": FILTER,
    "usage_null": {**ROLE, "usage": None},
    "completion_empty_text": {"id": "c", "object": "text_completion", "choices": [
        {"index": 0, "text": "", "logprobs": None, "finish_reason": None}]},
}
"""Chunks with nothing generated in them."""

NOT_OPENING: dict[str, Json] = {
    "content": _chunk({"role": "assistant", "content": "Hi"}),
    "tool_call": _chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "f", "arguments": ""}}]}),
    "legacy_function_call": _chunk({"role": "assistant", "function_call": {"name": "f"}}),
    "refusal": _chunk({"role": "assistant", "refusal": "No."}),
    "reasoning": _chunk({"reasoning_content": "Hm"}),
    "finish": _chunk(finish="stop"),
    "logprobs_of_a_token": _chunk({"content": ""}, logprobs={"content": [
        {"token": "\\xf0", "logprob": -0.1, "bytes": [240], "top_logprobs": []}]}),
    "usage": {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0,
                                                   "total_tokens": 1}},
    "choices_null": {"id": "c1", "choices": None},
    "no_choices": {"id": "c1"},
    "completion_text": {"id": "c", "object": "text_completion", "choices": [
        {"index": 0, "text": "Hi", "logprobs": None, "finish_reason": None}]},
}
"""Chunks with something generated in them, or of a shape not known to open a stream."""


@pytest.mark.parametrize("name", sorted(OPENING))
def test_chunks_with_nothing_generated_open_a_stream(name: str) -> None:
    """A chunk with nothing generated in it is of the opening kind."""
    assert openai.opening_kind(OPENING[name]) == "opening"


@pytest.mark.parametrize("name", sorted(NOT_OPENING))
def test_chunks_with_something_generated_do_not(name: str) -> None:
    """A chunk with content, a tool call, a refusal, a finish reason or usage is not."""
    assert openai.opening_kind(NOT_OPENING[name]) is None


def _provider(url: str, session: aiohttp.ClientSession) -> openai.OpenAICompatible:
    config = OpenAIProvider.model_validate({"type": "openai", "base_url": url + "/v1",
                                            "api_key": "sk-0123456789"})
    return openai.build(config, session)


def _answer(*chunks: Json | bytes) -> bytes:
    return sse_answer(*(c if isinstance(c, bytes) else orjson.dumps(c) for c in chunks))


async def test_opening_chunks_come_with_the_first_token_in_order(
        session: aiohttp.ClientSession) -> None:
    """The opening chunks come out with the first chunk that has content, in their order, and
    every chunk after it as it came."""
    token, finish = _chunk({"content": "Hi"}), _chunk(finish="stop")
    with canned(_answer(FILTER, ROLE, token, finish, b"[DONE]")) as upstream:
        chunks = [c async for c in _provider(upstream.url, session).stream_chat(
            chat(HELLO), target=TARGET)]
    assert chunks == [FILTER, ROLE, token, finish]


async def test_a_stream_done_while_its_opening_waits_sends_it(
        session: aiohttp.ClientSession) -> None:
    """A stream that ends with ``[DONE]`` after its role chunk alone still sends it."""
    with canned(_answer(ROLE, b"[DONE]")) as upstream:
        chunks = [c async for c in _provider(upstream.url, session).stream_chat(
            chat(HELLO), target=TARGET)]
    assert chunks == [ROLE]


async def test_a_stream_cut_while_its_opening_waits_sends_nothing(
        session: aiohttp.ClientSession) -> None:
    """A stream whose connection closes after its role chunk alone (no ``[DONE]``, no finish
    reason) is truncated before its first chunk: nothing is sent (the next target can still
    answer)."""
    with canned(_answer(ROLE)) as upstream:
        stream = _provider(upstream.url, session).stream_chat(chat(HELLO), target=TARGET)
        with pytest.raises(errors.BadUpstreamResponse, match="truncated"):
            await anext(stream)
