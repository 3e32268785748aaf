"""The built-in offline provider: deterministic answers, real-looking usage, injected failures.

Chat echoes the last user message ("Mock reply to: ..."), cut at the client's token limit, with
token counts from ``app.usage.estimate_tokens``. Embeddings are unit vectors derived from a hash
of the text, so the same text always gets the same vector. ``fail_status`` with ``fail_every``
makes every Nth call fail with that upstream status, for demos of fallback and error handling.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from app import errors
from app.config import MockProvider
from app.embeddings import encode_vector
from app.providers.base import ChatCall, CompletionCall, EmbeddingCall, Json, Result, Target
from app.usage import Usage, estimate_tokens

_PER_MESSAGE_TOKENS = 3


def unit_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = hashlib.shake_256(text.encode("utf-8")).digest(2 * dimensions)
    values = [(int.from_bytes(raw[i:i + 2], "little") - 32768) / 32768.0
              for i in range(0, 2 * dimensions, 2)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _reply_words(prompt: str, limit: int | None) -> tuple[list[str], str]:
    """The reply as stream pieces, and the finish reason."""
    words = ("Mock reply to: " + (prompt.strip() or "(empty)")).split()
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    if limit is not None:
        out: list[str] = []
        used = 0
        for piece in pieces:
            cost = estimate_tokens(piece)
            if used + cost > limit:
                return out, "length"
            out.append(piece)
            used += cost
        return out, "stop"
    return pieces, "stop"


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

    def _chat_parts(self, call: ChatCall) -> tuple[list[str], str, int]:
        request = call.request
        users = [m for m in request.messages if m.role == "user"]
        prompt = users[-1].text() if users else ""
        pieces, finish = _reply_words(prompt, request.token_limit())
        prompt_tokens = sum(estimate_tokens(m.text()) + _PER_MESSAGE_TOKENS
                            for m in request.messages)
        return pieces, finish, prompt_tokens

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        await self._maybe_fail()
        pieces, finish, prompt_tokens = self._chat_parts(call)
        text = "".join(pieces)
        n = call.request.n or 1
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=n * estimate_tokens(text))
        body: Json = {
            "id": f"chatcmpl-mock{time.time_ns():x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target.model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                 "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ],
            "usage": usage.to_openai(),
        }
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        await self._maybe_fail()
        pieces, finish, prompt_tokens = self._chat_parts(call)
        base: Json = {"id": f"chatcmpl-mock{time.time_ns():x}", "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": target.model,
                      "system_fingerprint": "fp_mock"}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]}
        for piece in pieces:
            if self._config.token_latency_ms:
                await asyncio.sleep(self._config.token_latency_ms / 1000)
            yield {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                        "logprobs": None, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                    "finish_reason": finish}]}
        usage = Usage(prompt_tokens=prompt_tokens,
                      completion_tokens=estimate_tokens("".join(pieces)))
        yield {**base, "choices": [], "usage": usage.to_openai()}

    async def complete(self, call: CompletionCall, *, target: Target) -> Result:
        await self._maybe_fail()
        prompts = call.request.prompt_texts()
        choices = []
        completion_tokens = 0
        for i, prompt in enumerate(prompts):
            pieces, finish = _reply_words(prompt, call.request.max_tokens)
            text = "".join(pieces)
            completion_tokens += estimate_tokens(text)
            choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish})
        usage = Usage(prompt_tokens=sum(estimate_tokens(p) for p in prompts),
                      completion_tokens=completion_tokens)
        body: Json = {"id": f"cmpl-mock{time.time_ns():x}", "object": "text_completion",
                      "created": int(time.time()), "model": target.model, "choices": choices,
                      "usage": usage.to_openai()}
        return Result(body=body, usage=usage)

    async def stream_complete(self, call: CompletionCall, *, target: Target) -> AsyncIterator[Json]:
        await self._maybe_fail()
        prompt = call.request.prompt_texts()[0]
        pieces, finish = _reply_words(prompt, call.request.max_tokens)
        base: Json = {"id": f"cmpl-mock{time.time_ns():x}", "object": "text_completion",
                      "created": int(time.time()), "model": target.model}
        for piece in pieces:
            if self._config.token_latency_ms:
                await asyncio.sleep(self._config.token_latency_ms / 1000)
            yield {**base, "choices": [{"index": 0, "text": piece, "logprobs": None,
                                        "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "text": "", "logprobs": None,
                                    "finish_reason": finish}]}
        usage = Usage(prompt_tokens=estimate_tokens(prompt),
                      completion_tokens=estimate_tokens("".join(pieces)))
        yield {**base, "choices": [], "usage": usage.to_openai()}

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        await self._maybe_fail()
        request = call.request
        dims = request.dimensions or self._config.dimensions
        texts = request.texts()
        data: list[Any] = [
            {"object": "embedding", "index": i,
             "embedding": encode_vector(unit_vector(text, dims), request.encoding_format)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(estimate_tokens(t) for t in texts)
        usage = Usage(prompt_tokens=tokens)
        body: Json = {"object": "list", "data": data, "model": target.model,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Result(body=body, usage=usage)

    async def aclose(self) -> None:
        """Nothing to release."""


def build(config: MockProvider, session: aiohttp.ClientSession) -> Mock:
    return Mock(config)
