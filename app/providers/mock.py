"""The built-in offline provider: deterministic answers, real-looking usage, injected failures.

Chat answers, first match wins (the same for each of the ``n`` choices):

- a tool call (``finish_reason`` ``tool_calls``) when ``tools`` are given, ``tool_choice`` is not
  ``"none"`` and the last message is not a tool result (so agent loops end): the function
  ``tool_choice`` names, else (``"auto"``, ``"required"``, absent) the tool whose name and
  description share the most words with the last user message, the first tool on a tie
  (``app.structured.pick_tool``). One call per choice, whatever ``parallel_tool_calls`` says;
  its ``arguments`` are ``app.structured.instance`` of the function's ``parameters``;
- with ``response_format`` ``json_schema``, that schema's instance; with ``json_object``,
  ``{"reply": "Mock reply to: ..."}``;
- otherwise "Mock reply to: <last user message>".

The answer is cut at the client's token limit (``finish_reason`` ``length``). Its pieces are one
token each as ``app.usage.estimate_tokens`` counts, so ``usage.completion_tokens`` is the number
of pieces times ``n``, streamed or not, and ``logprobs.content`` has one entry per piece (with
``top_logprobs`` alternatives, log-probabilities derived from a hash of the piece). Streams
interleave the choices piece by piece, a tool call's id and name first, then its arguments in
pieces. Schemas marked ``strict`` that break OpenAI's strict rules are refused with a 400, as
OpenAI refuses them.

Text completions answer "Mock reply to: <prompt>" for each prompt, ``n`` choices each (choice
``i`` of prompt ``p`` at index ``p * n + i``, as OpenAI orders them), streamed too; ``logprobs``
gives the completions API's ``tokens``, ``token_logprobs``, ``top_logprobs`` and ``text_offset``.

Embeddings are unit vectors derived from a hash of the text, so the same text always gets the same
vector.

What one call may ask for is bounded, so that no call holds the event loop (every other request
of the worker waits meanwhile): at most ``MAX_CHOICES`` choices (prompts times ``n``; OpenAI sets
no number of prompts, and 128 as the most ``n``), at most ``MAX_GENERATED_TOKENS`` tokens
generated over all of them (a long prompt's echo counts in full unless ``max_tokens`` cuts it),
``dimensions`` at most ``MAX_DIMENSIONS`` (the simulator's bound) and at most
``MAX_EMBEDDING_VALUES`` numbers over all the vectors; past any of them a call is a 400 naming
the parameter. Streams give the event loop a turn every ``_YIELD_EVERY`` chunks or so (between
one piece's round of chunks and the next), embeddings every 64,000 numbers.

``fail_status`` with ``fail_every`` makes every Nth call fail with that upstream status,
for demos of fallback and error handling.

(About 480 lines: chat, completions and embeddings answer from one set of deterministic rules
(the reply, its tokens, logprobs, tools and structured output, and the bounds on what one call
may ask for), which are what a split would separate from their callers.)
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal

import aiohttp
import orjson
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
from app.schemas import ChatRequest, FunctionDef
from app.structured import instance, pick_tool, strict_problem
from app.usage import Usage, estimate_tokens

MAX_DIMENSIONS = 8192
"""The most ``dimensions`` of a vector, the config's or a request's (the simulator's bound)."""
MAX_EMBEDDING_VALUES = 2**20
"""The most numbers one embeddings call returns (2048 inputs of 512 dimensions, 128 of 8192);
building them took ~140 ms, serialising them as JSON ~100 ms more."""
MAX_CHOICES = 2048
"""The most choices one call answers (``/v1/completions``: prompts times ``n``)."""
MAX_GENERATED_TOKENS = 2**16
"""The most tokens one call generates, all choices together: ~40 ms to answer, ~250 ms to
stream (2,048 prompts of 100 words each took 460 ms before this bound, an 8 MB one 4.5 s)."""
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

_PER_MESSAGE_TOKENS = 3
_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")
_CHARS_PER_TOKEN = 6  # estimate_tokens counts a word once per 6 characters
# The runners-up ``top_logprobs`` lists after the piece itself.
_ALTERNATIVES = (" the", " a", " and", " to", " of", " in", " is", " it", " that", " for",
                 " on", " with", " as", " was", " at", " by", " this", " be", " or", " an",
                 " from")


def unit_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = hashlib.shake_256(text.encode("utf-8")).digest(2 * dimensions)
    # struct reads the 16-bit values at C speed (3x quicker than int.from_bytes on each).
    values = [(u - 32768) / 32768.0 for u in struct.unpack(f"<{dimensions}H", raw)]
    norm = math.sqrt(sum([v * v for v in values])) or 1.0
    return [v / norm for v in values]


def token_pieces(text: str, most: int | None = None) -> list[str]:
    """``text`` cut into pieces ``estimate_tokens`` counts as one token each (a word's leading
    whitespace rides on it, long words are cut every 6 characters); they join back to ``text``.
    ``most``: only the first ``most`` pieces (the rest of ``text`` is not read)."""
    pieces: list[str] = []
    end = 0
    for match in _TOKEN.finditer(text):
        piece = match.group()
        word_at = len(piece) - len(piece.lstrip())
        cut = word_at + _CHARS_PER_TOKEN
        pieces.append(piece[:cut])
        pieces.extend(piece[i:i + _CHARS_PER_TOKEN]
                      for i in range(cut, len(piece), _CHARS_PER_TOKEN))
        end = match.end()
        if most is not None and len(pieces) > most:  # more text follows the first ``most``
            return pieces[:most]
    if end < len(text):  # trailing whitespace
        if pieces:
            pieces[-1] += text[end:]
        else:
            pieces.append(text[end:])
    return pieces


def _reply_words(prompt: str, limit: int | None, *, most: int) -> tuple[list[str], str]:
    """The echo reply as one-token pieces, and the finish reason (``_pieces``)."""
    return _pieces("Mock reply to: " + (prompt.strip() or "(empty)"), limit, "stop", most=most)


def _pieces(text: str, limit: int | None, natural: str, *, most: int) -> tuple[list[str], str]:
    """``text`` as one-token pieces, cut at the client's ``limit`` (finish reason ``length``,
    else ``natural``); a 400 when they would be more than ``most`` (what the call has left of
    ``MAX_GENERATED_TOKENS``)."""
    if limit is not None and limit <= most:
        pieces = token_pieces(text, limit + 1)
        return (pieces[:limit], "length") if len(pieces) > limit else (pieces, natural)
    pieces = token_pieces(text, most + 1)
    if len(pieces) > most:
        raise errors.InvalidRequest(
            f"The mock provider generates at most {MAX_GENERATED_TOKENS} tokens a call, all "
            "choices together, and this answer would be longer: set max_tokens lower, or ask "
            "for fewer choices.", param="max_tokens")
    return pieces, natural


def _logprob(piece: str) -> float:
    return -(zlib.crc32(piece.encode()) % 1000 + 1) / 1000


def _logprob_entries(pieces: list[str], top: int) -> list[Json]:
    """OpenAI's ``logprobs.content`` entries: the piece, then ``top`` alternatives (the piece
    first, each next one 0.5 less likely)."""
    entries: list[Json] = []
    for piece in pieces:
        first = _logprob(piece)
        tokens = [piece, *(a for a in _ALTERNATIVES if a != piece)][:top]
        entries.append({"token": piece, "logprob": first, "bytes": list(piece.encode()),
                        "top_logprobs": [{"token": t, "logprob": round(first - 0.5 * i, 3),
                                          "bytes": list(t.encode())}
                                         for i, t in enumerate(tokens)]})
    return entries


@dataclass(frozen=True, slots=True)
class _Answer:
    """One choice's answer: its one-token pieces, finish reason, and the function it calls
    (None: a text answer)."""

    pieces: list[str]
    finish: str
    tool: str | None
    logprobs: int | None  # alternatives per token; None: no logprobs asked for


def _last_user_text(request: ChatRequest) -> str:
    users = [m for m in request.messages if m.role == "user"]
    return users[-1].text() if users else ""


def _check_strict(request: ChatRequest) -> None:
    """OpenAI's 400 for a ``strict`` schema that breaks the strict rules."""
    for i, tool in enumerate(request.tools or ()):
        if tool.function.strict:
            problem = strict_problem(tool.function.parameters or {})
            if problem is not None:
                raise errors.InvalidRequest(
                    f"Invalid schema for function {tool.function.name!r}: {problem}.",
                    param=f"tools[{i}].function.parameters")
    spec = request.response_format.json_schema if request.response_format else None
    if spec and spec.get("strict") is True:
        problem = strict_problem(spec.get("schema") or {})
        if problem is not None:
            raise errors.InvalidRequest(f"Invalid schema for response_format: {problem}.",
                                        param="response_format")


def _called_function(request: ChatRequest) -> FunctionDef | None:
    """The function the answer calls (see the module docstring), or None."""
    choice, tools = request.tool_choice, request.tools
    if not tools:
        if choice == "required" or isinstance(choice, dict):
            raise errors.InvalidRequest("tool_choice is only allowed when tools are specified.",
                                        param="tool_choice")
        return None
    if choice == "none" or request.messages[-1].role == "tool":
        return None
    functions = [tool.function for tool in tools]
    if isinstance(choice, dict):
        named = choice.get("function")
        wanted = named.get("name") if isinstance(named, dict) else None
        for function in functions:
            if function.name == wanted:
                return function
        raise errors.InvalidRequest(
            f"tool_choice names a function that is not in tools: {wanted!r}.",
            param="tool_choice")
    pairs = [(f.name, f.description or "") for f in functions]
    return functions[pick_tool(pairs, _last_user_text(request))]


def _text(request: ChatRequest) -> str:
    """A text answer: JSON when ``response_format`` asks for it, else the echo."""
    echo = "Mock reply to: " + (_last_user_text(request).strip() or "(empty)")
    form = request.response_format
    if form is None or form.type == "text":
        return echo
    if form.type == "json_object":
        return orjson.dumps({"reply": echo}).decode()
    schema = (form.json_schema or {}).get("schema")
    return orjson.dumps(instance(schema if isinstance(schema, dict) else {})).decode()


def _answer(request: ChatRequest) -> _Answer:
    if request.top_logprobs and not request.logprobs:
        raise errors.InvalidRequest("logprobs must be true when top_logprobs is given.",
                                    param="top_logprobs")
    if request.tools or request.response_format is not None:
        _check_strict(request)
    function = _called_function(request)
    if function is None:
        text, natural = _text(request), "stop"
    else:
        text = orjson.dumps(instance(function.parameters or {})).decode()
        natural = "tool_calls"
    pieces, finish = _pieces(text, request.token_limit(), natural,
                             most=MAX_GENERATED_TOKENS // (request.n or 1))
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    return _Answer(pieces, finish, None if function is None else function.name, logprobs)


def _message(answer: _Answer, call_id: str) -> Json:
    text = "".join(answer.pieces)
    if answer.tool is None:
        return {"role": "assistant", "content": text, "refusal": None}
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": call_id, "type": "function",
         "function": {"name": answer.tool, "arguments": text}}]}


@dataclass(frozen=True, slots=True)
class _Completion:
    """One legacy completion choice: its prompt, one-token pieces and finish reason, and the
    alternatives per token its ``logprobs`` show (None: none asked for)."""

    prompt: str
    pieces: list[str]
    finish: str
    top: int | None

    def logprobs(self, pieces: list[str], offset: int) -> Json | None:
        """The completions API's ``logprobs`` of ``pieces``, which start ``offset`` characters
        into this choice's text: ``tokens``, ``token_logprobs``, ``top_logprobs`` (the piece
        and its runners-up, ``top`` of them, as token -> log-probability) and ``text_offset``
        (where each token starts, counted from the start of the prompt, as OpenAI counts)."""
        if self.top is None:
            return None
        entries = _logprob_entries(pieces, self.top)
        starts = list(itertools.accumulate((len(p) for p in pieces[:-1]),
                                           initial=len(self.prompt) + offset))
        return {"tokens": [e["token"] for e in entries],
                "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]}
                                 for e in entries],
                "text_offset": starts}


def _completions(call: CompletionCall) -> list[_Completion]:
    """The choices of a legacy completion, as OpenAI orders them: ``n`` for each prompt, the
    choice ``i`` of prompt ``p`` at index ``p * n + i``."""
    request = call.request
    prompts, n = request.prompt_texts(), request.n or 1
    if len(prompts) * n > MAX_CHOICES:
        raise errors.InvalidRequest(
            f"The mock provider answers at most {MAX_CHOICES} choices a call; this one asks "
            f"for {len(prompts)} prompts times n={n}: send fewer prompts, or a smaller n.",
            param="n" if n > 1 else "prompt")
    left = MAX_GENERATED_TOKENS // n  # tokens each prompt's choices may still take
    replies: list[_Completion] = []
    for prompt in prompts:
        pieces, finish = _reply_words(prompt, request.max_tokens, most=left)
        left -= len(pieces)
        replies.extend(_Completion(prompt, pieces, finish, request.logprobs) for _ in range(n))
    return replies


def _completion_usage(call: CompletionCall, replies: list[_Completion]) -> Usage:
    """Each prompt counted once, each choice's pieces (one token each)."""
    return Usage(prompt_tokens=sum(estimate_tokens(p) for p in call.request.prompt_texts()),
                 completion_tokens=sum(len(reply.pieces) for reply in replies))


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
        return sum(estimate_tokens(m.text()) + _PER_MESSAGE_TOKENS for m in request.messages)

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        answer = _answer(call.request)
        await self._maybe_fail()
        n = call.request.n or 1
        usage = Usage(prompt_tokens=self._prompt_tokens(call.request),
                      completion_tokens=n * len(answer.pieces))
        stamp = time.time_ns()
        logprobs = None if answer.logprobs is None else {
            "content": _logprob_entries(answer.pieces, answer.logprobs), "refusal": None}
        body: Json = {
            "id": f"chatcmpl-mock{stamp:x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target.model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {"index": i, "message": _message(answer, f"call_mock{stamp:x}{i}"),
                 "logprobs": logprobs, "finish_reason": answer.finish}
                for i in range(n)
            ],
            "usage": usage.to_openai(),
        }
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        answer = _answer(call.request)
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
                "content": _logprob_entries([piece], answer.logprobs), "refusal": None}
            for i in range(n):
                yield chunk(i, delta, logprobs=logprobs)
        for i in range(n):
            yield chunk(i, {}, answer.finish)
        usage = Usage(prompt_tokens=self._prompt_tokens(call.request),
                      completion_tokens=n * len(answer.pieces))
        yield {**base, "choices": [], "usage": usage.to_openai()}

    async def complete(self, call: CompletionCall, *, target: Target) -> Result:
        await self._maybe_fail()
        replies = _completions(call)
        choices = [{"index": index, "text": "".join(reply.pieces),
                    "logprobs": reply.logprobs(reply.pieces, 0), "finish_reason": reply.finish}
                   for index, reply in enumerate(replies)]
        usage = _completion_usage(call, replies)
        body: Json = {"id": f"cmpl-mock{time.time_ns():x}", "object": "text_completion",
                      "created": int(time.time()), "model": target.model, "choices": choices,
                      "usage": usage.to_openai()}
        return Result(body=body, usage=usage)

    async def stream_complete(self, call: CompletionCall, *, target: Target) -> AsyncIterator[Json]:
        """Every choice (``_completions``), interleaved piece by piece as chat streams are."""
        await self._maybe_fail()
        replies = _completions(call)
        base: Json = {"id": f"cmpl-mock{time.time_ns():x}", "object": "text_completion",
                      "created": int(time.time()), "model": target.model}
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
        yield {**base, "choices": [], "usage": _completion_usage(call, replies).to_openai()}

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
