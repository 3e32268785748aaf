"""Anthropic's Messages API (``POST /v1/messages``) behind the OpenAI-shaped provider seam.

The request is translated (``anthropic_request``), not forwarded: unknown OpenAI fields are
dropped, and the answer is translated back (``anthropic_response``, ``anthropic_stream``).
Where the two APIs differ, this is what a client gets:

- ``system`` and ``developer`` messages, wherever they stand, become the top-level ``system``
  (joined by blank lines; a list of text blocks when a part carries ``cache_control``, which is
  also carried on user, assistant and tool content parts, so prompt caching works through us).
- ``response_format``: ``json_schema`` becomes Anthropic's native structured output
  (``output_config.format``), so the schema is enforced, not merely asked for; ``json_object``
  is refused (400, param ``response_format``) because Anthropic has no schema-less JSON mode and
  a prompt instruction would be a silent, unreliable substitute; ``text`` is a no-op. A
  tool's ``strict: true`` is its ``strict`` (Anthropic's strict tool use: the call's input is
  valid for the tool's schema).
- Refused with 400 rather than silently ignored, because the client would read wrong results:
  ``n`` > 1, ``temperature`` > 1 (Anthropic's range is 0..1), ``logprobs``/``top_logprobs``,
  legacy ``function`` messages, audio parts, files other than PDF data URLs, images other
  than jpeg/png/gif/webp, a trailing empty user message (Anthropic refuses empty messages,
  and without it the assistant's last turn would read as a prefill; other empty messages are
  left out); ``tool_choice`` asking for a call with no tools; custom tools, audio output and
  ``web_search_options`` (``app.providers.refusals``).
- Dropped, as sampling hints with no Anthropic equivalent: ``seed``, ``presence_penalty``,
  ``frequency_penalty``, ``logit_bias``; OpenAI's ``metadata`` (``user`` becomes
  ``metadata.user_id``); ``reasoning_effort`` and ``service_tier`` (no published mapping to
  Claude's thinking budget; ask for thinking with ``thinking`` instead).
- Anthropic-native ``top_k`` and ``thinking`` sent by the client (the SDK's ``extra_body``) are
  forwarded; the target's ``params`` lie underneath everything.
- Thinking comes back as ``message.reasoning_content`` (streams: ``delta.reasoning_content``),
  the field vLLM and DeepSeek use, and the signed ``thinking``/``redacted_thinking`` blocks as
  ``message.thinking_blocks`` (streams: each block whole in ``delta.thinking_blocks`` at its
  end; the field LiteLLM uses). An assistant message's ``thinking_blocks`` are sent back first
  in its turn, as Anthropic requires during tool use; with ``thinking`` on, the assistant
  message whose tool calls are being answered without them is a 400 before sending
  (``anthropic_request.check_thinking_kept``).
- Calls that come in on the gateway's own ``/v1/messages`` are not translated at all
  (``messages``/``stream_messages``): the client's body goes on with the target's model name,
  its ``anthropic-beta`` header too, and its ``anthropic-version`` instead of the configured
  one; the upstream's answer or events come back as they were.
- Text completions and embeddings don't exist at Anthropic: the class does not implement them,
  so the gateway never routes them here (a model with no other target answers 400
  ``unsupported_endpoint``).
- ``base_url`` may be given with or without a trailing ``/v1``.

Errors: Anthropic's ``{"type": "error", "error": {"type", "message"}}`` is read by the shared
mapper; 529 ``overloaded_error`` is a retryable 529. The API key travels only in ``x-api-key``
and is scrubbed from every error message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Literal

import aiohttp
from pydantic import Field, SecretStr

from app.providers.anthropic_request import translate_request
from app.providers.anthropic_response import map_error, to_chat_completion
from app.providers.anthropic_stream import OPENING_EVENTS, StreamTranslator, event_kind
from app.providers.base import (
    NATIVE_EVENTS,
    ChatCall,
    Json,
    MessagesCall,
    OpeningHold,
    ProviderBase,
    Result,
    Target,
)
from app.providers.event_json import EventJson
from app.providers.http import SSEEvent, Upstream, drain


class AnthropicProvider(ProviderBase):
    type: Literal["anthropic"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    max_tokens_default: Annotated[int, Field(ge=1)] = 4096

MESSAGES_PATH = "/v1/messages"


class AnthropicMessages:
    """Chat over Anthropic's Messages API; see the module docstring for the translation."""

    def __init__(self, upstream: Upstream, *, max_tokens_default: int) -> None:
        self._upstream = upstream
        self._max_tokens_default = max_tokens_default

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        payload = translate_request(call, target=target, stream=False,
                                    max_tokens_default=self._max_tokens_default)
        answer = await self._upstream.post_json(MESSAGES_PATH, payload,
                                               timeout_s=target.timeout_s)
        body, usage = to_chat_completion(answer, created=int(time.time()))
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        """Chunks as events arrive (``translated_chunks``)."""
        payload = translate_request(call, target=target, stream=True,
                                    max_tokens_default=self._max_tokens_default)
        events = self._upstream.stream_sse(MESSAGES_PATH, payload, timeout_s=target.timeout_s)
        async with aclosing(translated_chunks(events)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def messages(self, call: MessagesCall, *, target: Target) -> Result:
        """A ``/v1/messages`` call sent on as the client wrote it; the answer comes back as it
        came (``Result.native``) and translated (``Result.body``, for the gateway's books)."""
        answer = await self._upstream.post_json(MESSAGES_PATH, native_payload(call, target),
                                               timeout_s=target.timeout_s,
                                               headers=client_headers(call))
        body, usage = to_chat_completion(answer, created=int(time.time()))
        return Result(body=body, usage=usage, native=answer)

    async def stream_messages(self, call: MessagesCall, *, target: Target
                              ) -> AsyncIterator[Json]:
        """The upstream's events as they came (``native_chunks``)."""
        events = self._upstream.stream_sse(MESSAGES_PATH, native_payload(call, target, True),
                                           timeout_s=target.timeout_s,
                                           headers=client_headers(call))
        async with aclosing(native_chunks(events)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


async def translated_chunks(events: AsyncGenerator[SSEEvent, None]
                            ) -> AsyncGenerator[Json, None]:
    """An Anthropic event stream as chat chunks; the last one carries ``usage`` and no choices.

    The chunks of the opening events (``message_start``, ``ping``, ``content_block_start``)
    wait for the next event's (``OpeningHold``), so the first chunk comes with the first token.
    Upstream errors before the first event raise from the first ``__anext__``; an ``error``
    event raises its mapped error (an upstream that fails before its first token fails before
    the first chunk); a stream cut before ``message_stop`` raises ``BadUpstreamResponse``.
    Closing the generator closes ``events`` (the upstream connection).
    """
    translator = StreamTranslator(created=int(time.time()))
    hold = OpeningHold(OPENING_EVENTS)
    read = EventJson()
    try:
        async for event in events:
            data = read(event.data)
            chunks = translator.feed(data, event=event.event)
            for chunk in hold.release(event_kind(data, event.event), chunks):
                yield chunk
            if translator.done:
                await drain(events)
                return
        translator.finish()
    finally:
        await events.aclose()


async def native_chunks(events: AsyncGenerator[SSEEvent, None]) -> AsyncGenerator[Json, None]:
    """An Anthropic event stream relayed as it came: each event carried (``NATIVE_EVENTS``) on
    the translated chunk it led to; events that lead to none (``ping``, block starts and stops)
    ride on the next chunk, and what is left at the end on a chunk of their own. Opening events
    are held as in ``translated_chunks``, so the client gets the same events in the same order,
    the first ones when the first token comes. Errors and closing as ``translated_chunks``."""
    translator = StreamTranslator(created=int(time.time()))
    hold = OpeningHold(OPENING_EVENTS)
    read = EventJson()
    carried: list[tuple[str, str]] = []
    try:
        async for event in events:
            data = read(event.data)
            carried.append((event.event or str(data.get("type", "")), event.data))
            chunks = translator.feed(data, event=event.event)
            if chunks:
                chunks[0][NATIVE_EVENTS], carried = carried, []
            for chunk in hold.release(event_kind(data, event.event), chunks):
                yield chunk
            if translator.done:
                await drain(events)
                break
        translator.finish()
        if carried:
            yield {"object": "chat.completion.chunk", "choices": [], NATIVE_EVENTS: carried}
    finally:
        await events.aclose()


def native_payload(call: MessagesCall, target: Target, stream: bool = False) -> Json:
    """The client's Messages body for ``target``: its params underneath, its model name."""
    payload: Json = {**target.params, **call.body, "model": target.model}
    if stream:
        payload["stream"] = True
    else:
        payload.pop("stream", None)
    return payload


def client_headers(call: MessagesCall) -> dict[str, str]:
    """The client's ``anthropic-beta`` names and ``anthropic-version`` (which wins over the
    configured one), as Anthropic takes them: headers."""
    headers = {"anthropic-beta": ",".join(call.betas)} if call.betas else {}
    if call.version is not None:
        headers["anthropic-version"] = call.version
    return headers


def anthropic_headers(config: AnthropicProvider) -> dict[str, str]:
    """``x-api-key`` (when configured), ``anthropic-version``, then the config's own headers."""
    headers = {"anthropic-version": config.anthropic_version}
    if config.api_key is not None:
        headers["x-api-key"] = config.api_key.get_secret_value()
    return {**headers, **config.headers}


def build(config: AnthropicProvider, session: aiohttp.ClientSession) -> AnthropicMessages:
    base_url = config.base_url.rstrip("/")
    base_url = base_url.removesuffix("/v1")
    upstream = Upstream.from_config(session, config, base_url=base_url,
                                    headers=anthropic_headers(config), error_mapper=map_error)
    return AnthropicMessages(upstream, max_tokens_default=config.max_tokens_default)
