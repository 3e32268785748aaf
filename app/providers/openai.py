"""OpenAI, and every server that speaks its API at a ``base_url``.

Together, Groq, Mistral, DeepSeek, Ollama's ``/v1`` and Hugging Face TGI's Messages API are all
this provider with another ``base_url``. The request is forwarded as the client sent it (unknown
fields included), with the target's model name and the target's ``params`` underneath; a call
that gives no token limit is sent the target's default (``routing.table``), on chat as
``max_completion_tokens`` (``chat_limit_field``), on completions as ``max_tokens``. Claude's
extended-thinking fields are the exception (``without_claude_thinking``): a conversation begun
on a Claude target and falling back here would otherwise send OpenAI arguments it refuses.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Literal

import aiohttp
from pydantic import SecretStr

from app import errors
from app.providers.base import (
    ChatCall,
    CompletionCall,
    EmbeddingCall,
    Json,
    OpeningHold,
    ProviderBase,
    Result,
    Target,
)
from app.providers.event_json import EventJson
from app.providers.http import Upstream, drain, read_error_body
from app.usage import Usage


class OpenAIProvider(ProviderBase):
    """OpenAI, or any server speaking its API at ``base_url`` (Together, Groq, Ollama, TGI...)."""

    type: Literal["openai"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    chat_limit_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    """The field a chat call that gives no token limit is sent the target's default in (the
    model's ``max_tokens_default``, or its ``max_tokens_cap``: ``routing.table``). OpenAI's
    reasoning models refuse ``max_tokens``; ``max_tokens`` for servers that know only it."""


def check_stream_chunk(chunk: Json) -> Json:
    """Raise the gateway error for a mid-stream ``{"error": ...}`` frame; else the chunk. A
    ``BadUpstreamResponse``: before anything reached the client (the stream's first frame),
    the next target is tried, as for any answer the gateway cannot use."""
    error = chunk.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise errors.BadUpstreamResponse(f"upstream failed mid-stream: {message}")
    return chunk


def check_answer(answer: Json, *, listing: str) -> Json:
    """A non-streamed answer's shape: an ``error`` object (some servers send one with status
    200) raises its error, as a mid-stream error frame does; an answer whose ``listing``
    (``choices``, or ``data`` for embeddings) is not a list is a ``BadUpstreamResponse``. Both
    are ``BadUpstreamResponse`` 502s (the next target is tried; the gateway scrubs their
    messages)."""
    error = answer.get("error")
    if error is not None:
        message, code, _ = read_error_body(answer, str(error)[:500])
        raise errors.BadUpstreamResponse(f"upstream answered 200 with an error: {message}",
                                         code=code)
    if not isinstance(answer.get(listing), list):
        raise errors.BadUpstreamResponse(f"upstream answer has no '{listing}' list")
    return answer


OPENING = frozenset({"opening"})
"""The ``opening_kind`` of a chunk held by ``OpeningHold`` until the first one with content."""


def opening_kind(chunk: Json) -> str | None:
    """``"opening"`` for a chunk with nothing generated in it: no ``usage``, and ``choices`` a
    list (maybe empty: Azure's prompt-filter chunk) of choices with no ``finish_reason`` and
    nothing else but empty values besides their ``index`` and their ``delta``'s ``role`` (the
    role chunk ``{"role": "assistant", "content": ""}``, ``refusal`` and ``logprobs`` null);
    else None. Looked at for a stream's first chunks only."""
    if chunk.get("usage"):
        return None
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if not isinstance(choice, dict):
            return None
        for key, value in choice.items():
            if key == "delta" and isinstance(value, dict):
                if not all(_empty(v) for k, v in value.items() if k != "role"):
                    return None
            elif key != "index" and not _empty(value):
                return None
    return "opening"


def _empty(value: object) -> bool:
    """None, ``""``, ``[]``, ``{}``, or a dict of those (a ``content_filter_results`` of
    nothing, ``logprobs`` ``{"content": [], "refusal": null}``)."""
    if isinstance(value, dict):
        return all(_empty(v) for v in value.values())
    return value is None or value == "" or value == []


def _has_finish_reason(chunk: Json) -> bool:
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return True
    return False


CLAUDE_MESSAGE_FIELDS = ("thinking_blocks", "reasoning_content")
"""What the gateway returns on an assistant message from Claude's extended thinking (the signed
blocks and their text): no OpenAI-format API defines them on input."""


def without_claude_thinking(body: Json, params: Json) -> Json:
    """``body`` without Claude's extended-thinking fields: the top-level ``thinking`` (unless
    the target's ``params`` set it: a server that takes one) and the assistant messages'
    ``thinking_blocks`` and ``reasoning_content``. OpenAI answers ``Unrecognized request
    argument`` to them, and the signed blocks are Anthropic's to check, no one else's. A new
    dict when something goes; ``body`` itself is never edited (a fallback reuses it)."""
    messages = body.get("messages")
    drop_thinking = "thinking" in body and "thinking" not in params
    if not drop_thinking and not (isinstance(messages, list) and any(
            isinstance(m, dict) and m.get("role") == "assistant"
            and any(field in m for field in CLAUDE_MESSAGE_FIELDS) for m in messages)):
        return body
    kept = {key: value for key, value in body.items()
            if not (key == "thinking" and drop_thinking)}
    if isinstance(messages, list):
        kept["messages"] = [
            {key: value for key, value in m.items() if key not in CLAUDE_MESSAGE_FIELDS}
            if isinstance(m, dict) and m.get("role") == "assistant" else m
            for m in messages]
    return kept


class OpenAICompatible:
    """The OpenAI wire format over HTTP. Subclasses adjust the upstream and the payload."""

    def __init__(self, upstream: Upstream, *, chat_limit_field: str = "max_tokens") -> None:
        """``chat_limit_field``: the field a chat call that gives no token limit is sent the
        target's ``max_tokens_default`` in (completions always take ``max_tokens``)."""
        self._upstream = upstream
        self._chat_limit_field = chat_limit_field

    def upstream_for(self, target: Target) -> Upstream:
        return self._upstream

    async def ready(self) -> None:
        """Awaited before every chat or completion payload is prepared (nothing, here; vLLM
        learns its server's dialect)."""

    def prepare(self, payload: Json, *, target: Target, stream: bool) -> Json:
        """Last changes to an outgoing chat or completion payload (a fresh dict, safe to edit)."""
        if stream:
            payload["stream"] = True
            options = payload.get("stream_options")
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                         "include_usage": True}
        return payload

    async def _payload(self, body: Json, target: Target, *, limit_field: str | None,
                       stream: bool) -> Json:
        """``limit_field``: the field the target's ``max_tokens_default`` goes in (None: the
        client set a limit, sent as it is)."""
        await self.ready()
        payload: Json = {**target.params, **body, "model": target.model} if target.params \
            else {**body, "model": target.model}
        if limit_field is not None and target.max_tokens_default is not None:
            payload[limit_field] = target.max_tokens_default
        return self.prepare(payload, target=target, stream=stream)

    def _chat_limit(self, call: ChatCall) -> str | None:
        return None if call.request.token_limit() is not None else self._chat_limit_field

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        return await self._unary("/chat/completions",
                                 without_claude_thinking(call.body, target.params), target,
                                 limit_field=self._chat_limit(call))

    def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncGenerator[Json, None]:
        return self._stream("/chat/completions",
                            without_claude_thinking(call.body, target.params), target,
                            limit_field=self._chat_limit(call))

    async def complete(self, call: CompletionCall, *, target: Target) -> Result:
        return await self._unary("/completions", call.body, target,
                                 limit_field=None if call.request.max_tokens is not None
                                 else "max_tokens")

    def stream_complete(self, call: CompletionCall, *, target: Target
                        ) -> AsyncGenerator[Json, None]:
        return self._stream("/completions", call.body, target,
                            limit_field=None if call.request.max_tokens is not None
                            else "max_tokens")

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        payload: Json = {**target.params, **call.body, "model": target.model}
        body = check_answer(await self.upstream_for(target).post_json(
            "/embeddings", payload, timeout_s=target.timeout_s), listing="data")
        got, asked = len(body["data"]), call.request.count()
        if got != asked:  # the client matches vectors to inputs by position
            raise errors.BadUpstreamResponse(
                f"upstream answered {got} embeddings for {asked} inputs")
        return Result(body=body, usage=Usage.from_openai(body.get("usage")))

    async def _unary(self, path: str, body: Json, target: Target, *, limit_field: str | None
                     ) -> Result:
        """Chat and completions, the two twins: ``limit_field``, the field the target's default
        token limit is sent in (None: the client set a limit)."""
        payload = await self._payload(body, target, limit_field=limit_field, stream=False)
        answer = check_answer(await self.upstream_for(target).post_json(
            path, payload, timeout_s=target.timeout_s), listing="choices")
        return Result(body=answer, usage=Usage.from_openai(answer.get("usage")))

    async def _stream(self, path: str, body: Json, target: Target, *, limit_field: str | None
                      ) -> AsyncGenerator[Json, None]:
        """The streamed twins; nothing is sent before the first ``__anext__``.

        Chunks that open the stream with nothing generated (``opening_kind``: the role chunk
        some servers send before their model's first token) wait for the first chunk that has
        something (``OpeningHold``) and go out with it, in order; only those first chunks are
        looked at. A stream that ends with ``[DONE]`` while they wait sends them then; one cut
        while they wait sends nothing (truncated, below: the next target is tried)."""
        payload = await self._payload(body, target, limit_field=limit_field, stream=True)
        events = self.upstream_for(target).stream_sse(path, payload, timeout_s=target.timeout_s)
        finished = False
        hold = OpeningHold(OPENING)
        read = EventJson()
        try:
            async for event in events:  # the opening, up to the first chunk with content
                if event.data == "[DONE]":
                    for chunk in hold.release(None, []):
                        yield chunk
                    await drain(events)
                    return
                chunk = check_stream_chunk(read(event.data))
                opened = hold.release(opening_kind(chunk), [chunk])
                if opened:
                    finished = _has_finish_reason(chunk)
                    for chunk in opened:
                        yield chunk
                    break
            async for event in events:
                if event.data == "[DONE]":
                    await drain(events)
                    return
                chunk = check_stream_chunk(read(event.data))
                if not finished:
                    finished = _has_finish_reason(chunk)
                yield chunk
        finally:
            await events.aclose()
        if not finished:
            # The connection closed cleanly but the answer never ended: a truncated answer,
            # not a normal end (a server that omits [DONE] still sends a finish_reason).
            raise errors.BadUpstreamResponse(
                "upstream stream ended without [DONE] or a finish_reason; the answer is "
                "truncated")

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


def bearer(api_key: SecretStr | None) -> dict[str, str]:
    """The ``Authorization`` header of an OpenAI-style API key, if there is one."""
    return {} if api_key is None else {"Authorization": f"Bearer {api_key.get_secret_value()}"}


def openai_headers(config: OpenAIProvider) -> dict[str, str]:
    """Authentication, OpenAI's organization and project headers, then the config's own."""
    headers = bearer(config.api_key)
    if config.organization:
        headers["OpenAI-Organization"] = config.organization
    if config.project:
        headers["OpenAI-Project"] = config.project
    return {**headers, **config.headers}


def build(config: OpenAIProvider, session: aiohttp.ClientSession) -> OpenAICompatible:
    return OpenAICompatible(Upstream.from_config(session, config, base_url=config.base_url,
                                                 headers=openai_headers(config)),
                            chat_limit_field=config.chat_limit_field)
