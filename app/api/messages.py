"""Anthropic's Messages API, served: ``POST /v1/messages`` (streamed or not) and
``POST /v1/messages/count_tokens``, so the ``anthropic`` SDK and tools built on it work against
the gateway with a gateway key in ``x-api-key``.

A Messages call is a model call like any other: ``serve_call`` opens it, the pipeline
authenticates and admits it, the gateway routes it to any public model, and the call log and
metrics record it. Native targets (``type: anthropic``) get the client's body as it is; the
others get it translated (``app.inbound.anthropic``). Errors, before and after the first byte,
are in Anthropic's shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import errors
from app.api.calls import Endpoint
from app.api.incoming import Incoming
from app.api.v1 import answer, parse_call, read_object, serve_route, stream
from app.api.wire import JSONReply, error_reply, parse, parse_object
from app.gateway import STREAM_END, Gateway
from app.inbound.anthropic import (
    anthropic_usage,
    error_body,
    native_only_refused,
    read_request,
    to_message,
)
from app.inbound.anthropic_limits import anthropic_ratelimit
from app.inbound.anthropic_paths import client_error
from app.inbound.anthropic_stream import EventWriter
from app.pipeline import ModelCall
from app.providers.base import Json, Result
from app.resources import resources_of
from app.routing.table import Route
from app.schemas import ChatRequest
from app.stages.authenticate import check_model
from app.stages.template import refuse_in_messages
from app.usage import estimate_prompt_tokens

router = APIRouter(prefix="/v1")


REQUEST_ID = b"request-id"
"""Anthropic's response header naming the request (the SDK's ``request_id`` and
``_request_id`` read it); the gateway's is the call id, which names the call's record."""


def identify(call: ModelCall) -> str:
    """The call id, added once as the call's ``request-id`` response header (every answer
    carries the call's headers: JSON, stream or error)."""
    if not any(name == REQUEST_ID for name, _ in call.headers):
        call.headers.append((REQUEST_ID, call.record.id.encode()))
    return call.record.id


def anthropic_error(exc: errors.GatewayError, call: ModelCall | None) -> Response:
    """``exc`` in Anthropic's error shape, with the headers OpenAI-shaped errors carry (an
    upstream's ``Retry-After`` among them), and Anthropic's ``request_id`` (body) and
    ``request-id`` (header) when it answers a call."""
    request_id = None if call is None else identify(call)
    if call is not None:
        call.headers += anthropic_ratelimit(call.headers)
    return error_reply(orjson.dumps(error_body(exc, request_id=request_id)), exc.status_code,
                       call, cause=exc)


MESSAGES_ENDPOINT = "Anthropic messages (/v1/messages)"
"""How a refusal names this endpoint (``app.providers.base.ENDPOINTS``' style)."""


def messages_route(route: Route, native_only: Sequence[str], *, stream: bool) -> Route:
    """The targets of ``route`` a Messages call may go to, refused as the gateway refuses it
    (``Gateway.chat`` and ``_native_route``): a 400 ``unsupported_endpoint`` when none serves
    chat, and one naming the first of ``native_only`` (the parts only a native target can
    serve) when none speaks Messages natively. ``count_tokens`` asks it: a count of a call
    ``/v1/messages`` refuses misleads."""
    route = route.serving("stream_chat" if stream else "chat", endpoint=MESSAGES_ENDPOINT)
    if native_only:
        try:
            return route.serving("stream_messages" if stream else "messages")
        except errors.InvalidRequest:
            raise native_only_refused(native_only, route.name) from None
    return route


def _named(exc: errors.InvalidRequest, call: ModelCall, *, stream: bool) -> errors.GatewayError:
    """``exc``, but where it is the gateway's refusal of a model none of whose targets serves
    chat, that refusal naming ``/v1/messages`` (what the client called; the gateway's names
    the chat endpoint whose capability it checked)."""
    if exc.code != "unsupported_endpoint":
        return exc
    try:
        call.route().serving("stream_chat" if stream else "chat", endpoint=MESSAGES_ENDPOINT)
    except errors.InvalidRequest as named:
        return named
    return exc  # an upstream's refusal with that code: not the route's


async def serve_messages(call: ModelCall, gateway: Gateway) -> Response:
    identify(call)
    native = await read_object(call)
    inbound = read_request(native)
    try:
        request = parse_call(call, ChatRequest, inbound.body)
    except errors.InvalidRequest as exc:
        raise client_error(exc, inbound.origins) from None
    call.request, call.body = request, inbound.body
    call.native, call.native_only = native, inbound.native_only
    await call.snapshot.pipeline.admit(call)
    call.headers += anthropic_ratelimit(call.headers)
    try:
        return await _serve(call, gateway, request)
    except errors.InvalidRequest as exc:
        named = _named(exc, call, stream=bool(request.stream))
        if named is exc:
            raise
        raise named from None


async def _serve(call: ModelCall, gateway: Gateway, request: ChatRequest) -> Response:
    stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
    if request.stream:
        writer = EventWriter(model=request.model, stops=stops,
                             prompt_tokens=lambda: estimate_prompt_tokens(request))
        call.extras[STREAM_END] = writer.check_end
        return await stream(gateway.stream_chat(call), call, writer)

    def shape(result: Result) -> Json:
        if result.native is not None:
            usage = call.record.usage
            if usage is not None and usage.estimated and "usage" in result.native:
                # Its report unreadable (``read_usage``): the counts the call is accounted with.
                result.native["usage"] = anthropic_usage(usage)
            return result.native
        model = result.body.get("model")
        return to_message(result.body, call.record.usage, stops=stops,
                          model=model if isinstance(model, str) else request.model)

    return await answer(gateway.chat(call), call, shape)


MESSAGES = Endpoint(serve_messages, anthropic_error)


@router.post("/messages")
async def messages(request: Request) -> Response:
    """Create a message in Anthropic's Messages API format (SSE when ``stream`` is true)."""
    return await serve_route(request, MESSAGES)


@router.post("/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    """The input tokens of a Messages request, as the gateway estimates them (it has no
    tokenizer of each provider's; the count the call is admitted and limited by)."""
    resources = resources_of(request)
    incoming = Incoming.from_scope(request.scope, request.receive)
    try:
        caller = await resources.authenticator.identify(incoming.headers)
        limits = resources.gateway.limits
        body = parse_object(await incoming.body(limit=limits.max_body_bytes),
                            max_depth=limits.max_json_depth)
        refuse_in_messages(body)  # as /v1/messages does: a count of a call it refuses misleads
        body.setdefault("max_tokens", 1)
        inbound = read_request(body)
        try:
            chat = parse(ChatRequest, inbound.body)
        except errors.InvalidRequest as exc:
            raise client_error(exc, inbound.origins) from None
        check_model(caller, chat.model)
        messages_route(resources.gateway.table.resolve(chat.model), inbound.native_only,
                       stream=bool(chat.stream))
    except errors.GatewayError as exc:
        return anthropic_error(exc, None)
    return JSONReply(orjson.dumps({"input_tokens": estimate_prompt_tokens(chat)}), headers={})

