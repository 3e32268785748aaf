"""Amazon SageMaker endpoints running LLM containers (``type: sagemaker``): InvokeEndpoint and
InvokeEndpointWithResponseStream.

A target's model is the endpoint name (``POST /endpoints/{name}/invocations``, and
``/invocations-response-stream`` for streams), SigV4-signed for service ``sagemaker`` with the
credentials of ``app.providers.aws``; the endpoint is
``https://runtime.sagemaker.{region}.amazonaws.com`` unless ``base_url`` says otherwise. A
target's params may name ``inference_component`` (sent as
``X-Amzn-SageMaker-Inference-Component``) and ``format``; the rest lie underneath the payload.

The body is the container's own; ``format`` (the provider's, or the target's ``params.format``)
says which container answers:

- ``openai`` (vLLM, LMI, and any container taking OpenAI-style bodies at ``/invocations``):
  chat sends the client's OpenAI chat body, completions its completions body, as the ``openai``
  type does (unknown fields kept; ``model`` is left out: an endpoint serves one model), but for
  ``developer`` messages, sent as ``system`` ones (as for ``vllm``: these containers hand roles
  to the model's chat template, which knows ``system``), and the sampling vLLM refuses made what
  it takes or refused (``vllm.vllm_sampling``: ``top_p: 0`` as ``temperature: 0``; ``n`` > 1
  with greedy sampling and an empty stop string refused).
- ``tgi`` (Hugging Face's TGI container): chat sends OpenAI messages too, because TGI's
  SageMaker route reads a body with ``messages`` as a call to its Messages API and applies the
  model's own chat template (rewritten as ``huggingface_tgi.tgi_chat_payload`` does:
  ``response_format`` as TGI's grammar, ``top_p`` >= 1 left out, ``n`` > 1 refused; its
  answers' empty ids made OpenAI's by ``huggingface_tgi.TgiIds``);
  completions send TGI's native ``{"inputs", "parameters"}``
  (``huggingface_tgi.generate_request``, with ``"stream": true``
  for streams: TGI's ``/invocations`` streams only when asked), whose ``details`` carry the
  token counts.

Streams: each ``PayloadPart`` event's bytes are the container's own stream, cut anywhere: its
server-sent events (OpenAI chunks ending with ``[DONE]``, or TGI's ``data:{"token": ...}``) or
JSON lines (LMI's default for chat streams: one OpenAI chunk a line, no ``[DONE]``, the stream
ending after the chunk with a ``finish_reason``) are rebuilt from the parts and relayed as
OpenAI chunks. Usage is the container's own (``usage``
in OpenAI-style answers, with ``stream_options.include_usage`` asked for in streams; TGI's
``details``); when a container reports none, the gateway estimates it (as for every provider
that reports none). ``ModelStreamError``/``InternalStreamFailure`` events raise their mapped
error; a container error inside its own stream (``data: {"error": ...}``) raises a 502.

Errors: ``aws_http.aws_error`` (a container's 4xx wrapped in a ``ModelError`` is a 400).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Literal
from urllib.parse import quote

import aiohttp

from app import errors
from app.providers.aws import AwsConfig, SigV4Signer, credential_cache
from app.providers.aws_http import AwsUpstream, stream_exception
from app.providers.base import (
    ChatCall,
    CompletionCall,
    Json,
    OpeningHold,
    Result,
    Target,
    developer_as_system,
)
from app.providers.event_json import EventJson
from app.providers.http import SSEEvent, SSEParser
from app.providers.huggingface_tgi import (
    FinishReasons,
    GenerateStream,
    TgiIds,
    generate_request,
    normalize_finish,
    prompt_text,
    tgi_chat_payload,
    to_text_completion,
)
from app.providers.openai import OPENING, check_stream_chunk, opening_kind
from app.providers.stops import request_stops
from app.providers.vllm import vllm_sampling
from app.scrub import config_secrets
from app.usage import Usage

Format = Literal["tgi", "openai"]
TARGET_ONLY = ("format", "inference_component")


class SageMakerProvider(AwsConfig):
    type: Literal["sagemaker"]
    format: Format = "openai"
    """The payload format of the endpoints' containers (a target's ``params.format`` wins)."""


class PartLines:
    """Events from byte parts cut anywhere (a line may span parts): server-sent events, and
    JSON lines (``application/jsonlines``, LMI's stream framing: a line that starts with ``{``
    is one event's data by itself)."""

    def __init__(self) -> None:
        self._rest = b""
        self._parser = SSEParser()

    def feed(self, data: bytes) -> list[SSEEvent]:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        found = []
        for line in lines:
            if line.startswith(b"{"):
                found.append(SSEEvent(None, line.decode("utf-8", "replace").rstrip("\r")))
                continue
            event = self._parser.line(line + b"\n")
            if event is not None:
                found.append(event)
        return found

    def end(self) -> list[SSEEvent]:
        found = self.feed(b"\n") if self._rest else []
        last = self._parser.end()
        return [*found, last] if last is not None else found


class SageMaker:
    """Chat and completions on SageMaker endpoints; see the module docstring."""

    def __init__(self, upstream: AwsUpstream, *, format: Format) -> None:
        self._upstream = upstream
        self._format = format

    def minted_credentials(self) -> tuple[str, ...]:
        """The AWS credentials resolved at run time (``base.MintsCredentials``)."""
        return self._upstream.minted_credentials()

    def _format_of(self, target: Target) -> Format:
        chosen = target.params.get("format", self._format)
        if chosen not in ("tgi", "openai"):
            raise errors.InvalidRequest(f"target format must be 'tgi' or 'openai', not "
                                        f"{chosen!r}", param="model")
        return "tgi" if chosen == "tgi" else "openai"

    @staticmethod
    def _headers(target: Target) -> dict[str, str] | None:
        component = target.params.get("inference_component")
        return {"X-Amzn-SageMaker-Inference-Component": str(component)} if component else None

    @staticmethod
    def _path(target: Target, *, stream: bool) -> str:
        operation = "invocations-response-stream" if stream else "invocations"
        return f"/endpoints/{quote(target.model, safe='-_.~')}/{operation}"

    def _openai_payload(self, body: Json, target: Target, *, stream: bool, has_limit: bool
                        ) -> Json:
        params = {k: v for k, v in target.params.items() if k not in TARGET_ONLY}
        payload: Json = {**params, **body}
        payload.pop("model", None)
        if not has_limit and target.max_tokens_default is not None:
            payload["max_tokens"] = target.max_tokens_default
        if stream:
            payload["stream"] = True
            options = payload.get("stream_options")
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                         "include_usage": True}
        else:
            payload.pop("stream", None)
            payload.pop("stream_options", None)
        return payload

    def _chat_payload(self, call: ChatCall, target: Target, *, stream: bool) -> Json:
        payload = self._openai_payload(call.body, target, stream=stream,
                                       has_limit=call.request.token_limit() is not None)
        if self._format_of(target) == "tgi":
            return tgi_chat_payload(payload)
        if "messages" in payload:
            payload["messages"] = developer_as_system(payload["messages"])
        vllm_sampling(payload)
        return payload

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        answer = await self._upstream.invoke(
            self._path(target, stream=False), self._chat_payload(call, target, stream=False),
            timeout_s=target.timeout_s, headers=self._headers(target))
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise errors.BadUpstreamResponse(f"{self._upstream.service} endpoint answered no "
                                             "chat completion")
        answer.setdefault("model", target.model)
        if self._format_of(target) == "tgi":
            TgiIds()(answer)
        return Result(body=normalize_finish(answer, request_stops(call.request.stop)),
                      usage=Usage.from_openai(answer.get("usage")))

    def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        return self._openai_stream(target, self._chat_payload(call, target, stream=True),
                                   stops=request_stops(call.request.stop),
                                   ids=TgiIds() if self._format_of(target) == "tgi" else None)

    async def complete(self, call: CompletionCall, *, target: Target) -> Result:
        if self._format_of(target) == "tgi":
            payload = generate_request(call, target=_sent(target), stream=False, prefill=True)
            answer = await self._upstream.invoke(self._path(target, stream=False), payload,
                                                 timeout_s=target.timeout_s,
                                                 headers=self._headers(target))
            body, usage = to_text_completion(
                answer, completion_id=_completion_id(), model=target.model,
                created=int(time.time()), prompt=prompt_text(call),
                echo=bool(call.request.echo), stops=request_stops(call.request.stop))
            return Result(body=body, usage=usage)
        payload = self._openai_payload(call.body, target, stream=False,
                                       has_limit=call.request.max_tokens is not None)
        vllm_sampling(payload)
        answer = await self._upstream.invoke(self._path(target, stream=False), payload,
                                             timeout_s=target.timeout_s,
                                             headers=self._headers(target))
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise errors.BadUpstreamResponse(f"{self._upstream.service} endpoint answered no "
                                             "completion")
        return Result(body=answer, usage=Usage.from_openai(answer.get("usage")))

    def stream_complete(self, call: CompletionCall, *, target: Target) -> AsyncIterator[Json]:
        if self._format_of(target) == "tgi":
            return self._tgi_stream(call, target)
        payload = self._openai_payload(call.body, target, stream=True,
                                       has_limit=call.request.max_tokens is not None)
        vllm_sampling(payload)
        return self._openai_stream(target, payload)

    async def _sse(self, target: Target, payload: Json) -> AsyncGenerator[SSEEvent, None]:
        """The container's server-sent events, rebuilt from the PayloadPart events."""
        lines = PartLines()
        messages = self._upstream.events(self._path(target, stream=True), payload,
                                         timeout_s=target.timeout_s,
                                         headers=self._headers(target))
        try:
            async for message in messages:
                if message.is_error:
                    raise stream_exception(message, service=self._upstream.service)
                if message.event_type == "PayloadPart":
                    for event in lines.feed(message.payload):
                        yield event
            for event in lines.end():
                yield event
        finally:
            await messages.aclose()

    async def _openai_stream(self, target: Target, payload: Json, *, stops: Sequence[str] = (),
                             ids: TgiIds | None = None) -> AsyncGenerator[Json, None]:
        """``stops``: the request's stop sequences (``FinishReasons``); ``ids``: TGI's ids
        made OpenAI's, for a TGI container (``TgiIds``). Chunks that open the
        stream with nothing generated (``opening_kind``: a role chunk sent before the model's
        first token) go out with the first chunk that has something (``OpeningHold``), as
        ``OpenAICompatible._stream``'s do."""
        events = self._sse(target, payload)
        fix = FinishReasons(stops)

        def finish(chunk: Json) -> Json:
            return fix(chunk if ids is None else ids(chunk))

        finished = False
        hold, opening = OpeningHold(OPENING), True
        read = EventJson()
        try:
            async for event in events:
                if event.data == "[DONE]":
                    for chunk in hold.release(None, []):  # held to the end: sent now
                        yield finish(chunk)
                    async for _ in events:  # to the end: the connection returns to the pool
                        pass
                    break
                chunk = check_stream_chunk(read(event.data))
                finished = finished or any(
                    isinstance(c, dict) and c.get("finish_reason")
                    for c in chunk.get("choices") or ())
                if opening:
                    opened = hold.release(opening_kind(chunk), [chunk])
                    opening = not opened
                    for held in opened:
                        yield finish(held)
                    continue
                yield finish(chunk)
        finally:
            await events.aclose()
        if not finished:
            raise errors.BadUpstreamResponse(f"{self._upstream.service} endpoint's stream ended "
                                             "without a finish_reason; the answer is truncated")

    async def _tgi_stream(self, call: CompletionCall, target: Target
                          ) -> AsyncGenerator[Json, None]:
        payload = generate_request(call, target=_sent(target), stream=True, prefill=False)
        payload["stream"] = True  # TGI's /invocations streams only when the body asks
        translator = GenerateStream(completion_id=_completion_id(), model=target.model,
                                    created=int(time.time()), prompt=prompt_text(call),
                                    echo=bool(call.request.echo),
                                    stops=request_stops(call.request.stop))
        events = self._sse(target, payload)
        read = EventJson()
        try:
            async for event in events:
                for chunk in translator.feed(read(event.data)):
                    yield chunk
                if translator.done:
                    break
            translator.finish()
        finally:
            await events.aclose()

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


def _sent(target: Target) -> Target:
    """``target`` without the params that steer this module (they are not sent)."""
    if not any(k in target.params for k in TARGET_ONLY):
        return target
    return dataclasses.replace(
        target, params={k: v for k, v in target.params.items() if k not in TARGET_ONLY})


def _completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def build(config: SageMakerProvider, session: aiohttp.ClientSession) -> SageMaker:
    service = f"AWS SageMaker ({config.region})"
    signer = SigV4Signer(credential_cache(config, label=service), service="sagemaker",
                         region=config.region)
    base_url = config.base_url or f"https://runtime.sagemaker.{config.region}.amazonaws.com"
    upstream = AwsUpstream(session, base_url=base_url, authorizer=signer, service=service,
                           timeout_s=config.timeout_s, connect_timeout_s=config.connect_timeout_s,
                           secrets=config_secrets([config]), headers=config.headers)
    return SageMaker(upstream, format=config.format)
