"""Claude on Vertex AI: ``POST /vertex/v1/projects/{p}/locations/{l}/publishers/anthropic/
models/{model}:rawPredict`` and ``:streamRawPredict`` (routed, and the bearer token checked,
by ``vertex.handle``).

The body is Anthropic's Messages request without ``model`` (the URL names the model; a
``model`` in the body is ignored) and with ``anthropic_version`` in it, required (400 without).
Vertex AI documents ``vertex-2023-10-16``; the anthropic SDK's ``AnthropicVertex`` client sends
its own API version when the caller gives none, so any non-empty value is taken. The method, not
the body's ``stream``, decides whether the answer streams. The answer and its events are the
Anthropic dialect's (``anthropic.respond``, its validation included), with Vertex's ids
(``msg_vrtx_``, ``toolu_vrtx_``).

Errors: Claude's in Anthropic's shape (``{"type": "error", "error": {...}}``, mid-stream an
``event: error`` frame), except those Vertex AI answers itself in Google's shape: a refused
token (401, 403) and quota (429 ``RESOURCE_EXHAUSTED``).
"""

from __future__ import annotations

from typing import Any

from app.simulator import anthropic
from app.simulator.anthropic_request import read_request
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.core import Route, Sim, faulted, generation_knobs

METHODS = ("rawPredict", "streamRawPredict")
ROUTE = Route("anthropic")
GOOGLE_STATUSES = (401, 403, 429)
"""Answered by Vertex AI itself, in Google's shape."""


async def raw_predict(sim: Sim, req: Request, *, model: str, method: str) -> None:
    """One ``rawPredict``/``streamRawPredict`` call, its bearer token already checked."""
    try:
        knobs = generation_knobs(sim, req)
        if await faulted(sim, req, knobs):
            return
        body: dict[str, Any] = req.json_object()
        version = body.get("anthropic_version")
        if not isinstance(version, str) or not version:
            raise SimError(400, "anthropic_version: Field required",
                           kind="invalid_request_error")
        _no_url_images(body.get("messages"))
        request = read_request({**body, "model": model,
                                "stream": method == "streamRawPredict"})
    except SimError as err:
        if err.status in GOOGLE_STATUSES:
            raise  # vertex.handle's route: Google's shape
        await send_json(req.send, err.status, sim.error_body(ROUTE, err), err.headers)
        return
    await anthropic.respond(sim, req, ROUTE, request, knobs, model=knobs.model or model,
                            ids="vrtx_")


def _no_url_images(messages: Any) -> None:
    """Claude on Vertex AI takes images as base64 sources only (Anthropic's vision guide: URL
    image sources are the first-party API's): an image block with a ``url`` source is a 400."""
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            source = block.get("source") if isinstance(block, dict) else None
            if block.get("type") == "image" and isinstance(source, dict) \
                    and source.get("type") == "url":
                raise SimError(400, f"messages.{i}.content.{j}.image.source: url image sources "
                               "are not supported on this platform; send the image as base64",
                               kind="invalid_request_error")
