"""Amazon Bedrock (``type: bedrock``): Converse/ConverseStream for chat, InvokeModel for embeddings
and for Claude's own Messages API.

Every request is SigV4-signed (service ``bedrock``; credentials as ``app.providers.aws`` says),
or carries a Bedrock API key as ``Authorization: Bearer`` when the config has ``api_key``.
The endpoint is ``https://bedrock-runtime.{region}.amazonaws.com`` unless ``base_url`` says
otherwise; the target's model is a model id, an inference profile id or an ARN, URL-encoded as
one path segment.

Chat (``/v1/chat/completions``) goes through Converse (``bedrock_converse``,
``bedrock_response``) for every model, Claude included:

- ``system``/``developer`` messages become ``system`` blocks; tool results become
  ``toolResult`` blocks in user turns; consecutive turns of one role are merged.
- ``max_tokens``/``max_completion_tokens`` (the smaller), ``temperature``, ``top_p`` and ``stop``
  become ``inferenceConfig``; without a limit the model's own default applies (or the
  target's / provider's ``max_tokens_default``).
- ``tools``/``tool_choice`` become ``toolConfig`` (``required`` -> ``any``; a tool's ``strict:
  true`` its ``toolSpec.strict``, Converse's strict tool use); ``tool_choice: none`` leaves the
  tools out (the model cannot call tools it is not shown), refused (400) when the conversation
  already holds tool calls, which Converse needs the tools for. A tool-call history sent
  without ``tools`` declares the tools it called, each with an open schema and a description
  asking the model not to call it (Converse refuses toolUse/toolResult blocks without a
  ``toolConfig``; OpenAI takes such a history for a final answer).
- ``response_format`` ``json_schema`` becomes Converse's own structured output
  (``outputConfig.textFormat``, in botocore's model of the API); ``json_object`` is refused
  (400): Converse has no schema-less JSON mode.
- Refused with 400: ``n`` > 1, ``logprobs``, ``parallel_tool_calls: false``, content parts
  other than text and base64 images (png, jpeg, gif, webp), image links, what Converse's
  published limits rule out for every model (``temperature`` > 1, an empty ``stop`` string,
  more than 10 ``additionalModelResponseFieldPaths``), a conversation whose first turn is the
  assistant's (Converse wants a user message first), a trailing empty user message (Converse
  refuses blank messages, and without it the assistant's last turn would read as a prefill;
  other empty messages are left out); ``tool_choice`` asking for a call with no tools;
  ``reasoning_effort`` (Converse's ``outputConfig.effort`` is not published per model: the
  client sends it, or Claude's thinking in ``additionalModelRequestFields``); custom tools,
  audio output and ``web_search_options`` (``app.providers.refusals``).
- Dropped, as hints Converse has no field for: ``seed``, ``presence_penalty``,
  ``frequency_penalty``, ``logit_bias``, ``user``, ``metadata``, ``service_tier`` (Converse's
  own is ``serviceTier``). A part's ``cache_control`` (system, user, assistant text, tool
  result) becomes a ``cachePoint`` after its block (a tool result's after the ``toolResult``),
  its ``ttl`` the block's. Converse-native fields sent by the client
  (``additionalModelRequestFields``, ``guardrailConfig``, ``serviceTier``...:
  ``bedrock_converse.PASSTHROUGH_FIELDS``) are forwarded; an ``outputConfig`` is merged with
  a ``json_schema`` ``response_format``'s ``textFormat``.
- Stop reasons: ``end_turn``/``stop_sequence`` -> stop, ``max_tokens`` -> length,
  ``tool_use`` -> tool_calls, guardrail/content filter -> content_filter; a malformed model
  output is a 502. A ``stop_sequence`` names the sequence in the choice's ``stop_reason`` (as
  vLLM reports it): the one the model's response names (a request with stop sequences asks for
  ``/stop_sequence`` in ``additionalModelResponseFieldPaths``; Claude's response has it), else
  the request's only one. Usage: see ``bedrock_response``.

Embeddings go through InvokeModel (``bedrock_embed``: Titan Text Embeddings v2 and v1, Cohere
Embed).

Anthropic's Messages API (``/v1/messages``) reaches Claude natively: the client's body goes to
InvokeModel / InvokeModelWithResponseStream without ``model`` and ``stream`` (the model is in
the path), with ``anthropic_version: bedrock-2023-05-31`` unless the client set one, and the
client's ``anthropic-beta`` names as the body's ``anthropic_beta`` list; the stream's
``chunk`` events carry Anthropic's events (base64), relayed as they came. A target whose model
id does not name Anthropic is refused for it with a 400.

Errors: ``aws_http.aws_error``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any, Literal
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import Field, SecretStr

from app import errors
from app.embeddings import encode_vector
from app.providers import bedrock_embed
from app.providers.anthropic import native_chunks
from app.providers.anthropic_response import to_chat_completion as anthropic_completion
from app.providers.aws import Authorizer, AwsConfig, BearerKey, SigV4Signer, credential_cache
from app.providers.aws_eventstream import Message
from app.providers.aws_http import AwsUpstream, stream_exception
from app.providers.base import (
    ChatCall,
    EmbeddingCall,
    Json,
    MessagesCall,
    OpeningHold,
    Result,
    Target,
    embeddings_result,
)
from app.providers.bedrock_converse import translate_request
from app.providers.bedrock_response import OPENING_EVENTS, StreamTranslator, to_chat_completion
from app.providers.fanout import billed, in_order, sum_usage
from app.providers.http import SSEEvent, drain
from app.providers.stops import request_stops
from app.scrub import config_secrets
from app.usage import Usage

ANTHROPIC_VERSION = "bedrock-2023-05-31"


class BedrockProvider(AwsConfig):
    type: Literal["bedrock"]
    api_key: SecretStr | None = None
    """A Bedrock API key, sent as ``Authorization: Bearer`` instead of signing."""
    max_tokens_default: Annotated[int, Field(ge=1)] | None = None
    embed_concurrency: Annotated[int, Field(ge=1)] = 16
    """Titan embeds one text a call: at most this many calls at once for one request."""

    def uses_sigv4(self) -> bool:
        return self.api_key is None


def model_path(model: str, operation: str) -> str:
    """``/model/{modelId}/{operation}``, the id encoded as one segment (botocore's encoding)."""
    return f"/model/{quote(model, safe='-_.~')}/{operation}"


class Bedrock:
    """Chat, embeddings and Claude's Messages API on Bedrock; see the module docstring."""

    def __init__(self, upstream: AwsUpstream, *, max_tokens_default: int | None,
                 embed_concurrency: int) -> None:
        self._upstream = upstream
        self._max_tokens_default = max_tokens_default
        self._embed_slots = asyncio.Semaphore(embed_concurrency)

    def minted_credentials(self) -> tuple[str, ...]:
        """The AWS credentials resolved at run time (``base.MintsCredentials``)."""
        return self._upstream.minted_credentials()

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        payload = translate_request(call, target=target,
                                    max_tokens_default=self._max_tokens_default)
        answer = await self._upstream.invoke(model_path(target.model, "converse"), payload,
                                             timeout_s=target.timeout_s)
        body, usage = to_chat_completion(answer, model=target.model, created=int(time.time()),
                                         stops=request_stops(call.request.stop))
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        """ConverseStream's events as chunks; the last carries ``usage`` (from ``metadata``).
        The chunks of ``messageStart`` and ``contentBlockStart`` wait for the next event's
        (``OpeningHold``), so the first chunk comes with the first token. An exception message
        raises its mapped error; a stream ended before ``messageStop`` raises
        ``BadUpstreamResponse``. Closing the generator closes the connection."""
        payload = translate_request(call, target=target,
                                    max_tokens_default=self._max_tokens_default)
        translator = StreamTranslator(model=target.model, created=int(time.time()),
                                      stops=request_stops(call.request.stop))
        hold = OpeningHold(OPENING_EVENTS)
        events = self._upstream.events(model_path(target.model, "converse-stream"), payload,
                                       timeout_s=target.timeout_s)
        try:
            async for message in events:
                if message.is_error:
                    raise stream_exception(message, service=self._upstream.service)
                chunks = translator.feed(message.event_type, _json(message.payload))
                for chunk in hold.release(message.event_type, chunks):
                    yield chunk
                if translator.done:
                    await drain(events)  # the connection goes back to the pool
                    break
            translator.finish()
        finally:
            await events.aclose()

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        encoding = call.request.encoding_format
        path = model_path(target.model, "invoke")
        if bedrock_embed.family(target) == "titan":
            titans = bedrock_embed.titan_bodies(call, target=target)
            answers = await self._all(path, titans, target, usage=bedrock_embed.titan_usage)
            try:
                read = [bedrock_embed.read_titan(body) for body, _ in answers]
            except errors.GatewayError as exc:  # answered, so billed: every call counts
                billed(exc, sum_usage(map(bedrock_embed.titan_usage, titans, answers)))
                raise
            return embeddings_result([encode_vector(vector, encoding) for vector, _ in read],
                                     model=target.model, tokens=sum(n for _, n in read))
        bodies = bedrock_embed.cohere_bodies(call, target=target)
        answers = await self._all(path, bodies, target, usage=bedrock_embed.cohere_usage)
        vectors: list[Any] = []
        tokens = 0
        try:
            for payload, (body, headers) in zip(bodies, answers, strict=True):
                vectors.extend(encode_vector(v, encoding) for v in
                               bedrock_embed.read_cohere(body, expected=len(payload["texts"])))
                tokens += _int(headers.get("X-Amzn-Bedrock-Input-Token-Count"))
        except errors.GatewayError as exc:
            billed(exc, sum_usage(map(bedrock_embed.cohere_usage, bodies, answers)))
            raise
        return embeddings_result(vectors, model=target.model, tokens=tokens)

    async def _all(self, path: str, bodies: list[Json], target: Target, *,
                   usage: Callable[[Json, tuple[Any, Any]], Usage]
                   ) -> list[tuple[Any, Any]]:
        """Every body's answer (and headers), in order, at most ``embed_concurrency`` at once
        (across the provider's calls); the first failure cancels the rest and carries the
        ``usage`` of those answered (``fanout.in_order``)."""
        async def one(body: Json) -> tuple[Any, Any]:
            return await self._upstream.invoke_answer(path, body, timeout_s=target.timeout_s)

        return await in_order(one, bodies, slots=self._embed_slots, usage=usage)

    async def messages(self, call: MessagesCall, *, target: Target) -> Result:
        """A ``/v1/messages`` call to Claude through InvokeModel, the answer as it came."""
        answer = await self._upstream.invoke(model_path(target.model, "invoke"),
                                             anthropic_body(call, target),
                                             timeout_s=target.timeout_s)
        if not isinstance(answer, dict):
            raise errors.BadUpstreamResponse("Bedrock sent JSON that is not an object")
        body, usage = anthropic_completion(answer, created=int(time.time()))
        return Result(body=body, usage=usage, native=answer)

    async def stream_messages(self, call: MessagesCall, *, target: Target
                              ) -> AsyncIterator[Json]:
        """InvokeModelWithResponseStream: each ``chunk`` event's ``bytes`` is one of Anthropic's
        events, relayed (``NATIVE_EVENTS``) on the chunk it led to by ``anthropic``'s own
        ``native_chunks``."""
        events = self._upstream.events(model_path(target.model, "invoke-with-response-stream"),
                                       anthropic_body(call, target), timeout_s=target.timeout_s)
        chunks = native_chunks(_anthropic_events(events, service=self._upstream.service))
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


def anthropic_body(call: MessagesCall, target: Target) -> Json:
    """The client's Messages body as Bedrock takes it: no ``model`` or ``stream``, an
    ``anthropic_version``, and the client's ``anthropic-beta`` names as ``anthropic_beta``
    (unless the body has its own)."""
    if "anthropic" not in target.model.lower():
        raise errors.InvalidRequest(
            f"Bedrock model {target.model!r} is not an Anthropic model: /v1/messages reaches "
            "only Claude on Bedrock natively", param="model")
    body = {k: v for k, v in call.body.items() if k not in ("model", "stream")}
    body.setdefault("anthropic_version", ANTHROPIC_VERSION)
    if call.betas:  # InvokeModel takes Claude's betas in the body, not as a header
        body.setdefault("anthropic_beta", list(call.betas))
    return body


async def _anthropic_events(events: AsyncGenerator[Message, None], *, service: str
                            ) -> AsyncGenerator[SSEEvent, None]:
    """InvokeModelWithResponseStream's ``chunk`` messages as the Anthropic events they carry
    (an ``exception`` or ``error`` message raises its mapped error). Closing it closes
    ``events``."""
    try:
        async for message in events:
            if message.is_error:
                raise stream_exception(message, service=service)
            if message.event_type == "chunk":
                yield SSEEvent(event=None, data=_chunk_bytes(message.payload).decode())
    finally:
        await events.aclose()


def _json(raw: bytes) -> Json:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.BadUpstreamResponse("Bedrock stream sent invalid JSON") from None
    if not isinstance(value, dict):
        raise errors.BadUpstreamResponse("Bedrock stream sent JSON that is not an object")
    return value


def _chunk_bytes(payload: bytes) -> bytes:
    """The model's own event inside an InvokeModelWithResponseStream ``chunk`` (base64)."""
    encoded = _json(payload).get("bytes")
    if not isinstance(encoded, str):
        raise errors.BadUpstreamResponse("Bedrock chunk event has no bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        raise errors.BadUpstreamResponse("Bedrock chunk bytes are not base64") from None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def build(config: BedrockProvider, session: aiohttp.ClientSession) -> Bedrock:
    service = f"AWS Bedrock ({config.region})"
    authorizer: Authorizer
    if config.api_key is not None:
        authorizer = BearerKey(config.api_key.get_secret_value())
    else:
        authorizer = SigV4Signer(credential_cache(config, label=service), service="bedrock",
                                 region=config.region)
    base_url = config.base_url or f"https://bedrock-runtime.{config.region}.amazonaws.com"
    upstream = AwsUpstream(session, base_url=base_url, authorizer=authorizer, service=service,
                           timeout_s=config.timeout_s, connect_timeout_s=config.connect_timeout_s,
                           secrets=config_secrets([config]), headers=config.headers)
    return Bedrock(upstream, max_tokens_default=config.max_tokens_default,
                   embed_concurrency=config.embed_concurrency)
