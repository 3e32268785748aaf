"""The seam every provider implements, and the values that cross it.

Requests cross in the canonical (OpenAI-shaped) form: the validated request model plus the raw
JSON object the client sent. Responses come back OpenAI-shaped too: a ``chat.completion`` (or
``text_completion``, or embedding ``list``) dict with the call's ``Usage``; streams yield
``chat.completion.chunk`` dicts, the last of which carries ``usage`` when the provider reports it.
Translation to and from each upstream's native format, errors included, lives in the provider's
module and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from app.usage import Usage

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Target:
    """One place a public model can be served: a provider and the model name it knows."""

    provider: str
    model: str
    params: Json = field(default_factory=dict)
    max_tokens_default: int | None = None
    weight: float = 1.0
    """Its share of first attempts under the ``weighted`` strategy."""
    context_window: int | None = None
    """The most prompt tokens it takes: a call estimated larger skips it (``None``: no limit)."""
    timeout_s: float | None = None
    """Its own answer / between-chunks timeout (``None``: the provider's ``timeout_s``)."""
    first_chunk_timeout_s: float | None = None
    """Its own first-chunk timeout for streams (``None``: the provider's, or the default)."""


@dataclass(slots=True)
class ChatCall:
    request: ChatRequest
    body: Json
    """The client's JSON object as sent (unknown fields included)."""


@dataclass(slots=True)
class CompletionCall:
    request: CompletionRequest
    body: Json


@dataclass(slots=True)
class EmbeddingCall:
    request: EmbeddingRequest
    body: Json


@dataclass(slots=True)
class Result:
    """A finished non-streaming response: the OpenAI-shaped body and its usage (None when
    the upstream reported none; the gateway then estimates it)."""

    body: Json
    usage: Usage | None


@runtime_checkable
class Warmable(Protocol):
    """A provider with a slow first use (a model to load) that can be prepared at start-up."""

    async def warm(self) -> None: ...


class Provider(Protocol):
    """One upstream. Methods raise only ``app.errors.GatewayError`` subclasses.

    Streams are async generators of OpenAI-shaped chunk dicts; closing the generator
    (``aclose``) must cancel the upstream request.
    """

    async def chat(self, call: ChatCall, *, target: Target) -> Result: ...

    def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]: ...

    async def complete(self, call: CompletionCall, *, target: Target) -> Result: ...

    def stream_complete(self, call: CompletionCall, *, target: Target) -> AsyncIterator[Json]: ...

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result: ...

    async def aclose(self) -> None: ...
