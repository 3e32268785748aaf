"""Anthropic's Claude models on Google Cloud Vertex AI (``type: vertex_anthropic``).

A type of its own, not a publisher setting on ``type: vertex`` targets, because what a type
serves is known from its class (``app.providers.base.capabilities``): this one speaks
Anthropic's Messages API, so it takes ``/v1/messages`` calls natively (``Messages``,
``StreamMessages``) and has no embeddings, while ``vertex`` (Gemini) has embeddings and no
native Messages. The config fields and credentials are ``vertex``'s (``VertexConfig``: project,
location, ``base_url``, a service-account key or Application Default Credentials), and so is
the token path: ``vertex.access_tokens`` (google-auth refreshed in a worker thread, one refresh
at a time, before expiry) and ``vertex.BearerUpstream`` (the token in ``Authorization:
Bearer``, scrubbed from errors with the key).

A target's ``model`` is Vertex's Claude model id (``claude-sonnet-4@20250514``). Calls go to
``{root}/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict``
(streams: ``:streamRawPredict``, server-sent events carrying Anthropic's own events) with the
Anthropic Messages body less its ``model`` (the URL names it) and with ``anthropic_version``
in the body (``vertex-2023-10-16``, the value Vertex AI documents; the config may name another),
replacing any the client sent. Streams keep ``"stream": true`` in the body.

- OpenAI-shaped chat (``/v1/chat/completions``) is translated exactly as for ``type:
  anthropic`` (``anthropic_request``, ``anthropic_response``, ``anthropic_stream``): the
  docstring of ``app.providers.anthropic`` lists what is translated, refused with a 400 and
  dropped.
- ``/v1/messages`` calls go on as the client wrote them (``anthropic.native_payload``: the
  target's params underneath), with the client's ``anthropic-beta`` header, and the answer, or
  each stream event, comes back as it came (``anthropic.native_chunks``).
- Text completions and embeddings: Anthropic on Vertex has none, so the class has no such
  methods and the gateway never routes them here.

Errors: Claude's own (``{"type": "error", "error": {...}}``, 529 ``overloaded_error`` a
retryable 529) are read as for ``anthropic``; Vertex AI's (a refused token, a model not enabled
in Model Garden, quota: Google's ``{"error": {"code", "message", "status"}}``, also when it
comes as a one-element JSON array) as for ``vertex``: 401/403 a 502 naming the provider,
``RESOURCE_EXHAUSTED`` a 429 keeping its retry delay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field

from app import errors
from app.providers import gemini_response
from app.providers.anthropic import native_chunks, native_payload, translated_chunks
from app.providers.anthropic_request import translate_request
from app.providers.anthropic_response import map_error as anthropic_error
from app.providers.anthropic_response import to_chat_completion
from app.providers.base import ChatCall, Json, MessagesCall, Result, Target
from app.providers.http import ErrorMapper
from app.providers.vertex import (
    BearerUpstream,
    VertexConfig,
    access_tokens,
    describe,
    publisher_path,
)
from app.providers.vertex_auth import AccessTokens

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


class VertexAnthropicProvider(VertexConfig):
    type: Literal["vertex_anthropic"]
    anthropic_version: Annotated[str, Field(min_length=1)] = VERTEX_ANTHROPIC_VERSION
    """Sent in the body of every call."""
    max_tokens_default: Annotated[int, Field(ge=1)] = 4096
    """``max_tokens`` of a chat call that gives none (Anthropic requires one)."""


def error_mapper(describe: str) -> ErrorMapper:
    """Claude's errors in Anthropic's shape; Vertex AI's own in Google's (see the module
    docstring)."""
    google = gemini_response.error_mapper(describe)

    def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
        if isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]
        if isinstance(payload, dict) and payload.get("type") == "error":
            return anthropic_error(status, payload, text)
        return google(status, payload, text)

    return map_error


def _betas(call: MessagesCall) -> dict[str, str]:
    """The client's ``anthropic-beta`` names, sent on as that header, as Anthropic's own Vertex
    client sends them (its ``anthropic-version`` is not: Vertex's version is the body's)."""
    return {"anthropic-beta": ",".join(call.betas)} if call.betas else {}


def vertex_body(payload: Json, *, anthropic_version: str) -> Json:
    """A Messages body as Vertex AI takes it: no ``model``, an ``anthropic_version``."""
    payload.pop("model", None)
    payload["anthropic_version"] = anthropic_version
    return payload


class VertexClaude:
    """Chat (translated) and Messages (native) over ``rawPredict``/``streamRawPredict``."""

    def __init__(self, config: VertexAnthropicProvider, session: aiohttp.ClientSession, *,
                 tokens: AccessTokens) -> None:
        self._tokens = tokens
        self._bearer = BearerUpstream(config, session, tokens=tokens,
                                      error_mapper=error_mapper(describe(config)))
        self._models = publisher_path(config, "anthropic")
        self._version = config.anthropic_version
        self._max_tokens_default = config.max_tokens_default

    def minted_credentials(self) -> tuple[str, ...]:
        """The access tokens it got lately (``base.MintsCredentials``)."""
        return self._tokens.recent()

    def _path(self, target: Target, *, stream: bool) -> str:
        method = "streamRawPredict" if stream else "rawPredict"
        return f"{self._models}{quote(target.model, safe='@')}:{method}"

    def _body(self, payload: Json) -> Json:
        return vertex_body(payload, anthropic_version=self._version)

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        _no_image_links(call)
        payload = self._body(translate_request(call, target=target, stream=False,
                                               max_tokens_default=self._max_tokens_default))
        upstream = await self._bearer.get()
        answer = await upstream.post_json(self._path(target, stream=False), payload,
                                          timeout_s=target.timeout_s)
        body, usage = to_chat_completion(answer, created=int(time.time()))
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        """Chunks as events arrive (``anthropic.translated_chunks``); closing the generator
        closes the upstream connection."""
        _no_image_links(call)
        payload = self._body(translate_request(call, target=target, stream=True,
                                               max_tokens_default=self._max_tokens_default))
        upstream = await self._bearer.get()
        events = upstream.stream_sse(self._path(target, stream=True), payload,
                                     timeout_s=target.timeout_s)
        async with aclosing(translated_chunks(events)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def messages(self, call: MessagesCall, *, target: Target) -> Result:
        """A ``/v1/messages`` call sent on as written (its model in the URL instead); the
        answer as it came (``Result.native``) and translated (for the gateway's books)."""
        upstream = await self._bearer.get()
        answer = await upstream.post_json(self._path(target, stream=False),
                                          self._body(native_payload(call, target)),
                                          timeout_s=target.timeout_s, headers=_betas(call))
        body, usage = to_chat_completion(answer, created=int(time.time()))
        return Result(body=body, usage=usage, native=answer)

    async def stream_messages(self, call: MessagesCall, *, target: Target
                              ) -> AsyncIterator[Json]:
        """The upstream's events as they came (``anthropic.native_chunks``)."""
        upstream = await self._bearer.get()
        events = upstream.stream_sse(self._path(target, stream=True),
                                     self._body(native_payload(call, target, True)),
                                     timeout_s=target.timeout_s, headers=_betas(call))
        async with aclosing(native_chunks(events)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def aclose(self) -> None:
        """Stop a token refresh in progress."""
        await self._tokens.aclose()


def build(config: VertexAnthropicProvider, session: aiohttp.ClientSession) -> VertexClaude:
    return VertexClaude(config, session, tokens=access_tokens(config))


def _no_image_links(call: ChatCall) -> None:
    """Claude on Vertex AI takes images as base64 only (Anthropic's vision guide: a URL image
    source is the first-party API's): an ``image_url`` link is a 400 naming it before any
    upstream call, as ``gemini``, ``vertex`` and ``bedrock`` refuse links (a model with another
    target falls back to it)."""
    for i, message in enumerate(call.request.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if part.get("type") == "image_url" and str(part["image_url"].get("url", "")) \
                    .startswith(("http://", "https://")):
                raise errors.InvalidRequest(
                    "Claude on Vertex AI takes images as base64 data: URLs only (not links)",
                    param=f"messages[{i}].content[{j}].image_url.url")
