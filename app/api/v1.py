"""The OpenAI-compatible routes. Each parses, calls one gateway method, and returns.

The three model-call routes are served by ``app.api.fastlane`` in production (it calls the same
``serve_*`` functions without FastAPI's per-request machinery); the FastAPI routes below document
them in the OpenAPI schema and serve them when the fast lane is not mounted. Both go through
``app.api.calls.serve_call``, and each ``serve_*`` runs the request pipeline (``app.pipeline``):
parse, the stages' ``on_request`` hooks, then the gateway's route and call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.convertors import PathConvertor, register_url_convertor

from app import errors
from app.api.calls import Endpoint, serve_call
from app.api.deps import CallerDep, GatewayDep
from app.api.incoming import Incoming
from app.api.sse import OPENAI, Framer, SSEResponse
from app.api.watch import Watch
from app.api.wire import call_headers, json_response, parse, parse_object
from app.gateway import REFUSED_BODY, Gateway, StreamItem
from app.pipeline import ModelCall
from app.providers.base import Json, Result
from app.resources import resources_of
from app.routing import Route
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

router = APIRouter(prefix="/v1")
M = TypeVar("M", bound=BaseModel)



async def read_object(call: ModelCall) -> Json:
    """The body, a JSON object within the size and nesting limits."""
    limits = call.snapshot.limits
    try:
        body = await call.incoming.body(limit=limits.max_body_bytes)
    finally:  # a slow upload is the client's time, not the gateway's overhead
        call.record.body_wait_ms = call.incoming.body_wait_ms
    return parse_object(body, max_depth=limits.max_json_depth)


def parse_call(call: ModelCall, schema: type[M], body: dict[str, Any]) -> M:
    """``body`` validated as ``schema`` (``parse``); a body it refuses still gives the call
    record what ``noted`` takes from it, so the 400 counts under its model."""
    try:
        return parse(schema, body)
    except errors.InvalidRequest:
        noted(call, body)
        raise


def noted(call: ModelCall, body: dict[str, Any]) -> None:
    """What a body refused before it parsed says of its call, into the record: its ``model``
    when the snapshot serves it (made-up names never become label values), whether it
    streams, and its ``user`` (screened with the call's privacy policy before it is stored:
    ``Pipeline.seal``); the body itself for body capture (``REFUSED_BODY``)."""
    call.extras[REFUSED_BODY] = body
    record = call.record
    model = body.get("model")
    if isinstance(model, str) and call.snapshot.table.serves(model):
        record.public_model = model
    if body.get("stream") is True:
        record.stream = True
    user = body.get("user")
    if type(user) is str:
        record.end_user = user


async def _parsed(call: ModelCall, schema: type[M]) -> None:
    """The body, validated as ``schema``, into ``call.request`` and ``call.body``."""
    body = await read_object(call)
    call.request = parse_call(call, schema, body)  # type: ignore[assignment]
    call.body = body


_GONE = Response(status_code=499)
"""Answered to a client that has disconnected: nobody reads it."""


async def stream(items: AsyncGenerator[StreamItem, None], call: ModelCall,
                 framer: Framer = OPENAI) -> Response:
    """The streamed answer, once its first item is in hand (an error before it is an ordinary
    error response). Watched for the client's disconnect from here to the stream's end: a
    client that leaves while the first item is awaited cancels the gateway's work (the upstream
    request with it) as one that leaves later does."""
    watch = Watch(call.incoming.receive)
    try:
        first: StreamItem = await anext(items)
    except asyncio.CancelledError:
        if not watch.caught():
            raise  # cancelled by someone else (shutdown): not ours to swallow
        return _GONE
    except BaseException:
        watch.stop()
        raise
    return SSEResponse(items, first=first, watch=watch, headers=call_headers(call),
                       raw=call.headers, framer=framer)


def _body(result: Result) -> Json:
    return result.body


async def answer(work: Awaitable[Result], call: ModelCall,
                 shape: Callable[[Result], Json] = _body) -> Response:
    """The JSON answer of ``work`` (``shape``: the body a result is answered with); if the
    client disconnects first, ``work`` is cancelled (the upstream request with it) and the
    gateway records a cancelled call, as for streams."""
    watch = Watch(call.incoming.receive)
    try:
        result = await work
    except asyncio.CancelledError:
        if not watch.caught():
            raise  # cancelled by someone else (shutdown): not ours to swallow
        return _GONE
    finally:
        watch.stop()
    return json_response(shape(result), call)


async def serve_chat(call: ModelCall, gateway: Gateway) -> Response:
    body = await read_object(call)
    try:
        await call.snapshot.pipeline.expand(call, body)  # a prompt template's messages, if any
    except errors.GatewayError:
        noted(call, body)
        raise
    call.request, call.body = parse_call(call, ChatRequest, body), body
    await call.snapshot.pipeline.admit(call)
    assert isinstance(call.request, ChatRequest)
    if call.request.stream:
        return await stream(gateway.stream_chat(call), call)
    return await answer(gateway.chat(call), call)


async def serve_completion(call: ModelCall, gateway: Gateway) -> Response:
    await _parsed(call, CompletionRequest)
    await call.snapshot.pipeline.admit(call)
    assert isinstance(call.request, CompletionRequest)
    if call.request.stream:
        return await stream(gateway.stream_complete(call), call)
    return await answer(gateway.complete(call), call)


async def serve_embedding(call: ModelCall, gateway: Gateway) -> Response:
    await _parsed(call, EmbeddingRequest)
    await call.snapshot.pipeline.admit(call)
    return await answer(gateway.embed(call), call)


MODEL_CALLS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint(serve_chat),
    "/v1/completions": Endpoint(serve_completion),
    "/v1/embeddings": Endpoint(serve_embedding),
}
"""The OpenAI-dialect model-call endpoints by path (``app.api.endpoints`` adds the others)."""


async def serve_route(request: Request, endpoint: Endpoint) -> Response:
    """A model call that came through FastAPI (the fast lane not mounted)."""
    gateway = resources_of(request).gateway
    return await serve_call(gateway, Incoming.from_scope(request.scope, request.receive),
                            endpoint)


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    """Create a chat completion (SSE when ``stream`` is true)."""
    return await serve_route(request, MODEL_CALLS["/v1/chat/completions"])


@router.post("/completions")
async def completions(request: Request) -> Response:
    """Create a legacy text completion (SSE when ``stream`` is true)."""
    return await serve_route(request, MODEL_CALLS["/v1/completions"])


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    """Create embeddings for one or more inputs."""
    return await serve_route(request, MODEL_CALLS["/v1/embeddings"])


def _model_card(route: Route) -> dict[str, Any]:
    return {"id": route.name, "object": "model", "created": route.created,
            "owned_by": route.owned_by}


@router.get("/models")
async def list_models(gateway: GatewayDep, caller: CallerDep) -> dict[str, Any]:
    """The public models this gateway serves that the caller's key may use."""
    allowed = caller.models
    return {"object": "list", "data": [_model_card(r) for r in gateway.table.routes()
                                       if allowed is None or r.name in allowed]}


class _ModelId(PathConvertor):
    """A model id in a path: one character or more, slashes included (``openai/gpt-4o``).
    Starlette's ``path`` also matches nothing, so ``/v1/models/`` matched ``get_model`` and,
    asked with another method, was a 405 naming ``GET``; it is a path no route serves."""

    regex = ".+"


register_url_convertor("model_id", _ModelId())


@router.get("/models/{model_id:model_id}")
async def get_model(model_id: str, gateway: GatewayDep, caller: CallerDep) -> dict[str, Any]:
    """One public model; 404 when it is not served or the caller's key may not use it.
    ``/v1/models/`` (no id) is a path no route serves, whatever the method (``_ModelId``)."""
    if caller.models is not None and model_id not in caller.models:
        raise errors.ModelNotFound(model_id)
    return _model_card(gateway.table.resolve(model_id))
