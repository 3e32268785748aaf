"""Google's Gemini API (``generativelanguage.googleapis.com/v1beta``) behind the OpenAI-shaped
provider seam; ``GenerateContentChat`` is shared with Vertex AI (``app.providers.vertex``).

The request is translated (``gemini_request``), not forwarded, and the answer translated back
(``gemini_response``, ``gemini_stream``). Chat goes to ``POST /models/{model}:generateContent``
and streams to ``:streamGenerateContent?alt=sse``; embeddings to ``:batchEmbedContents``
(``gemini_embed``). The API key travels only in ``x-goog-api-key`` (never in the URL, where
Google also accepts it, because URLs end up in logs) and is scrubbed from every error.
Where the two APIs differ, this is what a client gets:

- ``system`` and ``developer`` messages, wherever they stand, become ``systemInstruction``;
  assistant turns are role ``model``; tool calls are ``functionCall`` parts and tool messages
  ``functionResponse`` parts named after the earlier call their ``tool_call_id`` names (a JSON
  object content is the ``response``, anything else goes under ``response.output``), in the
  order of the calls they answer (Gemini pairs them by name and position when it has no ids);
  a call id Gemini gave (Gemini 3 always does) goes back on both parts, on the Gemini API only
  (Vertex's v1 refuses the field).
- Images, files (PDF and others) and audio travel inline (``inlineData``) from base64
  ``data:`` URLs; an ``http(s)`` image URL is refused (400): the API does not fetch URLs.
- ``tools`` become one ``functionDeclarations`` list with each schema as
  ``parametersJsonSchema`` (full JSON Schema, not the OpenAPI subset); ``tool_choice`` becomes
  ``toolConfig.functionCallingConfig`` (auto AUTO, required ANY, none NONE, a named function
  ANY with ``allowedFunctionNames``). A declaration has no strict flag: a tool's ``strict:
  true`` makes auto (or no tool_choice) VALIDATED, the mode that, like ANY, Google says ensures
  function schema adherence (for every tool of the request).
- ``generationConfig``: ``maxOutputTokens`` (the smaller of ``max_tokens`` and
  ``max_completion_tokens``, else the target's default, else unset), ``temperature``,
  ``topP``, ``stopSequences``, ``seed``, ``presencePenalty``, ``frequencyPenalty``,
  ``candidateCount`` (``n``); ``response_format`` json_object is ``responseMimeType:
  application/json`` and json_schema adds ``responseJsonSchema`` (enforced by the API);
  ``reasoning_effort`` is ``thinkingConfig.thinkingBudget`` (Google's own mapping:
  ``gemini_request.THINKING_BUDGETS``; another value is a 400).
- Refused with 400: ``logprobs``/``top_logprobs`` (not translated back), ``logit_bias`` (no
  equivalent), ``parallel_tool_calls: false`` (Gemini cannot be told), legacy ``function``
  messages, other content part types, a trailing empty user message (Gemini refuses empty
  ``parts``, and without it the assistant's last turn would read as a prefill; other empty
  messages are left out); custom tools, audio output and ``web_search_options``
  (``app.providers.refusals``).
- Dropped, as they cannot change the answer: ``user``, ``metadata``, ``stream_options`` (the
  usage chunk is always sent, from Gemini's ``usageMetadata``), ``service_tier`` (a hint
  about capacity, not the answer).
- Gemini-native fields sent by the client (``extra_body``: ``safetySettings``,
  ``cachedContent``, ``labels``, ``toolConfig``, and ``generationConfig`` merged under the
  translated one, e.g. ``thinkingConfig``) are forwarded; the target's ``params`` lie underneath.
- Answers: text parts joined into ``content``; ``thought: true`` parts (sent when
  ``thinkingConfig.includeThoughts`` is set) into ``reasoning_content``; ``functionCall`` parts
  into ``tool_calls`` with generated ``call_...`` ids (Gemini's own id when it gives one). Other
  parts (inline data, code execution) are dropped.
- Thought signatures travel where Google's own OpenAI-compatible endpoint puts them: a
  ``functionCall`` part's on its tool call, any other part's on the message, each as
  ``extra_content: {"google": {"thought_signature": ...}}`` (streams: on the tool call's delta,
  or a delta of their own). Sent back on an assistant message's tool calls, each goes on its
  own ``functionCall`` part, which Gemini 3 requires for the current turn's calls; one on the
  message goes on its last text part (``gemini_request._model_parts``).
- Finish reasons: STOP stop, MAX_TOKENS length, SAFETY / RECITATION / BLOCKLIST /
  PROHIBITED_CONTENT / SPII (and the image and Model Armor ones) content_filter, others stop;
  a candidate with calls tool_calls. A broken or unexpected tool call
  (``gemini_response.FAILED_REASONS``: MALFORMED_FUNCTION_CALL...) is no answer: a 502 that is
  retried or goes to the next target. A prompt blocked by ``promptFeedback.blockReason`` is a
  400 naming the reason.
- Usage: prompt ``promptTokenCount`` (+ ``toolUsePromptTokenCount``), completion
  ``candidatesTokenCount`` + ``thoughtsTokenCount`` (thinking is billed as output),
  ``reasoning_tokens`` the thoughts, ``cached_tokens`` ``cachedContentTokenCount``.
- Embeddings: see ``gemini_embed``; ``batchEmbedContents`` reports no usage, so the input
  tokens are estimated (``Usage.estimated``).

Errors: Google's ``{"error": {"code", "message", "status", "details"}}``; RESOURCE_EXHAUSTED
stays 429 (retry-after from the header, else ``RetryInfo.retryDelay``), a refused key (Gemini's
400 ``API_KEY_INVALID``, 401, 403) a 502 naming the provider; error frames inside a stream are
mapped by their ``code``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal
from urllib.parse import quote

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
from app.providers.event_json import EventJson
from app.providers.fanout import billed
from app.providers.gemini_embed import (
    batch_embed_payloads,
    estimated_usage,
    read_batch_embed,
    texts_of,
)
from app.providers.gemini_request import translate_request
from app.providers.gemini_response import error_mapper, to_chat_completion
from app.providers.gemini_stream import StreamTranslator
from app.providers.http import ErrorMapper, Upstream
from app.usage import Usage


class GeminiProvider(ProviderBase):
    """The Gemini API with an API key (Google AI Studio)."""

    type: Literal["gemini"]
    api_key: SecretStr
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    task_type: str | None = None
    """The embedding ``taskType`` when neither the client nor the target's params give one."""


def model_id(model: str) -> str:
    """A target's model as a URL path segment (a leading ``models/`` is accepted)."""
    return quote(model.removeprefix("models/"), safe="")


UpstreamSource = Callable[[], Awaitable[Upstream]]


class GenerateContentChat:
    """Chat and streamed chat over ``generateContent``; ``upstream`` gives the upstream to
    call (Vertex's changes with its token), ``model_path`` a model's path under it,
    ``echo_ids`` whether function call ids go back to the API (``gemini_request``)."""

    def __init__(self, upstream: UpstreamSource, *, model_path: Callable[[str], str],
                 error_mapper: ErrorMapper, echo_ids: bool = False) -> None:
        self._upstream = upstream
        self._model_path = model_path
        self._error_mapper = error_mapper
        self._echo_ids = echo_ids

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        upstream = await self._upstream()
        answer = await upstream.post_json(
            self._model_path(target.model) + ":generateContent",
            translate_request(call, target=target, echo_ids=self._echo_ids),
            timeout_s=target.timeout_s)
        body, usage = to_chat_completion(answer, model=target.model, created=int(time.time()))
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        """Chunks as Gemini's arrive; the last one carries ``usage`` and no choices.

        Upstream errors before the first chunk raise from the first ``__anext__``; an error
        frame raises its mapped error; a stream cut before every candidate finished raises
        ``BadUpstreamResponse``. Closing the generator closes the upstream connection.
        """
        payload = translate_request(call, target=target, echo_ids=self._echo_ids)
        translator = StreamTranslator(model=target.model, created=int(time.time()),
                                      error_mapper=self._error_mapper)
        upstream = await self._upstream()
        events = upstream.stream_sse(
            self._model_path(target.model) + ":streamGenerateContent?alt=sse", payload,
            timeout_s=target.timeout_s)
        read = EventJson()
        try:
            async for event in events:
                for chunk in translator.feed(read(event.data)):
                    yield chunk
            for chunk in translator.finish():
                yield chunk
        finally:
            await events.aclose()

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


class GeminiAPI(GenerateContentChat):
    """The Gemini API: chat, streamed chat and embeddings."""

    def __init__(self, upstream: Upstream, *, task_type: str | None,
                 error_mapper: ErrorMapper) -> None:
        super().__init__(self._fixed, model_path=lambda model: "/models/" + model_id(model),
                         error_mapper=error_mapper, echo_ids=True)
        self._fixed_upstream = upstream
        self._task_type = task_type

    async def _fixed(self) -> Upstream:
        return self._fixed_upstream

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        """``batchEmbedContents`` in batches, vectors in the client's order."""
        model = model_id(target.model)
        vectors: list[list[float]] = []
        texts = texts_of(call)
        for payload in batch_embed_payloads(call, target=target, model_name=f"models/{model}",
                                            default_task=self._task_type):
            try:
                answer = await self._fixed_upstream.post_json(
                    f"/models/{model}:batchEmbedContents", payload, timeout_s=target.timeout_s)
                vectors.extend(read_batch_embed(answer, expected=len(payload["requests"])))
            except errors.GatewayError as exc:
                if vectors:  # the batches answered before it were billed (``fanout``)
                    billed(exc, estimated_usage(texts[:len(vectors)]))
                raise
        return encoded_embeddings(vectors, call=call, target=target,
                                  usage=estimated_usage(texts))


def encoded_embeddings(vectors: list[list[float]], *, call: EmbeddingCall, target: Target,
                       usage: Usage) -> Result:
    """The OpenAI embedding ``list`` for ``vectors``, encoded as the client asked."""
    encoding = call.request.encoding_format
    return embeddings_result([encode_vector(v, encoding) for v in vectors], model=target.model,
                             tokens=usage.prompt_tokens, estimated=usage.estimated)


def build(config: GeminiProvider, session: aiohttp.ClientSession) -> GeminiAPI:
    mapper = error_mapper("the Gemini API")
    headers = {"x-goog-api-key": config.api_key.get_secret_value(), **config.headers}
    upstream = Upstream.from_config(session, config, base_url=config.base_url.rstrip("/"),
                                    headers=headers, error_mapper=mapper)
    return GeminiAPI(upstream, task_type=config.task_type, error_mapper=mapper)
