"""Hugging Face: the Inference Providers router, and dedicated Inference Endpoints running TGI
or TEI, with an HF token (``api_key``, sent as ``Authorization: Bearer``).

One provider type, three upstream APIs, chosen by ``api``; what a provider serves depends on it
(``HuggingFaceProvider.offers``, checked when the config loads):

- ``router`` (default ``base_url`` https://router.huggingface.co/v1): chat and streamed chat
  through the router's OpenAI-compatible ``/chat/completions`` (tools, ``response_format`` and
  ``stream_options.include_usage`` pass through as OpenAI sends them; the router proxies them to
  the inference provider, whose support varies by provider and model). The router's OpenAI path
  is chat only (no completions, no embeddings), so nothing else is offered. The inference
  provider is chosen by a suffix on the model id, which HF defines: ``<model>:<provider>``
  (``:sambanova``, ``:together``...) or a policy (``:fastest``, HF's default, ``:cheapest``,
  ``:preferred``). The suffix comes from, first match wins: the target's ``model`` if it already
  has one, the target's ``params.provider``, the provider's ``provider`` setting; none: HF's
  default. A client's own ``provider`` field is dropped: the choice (and what it costs) belongs to
  the config.
- ``tgi`` (``base_url``: the endpoint's URL): chat and streamed chat through TGI's Messages API
  (``/v1/chat/completions``), text completions and streamed completions through TGI's native
  ``/generate`` and ``/generate_stream`` (translation in ``huggingface_tgi``). Prompt tokens of a
  complete answer come from ``details.prefill`` (``prefill_details: true``, the default; it makes
  TGI send every prompt token back) or are estimated (``false``); streams read TGI's
  ``input_length``.
- ``tei`` (``base_url``: the endpoint's URL): embeddings through TEI's native ``/embed``
  (``huggingface_tei``), with ``normalize``, ``truncate``, ``truncation_direction``,
  ``prompt_name`` and ``max_client_batch_size`` settings.

Errors of all three are read by ``huggingface_tgi.map_error``; the token travels only in the
``Authorization`` header and is scrubbed from every error (``Upstream.from_config``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import Field, SecretStr, model_validator

from app import errors
from app.providers.base import (
    Capability,
    ChatCall,
    CompletionCall,
    EmbeddingCall,
    Json,
    ProviderBase,
    Result,
    Target,
)
from app.providers.event_json import EventJson
from app.providers.http import Upstream, drain
from app.providers.huggingface_tei import TeiEmbeddings
from app.providers.huggingface_tgi import (
    GENERATE_PATH,
    GENERATE_STREAM_PATH,
    FinishReasons,
    GenerateStream,
    TgiIds,
    generate_request,
    map_error,
    normalize_finish,
    prompt_text,
    tgi_chat_payload,
    to_text_completion,
)
from app.providers.openai import OpenAICompatible, bearer
from app.providers.stops import request_stops

ROUTER_URL = "https://router.huggingface.co/v1"
SUFFIX = r"^[a-z0-9][a-z0-9-]*$"
"""An inference provider's name or a selection policy, as HF spells them."""
_SUFFIX = re.compile(SUFFIX)

Api = Literal["router", "tgi", "tei"]
OFFERS: dict[str, frozenset[Capability]] = {
    "router": frozenset({"chat", "stream_chat"}),
    "tgi": frozenset({"chat", "stream_chat", "complete", "stream_complete"}),
    "tei": frozenset({"embed"}),
}
_ONLY: dict[str, Api] = {"provider": "router", "prefill_details": "tgi", "normalize": "tei",
                         "truncate": "tei", "truncation_direction": "tei", "prompt_name": "tei",
                         "max_client_batch_size": "tei"}


class HuggingFaceProvider(ProviderBase):
    """The HF router, or a dedicated Inference Endpoint running TGI or TEI (see the module
    docstring)."""

    type: Literal["huggingface"]
    api: Api = "router"
    api_key: SecretStr | None = None
    """An HF token (``hf_...``) with permission to call Inference Providers or the endpoint."""
    base_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    """The router's URL (default ``ROUTER_URL``) or the endpoint's (required for tgi and tei)."""
    provider: Annotated[str, Field(pattern=SUFFIX)] | None = None
    """router: the inference provider or policy suffix for targets that name none."""
    prefill_details: bool = True
    """tgi: count a complete answer's prompt tokens from TGI's prefill details (else estimate)."""
    normalize: bool | None = None
    truncate: bool | None = None
    truncation_direction: Literal["left", "right"] | None = None
    prompt_name: str | None = None
    max_client_batch_size: Annotated[int, Field(ge=1)] = 32
    """tei: the most inputs per ``/embed`` request (the server's ``--max-client-batch-size``)."""

    @model_validator(mode="after")
    def _fields_fit_the_api(self) -> HuggingFaceProvider:
        if self.api != "router" and self.base_url is None:
            raise ValueError(f"api {self.api} needs the endpoint's base_url")
        for name, api in _ONLY.items():
            if api != self.api and name in self.model_fields_set:
                raise ValueError(f"{name} applies to api {api} only, not {self.api}")
        return self

    def offers(self) -> frozenset[Capability] | None:
        return OFFERS[self.api]

    def target_problems(self, *, model: str, params: Mapping[str, Any]) -> list[str]:
        """A router target's ``params.provider`` must be an inference provider or policy name,
        as the provider's own ``provider`` (``routed_model`` would refuse every call)."""
        choice = params.get("provider")
        if self.api != "router" or choice is None or ":" in model \
                or (isinstance(choice, str) and _SUFFIX.match(choice)):
            return []
        return [f"params.provider: {choice!r} is not an inference provider or policy name "
                "(lowercase letters, digits and '-', such as sambanova or cheapest)"]


def routed_model(model: str, choice: object) -> str:
    """``model`` with the inference provider's suffix (see the module docstring)."""
    if ":" in model or choice is None:
        return model
    if not isinstance(choice, str) or not _SUFFIX.match(choice):
        raise errors.GatewayError(f"the target's params.provider {choice!r} is not an inference "
                                  "provider or policy name (fix the config)")
    return f"{model}:{choice}"


class HfRouter(OpenAICompatible):
    """Chat through the router: the OpenAI wire format, the model id carrying the suffix."""

    def __init__(self, upstream: Upstream, *, provider: str | None) -> None:
        super().__init__(upstream)
        self._provider = provider

    def prepare(self, payload: Json, *, target: Target, stream: bool) -> Json:
        payload = super().prepare(payload, target=target, stream=stream)
        payload.pop("provider", None)
        payload["model"] = routed_model(target.model,
                                        target.params.get("provider", self._provider))
        return payload


class TgiMessages(OpenAICompatible):
    """Chat through TGI's Messages API (``huggingface_tgi.tgi_chat_payload``)."""

    def prepare(self, payload: Json, *, target: Target, stream: bool) -> Json:
        return tgi_chat_payload(super().prepare(payload, target=target, stream=stream))

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        result = await super().chat(call, target=target)
        normalize_finish(TgiIds()(result.body), request_stops(call.request.stop))
        return result

    async def stream_chat(self, call: ChatCall, *, target: Target
                          ) -> AsyncGenerator[Json, None]:
        stream = super().stream_chat(call, target=target)
        finish, ids = FinishReasons(request_stops(call.request.stop)), TgiIds()
        try:
            async for chunk in stream:
                yield finish(ids(chunk))
        finally:
            await stream.aclose()


class TgiGenerate:
    """Text completions through TGI's native routes (``huggingface_tgi``)."""

    def __init__(self, upstream: Upstream, *, prefill_details: bool) -> None:
        self._upstream = upstream
        self._prefill = prefill_details

    async def complete(self, call: CompletionCall, *, target: Target) -> Result:
        payload = generate_request(call, target=target, stream=False, prefill=self._prefill)
        answer = await self._upstream.post(GENERATE_PATH, payload, timeout_s=target.timeout_s)
        body, usage = to_text_completion(
            answer, completion_id=_completion_id(), model=target.model,
            created=int(time.time()), prompt=prompt_text(call), echo=bool(call.request.echo),
            stops=request_stops(call.request.stop))
        return Result(body=body, usage=usage)

    async def stream_complete(self, call: CompletionCall, *, target: Target
                              ) -> AsyncGenerator[Json, None]:
        """Chunks as TGI's events arrive, then a usage chunk; closing the generator closes the
        upstream connection (TGI stops generating)."""
        payload = generate_request(call, target=target, stream=True, prefill=False)
        translator = GenerateStream(completion_id=_completion_id(), model=target.model,
                                    created=int(time.time()), prompt=prompt_text(call),
                                    echo=bool(call.request.echo),
                                    stops=request_stops(call.request.stop))
        events = self._upstream.stream_sse(GENERATE_STREAM_PATH, payload,
                                           timeout_s=target.timeout_s)
        read = EventJson()
        try:
            async for event in events:
                for chunk in translator.feed(read(event.data)):
                    yield chunk
                if translator.done:
                    await drain(events)
                    return
            translator.finish()
        finally:
            await events.aclose()


def _completion_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


def _missing(api: str, capability: Capability) -> errors.GatewayError:
    # The routing table never hands a call to a configuration that does not offer it
    # (``HuggingFaceProvider.offers``): reaching this is a bug.
    return errors.GatewayError(f"a Hugging Face {api} provider cannot serve {capability}")


class HuggingFace:
    """One configured Hugging Face upstream: the parts its ``api`` has, the rest absent."""

    def __init__(self, *, api: str, chat: OpenAICompatible | None = None,
                 generate: TgiGenerate | None = None,
                 embeddings: TeiEmbeddings | None = None) -> None:
        self.api = api
        self._chat = chat
        self._generate = generate
        self._embeddings = embeddings

    def _chat_api(self, capability: Capability) -> OpenAICompatible:
        if self._chat is None:
            raise _missing(self.api, capability)
        return self._chat

    def _generate_api(self, capability: Capability) -> TgiGenerate:
        if self._generate is None:
            raise _missing(self.api, capability)
        return self._generate

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        return await self._chat_api("chat").chat(call, target=target)

    def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        return self._chat_api("stream_chat").stream_chat(call, target=target)

    async def complete(self, call: CompletionCall, *, target: Target) -> Result:
        return await self._generate_api("complete").complete(call, target=target)

    def stream_complete(self, call: CompletionCall, *, target: Target) -> AsyncIterator[Json]:
        return self._generate_api("stream_complete").stream_complete(call, target=target)

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        if self._embeddings is None:
            raise _missing(self.api, "embed")
        return await self._embeddings.embed(call, target=target)

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


def build(config: HuggingFaceProvider, session: aiohttp.ClientSession) -> HuggingFace:
    headers = {**bearer(config.api_key), **config.headers}

    def upstream(base_url: str) -> Upstream:
        return Upstream.from_config(session, config, base_url=base_url, headers=headers,
                                    error_mapper=map_error)

    if config.api == "router":
        return HuggingFace(api="router", chat=HfRouter(upstream(config.base_url or ROUTER_URL),
                                                       provider=config.provider))
    # An endpoint's URL may be given with TGI's ``/v1`` (where its Messages API lives) or not.
    root = (config.base_url or "").rstrip("/").removesuffix("/v1")
    if config.api == "tgi":
        return HuggingFace(api="tgi", chat=TgiMessages(upstream(root + "/v1")),
                           generate=TgiGenerate(upstream(root),
                                                prefill_details=config.prefill_details))
    defaults = {name: getattr(config, name) for name in
                ("normalize", "truncate", "truncation_direction", "prompt_name")
                if getattr(config, name) is not None}
    return HuggingFace(api="tei", embeddings=TeiEmbeddings(
        upstream(root), defaults=defaults, batch_size=config.max_client_batch_size))
