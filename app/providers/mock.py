"""The built-in offline provider: deterministic answers (``app.providers.mock_answer`` makes
them), real-looking usage, latency and injected failures.

Streams interleave the choices piece by piece, a tool call's id and name first, then its
arguments in pieces; text completions stream every prompt's choices the same way.

What one call may ask for is bounded, so that no call holds the event loop (every other request
of the worker waits meanwhile): the choices and tokens ``mock_answer`` bounds, ``dimensions`` at
most ``MAX_DIMENSIONS`` (the simulator's bound) and at most ``MAX_EMBEDDING_VALUES`` numbers over
all the vectors; past any of them a call is a 400 naming the parameter. Streams give the event
loop a turn every ``_YIELD_EVERY`` chunks or so (between one piece's round of chunks and the
next), embeddings every 64,000 numbers.

``fail_status`` with ``fail_every`` makes every Nth call fail with that upstream status,
for demos of fallback and error handling.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import aiohttp
from pydantic import Field

from app import errors
from app.embeddings import encode_vector
from app.providers.base import (
    ChatCall,
    CompletionCall,
    EmbeddingCall,
    Json,
    ProviderBase,
    Result,
    Target,
    Trust,
    embeddings_result,
)
from app.providers.mock_answer import (
    PER_MESSAGE_TOKENS,
    chat_answer,
    chat_message,
    completion_choices,
    completion_usage,
    logprob_entries,
    unit_vector,
)
from app.schemas import ChatRequest
from app.usage import Usage, estimate_tokens

MAX_DIMENSIONS = 8192
"""The most ``dimensions`` of a vector, the config's or a request's (the simulator's bound)."""
MAX_EMBEDDING_VALUES = 2**20
"""The most numbers one embeddings call returns (2048 inputs of 512 dimensions, 128 of 8192);
building them took ~140 ms, serialising them as JSON ~100 ms more."""
_YIELD_EVERY = 64
"""Chunks a stream sends between turns it gives the event loop."""


class MockProvider(ProviderBase):
    """The built-in offline provider; ``fail_*`` inject failures for tests and demos."""

    type: Literal["mock"]
    trust: Trust = "private"
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    token_latency_ms: Annotated[float, Field(ge=0)] = 0.0
    fail_status: Annotated[int, Field(ge=400, le=599)] | None = None
    fail_every: Annotated[int, Field(ge=1)] = 1
    dimensions: Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)] = 384


class Mock:
    def __init__(self, config: MockProvider) -> None:
        self._config = config
        self._calls = itertools.count(1)

    async def _maybe_fail(self) -> None:
        if self._config.latency_ms:
            await asyncio.sleep(self._config.latency_ms / 1000)
        status = self._config.fail_status
        if status is not None and next(self._calls) % self._config.fail_every == 0:
            raise errors.from_upstream_status(status, f"mock provider injected HTTP {status}")

    @staticmethod
    def _prompt_tokens(request: ChatRequest) -> int:
        return sum(estimate_tokens(m.text()) + PER_MESSAGE_TOKENS for m in request.messages)

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        answer = chat_answer(call.request, target.max_tokens_default)
        await self._maybe_fail()
        n = call.request.n or 1
        usage = Usage(prompt_tokens=self._prompt_tokens(call.request),
                      completion_tokens=n * len(answer.pieces))
        stamp = time.time_ns()
        logprobs = None if answer.logprobs is None else {
            "content": logprob_entries(answer.pieces, answer.logprobs), "refusal": None}
        body: Json = {
            "id": f"chatcmpl-mock{stamp:x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target.model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {"index": i, "message": chat_message(answer, f"call_mock{stamp:x}{i}"),
                 "logprobs": logprobs, "finish_reason": answer.finish}
                for i in range(n)
            ],
            "usage": usage.to_openai(),
        }
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        answer = chat_answer(call.request, target.max_tokens_default)
        await self._maybe_fail()
        n = call.request.n or 1
        stamp = time.time_ns()
        base: Json = {"id": f"chatcmpl-mock{stamp:x}", "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": target.model,
                      "system_fingerprint": "fp_mock"}

        def chunk(index: int, delta: Json, finish: str | None = None,
                  logprobs: Json | None = None) -> Json:
            return {**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                         "finish_reason": finish}]}

        for i in range(n):
            if answer.tool is None:
                yield chunk(i, {"role": "assistant", "content": ""})
            else:
                yield chunk(i, {"role": "assistant", "content": None, "tool_calls": [
                    {"index": 0, "id": f"call_mock{stamp:x}{i}", "type": "function",
                     "function": {"name": answer.tool, "arguments": ""}}]})
        since_turn = 0  # chunks sent since the event loop last had a turn
        for piece in answer.pieces:
            if self._config.token_latency_ms:
                await asyncio.sleep(self._config.token_latency_ms / 1000)
            elif since_turn >= _YIELD_EVERY:
                since_turn = 0
                await asyncio.sleep(0)
            since_turn += n
            delta: Json = {"content": piece} if answer.tool is None else {
                "tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            logprobs = None if answer.logprobs is None else {
                "content": logprob_entries([piece], answer.logprobs), "refusal": None}
            for i in range(n):
                yield chunk(i, delta, logprobs=logprobs)
        for i in range(n):
            yield chunk(i, {}, answer.finish)
        usage = Usage(prompt_tokens=self._prompt_tokens(call.request),
                      completion_tokens=n * len(answer.pieces))
        yield {**base, "choices": [], "usage": usage.to_openai()}

    async def complete(self, call: CompletionCall, *, target: Target) -> Result:
        await self._maybe_fail()
        replies = completion_choices(call, target.max_tokens_default)
        choices = [{"index": index, "text": reply.text(), "logprobs": reply.all_logprobs(),
                    "finish_reason": reply.finish}
                   for index, reply in enumerate(replies)]
        usage = completion_usage(call, replies)
        body: Json = {"id": f"cmpl-mock{time.time_ns():x}", "object": "text_completion",
                      "created": int(time.time()), "model": target.model, "choices": choices,
                      "usage": usage.to_openai()}
        return Result(body=body, usage=usage)

    async def stream_complete(self, call: CompletionCall, *, target: Target) -> AsyncIterator[Json]:
        """Every choice (``completions``), interleaved piece by piece as chat streams are; an
        echoed prompt comes first, in one chunk per choice (as vLLM streams it)."""
        await self._maybe_fail()
        replies = completion_choices(call, target.max_tokens_default)
        base: Json = {"id": f"cmpl-mock{time.time_ns():x}", "object": "text_completion",
                      "created": int(time.time()), "model": target.model}
        for index, reply in enumerate(replies):
            if reply.echoed:
                yield {**base, "choices": [{"index": index, "text": "".join(reply.echoed),
                                            "logprobs": reply.echo_logprobs(),
                                            "finish_reason": None}]}
        offsets = [0] * len(replies)
        since_turn = 0  # chunks sent since the event loop last had a turn
        for k in range(max((len(reply.pieces) for reply in replies), default=0)):
            if self._config.token_latency_ms:
                await asyncio.sleep(self._config.token_latency_ms / 1000)
            elif since_turn >= _YIELD_EVERY:
                since_turn = 0
                await asyncio.sleep(0)
            for index, reply in enumerate(replies):
                if k < len(reply.pieces):
                    since_turn += 1
                    piece = reply.pieces[k]
                    yield {**base, "choices": [{
                        "index": index, "text": piece,
                        "logprobs": reply.logprobs([piece], offsets[index]),
                        "finish_reason": None}]}
                    offsets[index] += len(piece)
        for index, reply in enumerate(replies):
            yield {**base, "choices": [{"index": index, "text": "", "logprobs": None,
                                        "finish_reason": reply.finish}]}
        yield {**base, "choices": [], "usage": completion_usage(call, replies).to_openai()}

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        """The vectors (the module docstring says how many a call may ask for)."""
        request = call.request
        dims = request.dimensions or self._config.dimensions
        if dims > MAX_DIMENSIONS:
            raise errors.InvalidRequest(f"dimensions must be at most {MAX_DIMENSIONS}.",
                                        param="dimensions")
        texts = request.texts()
        if len(texts) * dims > MAX_EMBEDDING_VALUES:
            raise errors.InvalidRequest(
                f"The mock provider returns at most {MAX_EMBEDDING_VALUES} numbers a call; "
                f"{len(texts)} inputs of {dims} dimensions are {len(texts) * dims}: send fewer "
                "inputs, or ask for fewer dimensions.", param="input")
        await self._maybe_fail()
        vectors: list[list[float] | str] = []
        for text in texts:
            vectors.append(encode_vector(unit_vector(text, dims), request.encoding_format))
            if len(vectors) * dims % (_YIELD_EVERY * 1000) < dims:  # another 64,000 numbers
                await asyncio.sleep(0)
        return embeddings_result(vectors, model=target.model,
                                 tokens=sum(estimate_tokens(t) for t in texts))

    async def aclose(self) -> None:
        """Nothing to release."""


def build(config: MockProvider, session: aiohttp.ClientSession) -> Mock:
    return Mock(config)
