"""Cohere's Chat API v2 (``POST /v2/chat``) and Embed API v2 (``POST /v2/embed``) behind the
OpenAI-shaped provider seam.

Native rather than Cohere's OpenAI-compatible endpoint, because v2 carries what that one does
not: the embed ``input_type`` and ``truncate``, tool plans, citations, billed units. Requests are
translated (``cohere_request``, ``cohere_embed``) and answers translated back
(``cohere_response``, ``cohere_stream``). Where the APIs differ, this is what a client gets:

- ``system`` and ``developer`` messages stay in place as Cohere ``system`` messages; text and
  ``image_url`` parts (http(s) or base64 ``data:image/...`` URLs, ``detail`` kept) go to user
  messages; an assistant's text beside its ``tool_calls`` is sent as ``tool_plan`` and comes back
  the same way (a ``tool_plan`` is the ``content`` of an answer with tool calls); tool results
  keep their ``tool_call_id``. An empty assistant turn (no text, no tool calls) is left out.
- ``tool_choice``: ``required`` -> ``REQUIRED``, ``none`` -> ``NONE``, ``auto`` -> unset; a
  choice naming one function sends that function alone with ``REQUIRED``. A tool with
  ``strict: true`` sets Cohere's request-wide ``strict_tools``.
- ``response_format``: ``json_object`` -> ``{"type": "json_object"}``; ``json_schema`` ->
  ``{"type": "json_object", "json_schema": <schema>}`` (enforced by Cohere).
- ``max_tokens``/``max_completion_tokens`` -> ``max_tokens`` (the smaller); ``stop`` ->
  ``stop_sequences``; ``seed``, ``temperature``, ``frequency_penalty``, ``presence_penalty``
  as they are; ``top_p`` -> ``p``, clamped to Cohere's 0.01..0.99 (``top_p: 1``, "no cut", is
  0.99, the closest Cohere allows); ``logprobs: true`` -> ``logprobs`` (each chunk of text and
  its summed logprob; Cohere gives no alternatives).
- Refused with 400 rather than ignored, because the answer would differ from what was asked:
  ``n`` > 1; ``temperature`` > 1 and penalties outside 0..1 (Cohere's ranges); a negative
  ``seed``; ``top_logprobs`` > 0; ``logit_bias``; ``parallel_tool_calls: false``;
  ``response_format`` json together with tools (Cohere refuses the combination); legacy
  ``function`` messages; audio, file and other non-text, non-image parts; images other than
  http(s) or base64 data URLs; token-id embedding inputs; custom tools, audio output and
  ``web_search_options`` (``app.providers.refusals``); ``reasoning_effort`` (Cohere's
  reasoning models take ``thinking`` instead, with no published mapping from OpenAI's levels).
- Dropped, as they cannot change the answer: ``user``, ``metadata``, a message's ``name``,
  ``service_tier`` and ``prediction`` (a billing tier and a latency hint Cohere has no field
  for).
- Cohere-native chat fields from the client (``k``, ``safety_mode``, ``documents``,
  ``citation_options``, ``thinking``, ``priority``) are forwarded; the target's ``params`` lie
  underneath everything. Thinking comes back as ``reasoning_content``; citations are dropped.
- ``finish_reason``: ``COMPLETE``/``STOP_SEQUENCE`` -> ``stop``, ``MAX_TOKENS``/``TIMEOUT`` ->
  ``length``, ``TOOL_CALL`` -> ``tool_calls``; ``ERROR`` is raised as a retryable 502
  ``generation_failed``. A ``STOP_SEQUENCE`` names the request's one stop sequence in the
  choice's ``stop_reason`` (``cohere_response.stop_sequence``). Usage is read from
  ``billed_units`` (see ``cohere_response``). Cohere's answers name no model: the target's is
  reported.
- Embeddings: ``input_type`` is the request's extension field, else the target's ``params``, else
  the provider's ``input_type`` (default ``search_document``, the type for texts stored to be
  searched; Cohere requires one for v3 and later models). Vectors are requested as floats;
  ``encoding_format: base64`` is answered as OpenAI does (little-endian float32). ``dimensions`` ->
  ``output_dimension`` (refused for Embed v3 and older models, whose vectors have one size, and for
  a size other than 256, 512, 1024, 1536). ``truncate`` (``NONE``/``START``/``END``) comes from the
  request or the target's params; unset, Cohere's default (``END``) applies. More than 96 texts are
  sent as batches of 96, one after another: Cohere limits embed inputs per minute (2,000), so
  concurrent batches would reach that limit no sooner in total, and sending in order stops at the
  first failing batch instead of spending quota on batches whose answer would be thrown away.
  Vectors are rejoined in input order, usage summed.
- Text completions don't exist at Cohere v2: the class does not implement them.
- ``base_url`` may be given with or without a trailing ``/v2``.

Errors: Cohere's ``{"id", "message"}`` body is read into the gateway's error tree
(``cohere_response.map_error``): 429 stays 429 with its ``Retry-After``; 401/403 are the
gateway's credentials (502). The API key travels only in ``Authorization: Bearer`` and is
scrubbed from every error message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import aiohttp
from pydantic import SecretStr

from app import errors
from app.embeddings import encode_vector
from app.providers.base import (
    ChatCall,
    EmbeddingCall,
    Json,
    ProviderBase,
    Result,
    Target,
    embeddings_result,
)
from app.providers.cohere_embed import (
    INPUT_TYPES,
    TRUNCATE,
    InputType,
    batch_payloads,
    output_dimension_problem,
    read_batch,
    takes_output_dimension,
)
from app.providers.cohere_request import translate_request
from app.providers.cohere_response import map_error, to_chat_completion
from app.providers.cohere_stream import StreamTranslator
from app.providers.event_json import EventJson
from app.providers.fanout import billed
from app.providers.http import Upstream, drain
from app.providers.openai import bearer
from app.providers.stops import request_stops
from app.usage import Usage, estimate_tokens


class CohereProvider(ProviderBase):
    type: Literal["cohere"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.cohere.com"
    input_type: InputType = "search_document"
    """The embed ``input_type`` when neither the request nor the target's ``params`` set one."""

    def target_problems(self, *, model: str, params: Mapping[str, Any]) -> list[str]:
        """The embed options a target's ``params`` may set, as ``cohere_embed.batch_payloads``
        would refuse them on every call (blaming the client for a field it never sent)."""
        problems = []
        if "input_type" in params and params["input_type"] not in INPUT_TYPES:
            problems.append(f"params.input_type: {params['input_type']!r} is not one of "
                            f"{', '.join(INPUT_TYPES)}")
        if "truncate" in params and params["truncate"] not in TRUNCATE:
            problems.append(f"params.truncate: {params['truncate']!r} is not one of "
                            f"{', '.join(TRUNCATE)}")
        if params.get("output_dimension") is not None and not takes_output_dimension(model):
            problems.append(f"params.output_dimension: {model} makes vectors of one size; "
                            "output_dimension is for embed-v4.0 and newer")
        elif params.get("output_dimension") is not None:
            problem = output_dimension_problem(params["output_dimension"])
            if problem is not None:
                problems.append(f"params.output_dimension: {params['output_dimension']!r} "
                                f"{problem}")
        return problems


CHAT_PATH = "/v2/chat"
EMBED_PATH = "/v2/embed"


class CohereV2:
    """Chat and embeddings over Cohere's v2 API; see the module docstring for the translation."""

    def __init__(self, upstream: Upstream, *, input_type: str) -> None:
        self._upstream = upstream
        self._input_type = input_type

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        payload = translate_request(call, target=target, stream=False)
        answer = await self._upstream.post_json(CHAT_PATH, payload, timeout_s=target.timeout_s)
        body, usage = to_chat_completion(answer, model=target.model, created=int(time.time()),
                                         stops=request_stops(call.request.stop))
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        """Chunks as events arrive; the last one carries ``usage`` and no choices.

        Upstream errors before the first event raise from the first ``__anext__``; a stream cut
        before ``message-end`` raises ``BadUpstreamResponse``. Closing the generator closes the
        upstream connection.
        """
        payload = translate_request(call, target=target, stream=True)
        translator = StreamTranslator(model=target.model, created=int(time.time()),
                                      stops=request_stops(call.request.stop))
        events = self._upstream.stream_sse(CHAT_PATH, payload, timeout_s=target.timeout_s)
        read = EventJson()
        try:
            async for event in events:
                if event.data == "[DONE]":
                    break
                for chunk in translator.feed(read(event.data), event=event.event):
                    yield chunk
                if translator.done:
                    await drain(events)
                    return
            translator.finish()
        finally:
            await events.aclose()

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        """Embeddings of the client's texts, in batches of at most 96 sent in order."""
        vectors: list[list[float]] = []
        total = Usage()
        reported = False
        payloads = batch_payloads(call, target=target, input_type=self._input_type)
        for i, payload in enumerate(payloads):
            try:
                answer = await self._upstream.post_json(EMBED_PATH, payload,
                                                       timeout_s=target.timeout_s)
                batch, usage = read_batch(answer, expected=len(payload["texts"]))
            except errors.GatewayError as exc:
                if i:  # the batches answered before it were billed (``fanout``)
                    billed(exc, total if reported else Usage(
                        prompt_tokens=sum(estimate_tokens(t) for p in payloads[:i]
                                          for t in p["texts"]), estimated=True))
                raise
            vectors.extend(batch)
            if usage is not None:
                reported = True
                total.prompt_tokens += usage.prompt_tokens
        encoding = call.request.encoding_format
        result = embeddings_result([encode_vector(v, encoding) for v in vectors],
                                   model=target.model, tokens=total.prompt_tokens)
        if not reported:
            result.usage = None  # the gateway estimates rather than accounts zero tokens
        return result

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


def cohere_headers(config: CohereProvider) -> dict[str, str]:
    """``Authorization: Bearer`` (when configured), then the config's own headers."""
    return {**bearer(config.api_key), **config.headers}


def build(config: CohereProvider, session: aiohttp.ClientSession) -> CohereV2:
    base_url = config.base_url.rstrip("/").removesuffix("/v2")
    upstream = Upstream.from_config(session, config, base_url=base_url,
                                    headers=cohere_headers(config), error_mapper=map_error)
    return CohereV2(upstream, input_type=config.input_type)
