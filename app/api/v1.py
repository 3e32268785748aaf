"""The OpenAI-compatible routes. Each parses, calls one gateway method, and returns."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import errors
from app.api.deps import CallDep, CallerDep, GatewayDep
from app.api.sse import SSEResponse
from app.api.wire import call_headers, json_response, parse, read_json
from app.calllog import CallRecord
from app.gateway import Gateway, StreamItem
from app.providers.base import ChatCall, CompletionCall, EmbeddingCall
from app.routing import Route
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

router = APIRouter(prefix="/v1")


async def _body(request: Request, gateway: Gateway, record: CallRecord) -> dict[str, Any]:
    try:
        return await read_json(request, limit=gateway.limits.max_body_bytes)
    except errors.GatewayError as exc:
        raise gateway.reject(record, exc) from None


async def _stream(items: Any, record: CallRecord) -> Response:
    first: StreamItem = await anext(items)
    return SSEResponse(items, first=first, headers=call_headers(record))


@router.post("/chat/completions")
async def chat_completions(request: Request, gateway: GatewayDep, record: CallDep) -> Response:
    """Create a chat completion (SSE when ``stream`` is true)."""
    body = await _body(request, gateway, record)
    try:
        call = ChatCall(request=parse(ChatRequest, body), body=body)
    except errors.GatewayError as exc:
        raise gateway.reject(record, exc) from None
    if call.request.stream:
        return await _stream(gateway.stream_chat(call, record), record)
    result = await gateway.chat(call, record)
    return json_response(result.body, record)


@router.post("/completions")
async def completions(request: Request, gateway: GatewayDep, record: CallDep) -> Response:
    """Create a legacy text completion (SSE when ``stream`` is true)."""
    body = await _body(request, gateway, record)
    try:
        call = CompletionCall(request=parse(CompletionRequest, body), body=body)
    except errors.GatewayError as exc:
        raise gateway.reject(record, exc) from None
    if call.request.stream:
        return await _stream(gateway.stream_complete(call, record), record)
    result = await gateway.complete(call, record)
    return json_response(result.body, record)


@router.post("/embeddings")
async def embeddings(request: Request, gateway: GatewayDep, record: CallDep) -> Response:
    """Create embeddings for one or more inputs."""
    body = await _body(request, gateway, record)
    try:
        call = EmbeddingCall(request=parse(EmbeddingRequest, body), body=body)
    except errors.GatewayError as exc:
        raise gateway.reject(record, exc) from None
    result = await gateway.embed(call, record)
    return json_response(result.body, record)


def _model_card(route: Route) -> dict[str, Any]:
    return {"id": route.name, "object": "model", "created": route.created,
            "owned_by": route.owned_by}


@router.get("/models")
async def list_models(gateway: GatewayDep, caller: CallerDep) -> dict[str, Any]:
    """The public models this gateway serves."""
    return {"object": "list", "data": [_model_card(r) for r in gateway.table.routes()]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, gateway: GatewayDep, caller: CallerDep) -> dict[str, Any]:
    """One public model; 404 when it is not served."""
    return _model_card(gateway.table.resolve(model_id))
